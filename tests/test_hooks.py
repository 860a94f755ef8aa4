"""monosemantic.hooks: captured activations equal the module outputs recomputed by hand, patches
write what they say (identity leaves logits bit-identical), `stop` cuts the forward short, and hooks
are gone after the block, also when the forward raised."""

import pytest
import torch

from monosemantic.hooks import capture, hookpoint_widths, patch, run_and_capture
from monosemantic.models import load_model

ALL = ["layers.1.resid.pre", "layers.1.attn.out", "layers.1.mlp.neurons", "layers.1.mlp.out", "layers.1.resid.post"]


@pytest.fixture(scope="module")
def models(tiny_model_dirs):
    return {family: load_model(path) for family, path in tiny_model_dirs.items()}


def ids_for(tokenizer):
    return torch.tensor([tokenizer("12 + 30 = 42")["input_ids"], tokenizer("70 vs 19: <  ")["input_ids"]])


def all_hooks_removed(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_gpt2_sites_recomputed_by_hand(models):
    model, tok = models["gpt2"]
    with capture(model, [*ALL, "layers.1.resid.mid"]) as a:
        model(input_ids=ids_for(tok))
    block = model.transformer.h[1]
    mid = a["layers.1.resid.mid"]
    torch.testing.assert_close(a["layers.1.resid.pre"] + a["layers.1.attn.out"], mid)
    torch.testing.assert_close(
        a["layers.1.mlp.neurons"], block.mlp.act(block.mlp.c_fc(block.ln_2(mid))), rtol=0, atol=0
    )
    torch.testing.assert_close(a["layers.1.mlp.out"], block.mlp.c_proj(a["layers.1.mlp.neurons"]), rtol=0, atol=0)
    torch.testing.assert_close(a["layers.1.resid.post"], mid + a["layers.1.mlp.out"])


def test_llama_sites_recomputed_by_hand(models):
    model, tok = models["llama"]
    with capture(model, [*ALL, "layers.1.resid.mid"]) as a:
        model(input_ids=ids_for(tok))
    layer = model.model.layers[1]
    mid = a["layers.1.resid.mid"]
    x = layer.post_attention_layernorm(mid)
    neurons = layer.mlp.act_fn(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)  # SwiGLU: input of down_proj
    torch.testing.assert_close(a["layers.1.resid.pre"] + a["layers.1.attn.out"], mid)
    torch.testing.assert_close(a["layers.1.mlp.neurons"], neurons, rtol=0, atol=0)
    torch.testing.assert_close(a["layers.1.mlp.out"], layer.mlp.down_proj(neurons), rtol=0, atol=0)
    torch.testing.assert_close(a["layers.1.resid.post"], mid + a["layers.1.mlp.out"])


def test_neox_parallel_residual_recomputed_by_hand(models):
    model, tok = models["gpt_neox"]
    with capture(model, ALL) as a:
        model(input_ids=ids_for(tok))
    layer = model.gpt_neox.layers[1]
    x = layer.post_attention_layernorm(a["layers.1.resid.pre"])  # the MLP reads the block input
    torch.testing.assert_close(a["layers.1.mlp.neurons"], layer.mlp.act(layer.mlp.dense_h_to_4h(x)), rtol=0, atol=0)
    torch.testing.assert_close(
        a["layers.1.resid.post"], a["layers.1.resid.pre"] + a["layers.1.attn.out"] + a["layers.1.mlp.out"]
    )


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_identity_patch_leaves_logits_bit_identical(models, family):
    model, tok = models[family]
    ids = ids_for(tok)
    clean = model(input_ids=ids).logits
    with patch(model, {"layers.*.mlp.neurons": lambda x: x.clone(), "layers.0.resid.pre": lambda x: x + 0}):
        same = model(input_ids=ids).logits
    assert torch.equal(clean, same)
    with patch(model, {"layers.1.mlp.neurons": torch.zeros_like}):
        changed = model(input_ids=ids).logits
    assert not torch.allclose(clean, changed)
    assert all_hooks_removed(model)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_zero_patch_equals_removing_the_mlp_by_hand(models, family):
    model, tok = models[family]
    ids = ids_for(tok)
    with capture(model, ["layers.1.resid.mid", "layers.1.resid.post"]) as a:
        with patch(model, {"layers.1.mlp.neurons": torch.zeros_like}):
            model(input_ids=ids)
    bias = model.transformer.h[1].mlp.c_proj.bias if family == "gpt2" else 0  # c_proj(0) = its bias
    torch.testing.assert_close(a["layers.1.resid.post"], a["layers.1.resid.mid"] + bias)


def test_stop_cuts_the_forward_after_the_last_hookpoint(models):
    model, tok = models["gpt2"]
    calls = []
    handle = model.transformer.h[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        acts = run_and_capture(model, ids_for(tok), "layers.0.mlp.neurons")
    finally:
        handle.remove()
    assert calls == [] and acts["layers.0.mlp.neurons"].shape == (2, 13, 128)
    with capture(model, "layers.0.mlp.neurons") as full:  # without stop the model runs to the end
        logits = model(input_ids=ids_for(tok)).logits
    assert torch.equal(full["layers.0.mlp.neurons"], acts["layers.0.mlp.neurons"]) and logits.shape[-1] == len(tok)
    assert all_hooks_removed(model)


def test_hooks_are_removed_when_the_forward_raises(models):
    model, tok = models["llama"]

    def explode(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, "layers.*.resid.post"):
            with patch(model, {"layers.1.mlp.neurons": explode}):
                model(input_ids=ids_for(tok))
    assert all_hooks_removed(model)
    with pytest.raises(ValueError):
        with capture(model, "layers.0.mlp.out", stop=True):
            raise ValueError("not ours: must propagate")
    assert all_hooks_removed(model)


def test_hookpoint_widths_match_the_captured_shapes_and_pass_an_attention_mask(models):
    # without the mask, a model whose pad token is the probe's token warns on every command that loads it
    for model, _ in models.values():
        seen: list = []
        handle = model.register_forward_pre_hook(
            lambda m, args, kwargs, seen=seen: seen.append(kwargs.get("attention_mask")), with_kwargs=True
        )
        try:
            widths = hookpoint_widths(model, ["layers.0.resid.post", "layers.1.mlp.neurons"])
        finally:
            handle.remove()
        ids = torch.zeros(1, 3, dtype=torch.long)
        acts = run_and_capture(model, ids, ["layers.0.resid.post", "layers.1.mlp.neurons"])
        assert widths == [acts["layers.0.resid.post"].shape[-1], acts["layers.1.mlp.neurons"].shape[-1]]
        assert widths[0] == model.config.hidden_size and widths[1] > widths[0]
        assert len(seen) == 1 and seen[0] is not None and bool(seen[0].all())
        assert all_hooks_removed(model)
