"""What every SAE architecture shares: outputs, parameters, input semantics, save/load.

- `SAEConfig` (in `config.py`, re-exported here): the JSON-able description saved as `cfg.json`.
- `SAEOutput`: what `sae(x)` returns (dense, plain autograd: also the reference for the fast path).
- `TrainOutput`: what `sae.training_forward(x)` returns to the trainer (fast path where there is one).
- `SAE`: base module with W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in];
  the input semantics every architecture honours (b_dec subtraction, per-token input
  normalisation); `save(dir)` / `SAE.load(dir)` (our files only: safetensors, verified; other
  tools' formats load with `monosemantic.formats.load_sae`); the unit-norm decoder constraint; folding of the
  input-normalisation scalar into the weights.

An architecture subclasses `SAE` and implements `activation` (and, if it has one, a sparse
`training_forward`); `registry.py` lists it in `ARCHITECTURES`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from monosemantic.atomic import atomic_write_bytes, atomic_write_json
from monosemantic.config import ConfigError, to_dict
from monosemantic.sae.config import (  # noqa: F401  (re-exported: the names callers know from here)
    CFG_FILE,
    DTYPES,
    LAYER_NORM_EPS,
    WEIGHTS_FILE,
    SAEConfig,
    SAEFormatError,
    check_state,
    file_sha256,
    read_config,
)


class SAEOutput(NamedTuple):
    """What `sae(x)` returns; leading dimensions of x are kept.

    x_hat:   [..., d_in]  reconstruction
    latents: [..., d_sae] latent activations (dense)
    loss:    []           training objective: the sum of `losses`
    losses:  named terms of the loss, already weighted: "mse" (squared error summed over d_in,
             averaged over tokens), plus "l1" (relu) or "auxk" (topk family, when dead latents
             are given)
    """

    x_hat: Tensor
    latents: Tensor
    loss: Tensor
    losses: dict[str, Tensor]


class TrainOutput(NamedTuple):
    """What `sae.training_forward(x)` returns to the trainer; x is [B, d_in].

    x_hat:  [B, d_in] reconstruction (detached)
    loss:   []        training objective (differentiable)
    losses: named, weighted terms of the loss (detached)
    fired:  [d_sae]   bool, latents with a nonzero activation on some token of the batch
    l0:     []        mean number of nonzero latents per token
    """

    x_hat: Tensor
    loss: Tensor
    losses: dict[str, Tensor]
    fired: Tensor
    l0: Tensor


#: floats of dense latents `encode_entries` holds at a time (256 MiB in float32)
ENCODE_BUDGET = 1 << 26

#: architecture name -> class, for `SAE.load`. Filled by registry.py, which imports every
#: architecture (each imports this module, so the table cannot be built here).
ARCHITECTURES: dict[str, type[SAE]] = {}


# From this many latents the trainer stores W_enc by latent (`SAE.encoder_layout_`): measured at
# 16k (d_in 512, batch 4096, 2 threads) the bf16 step ran 13-19% faster; at 4096, where the copies
# it saves are small, 7-15% slower (oneDNN's bf16 matmul reads a transposed W_enc slower there).
BY_LATENT_FROM = 16384


def mse_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """Squared error summed over d_in, averaged over tokens (the SAELens convention)."""
    return (x_hat - x).pow(2).sum(-1).mean()


class SAE(nn.Module):
    """Base class: parameters, shared maths, save/load. Subclasses implement `encode`."""

    arch: ClassVar[str] = ""
    #: buffers that scale with the latent activations (e.g. a threshold); see `fold_input_scale_`.
    scaled_buffers: ClassVar[tuple[str, ...]] = ()
    #: latents can be negative (sae/signed.py); code that reads firing as z > 0 refuses such an SAE
    signed_latents: ClassVar[bool] = False
    #: the training fast path reads W_enc by latent (sparse kernels, sae/sparse.py): the trainer
    #: stores it by latent (`encoder_layout_`) for such an SAE from `BY_LATENT_FROM` latents
    trains_by_latent: ClassVar[bool] = False

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__()
        if cfg.arch != self.arch:
            raise ConfigError(f"{type(self).__name__} needs arch={self.arch!r}, got {cfg.arch!r}")
        self.cfg = cfg
        dtype = cfg.torch_dtype
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae, device=device, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, device=device, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=device, dtype=dtype))
        self._workspace: dict[str, Tensor] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Random unit-norm decoder rows, encoder tied to their transpose (OpenAI, sec. A.1; also
        # SAELens' and sparsify's default); biases zero until the trainer sets b_dec from data.
        # drawn in float32 so that a seed gives the same directions whatever the weights' dtype
        self.W_dec.copy_(torch.randn(self.cfg.d_sae, self.cfg.d_in, dtype=torch.float32, device=self.W_dec.device))
        self.normalize_decoder_()
        self.W_enc.copy_(self.W_dec.t())
        self.b_enc.zero_()
        self.b_dec.zero_()

    # ---- maths shared by every architecture -------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def batch_width(self) -> int:
        """Width of the trainer's batches: d_in (a transcoder reads its input and target side by side)."""
        return self.cfg.d_in

    def target(self, batch: Tensor) -> Tensor:
        """What the reconstruction of a training batch [..., batch_width] is compared with: the batch."""
        return batch

    def _flatten(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"expected activations of shape [..., {self.cfg.d_in}] (d_in={self.cfg.d_in}), "
                f"got shape {list(x.shape)}"
            )
        return x.reshape(-1, self.cfg.d_in).to(self.W_enc.dtype)

    def normalize_input(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """x [N, d_in] in the SAE's input space (`cfg.input_norm`), and the per-token statistics
        ([N, 1] each) that `restore_output` needs to map a reconstruction back; None if no norm."""
        if self.cfg.input_norm == "layer_norm":
            # OpenAI's LN: unbiased std, eps added to it here but not where the output is restored
            mu = x.mean(dim=-1, keepdim=True)
            x = x - mu
            std = x.std(dim=-1, keepdim=True)
            return x / (std + LAYER_NORM_EPS), (mu, std)
        if self.cfg.input_norm == "constant_norm":
            coeff = self.cfg.d_in**0.5 / x.norm(dim=-1, keepdim=True)
            return x * coeff, (torch.zeros_like(coeff), coeff)
        return x, None

    def restore_output(self, x_hat: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        """Undo `normalize_input` on a reconstruction x_hat [N, d_in]."""
        if stats is None:
            return x_hat
        shift, scale = stats
        if self.cfg.input_norm == "layer_norm":
            return x_hat * scale + shift
        return x_hat / scale

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations (x - b_dec) @ W_enc + b_enc: [N, d_sae] for x [N, d_in] that
        `normalize_input` has already seen."""
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return torch.addmm(self.b_enc, x, self.W_enc)

    def encode(self, x: Tensor) -> Tensor:
        """Latent activations [..., d_sae] of activations x [..., d_in]."""
        lead = x.shape[:-1]
        x, _ = self.normalize_input(self._flatten(x))
        return self.inference_activation(self.pre_acts(x)).reshape(*lead, self.cfg.d_sae)

    def encode_entries(self, x: Tensor, budget: int = ENCODE_BUDGET) -> tuple[Tensor, Tensor, Tensor]:
        """The nonzero latents of x [..., d_in] flattened to [N, d_in]: (token [nnz], latent [nnz],
        value [nnz]) in row-major order, exactly the nonzeros of `encode(x)` without its [N, d_sae]
        tensor: tokens are encoded `budget // d_sae` at a time (at 1M latents, 4096 tokens of dense
        latents are 16 GiB). Architectures with sparse encoders override it with a direct path."""
        x = x.reshape(-1, self.cfg.d_in)
        step = max(1, budget // self.cfg.d_sae)
        parts = []
        for start in range(0, x.shape[0], step) or [0]:  # no tokens: one empty encode, for the dtypes
            z = self.encode(x[start : start + step])
            tok, lat = torch.nonzero(z, as_tuple=True)
            parts.append((tok + start, lat, z[tok, lat]))
        tok, lat, val = (torch.cat(ts) for ts in zip(*parts))
        return tok, lat, val

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """Reconstruction [..., d_in] from latent activations z [..., d_sae].

        x: the activations [..., d_in] that z was encoded from; needed (only) when `cfg.input_norm`
        normalises each token, whose mean and scale are then restored on the output.
        """
        if z.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"expected latents of shape [..., {self.cfg.d_sae}], got {list(z.shape)}")
        lead = z.shape[:-1]
        out = torch.addmm(self.b_dec, z.reshape(-1, self.cfg.d_sae).to(self.W_dec.dtype), self.W_dec)
        if self.cfg.input_norm != "none":
            if x is None or x.shape[:-1] != lead:
                got = "nothing" if x is None else f"shape {list(x.shape)}"
                raise ValueError(
                    f"this SAE normalises each input token (input_norm={self.cfg.input_norm!r}), so decode "
                    f"needs the activations z was encoded from: decode(z, x) with x [..., {self.cfg.d_in}] "
                    f"matching z {list(z.shape)}; got {got}"
                )
            out = self.restore_output(out, self.normalize_input(self._flatten(x))[1])
        return out.reshape(*lead, self.cfg.d_in)

    def aux_losses(
        self, x: Tensor, x_hat: Tensor, latents: Tensor, pre: Tensor, dead: Tensor | None, penalty_scale: float
    ) -> dict[str, Tensor]:
        """Loss terms besides the MSE (dense reference); x, x_hat [N, d_in]; latents, pre [N, d_sae]."""
        return {}

    def forward(self, x: Tensor, *, dead: Tensor | None = None, penalty_scale: float = 1.0) -> SAEOutput:
        """Dense forward pass with plain autograd; see `SAEOutput`. With `cfg.input_norm` the losses
        are measured in the normalised space and x_hat is mapped back to the input's.

        dead:          [d_sae] bool, latents the trainer counts as dead (enables AuxK)
        penalty_scale: multiplier of the sparsity penalty during its warm-up (0..1)
        """
        lead = x.shape[:-1]
        x, stats = self.normalize_input(self._flatten(x))
        pre = self.pre_acts(x)
        latents = self.activation(pre)
        x_hat = latents @ self.W_dec + self.b_dec
        losses = {"mse": mse_loss(x_hat, x)}
        losses.update(self.aux_losses(x, x_hat, latents, pre, dead, penalty_scale))
        loss = torch.stack(list(losses.values())).sum()
        x_hat = self.restore_output(x_hat, stats)
        return SAEOutput(x_hat.reshape(*lead, -1), latents.reshape(*lead, -1), loss, losses)

    def activation(self, pre: Tensor) -> Tensor:
        """Latent activations [N, d_sae] from pre-activations [N, d_sae] (dense)."""
        raise NotImplementedError

    def inference_activation(self, pre: Tensor) -> Tensor:
        """What `encode` applies to pre-activations; differs from `activation` only where training
        sees the batch and inference cannot (BatchTopK)."""
        return self.activation(pre)

    def training_forward(
        self,
        x: Tensor,
        *,
        dead: Tensor | None = None,
        penalty_scale: float = 1.0,
        matmul_dtype: torch.dtype | None = None,
    ) -> TrainOutput:
        """One training forward pass on x [B, d_in]; architectures with sparse latents override it."""
        out = self.forward(x, dead=dead, penalty_scale=penalty_scale)
        active = out.latents != 0
        self.observe_training_acts_(out.latents.detach()[active])
        return TrainOutput(
            out.x_hat.detach(),
            out.loss,
            {k: v.detach() for k, v in out.losses.items()},
            active.any(0),
            active.sum(-1).float().mean(),
        )

    def observe_training_acts_(self, acts: Tensor) -> None:
        """Called by every training forward pass with the batch's selected latent activations
        (flat; may include non-positive ones): where an architecture estimates something for
        inference from training batches (BatchTopK's threshold), it updates it here."""

    def calibrate_(self, x: Tensor) -> None:
        """Called once when training ends with the last training batch x [B, d_in]: where an
        architecture estimates something for inference during training (BatchTopK's threshold),
        it re-estimates it here from the final weights."""

    def workspace(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A reusable scratch tensor: a fresh [B, d_sae] allocation each step costs page faults
        comparable to a fifth of the encoder matmul on CPU."""
        buf = self._workspace.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != self.W_enc.device:
            buf = torch.empty(shape, dtype=dtype, device=self.W_enc.device)
            self._workspace[name] = buf
        return buf

    def transposed_copy(self, name: str, t: Tensor) -> Tensor:
        """t^T, contiguous: a view where t is stored transposed (`encoder_layout_`), else a copy
        into a reused buffer (see `workspace`)."""
        if t.t().is_contiguous():
            return t.detach().t()
        return self.workspace(name, tuple(t.shape[::-1]), t.dtype).copy_(t.detach().t())

    @torch.no_grad()
    def encoder_layout_(self, by_latent: bool) -> None:
        """Store W_enc [d_in, d_sae] as the transpose of a contiguous [d_sae, d_in] tensor (by_latent)
        or contiguous. By latent, the sparse fast path gets W_enc^T (for the exact values of the
        picked latents) as a view and gives its gradient, computed latent by latent, in W_enc's
        layout: two transposing copies of W_enc fewer per step (each ~3x a plain copy on CPU).
        Same values, same Parameter object; set before the optimiser creates its state (fused
        Adam walks a parameter, its gradient and its moments in one flat order)."""
        if by_latent != self.W_enc.t().is_contiguous():
            self.W_enc.data = self.W_enc.data.t().contiguous().t() if by_latent else self.W_enc.data.contiguous()

    # ---- constraints kept by the trainer ----------------------------------------------------

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Project decoder rows back onto the unit sphere (Towards Monosemanticity; OpenAI)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the component of each decoder row's gradient along the row, so that Adam's step
        moves along the sphere (Towards Monosemanticity, "Autoencoder Architecture")."""
        g, W = self.W_dec.grad, self.W_dec
        if g is not None:
            # batched row dots + in-place update: no [d_sae, d_in] temporaries (5x faster on CPU)
            dots = torch.bmm(g.unsqueeze(1), W.unsqueeze(2)).view(-1, 1)  # [d_sae, 1]
            g.addcmul_(dots, W, value=-1)

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        """Make an SAE trained on `scale * x` take raw x, keeping the decoder unit-norm.

        With act positively homogeneous (ReLU, top-k, thresholds that scale along), the latents for
        raw x are the trained latents divided by `scale`: b_enc, b_dec and thresholds divide by
        `scale`; W_enc and W_dec are unchanged.
        """
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"activation scale must be a positive finite number, got {scale}")
        if self.cfg.input_norm != "none":
            raise ValueError(
                f"input_norm={self.cfg.input_norm!r} normalises each token, so a dataset-wide input scale "
                "cancels out: there is nothing to fold"
            )
        self.b_enc.div_(scale)
        self.b_dec.div_(scale)
        for name in self.scaled_buffers:
            getattr(self, name).div_(scale)
        self.cfg = dataclasses.replace(self.cfg, activation_scale=self.cfg.activation_scale * scale)

    # ---- save / load ------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write `cfg.json` + `sae.safetensors` into directory `path` (each file atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        data = safetensors.torch.save(tensors, metadata={"arch": self.cfg.arch})
        # Weights first, then the config that names their hash: a crash in between leaves a
        # mismatch that `load` reports, never a silently inconsistent pair.
        atomic_write_bytes(path / WEIGHTS_FILE, data)
        atomic_write_json(path / CFG_FILE, {**to_dict(self.cfg), "sha256": hashlib.sha256(data).hexdigest()})
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None, verify: bool = True) -> SAE:
        """Load an SAE saved by `save`, checking architecture, shapes, dtypes and integrity; in eval
        mode. Only our own files: those of other tools (SAELens, sparsify, ...) load with
        `monosemantic.formats.load_sae`, which reads every format."""
        cfg, expected_sha = read_config(path)
        arch_cls = ARCHITECTURES[cfg.arch]
        if cls is not SAE and arch_cls is not cls:
            raise SAEFormatError(f"{path}: holds a {cfg.arch!r} SAE, not {cls.arch!r}")
        weights = Path(path) / WEIGHTS_FILE
        if not weights.is_file():
            raise SAEFormatError(f"{weights}: missing; an SAE directory holds {CFG_FILE} and {WEIGHTS_FILE}")
        if verify and expected_sha is not None and file_sha256(weights) != expected_sha:
            raise SAEFormatError(
                f"{weights}: contents do not match the sha256 recorded in {CFG_FILE} (the file was "
                "changed or damaged after saving); pass verify=False to load it anyway"
            )
        try:
            tensors = safetensors.torch.load_file(weights)
        except (safetensors.SafetensorError, OSError, ValueError) as e:
            raise SAEFormatError(f"{weights}: not a readable safetensors file ({e}); is it truncated?") from e
        with torch.device("meta"):
            sae = arch_cls(cfg)
        check_state(sae.state_dict(), tensors, str(weights))
        return sae.assign_(tensors, device)

    def with_dtype(self, dtype: Literal["float32", "bfloat16", "float16", "float64"]) -> SAE:
        """A copy in eval mode with weights and floating-point buffers in `dtype` ('bfloat16' to
        ship an SAE at half the size, 'float32' to compute with one stored in bf16; the upcast is
        exact); `cfg.dtype` follows, so the copy saves and loads as such."""
        cfg = dataclasses.replace(self.cfg, dtype=dtype)  # checked again: an unknown dtype is refused
        with torch.device("meta"):
            sae = type(self)(cfg)
        want = sae.state_dict()
        tensors = {k: v.detach().to(want[k].dtype, copy=True) for k, v in self.state_dict().items()}
        return sae.assign_(tensors, self.W_enc.device)

    def assign_(self, tensors: dict[str, Tensor], device: torch.device | str | None = None) -> SAE:
        """Take `tensors` (already checked against `state_dict()`) as this SAE's state, built on the
        meta device so no memory is spent on an initialisation; returns it in eval mode (a loaded
        SAE is for inference; the trainer switches it back)."""
        self.load_state_dict(tensors, assign=True)
        self._workspace = {}
        sae = self.to(device) if device is not None else self
        return sae.eval()
