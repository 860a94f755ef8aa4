"""Shared test setup: CPU only, two threads (the CI machine), no network."""

import os

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread: tiny matrices gain nothing from a second, and on a busy 2-core machine it
    only adds waiting (CLI and SIGKILL tests run several trainings side by side)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """{family: directory} of tiny saved models (gpt2, llama, gpt_neox with parallel residual)."""
    from tiny_models import FAMILIES, save_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dirs, tmp_path_factory):
    """A run directory: a small TopK SAE (d_sae 256) trained on the tiny GPT-2's layer-1 MLP neurons over
    the math corpus. Tests that write into a run copy it first."""
    from monosemantic.cli.main import main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert (
        main(
            [
                "-q",
                "train",
                "--model_path",
                str(tiny_model_dirs["gpt2"]),
                "--hookpoint",
                "layers.1.mlp.neurons",
                "--expansion_factor",
                "2",
                "--k",
                "8",
                "--tokens",
                "16k",
                "--batch-size",
                "512",
                "--batch-tokens",
                "1024",
                "--chunk-tokens",
                "4096",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def analysed_run(tiny_run, tmp_path_factory):
    """A copy of `tiny_run`, evaluated and analysed in-process: what the dashboard and runmodel tests read."""
    import shutil

    from monosemantic.cli.main import main

    out = tmp_path_factory.mktemp("analysed_run") / "run"
    shutil.copytree(tiny_run, out)
    threads = torch.get_num_threads()
    try:
        assert main(["-q", "--threads", "1", "eval", str(out), "--tokens", "2000"]) == 0
        assert (
            main(
                [
                    "-q",
                    "--threads",
                    "1",
                    "analyze",
                    str(out),
                    "--tokens",
                    "6000",
                    "--batch-tokens",
                    "1024",
                    "--top-k",
                    "6",
                    "--window",
                    "8",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def dashboard_app(analysed_run):
    """The dashboard's app over `analysed_run` (model, SAE and store loaded once for all tests)."""
    from monosemantic.dashboard import create_app

    return create_app(analysed_run)


@pytest.fixture(scope="session")
def dashboard_url(dashboard_app):
    """A real uvicorn server of `dashboard_app` on 127.0.0.1 (a free port), for the session."""
    from dashboard_server import running

    with running(dashboard_app) as url:
        yield url
