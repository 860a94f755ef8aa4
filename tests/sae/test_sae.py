"""monosemantic.sae: the architectures against formulas written out by hand, the fast training path
against the dense-autograd reference, save/load round trips, and every refusal of a bad file."""

import hashlib
import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch

from monosemantic.config import ConfigError
from monosemantic.sae import SAE, SAEConfig, SAEFormatError, TopKSAE, create_sae
from monosemantic.sae.base import CFG_FILE, WEIGHTS_FILE
from monosemantic.sae.batchtopk import batch_topk_select
from monosemantic.sae.config import SAE_ARCHS

ARCHS = sorted(SAE_ARCHS)
SPARSE_ARCHS = ["topk", "batchtopk"]


def make(arch, d_in=12, d_sae=40, k=5, dtype="float64", **kw):
    if arch == "routed":
        kw.setdefault("experts", 4)
    sae = create_sae(SAEConfig(arch=arch, d_in=d_in, d_sae=d_sae, k=k, dtype=dtype, **kw))
    with torch.no_grad():  # non-trivial biases, so that every term of the maths is exercised
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
        if arch == "jumprelu":
            sae.threshold.uniform_(0.05, 0.5)
        if arch == "gated":
            sae.r_mag.normal_(0, 0.5)
            sae.b_mag.normal_(0, 0.1)
    return sae


def tree_state(path: Path) -> dict:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ---- shapes and formulas ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_keep_leading_dimensions(arch):
    sae = make(arch).eval()
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    z = sae.encode(x)
    assert z.shape == (2, 3, 40)
    assert sae.decode(z).shape == (2, 3, 12)
    out = sae(x)
    assert out.x_hat.shape == (2, 3, 12) and out.latents.shape == (2, 3, 40) and out.loss.shape == ()


@pytest.mark.parametrize("arch", ARCHS)
def test_wrong_input_width_is_a_clear_error(arch):
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 12\].*got shape \[4, 7\]"):
        make(arch).encode(torch.randn(4, 7, dtype=torch.float64))


def test_relu_forward_matches_the_formula_by_hand():
    sae = make("relu", l1_coefficient=0.7)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(40, 1, dtype=torch.float64) + 0.5)  # non-unit rows: the norm weighting matters
    x = torch.randn(9, 12, dtype=torch.float64)
    out = sae(x, penalty_scale=0.3)
    W_enc, b_enc, W_dec, b_dec = (p.detach() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    for i in range(9):
        z = torch.clamp((x[i] - b_dec) @ W_enc + b_enc, min=0)
        x_hat = sum(z[j] * W_dec[j] for j in range(40)) + b_dec
        torch.testing.assert_close(out.latents[i], z)
        torch.testing.assert_close(out.x_hat[i], x_hat)
    mse = sum(((x[i] - out.x_hat[i]) ** 2).sum() for i in range(9)) / 9
    l1 = sum(sum(out.latents[i, j] * W_dec[j].norm() for j in range(40)) for i in range(9)) / 9
    torch.testing.assert_close(out.losses["mse"], mse)
    torch.testing.assert_close(out.losses["l1"], 0.3 * 0.7 * l1)
    torch.testing.assert_close(out.loss, mse + 0.3 * 0.7 * l1)


def test_topk_keeps_the_k_largest_preactivations_after_relu():
    sae = make("topk", k=5)
    x = torch.randn(30, 12, dtype=torch.float64)
    z = sae.encode(x)
    pre = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).detach()
    for i in range(30):
        top = set(pre[i].argsort(descending=True)[:5].tolist())
        nonzero = set(z[i].nonzero().squeeze(1).tolist())
        assert nonzero == {j for j in top if pre[i, j] > 0}
        torch.testing.assert_close(z[i, list(nonzero)], pre[i, list(nonzero)])


def test_batchtopk_training_keeps_k_times_batch_and_inference_uses_the_threshold():
    sae = make("batchtopk", k=3).train()
    x = torch.randn(16, 12, dtype=torch.float64)
    pre = sae.pre_acts(x).detach()
    z = sae(x).latents.detach()
    assert int((z > 0).sum()) == min(3 * 16, int((pre > 0).sum()))
    smallest_kept = z[z > 0].min()
    assert bool((pre[z == 0] <= smallest_kept).all())  # nothing larger was left out
    with torch.no_grad():
        sae.threshold.fill_(0.4)
    z_inf = sae.encode(x)
    torch.testing.assert_close(z_inf, torch.where(pre > 0.4, pre, torch.zeros_like(pre)))
    sae.eval()
    torch.testing.assert_close(sae(x).latents, z_inf)


def test_batchtopk_calibration_sets_the_threshold_where_the_batch_selection_stops():
    sae = make("batchtopk", k=3)
    x = torch.randn(16, 12, dtype=torch.float64)
    pre = sae.pre_acts(x).detach()
    kth_largest = pre.flatten().sort(descending=True).values[3 * 16 - 1]  # by a full sort
    assert kth_largest > 0
    sae.calibrate_(x)
    assert sae.threshold.item() == kth_largest.item()
    # inference on that batch keeps exactly what training's selection kept, less the boundary value
    # itself (it fires strictly above the threshold)
    assert int((sae.encode(x) > 0).sum()) == 3 * 16 - 1
    # a batch with fewer than k * B positive pre-activations leaves the estimate alone
    with torch.no_grad():
        sae.threshold.fill_(0.25)
        sae.b_enc.fill_(-1e3)
    sae.calibrate_(x)
    assert sae.threshold.item() == 0.25


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_auxk_reconstructs_the_residual_from_dead_latents_only(arch):
    sae = make(arch, k=3, k_aux=4, auxk_coef=0.25).train()
    x = torch.randn(10, 12, dtype=torch.float64)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[torch.randperm(40)[:9]] = True
    out = sae(x, dead=dead)
    pre = sae.pre_acts(x).detach()
    e = (x - out.x_hat).detach()
    total = 0.0
    for i in range(10):
        ids = dead.nonzero().squeeze(1)
        top = ids[pre[i, ids].argsort(descending=True)[:4]]
        e_hat = sum(max(pre[i, j].item(), 0.0) * sae.W_dec[j].detach() for j in top.tolist())
        total += ((e[i] - e_hat) ** 2).sum()
    torch.testing.assert_close(out.losses["auxk"].detach(), 0.25 * total / 10)


# ---- fast path == dense reference --------------------------------------------------------------


def grads(sae, loss):
    return dict(zip([n for n, _ in sae.named_parameters()], torch.autograd.grad(loss, list(sae.parameters()))))


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
@pytest.mark.parametrize("dead_count", [0, 7, 40])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_fast_path_equals_dense_reference(arch, dead_count, apply_b_dec):
    sae = make(arch, d_in=16, d_sae=64, k=6, k_aux=8, apply_b_dec_to_input=apply_b_dec).train()
    x = torch.randn(24, 16, dtype=torch.float64) * 2
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64)[:dead_count]] = True
    fast = sae.training_forward(x, dead=dead)
    ref = SAE.training_forward(sae, x, dead=dead)  # the base class: dense forward, plain autograd
    assert fast.losses.keys() == ref.losses.keys() == ({"mse", "auxk"} if dead_count else {"mse"})
    for key in ref.losses:
        torch.testing.assert_close(fast.losses[key], ref.losses[key])
    torch.testing.assert_close(fast.x_hat, ref.x_hat)
    assert torch.equal(fast.fired, ref.fired)
    torch.testing.assert_close(fast.l0, ref.l0)
    g_fast, g_ref = grads(sae, fast.loss), grads(sae, ref.loss)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], msg=lambda m, n=name: f"grad {n}: {m}")


def test_fast_path_in_float32_matches_reference_within_float_tolerance():
    sae = make("topk", d_in=64, d_sae=512, k=16, dtype="float32").train()
    x = torch.randn(256, 64)
    dead = torch.rand(512) < 0.1
    fast, ref = sae.training_forward(x, dead=dead), SAE.training_forward(sae, x, dead=dead)
    torch.testing.assert_close(fast.loss, ref.loss, rtol=1e-5, atol=1e-5)
    g_fast, g_ref = grads(sae, fast.loss), grads(sae, ref.loss)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_bf16_matmul_only_selects_values_are_exact_fp32(arch):
    """With well-separated pre-activations the bf16 matmul picks the same latents as fp32, and the
    values, loss and gradients must then be the fp32 ones: bf16 values would be off by ~0.4%."""
    d = 32
    sae = make(arch, d_in=d, d_sae=d, k=4, dtype="float32", apply_b_dec_to_input=False).train()
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.b_enc.zero_()
    x = torch.randn(64, d) * 0.05
    for i in range(64):  # four large entries per row, at least 0.5 apart: selection is unambiguous
        x[i, torch.randperm(d)[:4]] = torch.tensor([5.0, 6.1, 7.3, 8.6]) + torch.rand(4) * 0.3
    fp32 = sae.training_forward(x)
    bf16 = sae.training_forward(x, matmul_dtype=torch.bfloat16)
    assert torch.equal(fp32.fired, bf16.fired)
    torch.testing.assert_close(bf16.loss, fp32.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bf16.x_hat, fp32.x_hat, rtol=1e-6, atol=1e-6)
    g32, g16 = grads(sae, fp32.loss), grads(sae, bf16.loss)
    for name in g32:
        torch.testing.assert_close(g16[name], g32[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("skew", [1.0, 100.0])
def test_batch_topk_select_equals_a_full_sort(skew):
    """skew=100 puts all the largest values in one row, forcing the candidate set to grow."""
    pre = torch.randn(32, 200, dtype=torch.float64)
    pre[3] *= skew
    n = 4 * 32
    flat_vals, flat_idx = pre.reshape(-1).topk(n)
    expected = {(int(i) // 200, int(i) % 200) for i in flat_idx}
    rows, cols, values, most = batch_topk_select(pre, n)
    assert set(zip(rows.tolist(), cols.tolist())) == expected
    assert most == int(torch.bincount(rows, minlength=32).max())
    for width in (1, 7, 200):  # a first guess changes the work done, never the answer (or its order)
        r, c, v, _ = batch_topk_select(pre, n, width)
        assert torch.equal(r, rows) and torch.equal(c, cols) and torch.equal(v, values)
    assert bool(((rows * 200 + cols)[1:] > (rows * 200 + cols)[:-1]).all())  # sorted by (row, latent)
    assert bool((rows[1:] >= rows[:-1]).all())  # row-sorted
    torch.testing.assert_close(values, pre[rows, cols])


# ---- training-time constraints and folding ----------------------------------------------------


def test_decoder_constraints():
    sae = make("topk")
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(40, dtype=torch.float64))
    g = torch.randn(40, 12, dtype=torch.float64)
    sae.W_dec.grad = g.clone()
    sae.remove_parallel_grad_()
    W = sae.W_dec.detach()
    expected = torch.stack([g[i] - (g[i] @ W[i]) * W[i] for i in range(40)])
    torch.testing.assert_close(sae.W_dec.grad, expected)
    torch.testing.assert_close((sae.W_dec.grad * W).sum(1), torch.zeros(40, dtype=torch.float64))


@pytest.mark.parametrize("arch", ARCHS)
def test_folding_the_input_scale_makes_the_sae_take_raw_activations(arch):
    scale = 3.7
    sae = make(arch).eval()
    if arch == "batchtopk":
        with torch.no_grad():
            sae.threshold.fill_(0.3)
    x_raw = torch.randn(20, 12, dtype=torch.float64)
    z_trained = sae.encode(scale * x_raw).detach()
    x_hat_trained = sae.decode(z_trained).detach()
    folded = make(arch)
    folded.load_state_dict(sae.state_dict())
    folded.eval().fold_input_scale_(scale)
    torch.testing.assert_close(folded.encode(x_raw), z_trained / scale)
    torch.testing.assert_close(folded.decode(folded.encode(x_raw)), x_hat_trained / scale)
    torch.testing.assert_close(folded.W_dec.norm(dim=1), sae.W_dec.norm(dim=1))  # decoder stays unit-norm
    assert folded.cfg.activation_scale == pytest.approx(scale)


# ---- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(arch="topk", d_in=8, d_sae=16, k=17), r"k=17 is larger than d_sae=16"),
        (dict(arch="topk", d_in=8, d_sae=16), r"needs k"),
        (dict(arch="batchtopk", d_in=8, d_sae=16, k=0), r"needs k"),
        (dict(arch="crosscoder", d_in=8, d_sae=16), r"unknown architecture 'crosscoder'; expected one of"),
        (dict(arch="relu", d_in=0, d_sae=16), r"d_in must be a positive integer, got 0"),
        (dict(arch="relu", d_in=8, d_sae=16, dtype="int8"), r"dtype 'int8' not supported"),
        (dict(arch="relu", d_in=8, d_sae=16, l1_coefficient=-1.0), r"l1_coefficient must be >= 0"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SAEConfig(**kwargs)


# ---- save / load ----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_load_round_trip_is_bit_exact(tmp_path, arch, dtype):
    sae = make(arch, dtype=dtype)
    if arch == "batchtopk":
        with torch.no_grad():
            sae.threshold.fill_(0.123)
    sae.save(tmp_path / "s")
    loaded = SAE.load(tmp_path / "s")
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    for (name, a), (_, b) in zip(sae.state_dict().items(), loaded.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    x = torch.randn(5, 12).to(sae.W_enc.dtype)
    assert torch.equal(sae.eval().encode(x), loaded.encode(x))
    # the file uses the field's names and layout: W_enc [d_in, d_sae], W_dec [d_sae, d_in]
    raw = safetensors.torch.load_file(tmp_path / "s" / WEIGHTS_FILE)
    assert raw["W_enc"].shape == (12, 40) and raw["W_dec"].shape == (40, 12)
    assert (
        json.loads((tmp_path / "s" / CFG_FILE).read_text())["sha256"]
        == hashlib.sha256((tmp_path / "s" / WEIGHTS_FILE).read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_copy_saves_at_half_the_size_and_upcasts_exactly(tmp_path, arch):
    """What the shipped SAEs do: trained in fp32, stored in bf16 (every tensor rounded to nearest,
    buffers such as thresholds included), loaded and upcast to fp32 for compute, bit for bit."""
    sae = make(arch, d_in=16, d_sae=64, k=4, dtype="float32")
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
        for name in sae.scaled_buffers:
            getattr(sae, name).fill_(0.3)
    sae.save(tmp_path / "f32")
    sae.with_dtype("bfloat16").save(tmp_path / "bf16")
    size = lambda d: (tmp_path / d / WEIGHTS_FILE).stat().st_size  # noqa: E731
    n = sum(t.numel() for t in sae.state_dict().values())
    assert abs(size("f32") - size("bf16") - 2 * n) < 64  # 2 bytes fewer per number; headers alike

    stored = SAE.load(tmp_path / "bf16")
    assert stored.cfg.dtype == "bfloat16" and stored.cfg.d_sae == 64 and not stored.training
    for name, original in sae.state_dict().items():
        got = stored.state_dict()[name]
        assert got.dtype == torch.bfloat16 and torch.equal(got, original.to(torch.bfloat16)), name
    up = stored.with_dtype("float32")
    assert up.cfg.dtype == "float32" and up.cfg == SAE.load(tmp_path / "f32").cfg
    for name, original in sae.state_dict().items():
        got = up.state_dict()[name]
        assert got.dtype == torch.float32 and torch.equal(got, original.to(torch.bfloat16).float()), name
    assert torch.equal(stored.W_enc, sae.W_enc.to(torch.bfloat16))  # the copy left its source alone

    x = torch.randn(7, 16)
    z = up.encode(x)
    assert z.dtype == torch.float32
    if arch in ("relu", "topk"):  # by hand, in fp32 from the rounded weights
        W_enc, b_enc, b_dec = (t.to(torch.bfloat16).float() for t in (sae.W_enc, sae.b_enc, sae.b_dec))
        pre = torch.relu((x - b_dec) @ W_enc + b_enc)
        if arch == "topk":
            kept = pre.topk(4, dim=1)
            pre = torch.zeros_like(pre).scatter(1, kept.indices, kept.values)
        torch.testing.assert_close(z, pre, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="dtype 'int8' not supported"):
        sae.with_dtype("int8")


def test_arch_class_load_refuses_another_architecture(tmp_path):
    make("relu").save(tmp_path)
    with pytest.raises(SAEFormatError, match="holds a 'relu' SAE, not 'topk'"):
        TopKSAE.load(tmp_path)


def _rewrite_cfg(path: Path, **changes):
    cfg = json.loads((path / CFG_FILE).read_text())
    cfg.update(changes)
    (path / CFG_FILE).write_text(json.dumps(cfg))


def _rewrite_weights(path: Path, tensors: dict):
    data = safetensors.torch.save(tensors)
    (path / WEIGHTS_FILE).write_bytes(data)
    _rewrite_cfg(path, sha256=hashlib.sha256(data).hexdigest())


def _truncate(path):
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _flip_a_byte(path):
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))


def _truncate_without_hash(path):
    _truncate(path)
    cfg = json.loads((path / CFG_FILE).read_text())
    del cfg["sha256"]
    (path / CFG_FILE).write_text(json.dumps(cfg))


def _wrong_shape_tensor(path):
    t = safetensors.torch.load_file(path / WEIGHTS_FILE)
    t["W_enc"] = torch.zeros(12, 41, dtype=torch.float64)
    _rewrite_weights(path, t)


def _wrong_dtype(path):
    _rewrite_weights(path, {k: v.float() for k, v in safetensors.torch.load_file(path / WEIGHTS_FILE).items()})


def _extra_tensor(path):
    t = safetensors.torch.load_file(path / WEIGHTS_FILE)
    t["W_gate"] = torch.zeros(3, dtype=torch.float64)
    _rewrite_weights(path, t)


def _nan_weight(path):
    t = safetensors.torch.load_file(path / WEIGHTS_FILE)
    t["b_enc"][3] = float("nan")
    _rewrite_weights(path, t)


BAD_FILES = {
    "truncated": (_truncate, r"do not match the sha256"),
    "tampered byte": (_flip_a_byte, r"do not match the sha256"),
    "truncated, no hash": (_truncate_without_hash, r"not a readable safetensors file .*truncated"),
    "tensor of wrong shape": (_wrong_shape_tensor, r"'W_enc' has shape \[12, 41\], the config implies \[12, 40\]"),
    "wrong dtype": (_wrong_dtype, r"dtype torch.float32, the config says torch.float64"),
    "extra tensor": (_extra_tensor, r"unexpected \['W_gate'\]"),
    "NaN in weights": (_nan_weight, r"'b_enc' contains NaN"),
    "cfg with wrong d_sae": (lambda p: _rewrite_cfg(p, d_sae=41), r"the config implies \[12, 41\]"),
    "cfg with unknown arch": (lambda p: _rewrite_cfg(p, arch="crosscoder"), r"unknown architecture 'crosscoder'"),
    "cfg with unknown key": (lambda p: _rewrite_cfg(p, sparsity=3), r"unknown key\(s\) \['sparsity'\]"),
    "cfg not JSON": (lambda p: (p / CFG_FILE).write_text("{arch: topk"), r"not valid JSON"),
    "weights missing": (lambda p: (p / WEIGHTS_FILE).unlink(), r"sae.safetensors: missing"),
    "cfg missing": (lambda p: (p / CFG_FILE).unlink(), r"cfg.json: missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_one_clear_error_and_change_nothing(tmp_path, case):
    damage, message = BAD_FILES[case]
    make("topk").save(tmp_path)
    damage(tmp_path)
    before = tree_state(tmp_path)
    with pytest.raises(SAEFormatError, match=message):
        SAE.load(tmp_path)
    assert tree_state(tmp_path) == before


def test_verify_false_loads_a_file_edited_after_saving(tmp_path):
    sae = make("topk")
    sae.save(tmp_path)
    t = safetensors.torch.load_file(tmp_path / WEIGHTS_FILE)
    t["b_enc"] += 1
    (tmp_path / WEIGHTS_FILE).write_bytes(safetensors.torch.save(t))
    with pytest.raises(SAEFormatError):
        SAE.load(tmp_path)
    loaded = SAE.load(tmp_path, verify=False)
    torch.testing.assert_close(loaded.b_enc, sae.b_enc.detach() + 1)


def test_tied_initialisation_and_unit_decoder():
    sae = make("topk", d_in=10, d_sae=30)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(30, dtype=torch.float64))
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    assert math.isclose(sae.W_enc.detach().norm(dim=0).mean().item(), 1.0)


def test_relu_encoder_is_scaled_so_the_first_reconstruction_is_about_half_the_input():
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="relu", d_in=32, d_sae=512, dtype="float64"))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(512, dtype=torch.float64))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.t() * (32 / 512))  # tied, scaled by d_in / d_sae
    x = torch.randn(4096, 32, dtype=torch.float64)
    x_hat = sae(x).x_hat
    # by hand: sum_i ReLU(s <x, d_i>) d_i ~ s d_sae x / (2 d_in) = x / 2 for random unit rows d_i
    along = (x_hat * x).sum(-1) / (x * x).sum(-1)
    assert 0.4 < along.mean().item() < 0.6
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert fvu < 0.5  # unscaled, x_hat ~ 8x plus noise: FVU about 57
    narrow = create_sae(SAEConfig(arch="relu", d_in=32, d_sae=16, dtype="float64"))
    assert torch.equal(narrow.W_enc, narrow.W_dec.t())  # never scaled up
