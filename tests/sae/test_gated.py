"""monosemantic.sae.gated: the forward pass and the three loss terms against the formulas of
Rajamanoharan et al. (2024, "Improving Dictionary Learning with Gated SAEs") by hand (its recovery
of the toy dictionary is in tests/eval/test_toy.py)."""

import torch

from monosemantic.sae import SAEConfig, create_sae


def test_forward_and_losses_match_the_formulas_by_hand():
    sae = create_sae(SAEConfig(arch="gated", d_in=6, d_sae=10, dtype="float64", l1_coefficient=0.4))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.5)
        sae.r_mag.normal_(0, 0.5)
        sae.b_mag.normal_(0, 0.3)
        sae.W_dec.mul_(torch.rand(10, 1, dtype=torch.float64) + 0.5)
    x = torch.randn(8, 6, dtype=torch.float64)
    out = sae(x, penalty_scale=0.5)
    W_enc, b_gate, W_dec, b_dec = (p.detach() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    r_mag, b_mag = sae.r_mag.detach(), sae.b_mag.detach()
    l1 = aux = mse = 0.0
    for i in range(8):
        proj = (x[i] - b_dec) @ W_enc
        gate = proj + b_gate
        mag = torch.clamp(torch.exp(r_mag) * proj + b_mag, min=0)
        z = torch.where(gate > 0, mag, torch.zeros_like(mag))
        torch.testing.assert_close(out.latents[i], z)
        torch.testing.assert_close(out.x_hat[i], z @ W_dec + b_dec)
        relu_gate = torch.clamp(gate, min=0)
        l1 += (relu_gate * W_dec.norm(dim=1)).sum()
        aux += ((x[i] - (relu_gate @ W_dec + b_dec)) ** 2).sum()
        mse += ((x[i] - (z @ W_dec + b_dec)) ** 2).sum()
    torch.testing.assert_close(out.losses["mse"], mse / 8)
    torch.testing.assert_close(out.losses["l1"], 0.5 * 0.4 * l1 / 8)
    torch.testing.assert_close(out.losses["aux"], aux / 8)
    # the auxiliary reconstruction trains the gate, not the decoder (frozen copy)
    g_dec = torch.autograd.grad(out.losses["aux"], sae.W_dec, allow_unused=True)[0]
    assert g_dec is None or torch.count_nonzero(g_dec) == 0
