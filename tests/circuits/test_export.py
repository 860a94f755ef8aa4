"""monosemantic.circuits.export: transcoders in circuit-tracer 0.5.0's layout.

What circuit-tracer's source reads (single_layer_transcoder.py, `load_relu_transcoder` and
`SingleLayerTranscoder`; hf_utils.py, `load_transcoders`), checked here without it:
- config.yaml: model_kind "transcoder_set", feature_input_hook, feature_output_hook, scan, and
  `transcoders`, one file path per layer in layer order;
- layer_L.safetensors: W_enc [d_transcoder, d_model] (encode is F.linear(x, W_enc, b_enc)),
  W_dec [d_transcoder, d_model] (decode is acts @ W_dec + b_dec), b_enc, b_dec, and W_skip
  [d_model, d_model] when there is a skip path (it adds x @ W_skip.T); no
  activation_function.threshold (that would make it JumpReLU).
Where circuit-tracer's loader module imports (an unpacked wheel on PYTHONPATH), the last test loads
the files with it and compares its forward with ours; it skips otherwise."""

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from tiny_transcoders import random_transcoders

from monosemantic.circuits.export import export_circuit_tracer
from monosemantic.circuits.transcoders import TranscoderSet


def tset(arch: str, tmp_path) -> TranscoderSet:
    return TranscoderSet(tmp_path / "tc", "builtin", "mathlm", random_transcoders(16, 3, arch, d_sae=40, k=5))


def their_forward(tensors: dict, x: torch.Tensor, k: int) -> torch.Tensor:
    """circuit-tracer's SingleLayerTranscoder.forward, with its TopK activation, written out."""
    pre = F.linear(x, tensors["W_enc"], tensors["b_enc"])
    _, idx = pre.topk(k, dim=-1)
    acts = pre * torch.zeros_like(pre).scatter(-1, idx, 1.0)
    out = acts @ tensors["W_dec"] + tensors["b_dec"]
    return out + x @ tensors["W_skip"].T if "W_skip" in tensors else out


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_the_layout_is_what_circuit_tracer_reads(arch, tmp_path):
    ts = tset(arch, tmp_path)
    config = yaml.safe_load(export_circuit_tracer(ts, tmp_path / "ct").read_text())
    assert config["model_kind"] == "transcoder_set" and config["k"] == 5 and config["activation"] == "topk"
    assert (config["feature_input_hook"], config["feature_output_hook"]) == ("mlp.hook_in", "mlp.hook_out")
    assert config["transcoders"] == [str((tmp_path / "ct" / f"layer_{i}.safetensors").resolve()) for i in range(3)]
    x = torch.randn(7, 16, dtype=torch.float64)
    for path, tc in zip(config["transcoders"], ts.transcoders):
        tensors = load_file(path)
        expected = {"W_enc": (40, 16), "W_dec": (40, 16), "b_enc": (40,), "b_dec": (16,)}
        if arch == "skip_transcoder":
            expected["W_skip"] = (16, 16)
        assert {k: tuple(v.shape) for k, v in tensors.items()} == expected
        assert all(v.dtype == torch.float32 for v in tensors.values())
        got = their_forward({k: v.double() for k, v in tensors.items()}, x, 5)
        torch.testing.assert_close(got, tc.transcode(x), rtol=1e-5, atol=1e-5)  # float32 files


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_circuit_tracers_own_loader_reads_the_export(arch, tmp_path):
    loader = pytest.importorskip("circuit_tracer.transcoder.single_layer_transcoder")
    from circuit_tracer.transcoder.activation_functions import TopK

    ts = tset(arch, tmp_path)
    config = yaml.safe_load(export_circuit_tracer(ts, tmp_path / "ct").read_text())
    theirs = loader.load_transcoder_set(
        dict(enumerate(config["transcoders"])),
        scan=config["scan"],
        feature_input_hook=config["feature_input_hook"],
        feature_output_hook=config["feature_output_hook"],
        device=torch.device("cpu"),
        dtype=torch.float64,
        lazy_encoder=False,
        lazy_decoder=False,
    )
    assert len(theirs) == 3 and theirs.skip_connection == (arch == "skip_transcoder")
    x = torch.randn(7, 16, dtype=torch.float64)
    for tc, ours in zip(theirs, ts.transcoders):
        tc.activation_function = TopK(config["k"])  # its loader gives ReLU; see export.py
        torch.testing.assert_close(tc(x), ours.transcode(x), rtol=1e-5, atol=1e-5)
