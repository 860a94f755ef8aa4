// Text view: as the user types, each token with its top features (chips), a hover list per token,
// and the text's features sorted by total (or max) activation; hovering one shades the tokens by it.
"use strict";

(() => {
  const input = document.getElementById("text");
  const k = document.getElementById("k");
  const sort = document.getElementById("sort");
  const grid = document.getElementById("tokens");
  const list = document.getElementById("text-features");
  const panel = document.getElementById("token-panel");
  const status = document.getElementById("status");
  const latest = MS.latest();
  let data = null;
  let peak = 1;

  function chip(f) {
    return MS.el("a", {class: "chip", href: `/feature/${f.id}`, style: `background: ${MS.heat(f.act, peak)}`,
      title: `feature ${f.id}: ${f.label ?? "no label"} (${MS.fmt(f.act, 4)})`},
      MS.el("b", {text: `#${f.id}`}), " ", MS.el("span", {class: "chip-label", text: f.label ?? ""}),
      " ", MS.el("span", {class: "act", text: MS.fmt(f.act)}));
  }

  function showPanel(i, anchor) {
    const t = data.tokens[i];
    const rows = t.features.map((f) => MS.el("li", {}, MS.featureLink(f.id, f.label), " ",
      MS.el("span", {class: "act", text: MS.fmt(f.act, 4)})));
    panel.replaceChildren(MS.el("div", {class: "panel-title", text: `token ${i}: “${MS.alone(t.token)}”`}),
      rows.length ? MS.el("ol", {}, ...rows) : MS.el("p", {class: "muted", text: "no active features"}));
    const box = anchor.getBoundingClientRect();
    panel.style.left = `${window.scrollX + box.left}px`;
    panel.style.top = `${window.scrollY + box.bottom + 4}px`;
    panel.hidden = false;
  }

  function shadeBy(feature) {
    grid.querySelectorAll(".tok-text").forEach((node, i) => {
      const top = data.tokens[i].features[0];
      node.style.background = feature ? MS.heat(feature.acts[i], feature.max) : MS.heat(top ? top.act : 0, peak);
    });
  }

  function renderTokens() {
    const tops = data.tokens.map((t) => (t.features.length ? t.features[0].act : 0));
    peak = Math.max(1e-9, ...tops);
    const columns = data.tokens.map((t, i) => {
      const col = MS.el("div", {class: "tok-col", "data-index": i},
        MS.el("span", {class: "tok-text", style: `background: ${MS.heat(tops[i], peak)}`, text: MS.alone(t.token)}),
        MS.el("div", {class: "chips"}, ...t.features.map(chip)));
      col.addEventListener("mouseenter", () => showPanel(i, col));
      return col;
    });
    grid.replaceChildren(...words(data.tokens.map((t) => t.token), columns));
  }

  // the columns grouped into words that never break across lines: the text flows and wraps at spaces
  function words(tokens, columns) {
    const out = [];
    tokens.forEach((tok, i) => {
      if (i === 0 || /^\s/.test(tok) || /\s$/.test(tokens[i - 1])) out.push(MS.el("span", {class: "word"}));
      out[out.length - 1].append(columns[i]);
    });
    return out;
  }

  function renderList() {
    const key = sort.value;
    const features = [...data.features].sort((a, b) => b[key] - a[key]);
    list.replaceChildren(...features.map((f) => {
      const item = MS.el("li", {}, MS.featureLink(f.id, f.label), " ",
        MS.el("span", {class: "act", text: `total ${MS.fmt(f.total)} · max ${MS.fmt(f.max)} · ${f.active} tokens`}));
      item.addEventListener("mouseenter", () => shadeBy(f));
      item.addEventListener("mouseleave", () => shadeBy(null));
      return item;
    }));
  }

  async function update() {
    const text = input.value;
    history.replaceState(null, "", text ? `/?text=${encodeURIComponent(text)}` : "/");
    if (!text.trim()) {
      grid.replaceChildren();
      list.replaceChildren();
      MS.status(status, "");
      return;
    }
    const started = performance.now();
    MS.status(status, "…");
    try {
      data = await latest((signal) => MS.post("/api/text", {text, k: Number(k.value)}, signal));
    } catch (e) {
      if (e.name !== "AbortError") MS.status(status, e.message, true);
      return;
    }
    renderTokens();
    renderList();
    MS.status(status, `${data.tokens.length} tokens · ${Math.round(performance.now() - started)} ms`);
  }

  input.addEventListener("input", MS.debounce(update, 120));
  k.addEventListener("change", update);
  sort.addEventListener("change", () => data && renderList());
  grid.addEventListener("mouseleave", () => { panel.hidden = true; });
  panel.addEventListener("mouseleave", () => { panel.hidden = true; });
  if (input.value) update();
})();
