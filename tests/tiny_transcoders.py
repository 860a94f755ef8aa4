"""Random transcoders (float64, biases and skip paths non-zero) for the tiny models of tiny_models.py:
what the circuits tests build replacement models from."""

import torch

from monosemantic.sae import SAEConfig, create_sae


def random_transcoders(d: int, layers: int, arch: str = "transcoder", seed: int = 0, d_sae: int = 64, k: int = 4):
    torch.manual_seed(seed)
    out = []
    for _ in range(layers):
        cfg = SAEConfig(arch=arch, d_in=d, d_sae=d_sae, k=k, dtype="float64", apply_b_dec_to_input=False)
        tc = create_sae(cfg).eval()
        with torch.no_grad():
            tc.b_enc.normal_(0, 0.1)
            tc.b_dec.normal_(0, 0.1)
            if arch == "skip_transcoder":
                tc.W_skip.normal_(0, 0.05)
        out.append(tc)
    return out
