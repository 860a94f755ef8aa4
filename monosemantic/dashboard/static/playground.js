// Playground: pick features, choose zero / mean ablation, clamp or steer with a value, run the prompt,
// and compare next-token distributions and greedy continuations before and after; a strength slider
// sweeps the first feature's steering and draws its dose-response curve.
"use strict";

(() => {
  const body = document.body.dataset;
  const maxStrength = Number(body.maxStrength);
  const rows = document.querySelector("#edits tbody");
  const status = document.getElementById("status");
  const slider = document.getElementById("alpha");
  const sliderValue = document.getElementById("alpha-value");
  const curveStatus = document.getElementById("curve-status");
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
    // its max activation, once: a moderate push (4x turned every continuation into spaces)
    const value = Math.max(0.1, Number(summary.max_act.toPrecision(2)));
    edits.push({feature: id, label: summary.label, kind: "steer", value});
    if (edits.length === 1) {
      slider.max = String(Math.min(maxStrength, 4 * value));
      slider.value = String(value);
      sliderValue.textContent = `α = ${MS.fmt(value)}`;
    }
    render();
  }

  function prediction(section, title, result, prompt) {
    const top = Math.max(1e-12, ...result.next_tokens.map(([, p]) => p));  // bars relative to the likeliest
    const bars = result.next_tokens.map(([tok, p]) => MS.el("tr", {},
      MS.el("td", {}, MS.el("code", {text: MS.alone(tok)})),
      MS.el("td", {}, MS.el("span", {class: "prob", style: `width: ${(100 * p / top).toFixed(1)}%`})),
      MS.el("td", {text: `${(100 * p).toFixed(1)}%`})));
    section.replaceChildren(MS.el("h2", {text: title}),
      MS.el("p", {class: "continuation-line"}, MS.el("span", {class: "prompt", text: MS.alone(prompt)}),
        MS.el("span", {class: "continuation", text: MS.alone(result.continuation.join(""))})),
      MS.el("h3", {text: "next token"}), MS.el("table", {class: "next-tokens"}, ...bars));
  }

  function clearResults() {
    document.getElementById("before").replaceChildren(MS.el("h2", {text: "Before"}));
    document.getElementById("after").replaceChildren(MS.el("h2", {text: "After"}));
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
      clearResults();  // results of an earlier prompt beside this error would read as its answer
      MS.status(status, e.message, true);
      return;
    }
    prediction(document.getElementById("before"), "Before", data.before, prompt);
    prediction(document.getElementById("after"), edits.length ? "After" : "After (no interventions)", data.after, prompt);
    MS.status(status, `${data.prompt_tokens} prompt tokens · ${Math.round(performance.now() - started)} ms`);
  }

  function svg(tag, attrs = {}, text = "") {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    return node;
  }

  // P(target) against alpha, with both axes and each point's numbers on hover
  function drawCurve(data) {
    const W = 480, H = 200, L = 66, R = 16, T = 16, B = H - 34;
    const xs = data.alphas, ys = data.p_target;
    const x0 = Math.min(...xs), x1 = Math.max(...xs), top = Math.max(1e-9, ...ys);
    const px = (x) => L + (x - x0) / ((x1 - x0) || 1) * (W - L - R);
    const py = (y) => B - y / top * (B - T);
    const chart = svg("svg", {class: "dose-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H});
    chart.append(svg("line", {x1: L, y1: B, x2: W - R, y2: B, class: "axis x-axis"}),
      svg("line", {x1: L, y1: T, x2: L, y2: B, class: "axis y-axis"}),
      svg("polyline", {class: "curve", fill: "none", points: xs.map((x, i) => `${px(x)},${py(ys[i])}`).join(" ")}));
    for (const y of [0, top / 2, top]) {
      chart.append(svg("text", {x: L - 6, y: py(y) + 4, class: "tick y end"}, MS.fmt(y)));
    }
    for (const x of [x0, (x0 + x1) / 2, x1]) chart.append(svg("text", {x: px(x), y: B + 16, class: "tick x mid"}, MS.fmt(x)));
    xs.forEach((x, i) => {
      const dot = svg("circle", {class: "point", cx: px(x), cy: py(ys[i]), r: 4});
      dot.append(svg("title", {}, `α = ${MS.fmt(x)}: P(${MS.alone(data.target)}) = ${MS.fmt(ys[i])}, KL = ${MS.fmt(data.kl[i])}`));
      chart.append(dot);
    });
    chart.append(svg("text", {x: W - R, y: B + 30, class: "tick end"}, "steering strength α"),
      svg("text", {x: 4, y: T - 4, class: "tick caption"}, `P(next = ${MS.alone(data.target)})`));
    document.getElementById("curve").replaceChildren(chart);
  }

  async function sweep() {
    const alpha = Number(slider.value);
    sliderValue.textContent = `α = ${MS.fmt(alpha)}`;
    const first = edits[0];
    if (!first) {
      MS.status(curveStatus, "add a feature first", true);
      return;
    }
    first.kind = "steer";
    first.value = Number(alpha.toPrecision(3));
    render();
    const position = document.getElementById("position").value;
    MS.status(curveStatus, "sweeping…");
    try {
      const data = await MS.post("/api/steer-curve",
        {prompt: document.getElementById("prompt").value, feature: first.feature, alpha, position});
      drawCurve(data);
      MS.status(curveStatus, `feature #${first.feature} at ${position === "all" ? "every token" : "the last token"}; ` +
        `target “${MS.alone(data.target)}”, the token α = ${MS.fmt(alpha)} raises most`);
    } catch (e) {
      document.getElementById("curve").replaceChildren();
      MS.status(curveStatus, e.message, true);
    }
  }

  document.getElementById("add").addEventListener("click", () => {
    add(parseInt(document.getElementById("add-feature").value, 10));
  });
  document.getElementById("run").addEventListener("click", run);
  slider.addEventListener("input", () => { sliderValue.textContent = `α = ${MS.fmt(Number(slider.value))}`; });
  slider.addEventListener("change", sweep);
  document.getElementById("position").addEventListener("change", sweep);
  JSON.parse(body.features).forEach((id) => add(id));
})();
