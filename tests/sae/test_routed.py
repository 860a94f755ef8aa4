"""monosemantic.sae.routed: the routed (Switch) TopK SAE's fast path against its dense reference,
its routing and losses by hand, save/load with the router, and the export as a plain TopK SAE."""

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.sae import SAE, SAEConfig, create_sae
from monosemantic.sae.routed import BALANCE_COEF, RoutedSAE

D_IN, D_SAE, K, E = 10, 48, 3, 4


def make(seed=0, **kw) -> RoutedSAE:
    torch.manual_seed(seed)
    sae = create_sae(SAEConfig(arch="routed", d_in=D_IN, d_sae=D_SAE, k=K, experts=E, dtype="float64", **kw))
    with torch.no_grad():  # non-trivial biases and a router that spreads the tokens
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.3)
        sae.W_router.normal_(0, 1.0)
    assert isinstance(sae, RoutedSAE)
    return sae


def grads(sae, loss) -> dict:
    sae.zero_grad(set_to_none=True)
    sae.row_grads = None
    loss.backward()
    return {n: p.grad.clone() for n, p in sae.named_parameters()}


def fast_grads(sae, loss) -> dict:
    """The fast path's gradients made dense: W_enc, b_enc and W_dec get no .grad (no full-size
    tensor), only rows in `sae.row_grads`."""
    sae.zero_grad(set_to_none=True)
    loss.backward()
    rows = {"W_enc", "b_enc", "W_dec"}
    assert all(p.grad is None for n, p in sae.named_parameters() if n in rows)
    store = sae.row_grads
    dense = {n: store.dense(n, D_SAE) for n in rows}
    dense["W_enc"] = dense["W_enc"].t()
    return {**dense, **{n: p.grad.clone() for n, p in sae.named_parameters() if n not in rows}}


@pytest.mark.parametrize("topk_rows", [1024, 10])  # 10: experts share top-k buffers in several groups
@pytest.mark.parametrize("n_dead", [0, 5, 30])
def test_fast_path_matches_the_dense_reference(n_dead, topk_rows, monkeypatch):
    monkeypatch.setattr("monosemantic.sae.routed.TOPK_ROWS", topk_rows)
    sae = make()
    x = torch.randn(64, D_IN, dtype=torch.float64) * 2
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    ref = sae(x, dead=dead)
    fast = sae.training_forward(x, dead=dead)
    assert set(fast.losses) == set(ref.losses) == ({"mse", "balance", "auxk"} if n_dead else {"mse", "balance"})
    for name in ref.losses:
        torch.testing.assert_close(fast.losses[name], ref.losses[name].detach())
    torch.testing.assert_close(fast.x_hat, ref.x_hat.detach())
    torch.testing.assert_close(fast.fired, (ref.latents != 0).any(0))
    torch.testing.assert_close(fast.l0, (ref.latents != 0).sum(-1).float().mean())
    g_ref, g_fast = grads(sae, ref.loss), fast_grads(sae, sae.training_forward(x, dead=dead).loss)
    assert g_ref["W_router"].abs().sum() > 0  # the router learns through p_e and the balance term
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], msg=name)
    # the rows with gradient are exactly the latents with an active entry (top k or AuxK), no more
    has_grad = (g_ref["W_dec"] != 0).any(1)
    assert torch.equal(sae.row_grads.ids, has_grad.nonzero().squeeze(1))
    assert sae.W_enc.t().is_contiguous()  # a latent's encoder weights are one contiguous row


def test_each_token_uses_the_top_k_of_its_argmax_expert_scaled_by_its_probability():
    sae = make()
    x = torch.randn(40, D_IN, dtype=torch.float64)
    z = sae.encode(x).detach()
    W_enc, b_enc, b_dec, W_r = (p.detach() for p in (sae.W_enc, sae.b_enc, sae.b_dec, sae.W_router))
    m = D_SAE // E
    used = set()
    for i in range(40):
        probs = torch.softmax((x[i] - b_dec) @ W_r, -1)
        e = int(probs.argmax())
        used.add(e)
        pre = (x[i] - b_dec) @ W_enc[:, e * m : (e + 1) * m] + b_enc[e * m : (e + 1) * m]
        top = pre.topk(K).indices
        want = torch.zeros(D_SAE, dtype=torch.float64)
        want[e * m + top] = pre[top].clamp_min(0) * probs[e]
        torch.testing.assert_close(z[i], want)
    assert len(used) > 1, "the test needs tokens routed to several experts"
    with torch.no_grad():  # the expert-by-expert encode of inference gives the same latents
        torch.testing.assert_close(sae.encode(x), z)
    out = sae(x)
    probs = torch.softmax((x - b_dec) @ W_r, -1)
    f = torch.bincount(probs.argmax(-1), minlength=E).double() / 40
    torch.testing.assert_close(out.losses["balance"].detach(), BALANCE_COEF * E * (f * probs.mean(0)).sum())


def test_save_load_keeps_the_router_and_the_topk_export_drops_it(tmp_path):
    sae = make().eval()
    x = torch.randn(8, D_IN, dtype=torch.float64)
    sae.save(tmp_path / "routed")
    loaded = SAE.load(tmp_path / "routed")
    assert isinstance(loaded, RoutedSAE) and loaded.cfg.experts == E
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    plain = sae.as_topk()
    assert plain.cfg.arch == "topk" and plain.cfg.experts is None and "W_router" not in plain.state_dict()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(plain, name), getattr(sae, name))
    plain.save(tmp_path / "plain")
    assert type(SAE.load(tmp_path / "plain")).__name__ == "TopKSAE"


@pytest.mark.parametrize("experts", [0, 5, 24])
def test_experts_must_split_d_sae_into_blocks_of_at_least_k(experts):
    with pytest.raises(ConfigError, match=rf"experts.*d_sae=48.*k=3 latents per expert; got experts={experts}"):
        SAEConfig(arch="routed", d_in=D_IN, d_sae=D_SAE, k=K, experts=experts)
    with pytest.raises(ConfigError, match="experts is for arch='routed'"):
        SAEConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=K, experts=4)


def test_trains_with_lazy_adam_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    import shutil

    from monosemantic.data.activations import TensorBatches
    from monosemantic.train.lazy_adam import LazyAdam
    from monosemantic.train.trainer import TrainConfig, Trainer

    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 64)
    x = torch.randn(2048, D_IN, generator=torch.Generator().manual_seed(0)) * 3 + 1
    cfg = TrainConfig(batch_size=64, total_tokens=64 * 20, lr=3e-3, checkpoint_every=10, dead_window=256)

    def trainer(run):
        torch.manual_seed(0)
        sae = create_sae(SAEConfig(arch="routed", d_in=D_IN, d_sae=D_SAE, k=K, experts=E))
        return Trainer(sae, cfg, run, progress=False)

    a = trainer(tmp_path / "a")
    assert isinstance(a.optimizer, LazyAdam)
    a.fit(TensorBatches(x, 64, seed=0))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_000000020")
    trainer(tmp_path / "b").fit(TensorBatches(x, 64, seed=0), resume=True)
    assert (tmp_path / "b" / "sae.safetensors").read_bytes() == (tmp_path / "a" / "sae.safetensors").read_bytes()
    loaded = SAE.load(tmp_path / "a")
    assert isinstance(loaded, RoutedSAE) and loaded.W_router.abs().sum() > 0
