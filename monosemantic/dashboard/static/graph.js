// The graph view: an attribution graph (GET /api/graph/NAME) drawn as layers (bottom to top) by token
// positions (left to right); hover a node for its label, activation and influence, click a feature to
// open it, shift-click to pin; pinned nodes group into supernodes (one box, their edges summed); the
// pinned features can be ablated or set to a value in the real model (POST /api/graph/NAME/intervene).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const COL = 112, PER = 7, STEP = 14, LEFT = 64, MAX_EDGES = 1500;

const state = {graph: null, byId: new Map(), pos: new Map(), pinned: new Set(), groups: [], owner: new Map()};

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

// (x, y) of every node: rows from the top are the logits, layers L-1 .. 0, the tokens; a position's
// column is as wide as its fullest cell needs (PER nodes a line at least, up to 2 * PER)
function layout(g) {
  const cells = new Map(), n = g.tokens.length;
  let layers = 0;
  for (const node of g.nodes) {
    if (node.kind !== "feature" && node.kind !== "error") continue;
    layers = Math.max(layers, node.layer + 1);
    const key = `${node.layer}:${node.pos}`;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(node);
  }
  const size = (l, p) => (cells.get(`${l}:${p}`) || []).length;
  const per = Array.from({length: n}, (_, p) => {
    let most = 0;
    for (let l = 0; l < layers; l++) most = Math.max(most, size(l, p));
    return Math.min(2 * PER, Math.max(PER, Math.ceil(most / 3)));
  });
  const colX = [LEFT];
  for (let p = 1; p <= n; p++) colX[p] = colX[p - 1] + Math.max(COL, per[p - 1] * STEP + 14);
  const rows = Array.from({length: layers}, (_, l) => {
    let most = 1;
    for (let p = 0; p < n; p++) most = Math.max(most, Math.ceil(size(l, p) / per[p]));
    return most * STEP + 12;
  });
  const top = [];  // y of each layer row's top, layer L-1 first
  for (let l = layers - 1; l >= 0; l--) top[l] = l === layers - 1 ? 50 : top[l + 1] + rows[l + 1];
  const tokenY = (layers ? top[0] + rows[0] : 50) + 18;
  for (const [key, list] of cells) {
    const [l, p] = key.split(":").map(Number);
    list.sort((a, b) => (a.kind === "error" ? -1 : b.kind === "error" ? 1 : a.latent - b.latent));
    list.forEach((node, k) => state.pos.set(node.id, [colX[p] + 10 + (k % per[p]) * STEP, top[l] + 8 + Math.floor(k / per[p]) * STEP]));
  }
  const mid = (p) => (colX[p] + colX[p + 1]) / 2;
  const logits = g.nodes.filter((node) => node.kind === "logit");
  logits.forEach((node, k) => state.pos.set(node.id, [mid(n - 1) - (logits.length - 1 - k) * 58, 22]));
  for (const node of g.nodes) if (node.kind === "token") state.pos.set(node.id, [mid(node.pos), tokenY]);
  return {layers, top, rows, width: colX[n] + 10, height: tokenY + 24};
}

// the drawn endpoints: a grouped node is its supernode ("s:K"); edges inside a supernode are dropped,
// the others between the same two drawn nodes summed
function drawnEdges(g) {
  const sums = new Map();
  for (const e of g.edges) {
    const s = state.owner.get(e.source) ?? e.source, t = state.owner.get(e.target) ?? e.target;
    if (s === t) continue;
    sums.set(`${s}|${t}`, (sums.get(`${s}|${t}`) || 0) + e.weight);
  }
  const out = [...sums].map(([key, weight]) => ({source: key.split("|")[0], target: key.split("|")[1], weight}));
  out.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
  return {edges: out.slice(0, MAX_EDGES), total: out.length};
}

function where(id) {
  if (!id.startsWith("s:")) return state.pos.get(id);
  const members = state.groups[Number(id.slice(2))].members.map((m) => state.pos.get(m));
  return [members.reduce((a, p) => a + p[0], 0) / members.length, members.reduce((a, p) => a + p[1], 0) / members.length];
}

function drawShape(n, [x, y]) {
  const g = svg("g", {class: `node ${n.kind}`, "data-id": n.id});
  if (n.kind === "feature") g.append(svg("circle", {class: "shape", cx: x, cy: y, r: 5}));
  else if (n.kind === "error") g.append(svg("rect", {class: "shape", x: x - 4.5, y: y - 4.5, width: 9, height: 9}));
  else {
    g.append(svg("rect", {class: "shape", x: x - 26, y: y - 10, width: 52, height: 20, rx: 3}));
    g.append(svg("text", {x, y: y + 4, "text-anchor": "middle"}, MS.alone(n.token)));
    if (n.kind === "logit" && n.token_id === state.graph.target.token_id) g.classList.add("target");
  }
  if (state.pinned.has(n.id)) g.classList.add("pinned");
  return g;
}

function render() {
  const g = state.graph, box = layout(g);
  const root = svg("svg", {width: box.width, height: box.height, class: "attribution"});
  for (let l = 0; l < box.layers; l++) {
    root.append(svg("line", {class: "row-line", x1: 0, x2: box.width, y1: box.top[l] + box.rows[l], y2: box.top[l] + box.rows[l]}));
    root.append(svg("text", {class: "layer", x: 4, y: box.top[l] + box.rows[l] / 2 + 4}, `L${l}`));
  }
  const {edges, total} = drawnEdges(g);
  const peak = Math.max(1e-12, ...edges.map((e) => Math.abs(e.weight)));
  const lines = svg("g", {class: "edges"});
  for (const e of edges) {
    const [x1, y1] = where(e.source), [x2, y2] = where(e.target);
    lines.append(svg("line", {class: `edge ${e.weight >= 0 ? "pos" : "neg"}`, x1, y1, x2, y2, "data-source": e.source,
      "data-target": e.target, "data-weight": e.weight, "stroke-width": (0.4 + 3.6 * Math.abs(e.weight) / peak).toFixed(2)}));
  }
  root.append(lines);
  for (const n of g.nodes) if (!state.owner.has(n.id)) root.append(drawShape(n, state.pos.get(n.id)));
  state.groups.forEach((group, k) => {
    if (!group) return;
    const [x, y] = where(`s:${k}`), id = `s:${k}`;
    const node = svg("g", {class: `supernode${state.pinned.has(id) ? " pinned" : ""}`, "data-id": id});
    node.append(svg("rect", {x: x - 45, y: y - 10, width: 90, height: 20, rx: 4}), svg("text", {x, y: y + 4, "text-anchor": "middle"}, group.name));
    root.append(node);
  });
  const holder = document.getElementById("graph");
  holder.replaceChildren(root, MS.el("p", {class: "muted", id: "edge-count", text: `${edges.length} of ${total} edges drawn (the largest |weight|)`}));
  root.addEventListener("mouseover", (ev) => hover(ev.target.closest("[data-id]")));
  root.addEventListener("click", (ev) => click(ev, ev.target.closest("[data-id]")));
  renderLists();
}

function describe(id) {
  if (id.startsWith("s:")) return `supernode ${state.groups[Number(id.slice(2))].name}`;
  return state.byId.get(id).describe;
}

function hover(el) {
  if (!el) return;
  const id = el.dataset.id, info = document.getElementById("node-info");
  for (const line of document.querySelectorAll("svg .edge")) {
    line.classList.toggle("lit", line.dataset.source === id || line.dataset.target === id);
  }
  if (id.startsWith("s:")) {
    const members = state.groups[Number(id.slice(2))].members.map((m) => state.byId.get(m));
    const influence = members.reduce((a, n) => a + (n.influence || 0), 0);
    info.replaceChildren(MS.el("b", {text: describe(id)}), MS.el("div", {text: `${members.length} nodes; influence ${MS.fmt(influence)}`}),
      ...members.map((n) => MS.el("div", {class: "muted", text: n.describe})));
    return;
  }
  const n = state.byId.get(id);
  const lines = [MS.el("b", {class: "describe", text: n.describe})];
  if (n.kind === "feature") {
    lines.push(MS.el("div", {class: "label", text: n.analysed ? `label: ${n.label ?? "–"}` : "label: not analysed"}));
    lines.push(MS.el("div", {class: "activation", text: `activation ${MS.fmt(n.activation, 4)}`}));
  }
  if (n.kind === "error") lines.push(MS.el("div", {text: `error norm ${MS.fmt(n.norm, 4)}`}));
  if (n.kind === "logit") lines.push(MS.el("div", {text: `probability ${MS.fmt(n.probability, 4)}`}));
  lines.push(MS.el("div", {class: "influence", text: `influence on the target ${MS.fmt(n.influence, 4)}`}));
  info.replaceChildren(...lines);
}

function click(ev, el) {
  if (!el) return;
  const id = el.dataset.id, n = state.byId.get(id);
  if (n && n.kind === "feature" && !ev.shiftKey) {
    window.location.href = `/feature/${n.layer}/${n.latent}`;
    return;
  }
  if (state.pinned.has(id)) state.pinned.delete(id);
  else state.pinned.add(id);
  render();
}

function renderLists() {
  const pinned = document.getElementById("pinned");
  pinned.replaceChildren(...[...state.pinned].map((id) => MS.el("li", {"data-id": id}, describe(id), " ",
    MS.el("button", {class: "unpin", text: "×", onclick: () => { state.pinned.delete(id); render(); }}))));
  const groups = document.getElementById("supernodes");
  groups.replaceChildren(...state.groups.map((group, k) => (group ? MS.el("li", {"data-id": `s:${k}`},
    `${group.name} (${group.members.length} nodes) `, MS.el("button", {class: "ungroup", text: "ungroup", onclick: () => ungroup(k)})) : "")));
}

function group() {
  const members = [...state.pinned].filter((id) => !id.startsWith("s:"));
  if (members.length < 2) return MS.status(document.getElementById("status"), "pin two or more nodes to group them", true);
  const name = document.getElementById("group-name").value.trim() || `supernode ${state.groups.length + 1}`;
  const k = state.groups.push({name, members}) - 1;
  for (const id of members) { state.owner.set(id, `s:${k}`); state.pinned.delete(id); }
  document.getElementById("group-name").value = "";
  render();
}

function ungroup(k) {
  for (const id of state.groups[k].members) state.owner.delete(id);
  state.pinned.delete(`s:${k}`);
  state.groups[k] = null;
  render();
}

// the pinned features, those inside pinned supernodes included
function selectedFeatures() {
  const ids = [...state.pinned].flatMap((id) => (id.startsWith("s:") ? state.groups[Number(id.slice(2))].members : [id]));
  return ids.map((id) => state.byId.get(id)).filter((n) => n.kind === "feature");
}

async function intervene(value) {
  const status = document.getElementById("status"), chosen = selectedFeatures();
  if (!chosen.length) return MS.status(status, "pin feature nodes (shift-click) to intervene on them", true);
  const edits = chosen.map((n) => ({layer: n.layer, pos: n.pos, latent: n.latent, value}));
  MS.status(status, "running…");
  try {
    const r = await MS.post(`/api/graph/${encodeURIComponent(state.graph.name)}/intervene`, {edits});
    const rows = r.tokens.map((tok, i) => MS.el("tr", {"data-token": tok}, MS.el("td", {text: MS.alone(tok)}),
      MS.el("td", {class: "clean", "data-value": r.clean[i], text: MS.fmt(r.clean[i], 4)}),
      MS.el("td", {class: "edited", "data-value": r.edited[i], text: MS.fmt(r.edited[i], 4)}),
      MS.el("td", {class: r.diff[i] >= 0 ? "up" : "down", text: `${r.diff[i] >= 0 ? "+" : ""}${MS.fmt(r.diff[i], 3)}`})));
    const head = MS.el("tr", {}, ...["logit", "clean", "edited", "Δ"].map((h) => MS.el("th", {text: h})));
    document.getElementById("logits").replaceChildren(head, ...rows);
    const was = r.edits.map((e) => MS.fmt(e.clean_value, 3)).join(", ");
    MS.status(status, `${value === 0 ? "ablated" : `set to ${value}`}: ${edits.length} feature${edits.length > 1 ? "s" : ""} (clean: ${was})`);
  } catch (e) {
    MS.status(status, e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  const name = document.body.dataset.graph;
  try {
    state.graph = await MS.get(`/api/graph/${encodeURIComponent(name)}`);
  } catch (e) {
    return MS.status(document.getElementById("status"), e.message, true);
  }
  for (const n of state.graph.nodes) state.byId.set(n.id, n);
  render();
  document.getElementById("group").addEventListener("click", group);
  document.getElementById("ablate").addEventListener("click", () => intervene(0));
  document.getElementById("steer").addEventListener("click", () => intervene(Number(document.getElementById("value").value)));
});
