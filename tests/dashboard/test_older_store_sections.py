"""A store analysed before co-occurring features and loss effects were recorded: the API says null, the
feature page says so and names the command that adds them (real app, real store copy)."""

import html
import shutil

import pytest
from fastapi.testclient import TestClient

from monosemantic.analysis.cooccurrence import COOCCURRENCE_DIR
from monosemantic.analysis.loss_effect import LOSS_EFFECT_DIR
from monosemantic.dashboard import create_app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def test_an_older_store_names_the_command_that_adds_them(analysed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(analysed_run, run)
    shutil.rmtree(run / "features" / COOCCURRENCE_DIR)
    shutil.rmtree(run / "features" / LOSS_EFFECT_DIR)
    client = TestClient(create_app(run), base_url="http://127.0.0.1")
    got = client.get("/api/feature/82").json()
    assert got["cooccurring"] is None and got["loss_effect"] is None
    text = html.unescape(client.get("/feature/82").text)
    assert "analysed before co-occurring features were counted" in text
    assert "loss effects were not recorded for this store" in text
    assert f"run <code>monosemantic analyze {run}</code> to add them" in text  # co-occurrence: always counted
    assert f"run <code>monosemantic analyze {run} --loss-effects</code> to add them" in text
