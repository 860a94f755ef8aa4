// Feature page: "try your own text", the feature's activation on every token as the user types.
"use strict";

(() => {
  const feature = Number(document.body.dataset.feature);
  const peak = Number(document.body.dataset.peak);
  const input = document.getElementById("try-text");
  const result = document.getElementById("try-result");
  const latest = MS.latest();

  async function update() {
    const text = input.value;
    if (!text.trim()) {
      result.replaceChildren();
      return;
    }
    let data;
    try {
      data = await latest((signal) => MS.post(`/api/feature/${feature}/activations`, {text}, signal));
    } catch (e) {
      if (e.name !== "AbortError") result.replaceChildren(MS.el("p", {class: "error", text: e.message}));
      return;
    }
    const top = Math.max(0, ...data.acts);
    result.replaceChildren(MS.tokens(data.tokens, data.acts, Math.max(peak, top)),
      MS.el("p", {class: "muted", text: `max activation here ${MS.fmt(top, 4)} (max in the analysis ${MS.fmt(peak, 4)})`}));
  }

  input.addEventListener("input", MS.debounce(update, 120));
})();
