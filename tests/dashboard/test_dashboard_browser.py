"""The dashboard in a real browser: Playwright driving Debian's chromium (/usr/bin/chromium, installed
by `make test`/`make test-slow`) against a real uvicorn server on 127.0.0.1. Each test saves
screenshots to test-artifacts/screenshots/ for a reviewer, and fails on any console error. The pages
run under the dashboard's Content-Security-Policy (no inline or eval'd script), as they do for users."""

import pytest
from browser_tab import api
from playwright.sync_api import expect

from monosemantic.dashboard.service import SUPPORT_FLOOR

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.process]  # chromium and a server, every test


def test_typing_text_shows_feature_chips_on_tokens(tab, dashboard_url):
    page, text = tab.page, "12 + 7 = 19"
    page.goto("/")
    page.locator("#text").press_sequentially(text, delay=30)  # as a user types: requests on the way are aborted
    expect(page.locator(".tok-col")).to_have_count(len(text))
    expect(page.locator("#status")).to_contain_text("tokens")
    expected = api(dashboard_url, "/api/text", {"text": text, "k": 3})
    columns = page.locator(".tok-col")
    for i, token in enumerate(expected["tokens"]):
        chips = columns.nth(i).locator(".chip b").all_inner_texts()
        assert chips == [f"#{f['id']}" for f in token["features"]], i
    columns.nth(3).hover()
    assert page.locator("#token-panel").is_visible()
    assert page.locator("#token-panel li").count() == len(expected["tokens"][3]["features"])
    listed = page.locator("#text-features li .feature-link").all_inner_texts()
    assert listed == [f"#{f['id']}" for f in expected["features"]]  # by total activation
    page.select_option("#sort", "max")
    by_max = sorted(expected["features"], key=lambda f: -f["max"])
    assert page.locator("#text-features li .feature-link").all_inner_texts() == [f"#{f['id']}" for f in by_max]
    assert "text=12" in page.url
    tab.shot("text-view")
    first = expected["tokens"][0]["features"][0]["id"]
    columns.nth(0).locator(".chip").first.click()
    page.wait_for_url(f"**/feature/{first}")
    assert page.locator("h1").inner_text() == f"Feature {first}"


def test_feature_page_shows_histogram_examples_and_traces_them(tab, dashboard_url):
    page = tab.page
    feature = api(dashboard_url, "/api/feature/82")
    page.goto("/feature/82")
    assert page.locator("h1").inner_text() == "Feature 82"
    assert feature["label"]["text"] in page.locator("#feature-label").inner_text()
    assert page.locator("svg.histogram rect.bar").count() >= 1
    assert page.locator("#top-examples .example").count() >= 1
    assert page.locator("#samples .example").count() >= len(feature["samples"])
    top = feature["top_examples"][0]
    text = api(dashboard_url, f"/api/document/{top['doc']}")["text"]  # its top example's document, typed in
    page.locator("#try-text").press_sequentially(text, delay=10)
    expect(page.locator("#try-result .t")).to_have_count(len(text))
    acts = [float(a) for a in page.locator("#try-result .t").evaluate_all("(spans) => spans.map((s) => s.title)")]
    assert max(acts) == pytest.approx(top["value"], rel=1e-3)
    tab.shot("feature-page")
    page.locator("#top-examples .example .source").first.click()
    page.wait_for_url(f"**/document/{top['doc']}?feature=82&position={top['position']}")
    assert page.locator(".document .t.active").inner_text() == top["tokens"][top["active"]]
    tab.shot("document-page")


def test_search_by_label_token_and_number(tab, dashboard_url):
    page = tab.page
    labelled = api(dashboard_url, "/api/features?labelled=true&limit=500")
    languages = [s["label"].removeprefix("language: ") for s in labelled if s["label"].startswith("language: ")]
    assert languages  # labels like "language: French"
    language = languages[0]
    hits = [f"#{s['index']}" for s in labelled if language in s["label"] and s["fires"] >= SUPPORT_FLOOR]
    page.goto("/search")
    page.locator("#q").press_sequentially(language, delay=20)
    expect(page.locator("#results-title")).to_have_text(f"Features matching {language}")
    shown = page.locator("#results .feature-link").all_inner_texts()
    assert set(shown[: len(hits)]) == set(hits)  # label hits first
    assert shown == [f"#{s['index']}" for s in api(dashboard_url, f"/api/search?q={language}")["results"]]
    tab.shot("search-label")
    page.locator("#q").fill("=")
    expect(page.locator("#results-title")).to_have_text("Features matching =")
    equals = api(dashboard_url, "/api/search?q=%3D")["results"][0]["index"]
    assert f"#{equals}" in page.locator("#results .feature-link").all_inner_texts()
    tab.shot("search-token")
    page.locator("#q").fill("#82")
    expect(page.locator("#results-title")).to_have_text("Features matching #82")
    page.locator("#results .feature-link").first.click()
    page.wait_for_url("**/feature/82")


def test_playground_steering_changes_the_continuation(tab, dashboard_url):
    page = tab.page
    page.goto("/playground?feature=82")
    page.wait_for_selector("#edits tbody tr")
    assert page.locator("#edits .kind").input_value() == "steer"
    page.locator("#edits .value").fill("200")
    page.locator("#edits .value").dispatch_event("change")
    page.locator("#new-tokens").fill("8")
    page.click("#run")
    page.wait_for_selector("#after .continuation")
    before = page.locator("#before .continuation").inner_text()
    after = page.locator("#after .continuation").inner_text()
    expected = api(
        dashboard_url,
        "/api/playground",
        {"prompt": "3 + 4 = ", "new_tokens": 8, "interventions": [{"feature": 82, "kind": "steer", "value": 200.0}]},
    )
    assert before == "".join(expected["before"]["continuation"]).replace("\n", "⏎").replace(" ", "␣")
    assert after == "".join(expected["after"]["continuation"]).replace("\n", "⏎").replace(" ", "␣")
    assert before != after
    assert page.locator("#after .next-tokens tr").count() == 10
    tab.shot("playground")


def test_run_overview_page(tab):
    page = tab.page
    page.goto("/run")
    assert page.locator("svg.curve-chart").count() >= 2 and page.locator("svg.density rect.bar").count() >= 1
    images = page.locator("figure img")
    assert images.count() == 3
    assert page.evaluate("[...document.images].every((img) => img.complete && img.naturalWidth > 0)")
    tab.shot("run-overview")
