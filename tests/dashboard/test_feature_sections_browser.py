"""The feature page's added sections in a real browser (Playwright, Debian's chromium), as the API says:
the logit-effects bar chart, ranked within the tokens the model predicts on the analysed corpus, and
the feature's density marked on the histogram of all features' densities."""

import json

import pytest
from browser_tab import api

from monosemantic.analysis.predicted import PREDICTED_FILE
from monosemantic.dashboard.html import visible

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


def test_density_is_marked_on_the_histogram_of_all_features(tab, dashboard_url, analysed_run):
    page = tab.page
    feature = api(dashboard_url, "/api/feature/82")
    compared = feature["density_comparison"]
    densities = [f["density"] for f in api(dashboard_url, "/api/features?order=latent&limit=500")]
    assert compared["density"] == feature["density"] and len(densities) == sum(compared["counts"]) + compared["never"]
    page.goto("/feature/82")
    chart = page.locator("svg.density-compare")
    tips = chart.locator("rect.bar title").evaluate_all("(ts) => ts.map((t) => t.textContent)")
    assert [int(t.rsplit(": ", 1)[1]) for t in tips] == compared["counts"]
    assert chart.locator("line.marker title").text_content() == f"#82: {feature['density']:.3g}"
    assert f"{compared['never']} features never fired" in page.locator(".density-note").inner_text()
    tab.shot("feature-density")


def test_cooccurring_features_are_listed_with_links_as_the_api_says(tab, dashboard_url):
    page = tab.page
    found = api(dashboard_url, "/api/feature/82")["cooccurring"]
    assert found["partners"], "feature 82 of the tiny run fires with others"
    page.goto("/feature/82")
    rows = page.locator("#cooccurring table.cooccurring tbody tr")
    assert rows.count() == len(found["partners"])
    links = rows.locator("a.feature-link").evaluate_all("(as) => as.map((a) => a.getAttribute('href'))")
    assert links == [f"/feature/{p['feature']}" for p in found["partners"]]
    cells = rows.evaluate_all("(rs) => rs.map((r) => [...r.cells].slice(1).map((c) => c.textContent))")
    assert cells == [[f"{p['p']:.2%}", str(p["count"]), f"{p['jaccard']:.3f}"] for p in found["partners"]]
    assert f"on the {found['tokens']} analysed tokens" in page.locator("#cooccurring").inner_text()
    first = found["partners"][0]["feature"]
    rows.first.locator("a.feature-link").click()
    page.wait_for_url(f"**/feature/{first}")
    tab.shot("feature-cooccurring")


def test_loss_effect_table_shows_the_api_values(tab, dashboard_url):
    page = tab.page
    found = api(dashboard_url, "/api/feature/82")["loss_effect"]
    assert found["effects"], "feature 82 of the tiny run has top examples with a next token"
    page.goto("/feature/82")
    rows = page.locator("#loss-effect table.loss-effect tbody tr")
    cells = rows.evaluate_all("(rs) => rs.map((r) => [...r.cells].map((c) => c.textContent))")
    assert [c[1:] for c in cells] == [[f"{rise:+.3g}", str(n)] for _, rise, n in found["effects"]]
    assert [c[0] for c in cells] == [visible(t).replace(" ", "␣") for t, _, _ in found["effects"]]  # spaces shown
    assert any(" " in t for t, _, _ in found["effects"])  # feature 82's list has a space token
    assert page.locator("#loss-effect .loss-basis").inner_text() == found["definition"]
    tab.shot("feature-loss-effect")
