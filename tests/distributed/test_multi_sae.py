"""Training on a model's activations under torchrun, and several hookpoints from one forward
(monosemantic.distributed.multi_sae, pipeline.py): in one process, against separate single-hookpoint runs; under
torchrun with 2 gloo ranks (each harvesting its own corpus shard), against one process training on
the same global batches, built here from two corpus-shard streams side by side."""

import shutil
from pathlib import Path

import pytest
import torch
from test_distributed import WEIGHTS, assert_same_sae, cli_under_torchrun, weights

from monosemantic.cli.main import main
from monosemantic.data.corpora import CorpusShard, open_corpus
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.distributed.multi_sae import Exchange, assign, sources
from monosemantic.models import load_model
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.rundir import read_metrics
from monosemantic.train.trainer import TrainConfig, Trainer

HOOKS = ["layers.0.mlp.neurons", "layers.1.mlp.neurons"]
BATCH, STEPS = 128, 30
HARVEST = ["--batch-tokens", "512", "--chunk-tokens", "1024"]
TRAIN = [
    "--arch",
    "topk",
    "--k",
    "4",
    "--expansion-factor",
    "2",
    "--batch-size",
    str(BATCH),
    "--tokens",
    str(BATCH * STEPS),
    "--checkpoint-every",
    "10",
    "--keep-checkpoints",
    "3",
    "--log-every",
    "10",
    *HARVEST,
]

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def train_argv(model: Path, hookpoint: str, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--corpus",
        "mathlm",
        "--hookpoint",
        hookpoint,
        "--out",
        str(out),
        *TRAIN,
        *extra,
    ]


# ---- spreading hookpoints over ranks ------------------------------------------------------------


def test_hookpoints_are_spread_evenly_over_ranks():
    assert assign(3, 2) == [[0], [1], [0]]
    assert assign(2, 4) == [[0, 2], [1, 3]]
    assert list(sources([0, 2], 1, 4)) == [2, 3]  # the second owner trains on ranks 2 and 3's rows
    with pytest.raises(ValueError, match="2 hookpoints cannot be spread evenly over 3 ranks"):
        assign(2, 3)


def test_exchange_in_one_process_cuts_the_columns():
    x = torch.arange(24.0).view(4, 6)
    parts = Exchange([2, 4], assign(2, 1), rank=0, world_size=1)(x)
    assert torch.equal(parts[0], x[:, :2]) and torch.equal(parts[1], x[:, 2:])


def test_corpus_shards_partition_the_corpus():
    corpus = open_corpus("mathlm")
    whole = [d.text for d in corpus.documents(0, 10)]
    shards = [[d.text for d in CorpusShard(corpus, r, 3).documents(0, 4)] for r in range(3)]
    assert [whole[i] for i in range(0, 10, 3)] == shards[0]
    assert [whole[i] for i in range(2, 10, 3)] == shards[2][:3]


# ---- one process ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2(tiny_model_dirs) -> Path:
    return tiny_model_dirs["gpt2"]


@pytest.fixture(scope="module")
def together(tmp_path_factory, gpt2) -> Path:
    out = tmp_path_factory.mktemp("runs") / "together"
    assert main(["-q", *train_argv(gpt2, "layers.*.mlp.neurons", out)]) == 0
    return out


def test_one_forward_trains_every_hookpoint_as_a_run_of_its_own(tmp_path, gpt2, together):
    alone = tmp_path / "alone"
    assert main(["-q", *train_argv(gpt2, HOOKS[1], alone)]) == 0
    assert sorted(p.name for p in together.iterdir()) == ["hookpoints.json", *HOOKS, "run.lock"]
    for name, tensor in weights(alone).items():
        assert torch.equal(weights(together / HOOKS[1])[name], tensor), name
    assert read_metrics(together / HOOKS[1])[-1]["fvu"] == read_metrics(alone)[-1]["fvu"]


def test_resume_of_several_hookpoints_goes_back_to_their_common_checkpoint(tmp_path, together):
    # a kill while the last checkpoints were written: the first SAE's is there, the second's is not
    run = Path(shutil.copytree(together, tmp_path / "run"))
    shutil.rmtree(run / HOOKS[1] / "checkpoints" / f"step_{STEPS:09d}")
    for hook in HOOKS:
        (run / hook / "sae.safetensors").unlink()
    assert main(["-q", "train", "--out", str(run), "--resume"]) == 0
    for hook in HOOKS:
        for name, tensor in weights(together / hook).items():
            assert torch.equal(weights(run / hook)[name], tensor), (hook, name)
        assert [r["step"] for r in read_metrics(run / hook)] == [10, 20, 30]


# ---- under torchrun ------------------------------------------------------------------------------


def reference(model_dir: Path, hook: int, ranks: int = 2) -> dict[str, torch.Tensor]:
    """One process training hookpoint `hook`'s SAE on the global batches of `ranks` data ranks:
    each rank's batch of 128 / ranks from its own corpus shard, side by side."""
    model, tokenizer = load_model(model_dir)
    harvest = HarvestConfig(batch_tokens=512, chunk_tokens=1024)
    streams = [
        ActivationStream(model, tokenizer, HOOKS, CorpusShard(open_corpus("mathlm"), r, ranks), BATCH // ranks, harvest)
        for r in range(ranks)
    ]
    start, width = sum(streams[0].widths[:hook]), streams[0].widths[hook]

    def batches():
        while True:
            yield torch.cat([next(s) for s in streams])[:, start : start + width]

    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=width, d_sae=2 * width, k=4))
    cfg = TrainConfig(batch_size=BATCH, total_tokens=BATCH * STEPS, checkpoint_every=10, log_every=10)
    return Trainer(sae, cfg, progress=False).fit(batches()).state_dict()


def assert_weights(run: Path, expected: dict[str, torch.Tensor]) -> None:
    got = weights(run)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, **WEIGHTS, msg=name)


@pytest.mark.process
@pytest.mark.slow  # minutes of whole-run training on 2 cores: `make test-slow` (CI runs it)
def test_two_ranks_harvest_their_own_shards_and_train_each_hookpoint_on_the_global_batch(tmp_path, gpt2):
    expected = {h: reference(gpt2, h) for h in range(2)}
    spread = tmp_path / "spread"
    cli_under_torchrun(*train_argv(gpt2, ",".join(HOOKS), spread))  # rank 0 trains layer 0, rank 1 layer 1
    for h, hook in enumerate(HOOKS):
        assert_weights(spread / hook, expected[h])
    ddp = tmp_path / "ddp"
    cli_under_torchrun(*train_argv(gpt2, HOOKS[1], ddp))  # one hookpoint, data-parallel
    assert_weights(ddp, expected[1])


@pytest.mark.process
@pytest.mark.slow
def test_a_data_parallel_harvest_resumes_with_its_number_of_ranks(tmp_path, gpt2, capsys):
    """Each rank goes back to its own place in its own corpus shard; one process cannot."""
    ddp = tmp_path / "ddp"
    cli_under_torchrun(*train_argv(gpt2, HOOKS[1], ddp))
    resumed = Path(shutil.copytree(ddp, tmp_path / "resumed"))
    shutil.rmtree(resumed / "checkpoints" / f"step_{STEPS:09d}")
    (resumed / "sae.safetensors").unlink()
    assert main(["-q", "train", "--out", str(resumed), "--resume"]) == 2
    assert "resume it with 2 data-parallel ranks" in capsys.readouterr().err
    cli_under_torchrun("train", "--out", str(resumed), "--resume")
    for name, tensor in weights(ddp).items():
        assert torch.equal(weights(resumed)[name], tensor), name


@pytest.mark.process
@pytest.mark.slow  # minutes of whole-run training on 2 cores: `make test-slow` (CI runs it)
def test_latent_sharded_training_on_a_model_equals_one_process(tmp_path, gpt2):
    alone, sharded = tmp_path / "alone", tmp_path / "sharded"
    assert main(["-q", *train_argv(gpt2, HOOKS[1], alone)]) == 0
    cli_under_torchrun(*train_argv(gpt2, HOOKS[1], sharded, "--shard-latents"))  # one harvest, broadcast
    assert_same_sae(sharded, alone)
    assert len(list((sharded / "checkpoints" / f"step_{STEPS:09d}").glob("shard-*.safetensors"))) == 2


@pytest.mark.process
@pytest.mark.slow
def test_four_ranks_train_each_of_two_hookpoints_data_parallel_on_two(tmp_path, gpt2):
    expected = {h: reference(gpt2, h, ranks=4) for h in range(2)}
    out = tmp_path / "spread"
    cli_under_torchrun(*train_argv(gpt2, ",".join(HOOKS), out), nproc=4)  # layer 0: ranks 0, 2; layer 1: ranks 1, 3
    for h, hook in enumerate(HOOKS):
        assert_weights(out / hook, expected[h])
