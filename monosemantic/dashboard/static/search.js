// Search page: results as the user types (by label, token, or feature number).
"use strict";

(() => {
  const input = document.getElementById("q");
  const results = document.getElementById("results");
  const title = document.getElementById("results-title");
  const status = document.getElementById("status");
  const latest = MS.latest();

  function table(rows) {
    const head = MS.el("tr", {}, ...["feature", "precision", "recall", "density", "max act"].map(
      (h) => MS.el("th", {text: h})));
    const body = rows.map((s) => MS.el("tr", {},
      MS.el("td", {}, MS.featureLink(s.index, s.label)),
      MS.el("td", {text: MS.fmt(s.precision, 2)}), MS.el("td", {text: MS.fmt(s.recall, 2)}),
      MS.el("td", {text: `${(100 * s.density).toFixed(2)}%`}), MS.el("td", {text: MS.fmt(s.max_act)})));
    return MS.el("table", {class: "features"}, MS.el("thead", {}, head), MS.el("tbody", {}, ...body));
  }

  async function update() {
    const q = input.value.trim();
    history.replaceState(null, "", q ? `/search?q=${encodeURIComponent(q)}` : "/search");
    const url = q ? `/api/search?q=${encodeURIComponent(q)}` : "/api/features?order=f1&labelled=true";
    let rows;
    try {
      rows = await latest((signal) => MS.get(url, signal));
    } catch (e) {
      if (e.name !== "AbortError") MS.status(status, e.message, true);
      return;
    }
    MS.status(status, `${rows.length} features`);
    title.textContent = q ? `Features matching ${q}` : "Best-labelled features";
    results.replaceChildren(rows.length ? table(rows) : MS.el("p", {class: "muted", text: "no features match"}));
  }

  input.addEventListener("input", MS.debounce(update, 120));
})();
