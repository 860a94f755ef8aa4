// Playground: pick features, choose zero / mean ablation, clamp or steer with a value, run the prompt,
// and compare next-token distributions and greedy continuations before and after.
"use strict";

(() => {
  const body = document.body.dataset;
  const maxStrength = Number(body.maxStrength);
  const rows = document.querySelector("#edits tbody");
  const status = document.getElementById("status");
  const edits = [];

  function render() {
    rows.replaceChildren(...edits.map((e, n) => {
      const kind = MS.el("select", {class: "kind", onchange: (ev) => { e.kind = ev.target.value; render(); }},
        ...["steer", "clamp", "zero", "mean"].map((k) => MS.el("option", {value: k, text: k})));
      kind.value = e.kind;
      const value = MS.el("input", {type: "number", class: "value", step: "any", min: -maxStrength, max: maxStrength,
        value: e.value, onchange: (ev) => { e.value = Number(ev.target.value); }});
      value.disabled = e.kind === "zero" || e.kind === "mean";
      const remove = MS.el("button", {text: "remove", onclick: () => { edits.splice(n, 1); render(); }});
      return MS.el("tr", {}, MS.el("td", {}, MS.featureLink(e.feature, e.label)), MS.el("td", {}, kind),
        MS.el("td", {}, value), MS.el("td", {}, remove));
    }));
  }

  async function add(id) {
    if (!Number.isInteger(id)) return;
    let summary;
    try {
      summary = await MS.get(`/api/feature/${id}/summary`);
    } catch (e) {
      MS.status(status, e.message, true);
      return;
    }
    const value = Math.round(40 * Math.max(summary.max_act, 0.25)) / 10;  // 4x its max activation
    edits.push({feature: id, label: summary.label, kind: "steer", value});
    render();
  }

  function prediction(section, title, result, prompt) {
    const top = Math.max(1e-12, ...result.next_tokens.map(([, p]) => p));  // bars relative to the likeliest
    const bars = result.next_tokens.map(([tok, p]) => MS.el("tr", {},
      MS.el("td", {}, MS.el("code", {text: MS.alone(tok)})),
      MS.el("td", {}, MS.el("span", {class: "prob", style: `width: ${(100 * p / top).toFixed(1)}%`})),
      MS.el("td", {text: `${(100 * p).toFixed(1)}%`})));
    section.replaceChildren(MS.el("h2", {text: title}),
      MS.el("p", {class: "continuation-line"}, MS.el("span", {class: "prompt", text: MS.visible(prompt)}),
        MS.el("span", {class: "continuation", text: MS.visible(result.continuation.join(""))})),
      MS.el("h3", {text: "next token"}), MS.el("table", {class: "next-tokens"}, ...bars));
  }

  async function run() {
    const prompt = document.getElementById("prompt").value;
    const payload = {prompt, new_tokens: Number(document.getElementById("new-tokens").value),
      interventions: edits.map(({feature, kind, value}) => ({feature, kind, value}))};
    MS.status(status, "running…");
    const started = performance.now();
    let data;
    try {
      data = await MS.post("/api/playground", payload);
    } catch (e) {
      MS.status(status, e.message, true);
      return;
    }
    prediction(document.getElementById("before"), "Before", data.before, prompt);
    prediction(document.getElementById("after"), edits.length ? "After" : "After (no interventions)", data.after, prompt);
    MS.status(status, `${data.prompt_tokens} prompt tokens · ${Math.round(performance.now() - started)} ms`);
  }

  document.getElementById("add").addEventListener("click", () => {
    add(parseInt(document.getElementById("add-feature").value, 10));
  });
  document.getElementById("run").addEventListener("click", run);
  JSON.parse(body.features).forEach((id) => add(id));
})();
