"""Latent shards of a TopK SAE (monosemantic.distributed.sharded), in one process: how shards are cut and
initialised, and the configurations they refuse. Their collectives run under torchrun in
test_distributed.py."""

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.distributed.sharded import INIT_BLOCK, ShardSpec, init_shard, shard_sae
from monosemantic.sae import SAEConfig, create_sae


def spec(d_sae: int, rank: int, size: int, d_in: int = 4, k: int = 3, arch: str = "topk") -> ShardSpec:
    return ShardSpec(SAEConfig(arch=arch, d_in=d_in, d_sae=d_sae, k=k if arch == "topk" else None), rank, size)


def concatenated(d_sae: int, size: int, seed: int) -> torch.Tensor:
    return torch.cat([init_shard(spec(d_sae, r, size), seed).W_dec for r in range(size)])


@pytest.mark.parametrize("d_sae", [48, 3 * INIT_BLOCK + 96])
def test_a_seed_gives_the_same_dictionary_for_any_number_of_shards(d_sae):
    whole = concatenated(d_sae, 1, seed=7)
    for size in (2, 3, 4):
        assert torch.equal(concatenated(d_sae, size, seed=7), whole), size
    assert not torch.equal(concatenated(d_sae, 1, seed=8), whole)


def test_a_dictionary_of_one_block_starts_as_the_unsharded_sae():
    # block 0 is drawn as `torch.manual_seed(seed); create_sae(cfg)` draws it (what the CLI does)
    torch.manual_seed(5)
    full = create_sae(SAEConfig(arch="topk", d_in=4, d_sae=64, k=3))
    for r in range(2):
        local = init_shard(spec(64, r, 2), seed=5)
        assert torch.equal(local.W_dec, full.W_dec[32 * r : 32 * (r + 1)])
        assert torch.equal(local.W_enc, full.W_enc[:, 32 * r : 32 * (r + 1)])


def test_a_shard_holds_its_slice_of_every_latent_tensor():
    torch.manual_seed(0)
    full = create_sae(SAEConfig(arch="topk", d_in=4, d_sae=12, k=5))
    with torch.no_grad():
        full.b_enc.copy_(torch.arange(12.0))
        full.b_dec.copy_(torch.arange(4.0))
    local = shard_sae(full, spec(12, 2, 3, k=5))
    assert torch.equal(local.W_enc, full.W_enc[:, 8:]) and torch.equal(local.W_dec, full.W_dec[8:])
    assert local.b_enc.tolist() == [8, 9, 10, 11] and torch.equal(local.b_dec, full.b_dec)
    assert local.cfg.d_sae == 4 and local.cfg.k == 4  # local top k over its 4 latents; the global k stays 5


def test_shards_refuse_other_architectures_and_uneven_splits():
    with pytest.raises(ConfigError, match="--shard-latents splits TopK SAEs; got arch='relu'"):
        spec(64, 0, 2, arch="relu")
    with pytest.raises(ConfigError, match="d_sae=100 does not split evenly over 3 latent shards"):
        spec(100, 0, 3)
