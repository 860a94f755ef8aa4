"""The graph view of a transcoder set (dashboard/graph_app.py, graphs.py, static/graph.js): a tiny set
built in-process (random transcoders on the tiny GPT-2) with one graph traced by `trace_prompt`, served
by a real uvicorn server and driven in Debian's chromium; interventions checked against the model run
by hand with a hook."""

import json
import shutil

import httpx
import pytest
import torch
from browser_tab import api
from dashboard_server import running, view_process
from playwright.sync_api import expect

from monosemantic.atomic import atomic_write_json
from monosemantic.circuits.graph import TraceConfig, trace_prompt
from monosemantic.circuits.intervene import intervene
from monosemantic.cli.main import main
from monosemantic.dashboard.graph_app import create_graph_app
from monosemantic.dashboard.graphs import GraphSet
from monosemantic.data.corpora import prompt_ids
from monosemantic.models import load_model
from monosemantic.sae import SAEConfig, create_sae

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.process]  # a server (and chromium)
PROMPT = "47 + 35 = "


@pytest.fixture(scope="module")
def tset(tiny_model_dirs, tmp_path_factory):
    """RUN/hookpoints.json + RUN/layers.L.mlp/ (random TopK transcoders) + RUN/graphs/g.json, as
    `train --transcoder` and `trace` leave them."""
    model_dir = tiny_model_dirs["gpt2"]
    model, tokenizer = load_model(model_dir)
    run = tmp_path_factory.mktemp("tset") / "tc"
    torch.manual_seed(0)
    tcs = []
    for layer in range(model.config.n_layer):
        cfg = SAEConfig(arch="transcoder", d_in=model.config.n_embd, d_sae=64, k=4, apply_b_dec_to_input=False)
        cfg.hookpoint, cfg.output_hookpoint, cfg.model = (
            f"layers.{layer}.mlp.in",
            f"layers.{layer}.mlp.out",
            str(model_dir),
        )
        tc = create_sae(cfg).eval()
        with torch.no_grad():
            tc.b_enc.normal_(0, 0.1)
            tc.b_dec.normal_(0, 0.1)
        tc.save(run / f"layers.{layer}.mlp")
        tcs.append(tc)
    hookpoints = [f"layers.{layer}.mlp" for layer in range(model.config.n_layer)]
    saved = {"hookpoints": hookpoints, "data": {"model": str(model_dir), "corpus": "mathlm"}}
    atomic_write_json(run / "hookpoints.json", {**saved, "sae_options": {"arch": "transcoder"}})
    graph = trace_prompt(model, tokenizer, tcs, PROMPT, TraceConfig(node_threshold=0.95, edge_threshold=0.99))
    (run / "graphs").mkdir()
    atomic_write_json(run / "graphs" / "g.json", graph)
    return run


@pytest.fixture(scope="module")
def graphs(tset):
    return GraphSet(tset)


@pytest.fixture(scope="module")
def url(graphs):
    with running(create_graph_app(graphs)) as u:
        yield u


@pytest.fixture
def graph_tab(browser, url):
    from browser_tab import open_tab

    yield from open_tab(browser, url)


def saved_graph(tset) -> dict:
    return json.loads((tset / "graphs" / "g.json").read_text())


def last_layer_feature(graph: dict) -> dict:
    layer = max(n["layer"] for n in graph["nodes"] if n["kind"] == "feature")
    return max((n for n in graph["nodes"] if n["kind"] == "feature" and n["layer"] == layer), key=lambda n: n["pos"])


def test_api_serves_the_graph_and_refuses_bad_names_and_edits(url, tset):
    g = saved_graph(tset)
    got = api(url, "/api/graph/g")
    assert [n["id"] for n in got["nodes"]] == [n["id"] for n in g["nodes"]]
    assert all(n["analysed"] is False for n in got["nodes"] if n["kind"] == "feature")
    assert api(url, "/api/graphs")[0]["name"] == "g"
    f = last_layer_feature(g)
    edit = {"layer": f["layer"], "pos": f["pos"], "latent": f["latent"], "value": 0.0}
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.get("/api/graph/..%2F..%2Fhookpoints")
        assert r.status_code in (400, 404), r.text
        assert http.get("/api/graph/nope").status_code == 404
        r = http.post("/api/graph/g/intervene", json={"edits": [{**edit, "layer": 9}]})
        assert r.status_code == 400 and "layer = 9 is out of range" in r.json()["detail"]
        r = http.post("/api/graph/g/intervene", json={"edits": [edit] * 33})
        assert r.status_code == 400 and "number of edits = 33" in r.json()["detail"]
        r = http.post("/api/graph/g/intervene", json={"edits": [{**edit, "value": 1e9}]})
        assert r.status_code == 400 and "out of range" in r.json()["detail"]
        r = http.post("/api/trace", json={"prompt": "1 + 1 = " * 40})
        assert r.status_code == 400 and "the model's context is 64" in r.json()["detail"]
        r = http.post("/api/trace", json={"prompt": "3 + 4 = ", "target": "77777"})
        assert r.status_code == 400 and "give exactly one token" in r.json()["detail"]
        r = http.get("/api/graph/g", headers={"host": "evil.example"})
        assert r.status_code == 400


def test_one_trace_at_a_time(url, graphs):
    graphs.trace_lock.acquire()
    try:
        r = httpx.post(url + "api/trace", json={"prompt": "3 + 4 = "}, timeout=60)
    finally:
        graphs.trace_lock.release()
    assert r.status_code == 409 and r.json()["detail"] == "a trace is already running; wait for it to finish"


def test_graph_renders_every_node_hover_and_click_through(graph_tab, tset):
    page, g = graph_tab.page, saved_graph(tset)
    page.goto("/graph/g")
    expect(page.locator("svg .node")).to_have_count(len(g["nodes"]))
    assert page.locator("svg .edge").count() == min(len(g["edges"]), 1500)
    f = last_layer_feature(g)
    node = page.locator(f'svg .node[data-id="{f["id"]}"]')
    node.hover()
    info = page.locator("#node-info")
    assert info.locator(".describe").inner_text() == f"L{f['layer']} f{f['latent']} @{f['token']!r}({f['pos']})"
    assert info.locator(".label").inner_text() == "label: not analysed"
    activation = float(info.locator(".activation").inner_text().split()[-1])
    assert activation == pytest.approx(f["activation"], rel=1e-3)  # shown to 4 significant digits
    graph_tab.shot("graph-view")
    node.click()
    page.wait_for_url(f"**/feature/{f['layer']}/{f['latent']}")
    assert page.locator("h1").inner_text() == f"Layer {f['layer']} feature {f['latent']}"
    layer_dir = tset / f"layers.{f['layer']}.mlp"
    assert f"monosemantic analyze {layer_dir}" in page.locator("#not-analysed").inner_text()


def test_pin_and_group_into_a_supernode_with_summed_edges(graph_tab, tset):
    page, g = graph_tab.page, saved_graph(tset)
    page.goto("/graph/g")
    feats = [n for n in g["nodes"] if n["kind"] == "feature"]
    a, b = feats[0], feats[1]
    for n in (a, b):
        page.locator(f'svg .node[data-id="{n["id"]}"]').click(modifiers=["Shift"])
    assert page.locator("#pinned li").count() == 2
    page.fill("#group-name", "operands")
    page.click("#group")
    expect(page.locator("svg .supernode")).to_have_count(1)
    assert page.locator("svg .supernode text").text_content() == "operands"
    assert page.locator("svg .node").count() == len(g["nodes"]) - 2
    # every edge out of the supernode carries the sum of its members' edges to that target
    sums: dict[str, float] = {}
    for e in g["edges"]:
        if e["source"] in (a["id"], b["id"]) and e["target"] not in (a["id"], b["id"]):
            sums[e["target"]] = sums.get(e["target"], 0.0) + e["weight"]
    drawn = page.locator('svg .edge[data-source="s:0"]')
    assert drawn.count() == len(sums) > 0
    for line in drawn.all():
        assert float(line.get_attribute("data-weight")) == pytest.approx(sums[line.get_attribute("data-target")])
    graph_tab.shot("graph-supernode")


def test_intervening_from_the_graph_shows_the_models_logits(graph_tab, url, tset, graphs):
    page, g = graph_tab.page, saved_graph(tset)
    page.goto("/graph/g")
    f = last_layer_feature(g)
    page.locator(f'svg .node[data-id="{f["id"]}"]').click(modifiers=["Shift"])
    page.fill("#value", "3")
    page.click("#steer")
    expect(page.locator("#logits td.edited")).to_have_count(len([n for n in g["nodes"] if n["kind"] == "logit"]))
    edit = {"layer": f["layer"], "pos": f["pos"], "latent": f["latent"], "value": 3.0}
    expected = api(url, "/api/graph/g/intervene", {"edits": [edit]})
    shown = [float(c.get_attribute("data-value")) for c in page.locator("#logits td.edited").all()]
    clean = [float(c.get_attribute("data-value")) for c in page.locator("#logits td.clean").all()]
    assert shown == expected["edited"] and clean == expected["clean"]
    ids = prompt_ids(graphs.tokenizer, PROMPT)
    tokens = [n["token_id"] for n in g["nodes"] if n["kind"] == "logit"]
    direct = intervene(graphs.model, graphs.transcoders, ids, [edit], tokens)  # the library, no server
    assert shown == direct["edited"] and clean == direct["clean"]
    assert shown != clean
    graph_tab.shot("graph-intervene")


@pytest.fixture(scope="module")
def analysed(tset, tmp_path_factory):
    """A copy of the set whose last feature layer's transcoder `monosemantic analyze` has analysed,
    served; (url, layer directory)."""
    run = tmp_path_factory.mktemp("analysed") / "tc"
    shutil.copytree(tset, run)
    layer_dir = run / f"layers.{last_layer_feature(saved_graph(tset))['layer']}.mlp"
    argv = ["-q", "analyze", str(layer_dir), "--tokens", "3000", "--corpus", "mathlm", "--batch-tokens", "1024"]
    assert main(argv) == 0
    with running(create_graph_app(run)) as u:
        yield u, layer_dir


def test_an_analysed_layer_labels_its_nodes_and_feature_pages(browser, analysed, tset):
    from browser_tab import open_tab

    from monosemantic.analysis.store import FeatureStore

    url, layer_dir = analysed
    f = last_layer_feature(saved_graph(tset))
    label = FeatureStore.open(layer_dir).labels([f["latent"]])[f["latent"]]
    node = next(n for n in api(url, "/api/graph/g")["nodes"] if n["id"] == f["id"])
    assert node["analysed"] is True and node["label"] == label
    for tab in open_tab(browser, url):
        tab.page.goto("/graph/g")
        tab.page.locator(f'svg .node[data-id="{f["id"]}"]').hover()
        assert tab.page.locator("#node-info .label").inner_text() == f"label: {label or '–'}"
        tab.page.goto(f"/feature/{f['layer']}/{f['latent']}")
        assert f"label: {label or '–'}" in tab.page.locator("#feature-label").inner_text()


def test_trace_this_opens_the_new_graph(graph_tab, tset):
    page = graph_tab.page
    page.goto("/")
    page.fill("#text", "12 + 7 = ")
    page.click("#trace")
    page.wait_for_url("**/graph/12_7")
    graph = json.loads((tset / "graphs" / "12_7.json").read_text())
    assert graph["prompt"] == "12 + 7 = "
    expect(page.locator("svg .node")).to_have_count(len(graph["nodes"]))


@pytest.mark.slow  # a second process loads the model (~30 s on a busy 2-core machine)
def test_view_serves_a_transcoder_set(tset):
    with view_process(tset) as u:
        assert httpx.get(u + "api/health").json() == {"ok": True, "run": "tc", "layers": 2}
        assert "Graph g" in httpx.get(u + "graph/g").text
