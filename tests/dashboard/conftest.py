"""The browser fixtures of the dashboard's Playwright tests (`browser_tab.py`)."""

import pytest
from browser_tab import launch, open_tab


@pytest.fixture(scope="module")
def browser():
    yield from launch()


@pytest.fixture
def tab(browser, dashboard_url):
    yield from open_tab(browser, dashboard_url)
