// Search page: results as the user types (by label, token, or feature number), with their count,
// pages of 50, a sort by any column (click its header), the fields each result matched, and the
// features below the support floor hidden unless asked for.
"use strict";

(() => {
  const input = document.getElementById("q");
  const all = document.getElementById("all");
  const results = document.getElementById("results");
  const pages = document.getElementById("pages");
  const title = document.getElementById("results-title");
  const status = document.getElementById("status");
  const latest = MS.latest();
  const PAGE = 50;
  const COLUMNS = [["index", "feature"], ["precision", "precision"], ["recall", "recall"],
    ["density", "density"], ["fires", "activations"], ["max_act", "max act"]];
  let sort = "rank";
  let offset = 0;

  function header(searching) {
    const cells = COLUMNS.map(([key, name]) => {
      if (!searching) return MS.el("th", {text: name});
      const th = MS.el("th", {class: `sortable${sort === key ? " sorted" : ""}`, "data-sort": key,
        title: `sort by ${name}`, text: sort === key ? `${name} ▾` : name});
      th.addEventListener("click", () => { sort = sort === key ? "rank" : key; offset = 0; update(); });
      return th;
    });
    return MS.el("tr", {}, ...cells, ...(searching ? [MS.el("th", {text: "matched"})] : []));
  }

  function table(rows, searching) {
    const body = rows.map((s) => MS.el("tr", {},
      MS.el("td", {}, MS.featureLink(s.index, s.label)),
      MS.el("td", {text: MS.fmt(s.precision, 2)}), MS.el("td", {text: MS.fmt(s.recall, 2)}),
      MS.el("td", {text: `${(100 * s.density).toFixed(2)}%`}), MS.el("td", {text: String(s.fires)}),
      MS.el("td", {text: MS.fmt(s.max_act)}),
      ...(searching ? [MS.el("td", {class: "matched", text: s.matched.join(", ")})] : [])));
    return MS.el("table", {class: "features"}, MS.el("thead", {}, header(searching)), MS.el("tbody", {}, ...body));
  }

  function pager(total) {
    if (total <= PAGE) return [];
    const go = (to) => () => { offset = to; update(); };
    return [MS.el("button", {id: "prev", text: "◀ previous", onclick: go(Math.max(0, offset - PAGE))}),
      MS.el("span", {text: `${offset + 1}–${Math.min(offset + PAGE, total)} of ${total}`}),
      MS.el("button", {id: "next", text: "next ▶", onclick: go(offset + PAGE)})]
      .map((b, i) => { if (i !== 1) b.disabled = i === 0 ? offset === 0 : offset + PAGE >= total; return b; });
  }

  async function update() {
    const q = input.value.trim();
    history.replaceState(null, "", q ? `/search?q=${encodeURIComponent(q)}` : "/search");
    const params = new URLSearchParams({q, limit: PAGE, offset, sort, ...(all.checked ? {floor: 0} : {})});
    const url = q ? `/api/search?${params}` : "/api/features?order=f1&labelled=true";
    let data;
    try {
      data = await latest((signal) => MS.get(url, signal));
    } catch (e) {
      if (e.name !== "AbortError") {
        MS.status(status, e.message, true);
        results.replaceChildren();
        pages.replaceChildren();
      }
      return;
    }
    const rows = q ? data.results : data;
    const hidden = q && data.hidden ? `; ${data.hidden} more fire on fewer than ${data.floor} analysed tokens` : "";
    MS.status(status, q ? `${data.total} features match${hidden}` : `${rows.length} best-labelled features`);
    title.textContent = q ? `Features matching ${q}` : "Best-labelled features";
    results.replaceChildren(rows.length ? table(rows, Boolean(q)) : MS.el("p", {class: "muted", text: "no features match"}));
    pages.replaceChildren(...(q ? pager(data.total) : []));
  }

  const typed = MS.debounce(() => { offset = 0; sort = "rank"; update(); }, 120);
  input.addEventListener("input", typed);
  all.addEventListener("change", () => { offset = 0; update(); });
  if (input.value.trim()) update();  // a /search?q= link: the count and matched fields too
})();
