"""monosemantic.formats.hooknames: every TransformerLens hook name we translate reads, in TransformerLens
itself, the activation our hookpoint reads. TransformerLens runs the built-in model's own weights
(a GPT-2, which TransformerLens' `convert_gpt2_weights` loads), with none of its weight processing
(folding LayerNorm or centring weights changes the residual stream it reports). Tolerance: rtol 1e-5,
atol 1e-5 (float32; the two implementations order some sums differently).
"""

import pytest
import torch

from monosemantic.formats.hooknames import (
    TL_SITES,
    from_sparsify,
    from_transformer_lens,
    to_sparsify,
    to_transformer_lens,
)
from monosemantic.hooks import capture
from monosemantic.models import FAMILIES, SITES, load_model, named_hookpoints

pytestmark = pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated")  # 3.x; still its reference model


@pytest.fixture(scope="module")
def models():
    pytest.importorskip("transformer_lens", reason="transformer-lens is not installed (the peers extra)")
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    hf, _ = load_model("builtin")
    c = hf.config
    act_fn = {"gelu": "gelu", "gelu_new": "gelu_new"}[c.activation_function]
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_heads=c.n_head,
        d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner,
        d_vocab=c.vocab_size,
        n_ctx=c.n_positions,
        act_fn=act_fn,
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        device="cpu",
    )
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return hf.eval(), tl.eval()


def test_every_site_reads_the_same_activation_in_transformer_lens(models):
    hf, tl = models
    ids = torch.randint(3, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    ours = [name for name in named_hookpoints(hf)]
    assert {n.split(".", 2)[2] for n in ours} == set(SITES)  # every site, on every layer
    with capture(hf, ours) as acts, torch.no_grad():
        logits = hf(input_ids=ids).logits
    with torch.no_grad():
        tl_logits, cache = tl.run_with_cache(ids)
    torch.testing.assert_close(tl_logits, logits, rtol=1e-5, atol=1e-4)  # the same model
    for name in ours:
        if name.endswith(".mlp.in"):  # no TransformerLens name: ln2.hook_normalized is before the norm's affine
            assert to_transformer_lens(name) is None
            continue
        tl_name = to_transformer_lens(name)
        assert tl_name is not None and from_transformer_lens(tl_name) == name
        torch.testing.assert_close(cache[tl_name], acts[name], rtol=1e-5, atol=1e-5, msg=f"{name} vs {tl_name}")


def test_names_outside_the_tables_stay_untranslated():
    assert from_transformer_lens("blocks.3.attn.hook_z") is None and from_transformer_lens("hook_embed") is None
    assert to_transformer_lens("transformer.h.3.mlp.c_fc") is None and to_transformer_lens(None) is None
    assert from_sparsify("embed_tokens") is None and from_sparsify("layers.3.mlp.act_fn") is None
    assert set(TL_SITES.values()) == set(SITES) - {"mlp.in"}


@pytest.mark.parametrize(
    "family, names",
    [
        ("gpt2", {"resid.pre": "h.3", "resid.post": "h.4", "attn.out": "h.4.attn", "mlp.neurons": "h.4.mlp.act"}),
        (
            "llama",
            {"resid.pre": "layers.3", "attn.out": "layers.4.self_attn", "mlp.neurons": None, "mlp.out": "layers.4.mlp"},
        ),
        ("gpt_neox", {"attn.out": "layers.4.attention", "mlp.neurons": "layers.4.mlp.act", "resid.mid": None}),
    ],
)
def test_sparsify_names_per_family_and_back(family, names):
    for site, name in names.items():
        assert to_sparsify(f"layers.4.{site}", FAMILIES[family]) == name
        if name is not None and site != "resid.pre":  # resid.pre is written as the block before's output
            assert from_sparsify(name) == f"layers.4.{site}"
    assert to_sparsify("layers.0.resid.pre", FAMILIES[family]) is None  # the embeddings: no module's output
