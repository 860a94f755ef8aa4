"""Playwright driving Debian's chromium (/usr/bin/chromium, installed by `make test`/`make test-slow`)
against a real dashboard server: the `browser` and `tab` fixtures of the dashboard's browser tests
(tests/dashboard/conftest.py) and a JSON helper to compare pages with the API. Screenshots go to
test-artifacts/screenshots/ for a reviewer; any console error fails the test."""

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


def launch():
    """Yields a headless chromium (the browser fixture's body)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class Tab:
    page: object
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        """Screenshot to test-artifacts/screenshots/NAME.png; no console errors so far."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        assert self.errors == []


def open_tab(browser, url: str):
    """Yields a Tab on a fresh 1280x900 context at `url`; fails on any console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    t = Tab(page)
    page.on("console", lambda m: t.errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: t.errors.append(f"page error: {e}"))
    yield t
    context.close()
    assert t.errors == []


def api(dashboard_url, path, body=None):
    with httpx.Client(base_url=dashboard_url, timeout=60) as http:
        return (http.post(path, json=body) if body is not None else http.get(path)).json()
