"""monosemantic.train.lazy_adam: Adam on the rows that received gradient, against
torch.optim.Adam(fused=True) on those rows (the same kernel; its vector lanes may round the last bit
differently); skipped rows keep their values and moments (torch.optim.SparseAdam's semantics)."""

import pytest
import torch

from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.lazy_adam import LazyAdam, optimizer_for

LR = 1e-2


def grad_steps(shape, row_dim, touched, steps=6, seed=0):
    """Gradients that are zero outside the `touched` rows (along `row_dim`) at every step."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        grad = torch.randn(*shape, generator=g, dtype=torch.float64)
        mask = torch.zeros(shape[row_dim], dtype=torch.bool)
        mask[touched] = True
        out.append(grad * (mask[:, None] if row_dim == 0 else mask[None, :]))
    return out


@pytest.mark.parametrize("row_dim", [0, 1])
def test_rows_with_gradient_follow_torch_adam_and_the_others_stay_put(row_dim):
    shape, touched = (7, 5) if row_dim == 0 else (5, 7), [0, 2, 5]
    init = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lazy_p, adam_p = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    lazy, adam = LazyAdam([lazy_p], [row_dim], lr=LR), torch.optim.Adam([adam_p], lr=LR, fused=True)
    for grad in grad_steps(shape, row_dim, touched):
        for p, opt in ((lazy_p, lazy), (adam_p, adam)):
            p.grad = grad.clone()
            opt.step()
    rows = torch.tensor(touched)
    other = torch.tensor([i for i in range(7) if i not in touched])
    pick = lambda t, idx: t.detach().index_select(row_dim, idx)  # noqa: E731
    torch.testing.assert_close(pick(lazy_p, rows), pick(adam_p, rows), rtol=0, atol=1e-15)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(pick(lazy.state[lazy_p][key], rows), pick(adam.state[adam_p][key], rows))
        assert not pick(lazy.state[lazy_p][key], other).any()
    assert torch.equal(pick(lazy_p, other), pick(init, other))
    assert lazy.state[lazy_p]["step"].item() == adam.state[adam_p]["step"].item() == 6


def test_a_skipped_step_leaves_the_row_and_its_moments_alone_and_counts_the_step():
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    opt = LazyAdam([p], [0], lr=LR)
    p.grad = torch.ones(4, 3, dtype=torch.float64)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    weights = p.detach().clone()
    p.grad = torch.zeros(4, 3, dtype=torch.float64)
    p.grad[1] = 2.0
    opt.step()
    keep = [0, 2, 3]
    assert torch.equal(p.detach()[keep], weights[keep])
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state[p][key][keep], before[key][keep])
    assert opt.state[p]["step"].item() == 2  # bias correction counts every step, as SparseAdam's
    assert not torch.equal(p.detach()[1], weights[1])


def test_dense_parameters_get_plain_adam_and_the_routed_sae_gets_lazy_adam():
    torch.manual_seed(0)
    routed = create_sae(SAEConfig(arch="routed", d_in=6, d_sae=16, k=2, experts=4))
    opt = optimizer_for(routed, LR)
    assert isinstance(opt, LazyAdam)
    dims = {n: g["row_dim"] for (n, _), g in zip(routed.named_parameters(), opt.param_groups)}
    assert dims == {"W_enc": 1, "b_enc": 0, "W_dec": 0, "b_dec": None, "W_router": None}
    topk = create_sae(SAEConfig(arch="topk", d_in=6, d_sae=16, k=2))
    assert type(optimizer_for(topk, LR)) is torch.optim.Adam
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    lazy, adam = LazyAdam([p], [None], lr=LR), torch.optim.Adam([q], lr=LR, fused=True)
    for _ in range(3):
        p.grad, q.grad = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([1.0, 0.0, -2.0])
        lazy.step(), adam.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0)


def test_row_gradients_from_the_sparse_backward_follow_torch_adam_chunk_by_chunk(monkeypatch):
    """Gradients given as (ids, rows) with no .grad (sae/row_grads.py), on a parameter stored
    transposed as the routed SAE's W_enc: torch's Adam on those rows, the rest untouched, the
    moments laid out as the parameter; chunks of 2 rows cross the chunk boundaries."""
    monkeypatch.setattr("monosemantic.train.lazy_adam.CHUNK", 2)
    init = torch.randn(5, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lazy_p = torch.nn.Parameter(init.t().contiguous().t())  # [5, 9], latents along dim 1 are rows
    adam_p = torch.nn.Parameter(init.clone())
    touched = torch.tensor([0, 2, 3, 5, 8])
    pending = {}
    lazy = LazyAdam([lazy_p], [1], lr=LR, row_grads=lambda p: pending.get(id(p)))
    adam = torch.optim.Adam([adam_p], lr=LR, fused=True)
    for grad in grad_steps((5, 9), 1, touched):
        pending[id(lazy_p)] = (touched, grad.t()[touched].contiguous())
        adam_p.grad = grad.clone()
        lazy.step()
        adam.step()
    assert lazy_p.grad is None and lazy.state[lazy_p]["exp_avg"].stride() == lazy_p.stride()
    torch.testing.assert_close(
        lazy_p.detach()[:, touched], adam_p.detach()[:, touched], rtol=0, atol=0
    )  # the same kernel: bit for bit
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(lazy.state[lazy_p][key][:, touched], adam.state[adam_p][key][:, touched])
    other = torch.tensor([1, 4, 6, 7])
    assert torch.equal(lazy_p.detach()[:, other], init[:, other])
    assert not lazy.state[lazy_p]["exp_avg"][:, other].any()


def test_moments_loaded_contiguous_are_laid_out_as_the_parameter_with_the_same_values():
    p = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64).t().contiguous().t())
    opt = LazyAdam([p], [1], lr=LR)
    p.grad = torch.ones_like(p)
    opt.step()
    saved = {k: v.contiguous().clone() if v.ndim else v.clone() for k, v in opt.state[p].items()}
    opt.load_state_dict({"state": {0: saved}, "param_groups": opt.state_dict()["param_groups"]})
    assert opt.state[p]["exp_avg"].stride() != p.stride()
    p.grad = torch.zeros_like(p)
    opt.step()  # no row touched: only the layout changes
    for key in ("exp_avg", "exp_avg_sq"):
        assert opt.state[p][key].stride() == p.stride() and torch.equal(opt.state[p][key], saved[key])


def test_the_decoder_constraints_taken_on_by_the_update_equal_them_done_before_and_after(monkeypatch):
    """The routed SAE's W_dec rows: projected (gradient along the row removed) and renormalised
    inside lazy Adam's chunks, as the trainer's step calls them, against the same done by formula
    on the whole tensors around an optimiser that knows nothing of them; chunks of 5 rows."""
    import copy

    monkeypatch.setattr("monosemantic.train.lazy_adam.CHUNK", 5)
    torch.manual_seed(0)
    cfg = SAEConfig(arch="routed", d_in=10, d_sae=48, k=3, experts=4, dtype="float64")
    fused = create_sae(cfg)
    with torch.no_grad():
        fused.W_router.normal_(0, 1.0)
    plain = copy.deepcopy(fused)
    named = list(plain.named_parameters())
    names = {id(p): n for n, p in named}

    def rows(p):
        store = plain.row_grads
        return (store.ids, store.grads[names[id(p)]]) if names[id(p)] in store.grads else None

    opt_fused = optimizer_for(fused, LR)
    opt_plain = LazyAdam([p for _, p in named], [fused.lazy_rows.get(n) for n, _ in named], lr=LR, row_grads=rows)
    for step in range(4):
        x = torch.randn(32, 10, generator=torch.Generator().manual_seed(step), dtype=torch.float64) * 2
        fused.training_forward(x).loss.backward()
        fused.remove_parallel_grad_()
        opt_fused.step()
        fused.normalize_decoder_()
        plain.training_forward(x).loss.backward()
        g, W = plain.row_grads.grads["W_dec"], plain.W_dec.detach()[plain.row_grads.ids]
        g -= (g * W).sum(1, keepdim=True) * W
        opt_plain.step()
        with torch.no_grad():
            plain.W_dec /= plain.W_dec.norm(dim=1, keepdim=True)
        plain.row_grads = None
    assert fused.row_grads is None
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, msg=name)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt_fused.state[p][key], opt_plain.state[q][key], msg=f"{name} {key}")
    torch.testing.assert_close(fused.W_dec.norm(dim=1), torch.ones(48, dtype=torch.float64))
