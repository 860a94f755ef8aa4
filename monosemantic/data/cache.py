"""A disk cache of harvested activations: harvest once, train many SAEs.

    CACHE/
        manifest.json            source (model, hookpoint, corpus, harvest settings), d, dtype,
                                 and per shard: file, tokens, sha256
        shard_00000.safetensors  "acts" [n, d] and "provenance" [n, 3] (document, position, token)

Shard k is chunk k of the `ActivationStream` (already shuffled), so `CachedActivations` yields the
stream's own batches, in the same order. Shards are written atomically and the manifest after
each, so an interrupted `build_cache` resumes at the next shard; a shard whose bytes no longer
match its sha256 is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.atomic import atomic_write_bytes, atomic_write_json, read_manifest_json, remove_stale_temporaries
from monosemantic.config import derive_seed
from monosemantic.data.stream import ActivationStream
from monosemantic.errors import MonosemanticError
from monosemantic.sae.base import file_sha256

MANIFEST = "manifest.json"
FORMAT = "monosemantic-activations/1"


class CacheError(MonosemanticError, ValueError):
    """An activation cache that is damaged, incomplete, or made from a different source."""


def read_manifest(path: str | Path) -> dict:
    return read_manifest_json(
        Path(path) / MANIFEST,
        FORMAT,
        CacheError,
        f"{path}: not an activation cache ({MANIFEST} is missing)",
        f"delete {path} (it is harvested again) or give another --cache directory",
    )


def build_cache(stream: ActivationStream, out: str | Path, tokens: int, *, progress: bool = True) -> Path:
    """Harvest at least `tokens` activations from a fresh `stream` into `out` (resuming a partial cache)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    source = stream.describe()
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        if manifest["source"] != source:
            raise CacheError(f"{out}: holds activations of another source; use a new directory")
    else:
        manifest = {"format": FORMAT, "source": source, "d": stream.d, "dtype": None, "shards": []}
    done = sum(s["tokens"] for s in manifest["shards"])
    with tqdm(
        total=tokens, initial=min(done, tokens), unit="tok", unit_scale=True, desc="harvest", disable=not progress
    ) as bar:
        for acts, prov in stream.chunks(start=len(manifest["shards"])) if done < tokens else ():
            k = len(manifest["shards"])
            data = safetensors.torch.save({"acts": acts.cpu().contiguous(), "provenance": prov.contiguous()})
            atomic_write_bytes(out / f"shard_{k:05d}.safetensors", data)
            manifest["shards"].append(
                {
                    "file": f"shard_{k:05d}.safetensors",
                    "tokens": acts.shape[0],
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
            manifest["dtype"] = str(acts.dtype).removeprefix("torch.")
            atomic_write_json(out / MANIFEST, manifest)  # after the shard: it never names a missing file
            done += acts.shape[0]
            bar.update(acts.shape[0])
            if done >= tokens:
                break
    if done < tokens:
        raise CacheError(f"the corpus ran out after {done} activations, fewer than the {tokens} asked for")
    return out


class CachedActivations:
    """`Iterator[Tensor]` of [batch_size, d] batches from a cache, epoch after epoch, resumable;
    `provenance` holds the rows of the batch last returned. Epoch 0 reads shards and rows in their
    stored order (the harvest stream's own order); later epochs reshuffle both."""

    def __init__(self, path: str | Path, batch_size: int, *, seed: int = 0, verify: bool = True):
        self.path, self.batch_size, self.seed, self.verify = Path(path), batch_size, seed, verify
        self.manifest = read_manifest(path)
        self.d = self.manifest["d"]
        if not self.manifest["shards"]:
            raise CacheError(f"{path}: the cache holds no shards")
        self.epoch, self.shard, self.index = 0, 0, 0
        self.provenance: Tensor | None = None
        self._loaded: tuple[tuple[int, int], Tensor, Tensor] | None = None
        self._verified: set[int] = set()

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.manifest["shards"])

    def _shard_order(self) -> list[int]:
        n = len(self.manifest["shards"])
        if self.epoch == 0:
            return list(range(n))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return torch.randperm(n, generator=g).tolist()

    def load_shard(self, k: int) -> tuple[Tensor, Tensor]:
        entry = self.manifest["shards"][k]
        file = self.path / entry["file"]
        if not file.is_file():
            raise CacheError(f"{file}: missing shard of the activation cache")
        if self.verify and k not in self._verified:
            if file_sha256(file) != entry["sha256"]:
                raise CacheError(
                    f"{file}: contents do not match the sha256 in {MANIFEST}; the shard is damaged, rebuild the cache"
                )
            self._verified.add(k)
        try:
            tensors = safetensors.torch.load_file(file)
        except (safetensors.SafetensorError, OSError) as e:
            raise CacheError(f"{file}: unreadable shard ({e})") from e
        acts, prov = tensors["acts"], tensors["provenance"]
        if acts.shape != (entry["tokens"], self.d) or prov.shape != (entry["tokens"], 3):
            raise CacheError(f"{file}: shapes {list(acts.shape)} / {list(prov.shape)} do not match the manifest")
        return acts, prov

    def _current(self) -> tuple[Tensor, Tensor]:
        key = (self.epoch, self.shard)
        if self._loaded is None or self._loaded[0] != key:
            k = self._shard_order()[self.shard]
            acts, prov = self.load_shard(k)
            if self.epoch > 0:
                g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch) * 100_003 + k)
                order = torch.randperm(acts.shape[0], generator=g)
                acts, prov = acts[order], prov[order]
            self._loaded = (key, acts, prov)
        return self._loaded[1], self._loaded[2]

    def __iter__(self) -> CachedActivations:
        return self

    def __next__(self) -> Tensor:
        acts, prov = self._current()
        start = self.index * self.batch_size
        batch, self.provenance = acts[start : start + self.batch_size], prov[start : start + self.batch_size]
        self.index += 1
        if (self.index + 1) * self.batch_size > acts.shape[0]:  # a partial last batch is dropped
            self.shard, self.index = self.shard + 1, 0
            if self.shard == len(self.manifest["shards"]):
                self.epoch, self.shard = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self.shard, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.shard, self.index = int(state["epoch"]), int(state["shard"]), int(state["index"])
