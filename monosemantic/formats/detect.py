"""Which tool wrote an SAE file or directory, from file names and (for the two tools that both use
cfg.json + sae.safetensors) the config's keys. Reads at most one small JSON file.

    monosemantic           DIR/cfg.json (with "arch") + DIR/sae.safetensors
    sparsify               DIR/cfg.json (d_in, k, num_latents / expansion_factor) + DIR/sae.safetensors
    saelens                DIR/cfg.json + DIR/sae_weights.safetensors
    dictionary_learning    DIR/ae.pt + DIR/config.json, or that ae.pt, or DIR/checkpoints/ae_<step>.pt
    gemmascope             DIR/params.npz, or that .npz file; DIR/params.safetensors (+ config.json)
    openai                 a .pt / .pth state dict of openai/sparse_autoencoder
"""

from __future__ import annotations

import json
import re
from pathlib import Path

NATIVE = "monosemantic"
SPARSIFY_KEYS = {"num_latents", "expansion_factor"}


def detect_format(path: str | Path) -> str | None:
    """The format name of the SAE at `path`, or None if nothing there looks like one."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".npz" or p.name == "params.safetensors":
            return "gemmascope"
        if p.suffix in (".pt", ".pth"):
            return "dictionary_learning" if _dictionary_learning_file(p) else "openai"
        return None
    if not p.is_dir():
        return None
    if (p / "sae_weights.safetensors").is_file():
        return "saelens"
    if (p / "ae.pt").is_file():
        return "dictionary_learning"
    if (p / "params.npz").is_file() or (p / "params.safetensors").is_file():
        return "gemmascope"
    if (p / "cfg.json").is_file() or (p / "sae.safetensors").is_file():
        return "sparsify" if _looks_like_sparsify(p / "cfg.json") else NATIVE
    return None


def _dictionary_learning_file(p: Path) -> bool:
    """trainSAE's ae.pt beside config.json, or a checkpoint trainer_i/checkpoints/ae_<step>.pt."""
    if p.name == "ae.pt":
        return (p.parent / "config.json").is_file()
    return (
        bool(re.fullmatch(r"ae_\d+\.pt", p.name))
        and p.parent.name == "checkpoints"
        and (p.parent.parent / "config.json").is_file()
    )


def _looks_like_sparsify(cfg_path: Path) -> bool:
    # an unreadable cfg.json is left to our own loader, whose errors say what is wrong with it
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "arch" not in cfg and "d_in" in cfg and bool(SPARSIFY_KEYS & set(cfg))


def saes_below(path: str | Path) -> list[Path]:
    """Subdirectories (one level down) that hold an SAE: a sparsify run keeps one per hookpoint,
    a dictionary_learning run one per trainer."""
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(c for c in p.iterdir() if c.is_dir() and detect_format(c) is not None)
