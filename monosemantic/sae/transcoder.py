"""Transcoders (Dunefsky et al. 2024, "Transcoders find interpretable LLM feature circuits"): a
sparse dictionary that reads one hookpoint (an MLP's input, after its norm: `layers.L.mlp.in`) and
writes another (the MLP's output: `layers.L.mlp.out`), so that it can stand in for the MLP.

    z = ReLU(TopK_k(x @ W_enc + b_enc))          x [..., d_in], the MLP's input
    y_hat = z @ W_dec + b_dec (+ x @ W_skip)     y_hat [..., d_out], the MLP's output

`skip_transcoder` adds the linear skip path x @ W_skip [d_in, d_out] (Paulo et al. 2025,
"Transcoders beat sparse autoencoders for interpretability"), initialised to zero. b_dec is the
output's bias, so it is never subtracted from the input (apply_b_dec_to_input=False).

The trainer, which knows nothing of transcoders, reads batches of [B, d_in + d_out]: the input and
the target side by side, as the multi-hookpoint stream concatenates mlp.in and mlp.out
(`batch_width`, `target`). The TopK training step runs on the sparse fast path (topk.py); the
dense `forward` is its reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from monosemantic.sae.base import SAE, SAEConfig, SAEOutput, TrainOutput, mse_loss
from monosemantic.sae.topk import active_k, auxk_dense, encoder_preacts, select_topk, sparse_training_step


class TopKTranscoder(SAE):
    """TopK transcoder with AuxK; see the module docstring."""

    arch = "transcoder"
    skip = False

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device)
        dtype = cfg.torch_dtype
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, self.d_out, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out, device=device, dtype=dtype))
        if self.skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, self.d_out, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def d_out(self) -> int:
        return self.cfg.d_out if self.cfg.d_out is not None else self.cfg.d_in

    @property
    def batch_width(self) -> int:
        return self.cfg.d_in + self.d_out

    def target(self, xy: Tensor) -> Tensor:
        """The output part [..., d_out] of a training batch [..., d_in + d_out]."""
        return xy[..., self.cfg.d_in :]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # random unit-norm decoder rows; encoder columns tied to them where the widths agree (as
        # for SAEs), else their own random unit directions; the skip path starts at zero
        self.W_dec.copy_(torch.randn(tuple(self.W_dec.shape), dtype=torch.float32, device=self.W_dec.device))
        self.normalize_decoder_()
        if self.W_dec.shape[1] == self.cfg.d_in:
            self.W_enc.copy_(self.W_dec.t())
        else:
            w = torch.randn(self.cfg.d_in, self.cfg.d_sae, dtype=torch.float32, device=self.W_enc.device)
            self.W_enc.copy_(w / w.norm(dim=0, keepdim=True).clamp_min(1e-12))
        self.b_enc.zero_()
        self.b_dec.zero_()
        if self.skip and hasattr(self, "W_skip"):
            self.W_skip.zero_()

    def activation(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(active_k(self.cfg), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def skip_term(self, x: Tensor) -> Tensor | None:
        """x @ W_skip [N, d_out] for x [N, d_in], or None without a skip path."""
        return x @ self.W_skip if self.skip else None

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """The output [..., d_out] from latents z [..., d_sae]; a skip transcoder needs the input x
        [..., d_in] that z was encoded from."""
        if z.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"expected latents of shape [..., {self.cfg.d_sae}], got {list(z.shape)}")
        lead = z.shape[:-1]
        out = torch.addmm(self.b_dec, z.reshape(-1, self.cfg.d_sae).to(self.W_dec.dtype), self.W_dec)
        if self.skip:
            if x is None or x.shape[:-1] != lead:
                got = "nothing" if x is None else f"shape {list(x.shape)}"
                raise ValueError(
                    f"a skip transcoder's output depends on its input: decode(z, x) with x [..., {self.cfg.d_in}] "
                    f"matching z {list(z.shape)}; got {got}"
                )
            out = out + self._flatten(x) @ self.W_skip
        return out.reshape(*lead, self.d_out)

    def transcode(self, x: Tensor) -> Tensor:
        """The transcoder's stand-in for the MLP's output, [..., d_out], from its input x [..., d_in]."""
        return self.decode(self.encode(x), x)

    def _split(self, xy: Tensor) -> tuple[Tensor, Tensor]:
        if xy.shape[-1] != self.batch_width:
            raise ValueError(
                f"a transcoder trains on its input and target side by side: expected shape "
                f"[..., {self.cfg.d_in} + {self.d_out}], got {list(xy.shape)}"
            )
        xy = xy.reshape(-1, self.batch_width).to(self.W_enc.dtype)
        return xy[:, : self.cfg.d_in], xy[:, self.cfg.d_in :]

    def forward(self, xy: Tensor, *, dead: Tensor | None = None, penalty_scale: float = 1.0) -> SAEOutput:
        """Dense reference on a batch xy [..., d_in + d_out] (input, target): x_hat is the output."""
        lead = xy.shape[:-1]
        x, y = self._split(xy)
        pre = self.pre_acts(x)
        latents = self.activation(pre)
        y_hat = latents @ self.W_dec + self.b_dec
        skip = self.skip_term(x)
        if skip is not None:
            y_hat = y_hat + skip
        losses = {"mse": mse_loss(y_hat, y)}
        losses.update(auxk_dense(self, x, y_hat, pre, dead, target=y))
        loss = torch.stack(list(losses.values())).sum()
        return SAEOutput(y_hat.reshape(*lead, -1), latents.reshape(*lead, -1), loss, losses)

    def training_forward(
        self,
        xy: Tensor,
        *,
        dead: Tensor | None = None,
        penalty_scale: float = 1.0,
        matmul_dtype: torch.dtype | None = None,
    ) -> TrainOutput:
        x, y = self._split(xy)
        B, k = x.shape[0], active_k(self.cfg)
        pre = encoder_preacts(self, x, matmul_dtype)
        vals, idx, W_enc_rows = select_topk(self, x, pre, k)
        rows = torch.arange(B, device=x.device).repeat_interleave(k)
        return sparse_training_step(
            self, x, pre, rows, idx.reshape(-1), vals.reshape(-1), dead, y, self.skip_term(x), W_enc_rows
        )


class SkipTranscoder(TopKTranscoder):
    """TopK transcoder with a linear skip path x @ W_skip (Paulo et al. 2025)."""

    arch = "skip_transcoder"
    skip = True
    W_skip: nn.Parameter
