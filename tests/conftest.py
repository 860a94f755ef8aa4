"""Shared test setup: CPU only, two threads (the CI machine), no network; and the test tiers.

Tiers: `slow` (end-to-end, minutes: `make test-slow`), `process` (starts a subprocess, a server, a
browser or torchrun: marked by hand on the test, or found here by the fixtures it uses),
`integration` (in-process, but trains, harvests or analyses a whole run: seconds each; marked by
hand), and `unit`: every other test, marked here, run by `make test-unit` in under a minute.
`make test` runs everything but `slow`."""

import os
import socket
import subprocess

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MONOSEMANTIC_PACK_CACHE", "off")  # tests that cache packed tokens give their own folder

# Fixtures of this file that start a server (a test that uses one, even through another fixture, is `process`)
PROCESS_FIXTURES = {"dashboard_url"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.process)
        if not any(any(item.iter_markers(tier)) for tier in ("slow", "process", "integration")):
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A unit test (its fixtures included) that starts a process or listens on a socket fails at once,
    saying which marker it lacks: the tier stays what `make test-unit` promises."""
    if item.get_closest_marker("unit") is None:
        return (yield)

    def refuse(what):
        def refused(self, target=None, *args, **kwargs):
            raise AssertionError(f"{item.nodeid} is a unit test but {what} {target!r}: mark it @pytest.mark.process")

        return refused

    saved = subprocess.Popen.__init__, socket.socket.bind
    subprocess.Popen.__init__, socket.socket.bind = refuse("starts"), refuse("binds")
    try:
        return (yield)
    finally:
        subprocess.Popen.__init__, socket.socket.bind = saved


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
    from tiny_models import tiny_train_argv

    from monosemantic.cli.main import main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(tiny_train_argv(tiny_model_dirs["gpt2"], out)) == 0
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
                    "--loss-effects",
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


@pytest.fixture
def interrupted_training(monkeypatch):
    """Run `main(argv)`, a training, as a Ctrl-C right after its first checkpoint stops it (exit 130):
    a run directory to resume."""
    import monosemantic.train.trainer
    from monosemantic.cli.main import main

    def run(argv: list[str]) -> None:
        save_checkpoint = monosemantic.train.trainer.ckpt.save_checkpoint

        def save_then_interrupt(*args, **kwargs):
            save_checkpoint(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(monosemantic.train.trainer.ckpt, "save_checkpoint", save_then_interrupt)
        try:
            assert main(argv) == 130
        finally:
            monkeypatch.undo()

    return run
