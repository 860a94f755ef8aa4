"""EleutherAI sparsify: DIR/cfg.json + DIR/sae.safetensors, one directory per hookpoint.

cfg.json: activation ("topk"), k, num_latents (0: d_in * expansion_factor), d_in, and
transcode / skip_connection / multi_topk / normalize_decoder. Tensors: encoder.weight [d_sae, d_in]
(nn.Linear layout), encoder.bias [d_sae], W_dec [d_sae, d_in], b_dec [d_in].

sparsify's encoder is ReLU(encoder(x - b_dec)) then the top k, the same latents as our topk. A
transcoder (transcode, which also skips the b_dec subtraction) and a skip connection (W_skip) load
into our transcoder classes (`transcoders.py`); the groupmax activation is refused.
multi_topk and normalize_decoder only change training, and are ignored, as sparsify's loader does
(with multi_topk, sparsify's `forward` returns the reconstruction from the top 4k latents, the one
its Multi-TopK loss uses; its `encode`/`decode`, and ours, use k).

The directory's name is sparsify's hookpoint (`h.4.mlp`, `layers.4.self_attn`): our hookpoint is
its translation (`hooknames.py`), cfg.origin keeps the name. With several `init_seeds` sparsify
writes run/<hookpoint>/seed<i>/: the hookpoint is then the directory above, and origin keeps the seed.
The file's dtype is kept, as sparsify's loader keeps it.

Writing (`write`) needs a topk SAE or a TopK transcoder (d_out = d_in, into the directory of the
module whose output it writes, e.g. `h.3.mlp`); an SAE that does not subtract b_dec is written with that folded
into encoder.bias (b_enc + b_dec @ W_enc, in float32, then cast), since sparsify always subtracts it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from monosemantic.atomic import atomic_write_bytes, atomic_write_json
from monosemantic.formats import transcoders
from monosemantic.formats.hooknames import family_of_model, from_sparsify, to_sparsify
from monosemantic.formats.reading import (
    LoadOptions,
    build_sae,
    cast_all,
    check_orientation,
    choose_dtype,
    get,
    origin,
)
from monosemantic.sae import SAE, SAEFormatError
from monosemantic.sae.config import read_json

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def read(path: Path, opts: LoadOptions, device: torch.device | str | None = None) -> SAE:
    source = path / CFG_FILE
    cfg = read_json(source)
    activation = get(cfg, "activation", str, source, default="topk")
    if activation != "topk":
        raise SAEFormatError(f"{source}: activation {activation!r} not supported; expected 'topk'")
    transcode = get(cfg, "transcode", bool, source, default=False)
    skip = get(cfg, "skip_connection", bool, source, default=False)
    d_in, k = get(cfg, "d_in", int, source), get(cfg, "k", int, source)
    d_sae = get(cfg, "num_latents", int, source, default=0) or d_in * get(cfg, "expansion_factor", int, source)
    check_orientation(d_in, d_sae, source, opts.allow_square)
    weights = path / WEIGHTS_FILE
    try:
        tensors = safetensors.torch.load_file(weights)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise SAEFormatError(f"{weights}: not a readable safetensors file ({e})") from e
    ours = transcoders.sparsify_tensors(tensors, d_in, d_sae, transcode, skip, weights)
    policy = choose_dtype(ours["W_enc"].dtype, None, opts.dtype, weights)  # sparsify keeps the file's dtype
    hookpoint, seed = run_names(path)
    ours_cfg: dict = {"arch": "topk", "d_in": d_in, "d_sae": d_sae, "k": k}
    ours_cfg["hookpoint"] = from_sparsify(hookpoint) or hookpoint
    if transcode or skip:
        hook_in, hook_out = transcoders.sparsify_sites(hookpoint, transcode)
        arch = "skip_transcoder" if skip else "transcoder"
        ours_cfg.update(arch=arch, d_out=d_in, hookpoint=hook_in, output_hookpoint=hook_out, apply_b_dec_to_input=False)
    ours_cfg.update(dtype=policy["dtype"], origin=origin("sparsify", policy, hookpoint=hookpoint, seed=seed))
    return build_sae(ours_cfg, cast_all(ours, policy["dtype"]), path, device)


def run_names(path: Path) -> tuple[str, int | None]:
    """sparsify's hookpoint and init seed of the SAE in `path`: a run keeps one directory per
    hookpoint, named after it, and with several `init_seeds` one `seed<i>` directory below it."""
    path = path.resolve()
    m = re.fullmatch(r"seed(\d+)", path.name)
    if m is None:
        return path.name, None
    return path.parent.name, int(m.group(1))


def write(sae: SAE, out: Path) -> Path:
    """Write a topk `sae` as cfg.json + sae.safetensors, which `sparsify.SparseCoder.load_from_disk`
    loads: into out/<sparsify hookpoint>/ as sparsify's Trainer lays out a run (so `load_many(out)`
    finds it by name) where the SAE's hookpoint has a sparsify name, else into out. Returns the directory."""
    cfg = sae.cfg
    transcode = cfg.arch in ("transcoder", "skip_transcoder")
    if cfg.arch != "topk" and not transcode or cfg.input_norm != "none":
        raise SAEFormatError(
            f"sparsify holds only TopK SAEs and TopK transcoders without input normalisation; this SAE has "
            f"arch={cfg.arch!r}, input_norm={cfg.input_norm!r} (export it to saelens instead)"
        )
    if transcode and cfg.d_out not in (None, cfg.d_in):
        raise SAEFormatError(
            f"sparsify's transcoders write as many values as they read; this one reads {cfg.d_in} "
            f"and writes d_out={cfg.d_out}"
        )
    W_enc, b_enc, W_dec, b_dec = (p.detach().cpu() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    if (
        not cfg.apply_b_dec_to_input and not transcode
    ):  # x @ W_enc + b_enc == (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)
        # folded in float32 (at least), then cast: a half-precision matmul here is off by O(1)
        wide = torch.promote_types(b_enc.dtype, torch.float32)
        b_enc = (b_enc.to(wide) + b_dec.to(wide) @ W_enc.to(wide)).to(b_enc.dtype)
    tensors = {
        "encoder.weight": W_enc.T.contiguous(),
        "encoder.bias": b_enc.contiguous(),
        "W_dec": W_dec.contiguous(),
        "b_dec": b_dec.contiguous(),
    }
    if cfg.arch == "skip_transcoder":
        tensors["W_skip"] = sae.state_dict()["W_skip"].cpu().T.contiguous()  # sparsify's [d_out, d_in]
    config = {
        "activation": "topk",
        "expansion_factor": max(1, cfg.d_sae // cfg.d_in),
        "normalize_decoder": True,
        "num_latents": cfg.d_sae,
        "k": cfg.k,
        "multi_topk": False,
        "skip_connection": cfg.arch == "skip_transcoder",
        "transcode": transcode,
        "d_in": cfg.d_in,
    }
    out = out / name if (name := peer_hookpoint(sae)) else out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / WEIGHTS_FILE, safetensors.torch.save(tensors))
    atomic_write_json(out / CFG_FILE, config)
    return out


def peer_hookpoint(sae: SAE) -> str | None:
    """sparsify's name for the SAE's hookpoint, from the family of the model it records."""
    family = family_of_model(sae.cfg.model)
    # a transcoder is named after the module whose input it reads and whose output it writes
    hookpoint = sae.cfg.output_hookpoint if sae.cfg.arch in ("transcoder", "skip_transcoder") else sae.cfg.hookpoint
    name = to_sparsify(hookpoint, family) if family is not None else None
    if name is None and hookpoint is not None:
        log.warning("hookpoint %r of model %r has no sparsify name here; name the directory", hookpoint, sae.cfg.model)
    return name
