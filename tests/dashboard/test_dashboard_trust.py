"""What a researcher checks on sight (issue 21), in chromium against a real server: numbers formatted
right, distinct top examples, charts with axes, search with a count, sort and pages, the playground's
whitespace, error handling and dose-response curve."""

import math
import re

import pytest
from browser_tab import api
from playwright.sync_api import expect

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.process]


def three_digits(x: float) -> str:
    """What the pages show (JavaScript's toPrecision(3)): integers of 4+ digits whole, no trailing zeros."""
    if abs(x) >= 1000:
        return str(round(x))
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    if e < -6:  # toPrecision switches to an exponent below 1e-6
        mantissa, exponent = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    s = f"{x:.{max(0, 2 - e)}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def test_numbers_are_formatted_to_three_significant_digits(tab, dashboard_url):
    page = tab.page
    page.goto("/")
    shown = page.evaluate("[110.3, 99.98, 1200, 0.00037, 2.5, 0, -12.34, null].map((x) => MS.fmt(x))")
    assert shown == ["110", "100", "1200", "0.00037", "2.5", "0", "-12.3", "–"]
    text = "12 + 7 = 19 and 345 × 6 = 2070"
    page.locator("#text").fill(text)
    expected = api(dashboard_url, "/api/text", {"text": text, "k": 3})["features"]
    expect(page.locator("#text-features li")).to_have_count(len(expected))
    lines = page.locator("#text-features li .act").all_inner_texts()
    for f, line in zip(expected, lines):
        assert line == f"total {three_digits(f['total'])} · max {three_digits(f['max'])} · {f['active']} tokens"


def windows(page, selector):
    """The text windows shown in `selector`'s example rows (their tokens' text) and their ×n counts."""
    rows = page.locator(f"{selector} .example")
    texts = rows.locator(".tokens").all_inner_texts()
    counts = [int(c.removeprefix("×") or 1) for c in rows.locator(".repeats").all_inner_texts()]
    return texts, counts


def test_top_examples_are_distinct_windows_with_their_counts(tab, dashboard_url):
    page = tab.page
    repeated = None
    for s in api(dashboard_url, "/api/features?order=density&limit=60"):
        f = api(dashboard_url, f"/api/feature/{s['index']}")
        keys = [(tuple(ex["tokens"]), ex["active"]) for ex in f["top_examples"]]
        if len(set(keys)) < len(keys):
            repeated, distinct = f, len(set(keys))
            break
    assert repeated, "no feature of the test run repeats a top example window"
    page.goto(f"/feature/{repeated['index']}")
    texts, counts = windows(page, "#top-examples")
    assert len(texts) == distinct and len(set(texts)) == len(texts)
    assert sum(counts) == len(repeated["top_examples"]) and max(counts) > 1
    for r, heading in zip(repeated["samples"], page.locator("#samples h3").all_inner_texts()):
        assert f"{r['count']} activations; {len(r['examples'])} sampled" in heading
    tab.shot("feature-distinct-examples")


def test_charts_have_axes_ticks_and_counts_on_hover(tab, dashboard_url):
    page = tab.page
    feature = api(dashboard_url, "/api/feature/82")
    page.goto("/feature/82")
    chart = page.locator("svg.histogram:not(.density-compare)")  # the activation histogram
    assert chart.locator(".y-axis").count() == 1 and chart.locator(".x-axis").count() == 1
    y_ticks = chart.locator(".tick.y").all_text_contents()
    fine = feature["histogram"][1:-1]
    assert y_ticks[0] == "0" and y_ticks[-1] == str(max(fine)) and len(y_ticks) >= 2
    assert chart.locator(".tick.x").count() >= 2
    tips = chart.locator("rect.bar title").all_text_contents()
    assert sorted(int(t.rsplit(": ", 1)[1]) for t in tips if not t.endswith(": 0")) == sorted(c for c in fine if c)
    page.goto("/run")
    curves = page.locator("svg.curve-chart")
    assert curves.count() >= 2
    for n in range(curves.count()):
        assert curves.nth(n).locator(".y-axis").count() == 1 and curves.nth(n).locator(".tick.y").count() >= 2
        assert curves.nth(n).locator("circle.point title").count() >= 2
    assert page.locator("svg.density .y-axis").count() == 1
    assert "over the evaluation's" in page.locator("h3", has_text="Feature density").inner_text()
    assert "the feature analysis, on" in page.locator("figcaption", has_text="feature_density.png").inner_text()
    tab.shot("run-axes")


def test_search_shows_count_pages_sort_and_matched_fields(tab, dashboard_url):
    page = tab.page
    q = next(c for c in ("1", "2", "=", "+") if api(dashboard_url, f"/api/search?q={c}&floor=0")["total"] > 50)
    first = api(dashboard_url, f"/api/search?q={q}")
    every = api(dashboard_url, f"/api/search?q={q}&floor=0")
    assert every["total"] == first["total"] + first["hidden"]
    page.goto("/search")
    page.locator("#all").check()
    page.locator("#q").fill(q)
    expect(page.locator("#status")).to_have_text(f"{every['total']} features match")
    links = page.locator("#results .feature-link")
    expect(links).to_have_count(50)
    assert links.all_inner_texts() == [f"#{s['index']}" for s in every["results"]]
    assert page.locator("#results td.matched").all_inner_texts() == [", ".join(s["matched"]) for s in every["results"]]
    page.click("#next")
    second = api(dashboard_url, f"/api/search?q={q}&floor=0&offset=50")["results"]
    expect(links.first).to_have_text(f"#{second[0]['index']}")
    assert links.all_inner_texts() == [f"#{s['index']}" for s in second]
    page.click("th[data-sort=precision]")
    by_precision = api(dashboard_url, f"/api/search?q={q}&floor=0&sort=precision")["results"]
    expect(links.first).to_have_text(f"#{by_precision[0]['index']}")
    shown = [float(p) if p != "–" else None for p in page.locator("#results tbody td:nth-child(2)").all_inner_texts()]
    known = [p for p in shown if p is not None]
    assert known == sorted(known, reverse=True) and shown[: len(known)] == known
    page.locator("#all").uncheck()
    expect(page.locator("#status")).to_contain_text(f"{first['total']} features match")
    if first["hidden"]:
        expect(page.locator("#status")).to_contain_text(f"{first['hidden']} more fire on fewer than")
    tab.shot("search-sorted")


def test_playground_whitespace_errors_and_dose_response(tab, dashboard_url):
    page = tab.page
    max_act = api(dashboard_url, "/api/feature/82/summary")["max_act"]
    page.goto("/playground?feature=82")
    page.wait_for_selector("#edits tbody tr")
    assert float(page.locator("#edits .value").input_value()) == pytest.approx(max_act, rel=0.05)
    page.click("#run")
    expect(page.locator("#before .prompt")).to_have_text("3␣+␣4␣=␣")
    assert " " not in page.locator("#after .continuation").inner_text()
    page.locator("#prompt").fill("9" * 5000)
    page.click("#run")
    expect(page.locator("#status.error")).to_contain_text("5000 characters")
    assert page.locator("#after .continuation, #before .continuation").count() == 0
    tab.errors[:] = [e for e in tab.errors if "status of 400" not in e]  # chromium logs the refused request
    page.locator("#prompt").fill("3 + 4 = ")
    page.select_option("#position", "last")
    alpha = float(page.locator("#alpha").get_attribute("max"))
    page.evaluate(
        f"(() => {{ const s = document.getElementById('alpha'); s.value = '{alpha}'; "
        "s.dispatchEvent(new Event('change')); })()"
    )
    expect(page.locator("#curve circle.point")).to_have_count(9)
    curve = api(
        dashboard_url, "/api/steer-curve", {"prompt": "3 + 4 = ", "feature": 82, "alpha": alpha, "position": "last"}
    )
    tips = page.locator("#curve circle.point title").all_text_contents()
    assert [re.search(r"\) = ([^,]+), KL", t)[1] for t in tips] == [three_digits(p) for p in curve["p_target"]]
    assert float(page.locator("#edits .value").input_value()) == pytest.approx(alpha, rel=1e-2)
    tab.shot("playground-dose-response")


def test_text_view_wraps_between_words(tab):
    page = tab.page
    page.set_viewport_size({"width": 700, "height": 900})
    page.goto("/")
    page.locator("#text").fill("twelve plus seven equals nineteen and three hundred forty five times six " * 2)
    expect(page.locator("#status")).to_contain_text("tokens")
    words = page.locator("#tokens .word")
    tops = set()
    for n in range(words.count()):
        rows = {
            round(b["y"])
            for b in words.nth(n)
            .locator(".tok-col")
            .evaluate_all("(cols) => cols.map((c) => c.getBoundingClientRect().toJSON())")
        }
        assert len(rows) == 1, f"word {n} is broken across lines"
        tops |= rows
    assert len(tops) > 1  # the text did wrap
    tab.shot("text-view-wrapped")
