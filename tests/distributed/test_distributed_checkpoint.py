"""Checkpoints through torch.distributed.checkpoint (monosemantic.distributed.checkpoint), in one
process (DCP without a process group): the same state as a one-process checkpoint, safetensors and
JSON only, never unpickled, and each rank's data position. Under torchrun: test_distributed.py."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from monosemantic.data.activations import TensorBatches
from monosemantic.distributed.checkpoint import load_any_checkpoint, pick_data_state, save_distributed_checkpoint
from monosemantic.distributed.world import World
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train import checkpoint as ckpt
from monosemantic.train.checkpoint import CheckpointError
from monosemantic.train.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def fresh_trainer(run_dir: Path | None = None) -> Trainer:
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=8, d_sae=32, k=3))
    return Trainer(
        sae,
        TrainConfig(batch_size=64, total_tokens=64 * 12, dead_window=128, checkpoint_every=0),
        run_dir,
        progress=False,
    )


@pytest.fixture
def trained(tmp_path) -> Trainer:
    trainer = fresh_trainer(tmp_path / "classic")
    trainer.fit(TensorBatches(torch.randn(2000, 8) * 3 + 1, 64))
    return trainer


def test_a_distributed_checkpoint_holds_what_a_one_process_checkpoint_holds(tmp_path, trained):
    path = save_distributed_checkpoint(tmp_path / "dcp", trained.sae, trained.optimizer, trained.state, 2, World())
    assert {p.suffix for p in path.iterdir()} == {".json", ".safetensors"}  # no pickle file
    classic, dcp = fresh_trainer(), fresh_trainer()
    want = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "classic"), classic.sae, classic.optimizer)
    got = load_any_checkpoint(path, dcp.sae, dcp.optimizer, World())
    assert (got.step, got.tokens_seen, got.scale, got.data_state) == (
        want.step,
        want.tokens_seen,
        want.scale,
        want.data_state,
    )
    assert torch.equal(got.tokens_since_fired, want.tokens_since_fired)
    assert got.rng.keys() == want.rng.keys() and all(torch.equal(got.rng[k], want.rng[k]) for k in want.rng)
    for name, tensor in classic.sae.state_dict().items():
        assert torch.equal(dcp.sae.state_dict()[name], tensor), name
    mine, theirs = (
        ckpt.optimizer_tensors(dcp.optimizer, dcp.sae.named_parameters()),
        ckpt.optimizer_tensors(classic.optimizer, classic.sae.named_parameters()),
    )
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_loading_never_unpickles(tmp_path, trained):
    """DCP's own FileSystemReader would `pickle.load` a `.metadata` file; ours reads safetensors
    headers. A planted pickle that creates a file when unpickled must stay inert."""
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    for path in (
        save_distributed_checkpoint(tmp_path / "dcp", trained.sae, trained.optimizer, trained.state, 2, World()),
        ckpt.latest_checkpoint(tmp_path / "classic"),
    ):
        (path / ".metadata").write_bytes(pickle.dumps(Payload()))
        target = fresh_trainer()
        load_any_checkpoint(path, target.sae, target.optimizer, World())
    assert not marker.exists()


def test_either_kind_of_checkpoint_is_checked_against_its_sha256_json(tmp_path, trained):
    for path in (
        save_distributed_checkpoint(tmp_path / "dcp", trained.sae, trained.optimizer, trained.state, 2, World()),
        ckpt.latest_checkpoint(tmp_path / "classic"),
    ):
        listed = json.loads((path / ckpt.SHA256_FILE).read_text())
        assert sorted(listed) == sorted(p.name for p in path.iterdir() if p.name != ckpt.SHA256_FILE)
        name = next(n for n in sorted(listed) if n.endswith(".safetensors"))
        data = bytearray((path / name).read_bytes())
        data[-1] ^= 0x01  # the last byte of the last tensor
        (path / name).write_bytes(bytes(data))
        target = fresh_trainer()
        with pytest.raises(CheckpointError, match=f"damaged checkpoint: {name} does not match its sha256"):
            load_any_checkpoint(path, target.sae, target.optimizer, World())


def test_a_checkpoint_of_another_dictionary_size_is_refused(tmp_path, trained):
    path = save_distributed_checkpoint(tmp_path / "dcp", trained.sae, trained.optimizer, trained.state, 2, World())
    sae = create_sae(SAEConfig(arch="topk", d_in=8, d_sae=64, k=3))
    other = Trainer(sae, TrainConfig(batch_size=64, total_tokens=640), progress=False)
    with pytest.raises(CheckpointError, match=r"tensor 'W_enc' is \[8, 32\] torch.float32, this run needs \[8, 64\]"):
        load_any_checkpoint(path, other.sae, other.optimizer, World())


def test_data_positions_per_rank(tmp_path):
    shared = {"data_states": [{"epoch": 0, "index": 5}] * 2}
    assert pick_data_state(shared, World(data_size=3, data_rank=2), tmp_path) == {"epoch": 0, "index": 5}
    own = {"data_states": [{"data_rank": 0, "chunk": 1}, {"data_rank": 1, "chunk": 1}]}
    assert pick_data_state(own, World(data_size=2, data_rank=1), tmp_path) == {"data_rank": 1, "chunk": 1}
    with pytest.raises(CheckpointError, match="resume it with 2 data-parallel ranks"):
        pick_data_state(own, World(data_size=4, data_rank=1), tmp_path)
    assert json.dumps(pick_data_state({"data_state": {"index": 3}}, World(), tmp_path)) == '{"index": 3}'
