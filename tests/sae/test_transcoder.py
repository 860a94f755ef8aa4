"""monosemantic.sae.transcoder: transcoders against the formula written out by hand, the sparse
training step against the dense-autograd reference, save/load, input-scale folding, and training
one with the ordinary trainer on a known map."""

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.eval.metrics import fvu
from monosemantic.sae import SAE, SAEConfig, create_sae
from monosemantic.train.trainer import TrainConfig, Trainer

ARCHS = ["transcoder", "skip_transcoder"]


def make(arch, d_in=12, d_out=10, d_sae=40, k=5, dtype="float64", **kw):
    cfg = SAEConfig(arch=arch, d_in=d_in, d_out=d_out, d_sae=d_sae, k=k, dtype=dtype, apply_b_dec_to_input=False, **kw)
    tc = create_sae(cfg)
    with torch.no_grad():  # non-trivial biases and skip, so that every term of the maths is exercised
        tc.b_enc.normal_(0, 0.1)
        tc.b_dec.normal_(0, 0.5)
        if arch == "skip_transcoder":
            tc.W_skip.normal_(0, 0.2)
    return tc


def by_hand(tc, x):
    """z = ReLU(TopK(x W_enc + b_enc)); y = z W_dec + b_dec (+ x W_skip), one token at a time, in lists."""
    W_enc, b_enc, W_dec, b_dec = (p.detach().tolist() for p in (tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec))
    W_skip = tc.W_skip.detach().tolist() if tc.skip else None
    out = []
    for row in x.tolist():
        pre = [sum(row[i] * W_enc[i][j] for i in range(tc.d_in)) + b_enc[j] for j in range(tc.d_sae)]
        keep = sorted(range(tc.d_sae), key=lambda j: -pre[j])[: tc.cfg.k]
        z = [max(pre[j], 0.0) if j in keep else 0.0 for j in range(tc.d_sae)]
        y = [sum(z[j] * W_dec[j][o] for j in range(tc.d_sae)) + b_dec[o] for o in range(tc.d_out)]
        if W_skip is not None:
            y = [y[o] + sum(row[i] * W_skip[i][o] for i in range(tc.d_in)) for o in range(tc.d_out)]
        out.append(y)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("arch", ARCHS)
def test_transcode_matches_the_formula_by_hand(arch):
    tc = make(arch).eval()
    x = torch.randn(4, 12, dtype=torch.float64)
    y = tc.transcode(x)
    assert y.shape == (4, 10) and tc.encode(x).shape == (4, 40)
    torch.testing.assert_close(y, by_hand(tc, x))
    assert tc.transcode(x.view(2, 2, 12)).shape == (2, 2, 10)


def grads(module, loss):
    names = [n for n, _ in module.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(module.parameters()))))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dead_count", [0, 7])
def test_sparse_training_step_equals_dense_reference(arch, dead_count):
    tc = make(arch, d_in=16, d_out=12, d_sae=64, k=6, k_aux=8).train()
    xy = torch.randn(24, 28, dtype=torch.float64) * 2
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64)[:dead_count]] = True
    fast = tc.training_forward(xy, dead=dead)
    ref = SAE.training_forward(tc, xy, dead=dead)  # the base class: dense forward, plain autograd
    assert fast.losses.keys() == ref.losses.keys() == ({"mse", "auxk"} if dead_count else {"mse"})
    for key in ref.losses:
        torch.testing.assert_close(fast.losses[key], ref.losses[key])
    torch.testing.assert_close(fast.x_hat, ref.x_hat)
    torch.testing.assert_close(fast.x_hat, tc.transcode(xy[:, :16]))
    assert torch.equal(fast.fired, ref.fired)
    g_fast, g_ref = grads(tc, fast.loss), grads(tc, ref.loss)
    assert ("W_skip" in g_ref) == (arch == "skip_transcoder")
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_records_both_hookpoints(tmp_path, arch):
    tc = make(arch, hookpoint="layers.2.mlp.in", output_hookpoint="layers.2.mlp.out").eval()
    tc.save(tmp_path / "tc")
    back = SAE.load(tmp_path / "tc")
    assert type(back) is type(tc)
    assert (back.cfg.hookpoint, back.cfg.output_hookpoint, back.d_out) == ("layers.2.mlp.in", "layers.2.mlp.out", 10)
    x = torch.randn(5, 12, dtype=torch.float64)
    assert torch.equal(back.transcode(x), tc.transcode(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_folding_the_input_scale_makes_it_take_raw_activations(arch):
    tc = make(arch).eval()
    x, scale = torch.randn(6, 12, dtype=torch.float64), 3.5
    trained_on_scaled = tc.transcode(scale * x) / scale  # what the trainer's scaled model means
    tc.fold_input_scale_(scale)
    torch.testing.assert_close(tc.transcode(x), trained_on_scaled)


def test_skip_transcoder_decode_needs_the_input():
    tc = make("skip_transcoder").eval()
    z = tc.encode(torch.randn(3, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"depends on its input: decode\(z, x\)"):
        tc.decode(z)


def test_config_refuses_subtracting_the_output_bias_from_the_input():
    with pytest.raises(ConfigError, match="b_dec lives in the output space; set apply_b_dec_to_input=False"):
        SAEConfig(arch="transcoder", d_in=4, d_sae=8, k=2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_the_trainer_learns_a_sparse_map(tmp_path, arch):
    """y = 3 relu(x) is a map through sparse units: a trained transcoder explains most of its variance
    from the input alone (the trainer reads [x, y] side by side and never knows it is a transcoder)."""
    torch.manual_seed(0)
    x = torch.randn(8192, 8)
    xy = torch.cat([x, 3 * torch.relu(x)], 1)
    tc = create_sae(SAEConfig(arch=arch, d_in=8, d_out=8, d_sae=32, k=8, apply_b_dec_to_input=False))
    batches = iter(xy[torch.randint(0, 8192, (256,))] for _ in range(10**6))
    trainer = Trainer(tc, TrainConfig(total_tokens=256 * 300, batch_size=256, lr=3e-3, log_every=100), progress=False)
    trained = trainer.fit(batches)
    x_test = torch.randn(2048, 8)
    assert fvu(3 * torch.relu(x_test), trained.transcode(x_test)).item() < 0.1
