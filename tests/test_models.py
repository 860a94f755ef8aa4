"""monosemantic.models: loading local Hugging Face models (offline, safetensors only) and naming
their hookpoints, for each supported family."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from monosemantic.models import ModelError, load_model, model_dir, named_hookpoints, resolve_hookpoints

SITES = ["resid.pre", "resid.mid", "resid.post", "attn.out", "mlp.in", "mlp.neurons", "mlp.out"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_load_model_and_name_its_hookpoints(tiny_model_dirs, family):
    model, tokenizer = load_model(tiny_model_dirs[family])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    names = named_hookpoints(model)
    sites = [s for s in SITES if not (family == "gpt_neox" and s == "resid.mid")]  # parallel residual
    assert list(names) == [f"layers.{i}.{s}" for i in range(2) for s in sites]
    modules = dict(model.named_modules())
    assert all(h.module in modules for h in names.values())
    ids = torch.tensor([tokenizer("12 + 30 = 42")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_mlp_in_is_the_normed_input_the_mlp_maps_to_mlp_out(tiny_model_dirs, family):
    """What a transcoder reads (mlp.in) and writes (mlp.out): the MLP applied to the first is the second,
    and the first is the output of the block's MLP norm (ln_2 / post_attention_layernorm)."""
    from monosemantic.hooks import capture

    model, tokenizer = load_model(tiny_model_dirs[family])
    ids = torch.tensor([tokenizer("12 + 30 = 42")["input_ids"]])
    norm = {"gpt2": "transformer.h.1.ln_2"}.get(
        family, f"{'model.layers' if family == 'llama' else 'gpt_neox.layers'}.1.post_attention_layernorm"
    )
    with capture(model, ["layers.1.mlp.in", "layers.1.mlp.out", norm]) as acts:
        model(input_ids=ids)
    mlp = model.get_submodule(named_hookpoints(model)["layers.1.mlp.out"].module)
    torch.testing.assert_close(acts[norm], acts["layers.1.mlp.in"], rtol=0, atol=0)
    torch.testing.assert_close(mlp(acts["layers.1.mlp.in"]), acts["layers.1.mlp.out"])


def test_bfloat16_loading(tiny_model_dirs):
    model, _ = load_model(tiny_model_dirs["llama"], dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_resolve_globs_module_paths_and_order(tiny_model_dirs):
    model, _ = load_model(tiny_model_dirs["gpt2"])
    hooks = resolve_hookpoints(model, ["layers.*.mlp.neurons", "layers.0.resid.pre"])
    assert [h.name for h in hooks] == ["layers.0.resid.pre", "layers.0.mlp.neurons", "layers.1.mlp.neurons"]
    [raw] = resolve_hookpoints(model, "transformer.h.1.mlp.c_fc")
    assert (raw.module, raw.kind) == ("transformer.h.1.mlp.c_fc", "output")


@pytest.mark.parametrize("bad", ["layers.9.mlp.neurons", "layers.0.mlp", "blocks.0.mlp.neurons", "layers.*.nope"])
def test_unknown_hookpoint_lists_the_valid_ones(tiny_model_dirs, bad):
    model, _ = load_model(tiny_model_dirs["gpt2"])
    with pytest.raises(
        ModelError,
        match=rf"hookpoint '{bad}' not found; this model has "
        r"layers.\{0-1\}.\{resid.pre,resid.mid,resid.post,attn.out,mlp.in,mlp.neurons,"
        r"mlp.out\}, or any module path",
    ):
        resolve_hookpoints(model, bad)


def test_parallel_residual_has_no_resid_mid(tiny_model_dirs):
    model, _ = load_model(tiny_model_dirs["gpt_neox"])
    with pytest.raises(ModelError, match="resid.pre,resid.post,attn.out"):
        resolve_hookpoints(model, "layers.0.resid.mid")


def _copy_without(src: Path, dst: Path, drop: str) -> Path:
    shutil.copytree(src, dst)
    (dst / drop).unlink()
    return dst


def test_a_directory_without_weights_is_one_clear_error(tiny_model_dirs, tmp_path):
    path = _copy_without(tiny_model_dirs["gpt2"], tmp_path / "m", "model.safetensors")
    with pytest.raises(ModelError, match=r"no model weights: expected model.safetensors$"):
        load_model(path)


def test_pickled_weights_are_refused_not_unpickled(tiny_model_dirs, tmp_path):
    path = _copy_without(tiny_model_dirs["gpt2"], tmp_path / "m", "model.safetensors")
    (path / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(ModelError, match=r"it has pytorch_model.bin: pickled weights are not loaded"):
        load_model(path)


@pytest.mark.parametrize(
    "entry", ["pytorch_model.bin", "../model.safetensors", "/tmp/model.safetensors", "sub/model.safetensors", 3]
)
def test_a_weight_index_naming_anything_but_a_safetensors_file_here_is_refused(tiny_model_dirs, tmp_path, entry):
    path = _copy_without(tiny_model_dirs["gpt2"], tmp_path / "m", "model.safetensors")
    (path / "pytorch_model.bin").write_bytes(b"not even a pickle")  # not read: refused before transformers runs
    index = path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"transformer.wte.weight": "model-1.safetensors", "lm_head": entry}}))
    with pytest.raises(ModelError, match=rf"index.json: weight_map names {re.escape(repr(entry))}, not .safetensors"):
        model_dir(path)
    index.write_text("{not json")
    with pytest.raises(ModelError, match=r"model.safetensors.index.json: not valid JSON"):
        model_dir(path)


def test_missing_directory_and_missing_config(tiny_model_dirs, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        model_dir(tmp_path / "nope")
    path = _copy_without(tiny_model_dirs["gpt2"], tmp_path / "m", "config.json")
    with pytest.raises(ModelError, match="no config.json"):
        load_model(path)


@pytest.mark.process
def test_loading_needs_no_network(tiny_model_dirs):
    """Sockets are patched to fail in a fresh interpreter: loading and running must still work."""
    script = textwrap.dedent(f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted during an offline test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import torch
        from monosemantic.models import load_model
        model, tok = load_model({str(tiny_model_dirs["llama"])!r})
        ids = torch.tensor([tok("7 + 5 = 12")["input_ids"]])
        print(tuple(model(input_ids=ids).logits.shape))
    """)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HF_")}  # no offline crutches
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    tok = load_model(tiny_model_dirs["llama"])[1]
    assert run.stdout.strip() == f"(1, {len(tok('7 + 5 = 12')['input_ids'])}, {len(tok)})"
    assert "network access attempted" not in run.stderr
