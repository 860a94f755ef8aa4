"""A TopK SAE split along d_sae over the ranks of a process group (OpenAI, "Scaling and evaluating
sparse autoencoders", sec. 3.5 and appendix: how they trained 16M latents).

Rank r of the latent group holds latents [r * n, (r + 1) * n), n = d_sae / ranks, as an ordinary
`TopKSAE` of n latents: W_enc [d_in, n], b_enc [n], W_dec [n, d_in]; b_dec [d_in] is replicated.

- `ShardSpec`: the full config and this rank's place in the group.
- `init_shard(spec)` / `shard_sae(full, spec)` / `gather_sae(local, spec)`: a fresh shard (the same
  latents whatever the number of ranks), the shard of a full SAE, and the full SAE on one rank.
- `sharded_topk(pre, k, spec)`: the global top k of pre-activations split over ranks: each rank's
  local top k, all-gathered, then the top k of those candidates.
- `sharded_training_forward` / `sharded_reconstruct`: the fast TopK path on shards; each rank's
  partial reconstruction (its latents' decoder rows) is summed over the group.

Column-parallel encoder, row-parallel decoder (Megatron-LM's f and g operators): `_ToShards` is the
identity forward and sums gradients over the group backward; `_FromShards` sums partial
reconstructions forward and passes the gradient through backward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from monosemantic.config import ConfigError, derive_seed
from monosemantic.sae.base import SAEConfig, TrainOutput, mse_loss
from monosemantic.sae.sparse import selected_preacts, sparse_decode
from monosemantic.sae.topk import TopKSAE, encoder_preacts, k_aux

SHARD_DIMS = {"W_enc": 1, "b_enc": 0, "W_dec": 0}  # the dimension along d_sae; b_dec is replicated
INIT_BLOCK = 4096  # latents drawn per seeded block, so that a seed gives the same dictionary on any ranks


@dataclass(frozen=True)
class ShardSpec:
    """The full SAE config, and which of `size` equal slices of its latents this rank holds."""

    cfg: SAEConfig
    rank: int
    size: int
    group: dist.ProcessGroup | None = None

    def __post_init__(self) -> None:
        if self.cfg.arch != "topk":
            raise ConfigError(f"--shard-latents splits TopK SAEs; got arch={self.cfg.arch!r} (use --arch topk)")
        if self.cfg.d_sae % self.size:
            raise ConfigError(
                f"d_sae={self.cfg.d_sae} does not split evenly over {self.size} latent shards; "
                f"choose a d_sae divisible by {self.size}"
            )

    @property
    def n_local(self) -> int:
        return self.cfg.d_sae // self.size

    @property
    def lo(self) -> int:
        return self.rank * self.n_local

    @property
    def hi(self) -> int:
        return self.lo + self.n_local

    def local_config(self) -> SAEConfig:
        """Config of this rank's `TopKSAE`: n_local latents (k capped at n_local for the local top k)."""
        return dataclasses.replace(self.cfg, d_sae=self.n_local, k=min(self.cfg.k, self.n_local))


# ---- building and gathering shards ------------------------------------------------------------


@torch.no_grad()
def init_shard(spec: ShardSpec, seed: int, device: torch.device | str | None = None) -> TopKSAE:
    """A freshly initialised shard: unit-norm random decoder rows, encoder tied to them (as
    `SAE.reset_parameters`). Rows come in blocks of `INIT_BLOCK` latents, block j drawn from a
    generator seeded by (seed, j), so a seed gives the same dictionary for any number of shards."""
    sae = TopKSAE(spec.local_config(), device=device)
    first, last = spec.lo // INIT_BLOCK, (spec.hi - 1) // INIT_BLOCK
    blocks = []
    for j in range(first, last + 1):
        # block j first, then the seed (j * 1_000_003 + seed): the order these blocks always had
        g = torch.Generator().manual_seed(derive_seed(j, seed))
        rows = min(INIT_BLOCK, spec.cfg.d_sae - j * INIT_BLOCK)
        blocks.append(torch.randn(rows, spec.cfg.d_in, generator=g))
    rows = torch.cat(blocks)[spec.lo - first * INIT_BLOCK : spec.hi - first * INIT_BLOCK]
    sae.W_dec.copy_(rows)
    sae.normalize_decoder_()
    sae.W_enc.copy_(sae.W_dec.t())
    return sae


@torch.no_grad()
def shard_sae(full: TopKSAE, spec: ShardSpec) -> TopKSAE:
    """This rank's shard of a full SAE (a copy)."""
    local = TopKSAE(spec.local_config(), device=full.W_enc.device)
    for name, tensor in full.state_dict().items():
        if name in SHARD_DIMS:
            tensor = tensor.narrow(SHARD_DIMS[name], spec.lo, spec.n_local)
        local.get_parameter(name).copy_(tensor)
    return local


@torch.no_grad()
def gather_sae(local: TopKSAE, spec: ShardSpec, dst: int = 0) -> TopKSAE | None:
    """The full SAE, on the CPU of latent rank `dst`; None on the other ranks. Shards travel one at a
    time (point to point), so no device ever holds more than its own shard."""
    full_cfg = dataclasses.replace(local.cfg, d_sae=spec.cfg.d_sae, k=spec.cfg.k)
    parts: dict[str, list[Tensor]] = {name: [] for name in SHARD_DIMS}
    for r in range(spec.size):
        for name in SHARD_DIMS:
            mine = local.get_parameter(name).detach()
            if r == spec.rank == dst:
                parts[name].append(mine.cpu())
            elif spec.rank == dst:
                buf = torch.empty_like(mine)
                dist.recv(buf, group=spec.group, group_src=r)
                parts[name].append(buf.cpu())
            elif spec.rank == r:
                dist.send(mine.contiguous(), group=spec.group, group_dst=dst)
    if spec.rank != dst:
        return None
    tensors = {name: torch.cat(parts[name], SHARD_DIMS[name]) for name in SHARD_DIMS}
    tensors["b_dec"] = local.b_dec.detach().cpu()
    with torch.device("meta"):
        full = TopKSAE(full_cfg)
    full.load_state_dict(tensors, assign=True)
    return full


# ---- the sharded top k and the forward pass ----------------------------------------------------


class _ToShards(torch.autograd.Function):
    """Identity forward; backward sums the gradient over the group (each shard saw a part)."""

    @staticmethod
    def forward(ctx, t, group):  # noqa: D401
        ctx.group = group
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _FromShards(torch.autograd.Function):
    """Sums the shards' partial reconstructions forward; every rank computes the same loss from
    the sum, so the gradient of each partial is the gradient of the sum, passed through."""

    @staticmethod
    def forward(ctx, t, group):  # noqa: D401
        t = t.contiguous().clone()
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _gather_candidates(vals: Tensor, idx: Tensor, spec: ShardSpec) -> tuple[Tensor, Tensor]:
    """Every rank's [B, m] candidates side by side: [B, size * m] values and global latent ids."""
    all_vals = [torch.empty_like(vals) for _ in range(spec.size)]
    all_idx = [torch.empty_like(idx) for _ in range(spec.size)]
    dist.all_gather(all_vals, vals.contiguous(), group=spec.group)
    dist.all_gather(all_idx, idx.contiguous(), group=spec.group)
    return torch.cat(all_vals, 1), torch.cat(all_idx, 1)


@torch.no_grad()
def sharded_topk(pre: Tensor, k: int, spec: ShardSpec) -> tuple[Tensor, Tensor]:
    """The top k over all shards of pre-activations: pre [B, n_local] holds this rank's latents.
    Returns values [B, k] and global latent ids [B, k], the same on every rank of the group."""
    vals, idx = pre.topk(min(k, pre.shape[1]), dim=-1, sorted=False)
    cand_vals, cand_idx = _gather_candidates(vals, idx + spec.lo, spec)
    top, pos = cand_vals.topk(k, dim=-1, sorted=False)
    return top, cand_idx.gather(1, pos)


def _local_entries(vals: Tensor, ids: Tensor, spec: ShardSpec) -> tuple[Tensor, Tensor, Tensor]:
    """The entries of global selections vals, ids [B, m] that this rank holds, in the row-sorted
    layout of `sparse`: rows, local cols, values (each [nnz])."""
    mine = (ids >= spec.lo) & (ids < spec.hi)
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)
    return rows[mine], ids[mine] - spec.lo, vals[mine]


def _sharded_auxk(
    sae: TopKSAE,
    x: Tensor,
    x_hat: Tensor,
    pre: Tensor,
    dead: Tensor | None,
    b_dec: Tensor | None,
    W_enc_rows: Tensor | None,
    spec: ShardSpec,
) -> dict[str, Tensor]:
    """AuxK (see `topk.auxk_sparse`) with the top k_aux dead latents taken over all shards."""
    if dead is None:
        return {}
    n_dead = dead.sum()
    dist.all_reduce(n_dead, group=spec.group)
    if int(n_dead) == 0:
        return {}
    n = min(k_aux(spec.cfg), int(n_dead))
    with torch.no_grad():
        masked = pre.masked_fill(~dead, float("-inf"))  # -inf never beats a dead latent: n exist
        vals, idx = masked.topk(min(n, masked.shape[1]), dim=-1, sorted=False)
        cand_vals, cand_idx = _gather_candidates(vals, idx + spec.lo, spec)
        top, pos = cand_vals.topk(n, dim=-1, sorted=False)
    rows, cols, values = _local_entries(top, cand_idx.gather(1, pos), spec)
    exact = values if pre.dtype == sae.W_enc.dtype else None
    pre_aux = selected_preacts(x, sae.W_enc, sae.b_enc, b_dec, rows, cols, exact, W_enc_rows)
    e_hat = _FromShards.apply(sparse_decode(F.relu(pre_aux), rows, cols, sae.W_dec, x.shape[0]), spec.group)
    return {"auxk": spec.cfg.auxk_coef * mse_loss(e_hat, (x - x_hat).detach())}


def sharded_training_forward(
    sae: TopKSAE,
    x: Tensor,
    *,
    spec: ShardSpec,
    dead: Tensor | None = None,
    penalty_scale: float = 1.0,
    matmul_dtype: torch.dtype | None = None,
) -> TrainOutput:
    """`TopKSAE.training_forward` for a shard: x [B, d_in] is the same on every rank of the group;
    `dead` [n_local] and the returned `fired` [n_local] are this rank's latents; loss, x_hat and l0
    are those of the full SAE, the same on every rank."""
    x = sae._flatten(x)
    B = x.shape[0]
    pre = encoder_preacts(sae, x, matmul_dtype)  # [B, n_local]
    top, ids = sharded_topk(pre, spec.cfg.k, spec)
    rows, cols, values = _local_entries(top, ids, spec)
    exact = values if pre.dtype == sae.W_enc.dtype else None
    # b_dec's gradient through the encoder comes in parts, one per shard: summed by _ToShards
    b_dec = _ToShards.apply(sae.b_dec, spec.group) if sae.cfg.apply_b_dec_to_input else None
    W_enc_rows = sae.transposed_copy("W_enc_T", sae.W_enc) if pre.dtype != sae.W_enc.dtype else None
    acts = F.relu(selected_preacts(x, sae.W_enc, sae.b_enc, b_dec, rows, cols, exact, W_enc_rows))
    x_hat = _FromShards.apply(sparse_decode(acts, rows, cols, sae.W_dec, B), spec.group) + sae.b_dec
    losses = {"mse": mse_loss(x_hat, x)}
    losses.update(_sharded_auxk(sae, x, x_hat, pre, dead, b_dec, W_enc_rows, spec))
    loss = torch.stack(list(losses.values())).sum()
    active = acts > 0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=x.device)
    fired[cols[active]] = True
    n_active = active.sum().float()
    dist.all_reduce(n_active, group=spec.group)
    return TrainOutput(x_hat.detach(), loss, {k: v.detach() for k, v in losses.items()}, fired, n_active / B)


@torch.no_grad()
def sharded_reconstruct(sae: TopKSAE, x: Tensor, spec: ShardSpec) -> Tensor:
    """x_hat [B, d_in] of the full SAE from its shards (inference: `decode(encode(x))`)."""
    x = sae._flatten(x)
    pre = sae.pre_acts(x)
    top, ids = sharded_topk(pre, spec.cfg.k, spec)
    rows, cols, values = _local_entries(top, ids, spec)
    partial = sparse_decode(F.relu(values), rows, cols, sae.W_dec, x.shape[0])
    dist.all_reduce(partial, group=spec.group)
    return partial + sae.b_dec
