"""The dashboard's JSON API and pages through FastAPI's TestClient: every endpoint against the library
computed independently, the limits (body, tokens, ids, caps: clean 4xx), the Host allowlist and no
paths outside the run directory; then a real uvicorn server: 16 concurrent requests equal sequential
ones with no hooks left on the model, an oversized upload leaves it responsive; `monosemantic view`
as a real process."""

import concurrent.futures
import html
import json
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import httpx
import pytest
import torch
from dashboard_server import view_process
from fastapi.testclient import TestClient

from monosemantic.analysis.cooccurrence import cooccurring
from monosemantic.analysis.dictionary_density import density_histogram
from monosemantic.analysis.loss_effect import load_loss_effects
from monosemantic.dashboard import allowed_hosts, bind, is_loopback
from monosemantic.dashboard.feature_page import distinct
from monosemantic.data.corpora import prompt_ids
from monosemantic.hooks import capture
from monosemantic.models import direct_logit_path

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
TEXT = "12 + 7 = 19"


@pytest.fixture(scope="module")
def client(dashboard_app):
    return TestClient(dashboard_app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def dash(dashboard_app):
    return dashboard_app.state.dashboard


def latents_by_hand(dash, text):
    """[n_tokens, d_sae]: the SAE on the hookpoint's activations, BOS left out."""
    src = dash.run_model
    with capture(src.model, src.hookpoint) as acts:
        src.model(input_ids=torch.tensor([prompt_ids(src.tokenizer, text)]))
    return src.sae.encode(acts[src.hookpoint][0, 1:])


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_text_gives_each_token_its_top_features_and_the_totals(client, dash):
    r = client.post("/api/text", json={"text": TEXT, "k": 3, "features": 10})
    assert r.status_code == 200, r.text
    data = r.json()
    z = latents_by_hand(dash, TEXT)
    assert "".join(t["token"] for t in data["tokens"]) == TEXT
    labels = dash.store.labels(list(range(dash.n_latents)))
    dense = dash.store.dense_latents()
    assert dense  # the tiny run has dense features: they rank after all others that fire

    def ranked(values, n):  # firing latents, non-dense first, each group by activation
        firing = [j for j in range(values.numel()) if values[j] > 0]
        return sorted(firing, key=lambda j: (j in dense, -values[j].item()))[:n]

    for t, row in zip(data["tokens"], z):
        top = ranked(row, 3)
        assert [f["id"] for f in t["features"]] == top
        assert [f["act"] for f in t["features"]] == pytest.approx([row[j].item() for j in top], rel=1e-5)
        assert all(f["label"] == labels[f["id"]] for f in t["features"])
    totals = z.sum(0)
    best = ranked(totals, 10)
    assert [f["id"] for f in data["features"]] == best
    for f in data["features"]:
        assert f["total"] == pytest.approx(totals[f["id"]].item(), rel=1e-5)
        assert f["acts"] == pytest.approx(z[:, f["id"]].tolist(), abs=1e-6)
        assert f["active"] == int((z[:, f["id"]] > 0).sum())


def test_feature_summary_activations_trace_and_document(client, dash):
    i = dash.store.list(limit=1, labelled=True)[0].index
    f = dash.store.feature(i)
    got = client.get(f"/api/feature/{i}").json()
    effects = got.pop("logit_effects")
    densities = dash.store.column("density")
    assert got.pop("density_comparison") == {"density": f.density, **density_histogram(densities)}
    stored = cooccurring(dash.store.directory, i, dash.store.manifest["shard_latents"], dash.n_latents)
    labels = dash.store.labels([p["feature"] for p in stored["partners"]])
    assert got.pop("cooccurring") == {
        "tokens": stored["tokens"],
        "partners": [{**p, "label": labels.get(p["feature"])} for p in stored["partners"]],
    }
    shards = dash.store.manifest["shard_latents"]
    assert got.pop("loss_effect") == load_loss_effects(dash.store.directory, i, shards, dash.n_latents)
    assert got == json.loads(json.dumps(asdict(f)))
    # ranked within the predicted set: the full-vocabulary direct logits, sorted by hand among the set's ids
    run = dash.run_model
    counts = {
        int(k): v for k, v in json.loads((dash.store.directory / "predicted_tokens.json").read_text())["counts"].items()
    }
    with torch.no_grad():
        logits = direct_logit_path(run.model, run.hookpoint)(run.sae.W_dec[i : i + 1])[0].tolist()
    order = sorted(counts, key=lambda t: -logits[t])
    assert [[run.vocab[t], logits[t], counts[t]] for t in order[:10]] == [
        [tok, pytest.approx(v, abs=1e-6), c] for tok, v, c in effects["promotes"]
    ]
    assert [run.vocab[t] for t in order[::-1][:10]] == [tok for tok, _, _ in effects["suppresses"]]
    summary = client.get(f"/api/feature/{i}/summary").json()
    assert summary == {
        "index": i,
        "label": f.label.text,
        "precision": f.label.precision,
        "recall": f.label.recall,
        "density": f.density,
        "max_act": f.max_act,
        "kind": f.label.kind,
        "fires": f.fires,
    }
    acts = client.post(f"/api/feature/{i}/activations", json={"text": TEXT}).json()
    assert acts["acts"] == pytest.approx(latents_by_hand(dash, TEXT)[:, i].tolist(), abs=1e-6)
    traced = client.get(f"/api/feature/{i}/trace", params={"n": 2}).json()
    assert traced == [asdict(t) for t in dash.store.trace(i, 2)]
    ex = f.top_examples[0]
    doc = client.get(f"/api/document/{ex.doc}", params={"feature": i}).json()
    assert doc["text"] == traced[0]["text"] and doc["meta"]["language"]
    assert doc["acts"][doc["positions"].index(ex.position)] == pytest.approx(ex.value, rel=1e-5)
    assert "acts" not in client.get(f"/api/document/{ex.doc}").json()


def test_search_by_label_token_and_id_and_listing(client, dash):
    by_token = client.get("/api/search", params={"q": "="}).json()["results"]
    assert by_token[0]["label"] and "=" in by_token[0]["label"]  # the best match is a feature labelled with "="
    assert [s["index"] for s in client.get("/api/search", params={"q": "#82"}).json()["results"]][:1] == [82]
    assert client.get("/api/search", params={"q": "82"}).json()["results"][0]["index"] == 82
    label_word = client.get("/api/search", params={"q": "multiplication", "floor": 0}).json()["results"]
    assert [{k: v for k, v in s.items() if k != "matched"} for s in label_word] == [
        asdict(s) for s in dash.store.search("multiplication", 50)
    ]
    listed = client.get("/api/features", params={"order": "precision", "limit": 20, "labelled": True}).json()
    assert [s["precision"] for s in listed] == sorted((s["precision"] for s in listed), reverse=True)
    assert len(listed) == 20 and all(s["label"] for s in listed)


def test_playground_runs_the_library_interventions(client, dash):
    prompt = "3 + 4 = "
    body = {
        "prompt": prompt,
        "new_tokens": 8,
        "interventions": [{"feature": 82, "kind": "steer", "value": 200.0}, {"feature": 3, "kind": "mean"}],
    }
    data = client.post("/api/playground", json=body).json()
    ids = prompt_ids(dash.run_model.tokenizer, prompt)
    assert data["before"] == json.loads(json.dumps(asdict(dash.run_model.predict(ids, new_tokens=8))))
    assert data["after"]["continuation"] != data["before"]["continuation"]
    assert data["interventions"] == [
        {"kind": "steer", "feature": 82, "value": 200.0},
        {"kind": "mean", "feature": 3, "value": pytest.approx(dash.store.mean_activation([3])[0])},
    ]
    zero = client.post("/api/playground", json={"prompt": prompt, "interventions": [{"feature": 5, "kind": "zero"}]})
    assert zero.status_code == 200 and len(zero.json()["after"]["next_tokens"]) == 10
    assert no_hooks(dash.run_model.model)


def test_run_overview(client, analysed_run):
    run = client.get("/api/run").json()
    assert run["sae"]["d_sae"] == 256 and run["train"]["data"]["hookpoint"] == "layers.1.mlp.neurons"
    assert run["eval"]["metrics"]["l0"] == pytest.approx(8.0) and len(run["metrics"]) >= 2
    assert run["store"]["features"] == 256 and run["max_tokens"] == 64  # the tiny model's context
    page = client.get("/run").text
    assert "Training curves" in page and "<polyline" in page and "density histogram" in page
    png = client.get("/files/plots/training.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert png.content == (analysed_run / "plots" / "training.png").read_bytes()


def test_pages_render(client, dash):
    f = dash.store.feature(82)
    home = client.get("/", params={"text": "1 < 2"})
    assert home.status_code == 200 and 'id="text"' in home.text and "1 &lt; 2" in home.text
    page = client.get("/feature/82").text
    assert "Feature 82" in page and 'class="histogram"' in page
    assert page.count('class="example"') == len(distinct(f.top_examples)) + sum(
        len(distinct(r.examples)) for r in f.samples
    )
    assert f'href="/document/{f.top_examples[0].doc}?feature=82&amp;position={f.top_examples[0].position}"' in page
    assert "precision" in page and "Nearest features" in page and "try-text" in page
    top = f.top_examples[0]
    doc = client.get(f"/document/{top.doc}", params={"feature": 82, "position": top.position})
    assert doc.status_code == 200 and 'class="t active"' in doc.text
    equals = client.get("/api/search", params={"q": "="}).json()["results"][0]["index"]
    assert f"#{equals}" in client.get("/search", params={"q": "="}).text
    assert 'data-features="[82]"' in client.get("/playground", params={"feature": 82}).text
    for path in ("/static/common.js", "/static/text.js", "/static/dashboard.css"):
        assert client.get(path).status_code == 200
    assert "script-src 'self'" in home.headers["content-security-policy"]


def test_example_tokens_show_their_role_on_hover(client, dash):
    f = dash.store.feature(82)
    page = client.get("/feature/82").text
    actives = re.findall(r'<span class="t active" style="[^"]*" title="([^"]*)">', page)
    examples = f.top_examples + [e for r in f.samples for e in r.examples]
    assert len(actives) == len(examples) and all(ex.role for ex in examples)
    for title, ex in zip(actives, examples):
        assert html.unescape(title) == f"{ex.acts[ex.active]:.4g} · {ex.role}"
    assert client.get("/api/feature/82").json()["top_examples"][0]["role"] == f.top_examples[0].role


# ---- limits -------------------------------------------------------------------------------------


def test_a_body_over_1_mb_is_413_at_once_declared_or_streamed(client):
    started = time.perf_counter()
    r = client.post("/api/text", content=b"x" * ((1 << 20) + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "at most 1048576 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 65536

    r = client.post("/api/text", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and time.perf_counter() - started < 2
    almost = json.dumps({"text": "1" * 5000}).encode()
    assert client.post("/api/text", content=almost, headers={"content-type": "application/json"}).status_code == 400


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/text", {"text": "1" * 100}, 400, "the text has 101 tokens; the dashboard takes at most 64"),
        ("/api/text", {"text": "1" * 5000}, 400, "text of 5000 characters; the dashboard takes at most 4096"),
        ("/api/text", {"text": TEXT, "k": 0}, 400, "k = 0 is out of range; expected 1 to 32"),
        ("/api/text", {"text": TEXT, "k": 1000}, 400, "k = 1000 is out of range; expected 1 to 32"),
        ("/api/text", {"text": TEXT, "features": 10**6}, 400, "features = 1000000 is out of range"),
        ("/api/text", {"text": TEXT, "top_k": 3}, 422, "top_k: Extra inputs are not permitted"),
        ("/api/text", {"txt": TEXT}, 422, "text: Field required"),
        (
            "/api/feature/256/activations",
            {"text": TEXT},
            404,
            "feature 256 does not exist; this SAE has features 0-255",
        ),
        (
            "/api/playground",
            {"prompt": "1", "interventions": [{"feature": 256, "kind": "zero"}]},
            400,
            "feature 256 does not exist",
        ),
        (
            "/api/playground",
            {"prompt": "1", "interventions": [{"feature": 1, "kind": "steer", "value": 1e6}]},
            400,
            "steer value of feature 1 = 1000000.0 is out of range; expected -1000 to 1000",
        ),
        (
            "/api/playground",
            {"prompt": "1", "interventions": [{"feature": 1, "kind": "explode"}]},
            422,
            "interventions.0.kind: Input should be 'zero', 'mean', 'clamp' or 'steer'",
        ),
        (
            "/api/playground",
            {"prompt": "1", "interventions": [{"feature": i, "kind": "zero"} for i in range(17)]},
            400,
            "number of interventions = 17 is out of range; expected 0 to 16",
        ),
        (
            "/api/playground",
            {"prompt": "1", "new_tokens": 33},
            400,
            "new_tokens = 33 is out of range; expected 0 to 32",
        ),
        (
            "/api/playground",
            {"prompt": "1" * 50, "new_tokens": 20},
            400,
            "the text has 51 tokens; the dashboard takes at most 44 here (64 in all, with the continuation)",
        ),
    ],
)
def test_refused_requests_are_clean_4xx_naming_the_value(client, path, body, status, message):
    r = client.post(path, json=body)
    assert r.status_code == status and message in r.json()["detail"], r.text


def test_bad_ids_queries_and_nan_are_clean_4xx(client):
    missing = {"detail": "feature 256 does not exist; this SAE has features 0-255"}
    assert client.get("/api/feature/256").json() == missing
    assert client.get("/api/feature/256").status_code == 404 and client.get("/api/feature/-1").status_code == 404
    r = client.get("/api/feature/abc")
    assert r.status_code == 422 and "i: Input should be a valid integer" in r.json()["detail"]
    page = client.get("/feature/300", headers={"accept": "text/html"})
    assert page.status_code == 404 and "feature 300 does not exist" in page.text and "<html" in page.text
    assert client.get("/api/search", params={"q": " "}).status_code == 400
    assert client.get("/api/search", params={"q": "=", "limit": 10**6}).status_code == 400
    assert client.get("/api/features", params={"order": "nonsense"}).status_code == 422
    assert client.get("/api/document/-1").status_code == 404
    assert client.get("/api/document/1", params={"feature": 999}).status_code == 400
    nan = b'{"prompt": "1", "interventions": [{"feature": 1, "kind": "clamp", "value": NaN}]}'
    r = client.post("/api/playground", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "value" in r.json()["detail"]


def test_host_header_allowlist(client):
    r = client.get("/api/health", headers={"host": "evil.example:8000"})
    assert r.status_code == 400 and "host 'evil.example' is not allowed" in r.json()["detail"]
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    assert allowed_hosts("0.0.0.0") == ("127.0.0.1", "localhost", "::1")
    assert allowed_hosts("192.168.1.5", ("box.lan",)) == ("127.0.0.1", "localhost", "::1", "192.168.1.5", "box.lan")
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")


@pytest.mark.parametrize(
    "path",
    [
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/files/plots/cfg.json",
        "/files/plots/..%2fcfg.json",
        "/files/plots/%2e%2e%2fsae.safetensors",
        "/files/cfg.json",
        "/files/plots/",
    ],
)
def test_no_paths_outside_the_run_directory_or_the_static_folder(client, path):
    r = client.get(path)
    assert r.status_code == 404 and not r.content.startswith(b'{\n  "arch"') and b"import" not in r.content


# ---- a real server ------------------------------------------------------------------------------


def requests_mix():
    """16 requests that all run the model: texts, feature activations, playground runs with hooks."""
    out = []
    for n in range(16):
        if n % 4 == 0:
            out.append(("/api/text", {"text": f"{n} + {n + 3} = {2 * n + 3}", "k": 4}))
        elif n % 4 == 1:
            out.append((f"/api/feature/{n * 13 % 256}/activations", {"text": f"{n} × 7 = {7 * n}"}))
        else:
            kind = ("steer", "clamp")[n % 2]
            out.append(
                (
                    "/api/playground",
                    {
                        "prompt": f"{n} − 4 = ",
                        "new_tokens": 6,
                        "interventions": [{"feature": n * 7 % 256, "kind": kind, "value": 40.0}],
                    },
                )
            )
    return out


def test_16_concurrent_requests_equal_sequential_ones_and_leave_no_hooks(dashboard_url, dash):
    mix = requests_mix()
    with httpx.Client(base_url=dashboard_url, timeout=60) as http:
        sequential = [http.post(path, json=body).json() for path, body in mix]
    barrier = threading.Barrier(len(mix))

    def send(item):
        with httpx.Client(base_url=dashboard_url, timeout=60) as http:
            barrier.wait()
            return http.post(item[0], json=item[1])

    with concurrent.futures.ThreadPoolExecutor(len(mix)) as pool:
        responses = list(pool.map(send, mix))
    assert [r.status_code for r in responses] == [200] * len(mix)
    assert [r.json() for r in responses] == sequential
    assert no_hooks(dash.run_model.model)


def test_an_oversized_upload_gets_413_and_the_server_stays_responsive(dashboard_url):
    with httpx.Client(base_url=dashboard_url, timeout=30) as http:
        started = time.perf_counter()
        r = http.post("/api/text", content=b"x" * (8 << 20), headers={"content-type": "application/json"})
        assert r.status_code == 413 and time.perf_counter() - started < 5
        started = time.perf_counter()
        assert http.get("/api/health").json()["ok"] and time.perf_counter() - started < 1
        assert http.post("/api/text", json={"text": TEXT}).status_code == 200


def test_responses_do_not_wait_for_delayed_acks(dashboard_url):
    """Nagle's algorithm off on the server's connections: without it each response waited ~40 ms."""
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
    with httpx.Client(base_url=dashboard_url, timeout=30) as http:
        http.get("/api/health")
        times = []
        for _ in range(20):
            started = time.perf_counter()
            http.get("/api/health")
            times.append(time.perf_counter() - started)
    assert sorted(times)[10] < 0.03, times


@pytest.mark.process
def test_view_command_serves_and_prints_its_url(analysed_run):
    with view_process(analysed_run) as url:
        assert httpx.get(url + "api/health", timeout=30).json() == {"ok": True, "run": "run", "features": 256}
        assert "Text" in httpx.get(url, timeout=30).text


@pytest.mark.process
def test_view_warns_off_loopback_and_refuses_bad_arguments(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "monosemantic", "view", str(tmp_path / "nothing"), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "warning: --host 0.0.0.0 makes the dashboard reachable" in run.stderr
    assert "no feature store yet" in run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "monosemantic", "view", str(tmp_path), "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "expected a port number 0-65535" in bad.stderr
