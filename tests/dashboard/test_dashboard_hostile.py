"""The dashboard against a hostile client and a hostile run directory, over real HTTP (issue 18, cases
13-18): integers past a float's range and text that no tokenizer or SQLite takes are clean 4xx naming
the field; a plot that links out of the run directory is not served; eval.json is escaped and checked
by type; stalled half-sent requests are cut off and open connections capped (`monosemantic view` as a
real process, raw sockets); documents the analysis took no example from are 404, not made up."""

import html
import json
import os
import select
import shutil
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from dashboard_server import running, view_process

from monosemantic.dashboard import create_app

pytestmark = [pytest.mark.process, pytest.mark.usefixtures("one_thread")]
REQUEST_SECONDS, MAX_CONNECTIONS = 10, 64  # what `monosemantic view` allows (the README says so)
HUGE = 10**400
TEXT = "12 + 7 = 19"


def post_raw(url: str, path: str, body: str) -> httpx.Response:
    """POST `body` as given: JSON escapes such as \\ud800 reach the server unchanged."""
    return httpx.post(url + path.lstrip("/"), content=body.encode(), headers={"content-type": "application/json"})


# ---- 13: integers past a float's range ----------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body, field",
    [
        ("post", "/api/text", f'{{"text": "{TEXT}", "k": {HUGE}}}', "k"),
        ("post", "/api/text", f'{{"text": "{TEXT}", "features": {HUGE}}}', "features"),
        ("post", "/api/playground", f'{{"prompt": "1", "top": {HUGE}}}', "top"),
        ("post", "/api/playground", f'{{"prompt": "1", "new_tokens": -{HUGE}}}', "new_tokens"),
        ("get", f"/api/search?q=%3D&limit={HUGE}", None, "limit"),
        ("get", f"/api/features?limit={HUGE}", None, "limit"),
        ("get", f"/api/feature/82/trace?n={HUGE}", None, "n"),
    ],
)
def test_huge_integers_are_400_naming_the_field(dashboard_url, method, path, body, field):
    r = post_raw(dashboard_url, path, body) if method == "post" else httpx.get(dashboard_url + path.lstrip("/"))
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{field} = ") and "an integer of 401 digits is out of range; expected" in detail


def test_huge_feature_and_document_ids_are_404_with_a_short_message(dashboard_url):
    for path in (f"api/feature/{HUGE}", f"api/feature/{HUGE}/summary", f"api/document/{HUGE}"):
        r = httpx.get(dashboard_url + path)
        assert r.status_code == 404 and "an integer of 401 digits" in r.json()["detail"], (path, r.text)
        assert len(r.text) < 400


# ---- 14: NUL and lone surrogates ----------------------------------------------------------------


def test_a_nul_in_a_search_is_400_on_the_api_and_the_page(dashboard_url):
    r = httpx.get(dashboard_url + "api/search", params={"q": "a\x00b"})
    assert r.status_code == 400 and r.json()["detail"] == "search has a NUL character (\\x00) at character 1; remove it"
    page = httpx.get(dashboard_url + "search", params={"q": "\x00"}, headers={"accept": "text/html"})
    assert page.status_code == 400 and "search has a NUL character" in page.text and 'id="q"' in page.text


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/text", '{"text": "1 + \\ud800"}', "text"),
        ("/api/playground", '{"prompt": "1 + \\ud800"}', "prompt"),
        ("/api/feature/82/activations", '{"text": "1 + \\ud800"}', "text"),
    ],
)
def test_a_lone_surrogate_is_400(dashboard_url, path, body, field):
    r = post_raw(dashboard_url, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == f"{field} has a lone surrogate (U+D800) at character 4; expected valid Unicode"


# ---- 15, 16: a hostile run directory ------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(analysed_run, tmp_path_factory):
    """(run directory, URL of a real server over it): a copy of `analysed_run` whose training.png is a
    link to a file outside the run, and whose feature_density.png is a link to a plot inside it."""
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    shutil.copytree(analysed_run, run)
    secret = root / "secret.png"
    secret.write_bytes(b"\x89PNG secret outside the run directory")
    plots = run / "plots"
    os.remove(plots / "training.png")
    os.symlink(secret, plots / "training.png")
    os.remove(plots / "feature_density.png")
    os.symlink("label_precision.png", plots / "feature_density.png")
    with running(create_app(run)) as url:
        yield run, url


def test_a_plot_linking_out_of_the_run_directory_is_not_served(hostile):
    run, url = hostile
    r = httpx.get(url + "files/plots/training.png")
    assert r.status_code == 404 and b"secret" not in r.content, r.content
    assert "regular files inside the run directory" in r.json()["detail"]
    inside = httpx.get(url + "files/plots/feature_density.png")  # a link that stays inside is fine
    assert inside.status_code == 200 and inside.content == (run / "plots" / "label_precision.png").read_bytes()
    page = httpx.get(url + "run").text
    assert 'src="/files/plots/training.png"' not in page and 'src="/files/plots/feature_density.png"' in page


GOOD_HISTOGRAM = {"edges": [-2.0, -1.0, 0.0], "counts": [3, 4], "never_fired": 5}


@pytest.mark.parametrize(
    "metrics",
    [
        {"l0": 8.0, "density_histogram": {**GOOD_HISTOGRAM, "never_fired": "<b>x</b>"}},
        {"l0": 8.0, "density_histogram": {**GOOD_HISTOGRAM, "edges": [0.0, 200.0, 400.0]}},  # 10**400 overflows
        {"l0": 8.0, "density_histogram": {**GOOD_HISTOGRAM, "edges": [-1e300, -1.0, 0.0]}},  # 1e300 ticks
        {"l0": 8.0, "density_histogram": {**GOOD_HISTOGRAM, "counts": [3, "<b>x</b>"]}},
        {"l0": 8.0, "density_histogram": {**GOOD_HISTOGRAM, "counts": [3]}},
        {"l0": 8.0, "density_histogram": ["<b>x</b>"]},
        {"l0": 8.0, "fvu": "<b>x</b>", "<b>x</b>": 1, "huge": HUGE},
    ],
)
def test_eval_json_is_escaped_and_checked_by_type(hostile, metrics):
    run, url = hostile
    (run / "eval.json").write_text(json.dumps({"metrics": metrics}))
    r = httpx.get(url + "run")
    assert r.status_code == 200, r.text
    assert "<b>x</b>" not in r.text and "<td>l0</td><td>8</td>" in r.text
    assert ("density histogram in eval.json is not drawn" in r.text) == ("density_histogram" in metrics)
    assert httpx.get(url + "api/run").status_code == 200


def test_a_density_histogram_is_drawn_only_if_it_is_one(hostile):
    run, url = hostile
    (run / "eval.json").write_text(json.dumps({"metrics": {"density_histogram": {**GOOD_HISTOGRAM, "counts": [1]}}}))
    page = httpx.get(url + "run")
    assert page.status_code == 200 and "not drawn" in page.text and '<rect class="bar"' not in page.text
    (run / "eval.json").write_text(json.dumps({"metrics": {"density_histogram": GOOD_HISTOGRAM}}))
    page = httpx.get(url + "run").text
    assert "5 features never fired on these tokens" in page
    assert page.count('<rect class="bar"') == 2 and "not drawn" not in page


@pytest.mark.parametrize(
    "content, why",
    [
        ("{not json", "eval.json</code>: not valid JSON (JSONDecodeError"),
        ('["<b>x</b>"]', "eval.json</code>: a JSON list, not an object; not read"),
        ('{"metrics": 1' + "0" * 5000 + "}", "eval.json</code>: not valid JSON (ValueError"),
    ],
)
def test_an_unreadable_eval_json_is_named_not_a_500(hostile, content, why):
    run, url = hostile
    (run / "eval.json").write_text(content)
    r = httpx.get(url + "run")
    assert r.status_code == 200 and why in r.text and "<b>x</b>" not in r.text, r.text[:300]
    assert httpx.get(url + "api/run").json()["eval"] is None


def test_an_eval_json_linking_out_of_the_run_directory_is_not_read(hostile):
    run, url = hostile
    outside = run.parent / "outside.json"
    outside.write_text(json.dumps({"metrics": {"secret_metric": 1.0}}))
    (run / "eval.json").unlink(missing_ok=True)
    (run / "eval.json").symlink_to(outside)
    try:
        page = httpx.get(url + "run").text
        assert "secret" not in page and "eval.json</code>: not a regular file inside the run directory" in page
    finally:
        (run / "eval.json").unlink()


# ---- 17: stalled clients ------------------------------------------------------------------------


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=REQUEST_SECONDS + 5)


def reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket's timeout)."""
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


def test_stalled_requests_are_cut_off_and_connections_capped(analysed_run):
    with view_process(analysed_run) as url:
        started = time.monotonic()
        half_headers = [connect(url) for _ in range(MAX_CONNECTIONS - 2)]
        for sock in half_headers:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: ")  # never ends
        half_body = connect(url)
        half_body.sendall(b'POST /api/text HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"text": ')
        dripping = connect(url)
        time.sleep(0.5)  # the server has accepted all 64
        over = connect(url)  # sends nothing: a request the server closed on unread would come back as a reset
        refused = reply(over)
        assert refused.startswith(b"HTTP/1.1 503 ") and f"over {MAX_CONNECTIONS} open connections".encode() in refused
        assert time.monotonic() - started < REQUEST_SECONDS / 2  # refused at once, not after the deadline

        # one header byte every half second: the deadline is for the whole request, not between bytes
        for byte in b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 1000:
            if select.select([dripping], [], [], 0)[0] or time.monotonic() - started > REQUEST_SECONDS + 5:
                break  # the server answered (and closed), or it never will
            dripping.sendall(bytes([byte]))
            time.sleep(0.5)
        for sock in [*half_headers, half_body, dripping]:
            got = reply(sock)
            assert got.startswith(b"HTTP/1.1 408 ") and b"did not arrive within %d s" % REQUEST_SECONDS in got, got
            sock.close()
        assert time.monotonic() - started < REQUEST_SECONDS + 5
        assert httpx.get(url + "api/health", timeout=30).json()["ok"]


# ---- 18: documents the analysis never read -------------------------------------------------------


def test_only_documents_holding_an_example_are_served(dashboard_url, dashboard_app):
    store = dashboard_app.state.dashboard.store
    f = store.feature(82)
    examples = {ex.doc for ex in f.top_examples} | {ex.doc for r in f.samples for ex in r.examples}
    for doc in sorted(examples)[:5]:
        assert httpx.get(dashboard_url + f"api/document/{doc}").status_code == 200
    made_up = store.document(10**30).text  # the math corpus makes a document for any number
    for path in (f"api/document/{10**30}", f"document/{10**30}", f"api/document/{10**30}?feature=82"):
        r = httpx.get(dashboard_url + path, headers={"accept": "text/html"})
        text = html.unescape(r.text)
        assert r.status_code == 404 and "holds none of the feature store's examples" in text, (path, text[:300])
        assert made_up not in text
