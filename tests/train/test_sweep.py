"""Sweeps: several SAEs from one pass of activations; each equals the same SAE trained alone."""

import json

import pytest
import torch

import monosemantic.data.stream
from monosemantic.cli.main import main
from monosemantic.sae import SAE

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
COMMON = [
    "--hookpoint",
    "layers.1.mlp.neurons",
    "--tokens",
    "12k",
    "--batch-size",
    "512",
    "--batch-tokens",
    "1024",
    "--chunk-tokens",
    "4096",
    "--dead-window",
    "4k",
    "--log-every",
    "5",
]


@pytest.fixture
def count_forwards(monkeypatch):
    calls = []
    real = monosemantic.data.stream.run_and_capture

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(monosemantic.data.stream, "run_and_capture", counting)
    return calls


def test_a_sweep_runs_the_model_once_per_batch_and_matches_solo_runs(tiny_model_dirs, tmp_path, count_forwards):
    model = ["--model_path", str(tiny_model_dirs["gpt2"])]
    assert (
        main(
            [
                "-q",
                "sweep",
                *model,
                *COMMON,
                "--k",
                "4,8",
                "--expansion-factor",
                "2,4",
                "--out",
                str(tmp_path / "sweep"),
            ]
        )
        == 0
    )
    sweep_forwards = len(count_forwards)
    names = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]
    assert names == ["topk_x2_k4", "topk_x2_k8", "topk_x4_k4", "topk_x4_k8"]
    count_forwards.clear()
    assert (
        main(["-q", "train", *model, *COMMON, "--k", "8", "--expansion-factor", "4", "--out", str(tmp_path / "solo")])
        == 0
    )
    assert sweep_forwards == len(count_forwards) > 0  # four SAEs, the forwards of one
    solo, member = SAE.load(tmp_path / "solo"), SAE.load(tmp_path / "sweep" / "topk_x4_k8")
    for name, value in solo.state_dict().items():
        torch.testing.assert_close(member.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    widths = {SAE.load(tmp_path / "sweep" / n).d_sae for n in names}
    assert widths == {256, 512}
    assert (tmp_path / "sweep" / "topk_x2_k4" / "plots" / "training.png").exists()


def test_a_sweep_of_one_is_refused_and_writes_nothing(tiny_model_dirs, tmp_path, capsys):
    assert (
        main(["sweep", "--model_path", str(tiny_model_dirs["gpt2"]), *COMMON, "--k", "8", "--out", str(tmp_path / "s")])
        == 2
    )
    assert "a sweep needs at least two SAEs" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_each_architecture_sweeps_its_own_sparsity_knob(tiny_model_dirs, tmp_path):
    model = ["--model_path", str(tiny_model_dirs["gpt2"])]
    assert (
        main(
            [
                "-q",
                "sweep",
                *model,
                *COMMON,
                "--arch",
                "topk,relu",
                "--k",
                "4",
                "--l1-coefficient",
                "1,3",
                "--expansion-factor",
                "2",
                "--out",
                str(tmp_path / "sweep"),
            ]
        )
        == 0
    )
    names = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]
    assert names == ["topk_x2_k4", "relu_x2_l1-1", "relu_x2_l1-3"]
    assert [SAE.load(tmp_path / "sweep" / n).cfg.l1_coefficient for n in names[1:]] == [1.0, 3.0]
    assert (
        main(
            [
                "-q",
                "train",
                *model,
                *COMMON,
                "--arch",
                "relu",
                "--l1-coefficient",
                "3",
                "--expansion-factor",
                "2",
                "--out",
                str(tmp_path / "solo"),
            ]
        )
        == 0
    )
    solo, member = SAE.load(tmp_path / "solo"), SAE.load(tmp_path / "sweep" / "relu_x2_l1-3")
    for name, value in solo.state_dict().items():
        torch.testing.assert_close(member.state_dict()[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arch", "topk", "--k", "4,8", "--l1-coefficient", "2"], "--l1-coefficient sets relu, gated"),
        (["--arch", "relu", "--l1-coefficient", "2,-1"], "expected positive numbers separated by commas"),
        (["--arch", "topk,cnn", "--k", "4,8"], "unknown architecture(s) ['cnn']"),
    ],
)
def test_a_sweep_with_bad_options_is_refused_and_writes_nothing(tiny_model_dirs, tmp_path, capsys, flags, message):
    try:
        code = main(
            ["sweep", "--model_path", str(tiny_model_dirs["gpt2"]), *COMMON, *flags, "--out", str(tmp_path / "s")]
        )
    except SystemExit as exit_info:  # argparse's own refusals
        code = exit_info.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
