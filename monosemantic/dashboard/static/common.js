// Shared helpers of the dashboard's pages: JSON requests, DOM building, activation colours.
// Everything that comes from the server is put into the page with textContent, never innerHTML.
"use strict";

const MS = {
  // "\n" and tabs as visible symbols, as the server renders tokens
  visible(token) {
    return token.replace(/\n/g, "⏎").replace(/\t/g, "⇥");
  },

  // a token standing alone (a column, a table cell): spaces visible too
  alone(token) {
    return MS.visible(token).replace(/ /g, "␣");
  },

  // background colour of an activation, its intensity the share of `peak`
  heat(act, peak) {
    const share = peak > 0 && act > 0 ? Math.min(1, act / peak) : 0;
    return `rgba(255, 122, 0, ${share.toFixed(3)})`;
  },

  // `digits` significant digits, trailing zeros after a decimal point dropped: 110.3 -> "110",
  // 99.98 -> "100", 1200 -> "1200" (not "1.20e+3"), 0.00037 -> "0.00037", 2.50 -> "2.5"
  fmt(x, digits = 3) {
    if (x === null || x === undefined) return "–";
    const v = Number(x);
    if (!Number.isFinite(v)) return String(v);
    if (Math.abs(v) >= 10 ** digits) return String(Math.round(v));
    const [mantissa, exponent] = v.toPrecision(digits).split("e");
    const short = mantissa.includes(".") ? mantissa.replace(/\.?0+$/, "") : mantissa;
    return exponent === undefined ? short : `${short}e${exponent}`;
  },

  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k === "style") node.style.cssText = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  },

  featureLink(id, label) {
    return MS.el("span", {class: "feature-ref"},
      MS.el("a", {href: `/feature/${id}`, class: "feature-link", text: `#${id}`}), " ",
      MS.el("span", {class: "label", text: label ?? "–"}));
  },

  // a run of tokens shaded by activation; `active` outlined
  tokens(tokens, acts, peak, active = -1) {
    const box = MS.el("span", {class: "tokens"});
    tokens.forEach((tok, j) => box.append(MS.el("span", {
      class: j === active ? "t active" : "t", style: `background: ${MS.heat(acts[j], peak)}`,
      title: MS.fmt(acts[j], 4), text: MS.visible(tok)})));
    return box;
  },

  async request(url, options = {}) {
    const response = await fetch(url, {headers: {"content-type": "application/json"}, ...options});
    const body = await response.json().catch(() => ({detail: response.statusText}));
    if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
    return body;
  },

  post(url, data, signal) {
    return MS.request(url, {method: "POST", body: JSON.stringify(data), signal});
  },

  get(url, signal) {
    return MS.request(url, {signal});
  },

  debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  },

  // runs `fetcher(signal)` so that only the newest call's result is shown (older ones are aborted)
  latest() {
    let controller = null;
    return async (fetcher) => {
      if (controller) controller.abort();
      controller = new AbortController();
      return fetcher(controller.signal);
    };
  },

  status(node, message, error = false) {
    node.textContent = message;
    node.classList.toggle("error", error);
  },
};
