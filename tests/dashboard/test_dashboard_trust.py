"""What a researcher checks on sight (issue 21), in chromium against a real server: numbers formatted
right, distinct top examples, charts with axes, search with a count, sort and pages, the playground's
whitespace, error handling and dose-response curve."""

import pytest
from browser_tab import api
from playwright.sync_api import expect

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.process]


def three_digits(x: float) -> str:
    """What the pages show: 3 significant digits, integers of 4+ digits whole, no trailing zeros."""
    return str(round(x)) if abs(x) >= 1000 else f"{x:.3g}"


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
