"""The feature page's logit-effects bar chart in a real browser (Playwright, Debian's chromium): bars
present, ranked within the tokens the model predicts on the analysed corpus, as the API says."""

import json

import pytest
from browser_tab import api

from monosemantic.analysis.predicted import PREDICTED_FILE

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.process]


def test_logit_bars_rank_only_tokens_the_model_predicts(tab, dashboard_url, analysed_run):
    page = tab.page
    effects = api(dashboard_url, "/api/feature/82")["logit_effects"]
    saved = json.loads((analysed_run / "features" / PREDICTED_FILE).read_text())
    predicted = set(zip(saved["tokens"], saved["counts"].values()))  # (token, positions predicted)
    page.goto("/feature/82")
    rows = page.locator("svg.logit-bars .logit-row")
    ranked = effects["promotes"] + effects["suppresses"]
    assert rows.count() == len(ranked) > 0
    assert page.locator("svg.logit-bars rect.bar").count() == len(ranked)
    shown = page.locator("svg.logit-bars text.token").evaluate_all("(ts) => ts.map((t) => t.dataset.token)")
    assert shown == [token for token, _, _ in ranked]
    assert set(shown) <= set(saved["tokens"])  # every ranked token is one the model predicts
    assert all((token, count) in predicted for token, _, count in ranked)  # a token may have several ids
    values = page.locator("svg.logit-bars text.value").evaluate_all("(ts) => ts.map((t) => t.textContent)")
    assert values == [f"{v:+.3g}" for _, v, _ in ranked]
    assert f"ranked within the {effects['set_size']} tokens" in page.locator(".logit-basis").inner_text()
    tab.shot("feature-logit-bars")
