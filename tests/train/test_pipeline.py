"""`monosemantic train` / `eval` on a model (monosemantic.train.pipeline through the CLI): the run directory
records its provenance, a crashed run resumes bit-exactly (streaming and from a cache), and bad
input fails before anything is written."""

import json

import pytest
import torch
import torch.nn.functional as F

import monosemantic.train.trainer
from monosemantic.cli.main import main
from monosemantic.data.corpora import kept_tokens, open_corpus, pack
from monosemantic.hooks import patch
from monosemantic.models import load_model
from monosemantic.sae import SAE

pytestmark = pytest.mark.usefixtures("one_thread")


def train_argv(model_dir, out, *extra):
    return [
        "-q",
        "train",
        "--model_path",
        str(model_dir),
        "--hookpoint",
        "layers.1.mlp.neurons",
        "--expansion_factor",
        "2",
        "--k",
        "8",
        "--tokens",
        "24k",
        "--batch-size",
        "512",
        "--batch-tokens",
        "1024",
        "--chunk-tokens",
        "4096",
        "--checkpoint-every",
        "15",
        "--log-every",
        "5",
        "--dead-window",
        "5k",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    assert main(train_argv(tiny_model_dirs["gpt2"], out)) == 0
    return out


def test_the_run_directory_records_where_its_activations_came_from(trained, tiny_model_dirs):
    sae = SAE.load(trained)
    assert (sae.d_in, sae.d_sae, sae.cfg.hookpoint) == (128, 256, "layers.1.mlp.neurons")
    assert sae.cfg.model == str(tiny_model_dirs["gpt2"].resolve())
    cfg = json.loads((trained / "train_config.json").read_text())
    assert cfg["data"]["corpus"] == "mathlm" and cfg["source"]["corpus"] == {
        "kind": "mathlm",
        "split": "train",
        "seed": 0,
    }
    assert cfg["harvest"]["chunk_tokens"] == 4096 and cfg["train"]["total_tokens"] == 24_000
    assert (trained / "plots" / "training.png").stat().st_size > 5000
    rows = [json.loads(r) for r in (trained / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 24_000 // 512 and rows[-1]["fvu"] < 1.0


def test_eval_splices_the_sae_into_its_model(trained, capsys):
    assert main(["-q", "eval", str(trained), "--tokens", "3000"]) == 0
    out = capsys.readouterr().out
    assert "CE loss recovered (zero ablation)" in out and "KL(clean || spliced)" in out
    saved = json.loads((trained / "eval.json").read_text())
    assert saved["corpus"] == "mathlm:heldout" and saved["hookpoint"] == "layers.1.mlp.neurons"
    m = saved["metrics"]
    assert m["n_tokens"] >= 3000  # (a random model may even do better ablated: no ordering is assumed)
    assert m["ce_loss_recovered"] == pytest.approx(
        (m["ce_zero_ablated"] - m["ce_spliced"]) / (m["ce_zero_ablated"] - m["ce_clean"])
    )
    ce, n = ce_by_hand(trained, saved["corpus"], 3000)
    assert m["n_tokens"] == n
    for key, value in ce.items():
        assert m[key] == pytest.approx(value, rel=1e-6), key
    # PRODUCT.md: CE loss recovered = (CE_ablated - CE_spliced) / (CE_ablated - CE_clean). Zero-ablating this
    # random model's hookpoint costs ~1e-4 nats, so rel=1e-4 here needs the CEs equal to ~1e-9: they are bit-equal
    recovered = (ce["ce_zero_ablated"] - ce["ce_spliced"]) / (ce["ce_zero_ablated"] - ce["ce_clean"])
    assert m["ce_loss_recovered"] == pytest.approx(recovered, rel=1e-4)
    assert f"{m['ce_loss_recovered']:.2%}" in out


def ce_by_hand(run, corpus: str, tokens: int) -> tuple[dict[str, float], int]:
    """Mean next-token CE over the kept targets (not BOS, not padding) of whole batches until `tokens` kept
    tokens, packed as the run was harvested: clean, with the hookpoint's kept tokens replaced by the SAE's
    reconstruction, and zeroed; straight from the logits. Also the number of targets scored."""
    sae = SAE.load(run)
    model, tok = load_model(sae.cfg.model)
    harvest = json.loads((run / "train_config.json").read_text())["harvest"]
    edits = {"ce_clean": None, "ce_spliced": lambda x: sae(x).x_hat, "ce_zero_ablated": torch.zeros_like}
    totals, scored, kept = dict.fromkeys(edits, 0.0), 0, 0
    for batch in pack(open_corpus(corpus).documents(), tok, harvest["seq_len"], harvest["batch_tokens"]):
        keep = kept_tokens(batch, tok)
        for name, edit in edits.items():
            hooks = {} if edit is None else {sae.cfg.hookpoint: lambda x: torch.where(keep[..., None], edit(x), x)}  # noqa: B023
            with patch(model, hooks), torch.no_grad():
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
            ce = F.cross_entropy(logits.transpose(1, 2), batch.input_ids[:, 1:], reduction="none")
            totals[name] += ce[keep[:, 1:]].sum().item()
        scored += int(keep[:, 1:].sum())
        kept += int(keep.sum())
        if kept >= tokens:
            return {name: total / scored for name, total in totals.items()}, scored
    raise AssertionError(f"{corpus} holds fewer than {tokens} tokens")


@pytest.mark.parametrize("cached", [False, True])
def test_a_crashed_run_resumes_bit_exactly(tiny_model_dirs, tmp_path, monkeypatch, cached):
    extra = ["--cache", str(tmp_path / "cache")] if cached else []
    full = tmp_path / "full"
    assert main(train_argv(tiny_model_dirs["gpt2"], full, *extra)) == 0
    original, calls = monosemantic.train.trainer.ckpt.save_checkpoint, []

    def crash_on_second(*args, **kwargs):
        path = original(*args, **kwargs)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(monosemantic.train.trainer.ckpt, "save_checkpoint", crash_on_second)
    crashed = tmp_path / "crashed"
    assert main(train_argv(tiny_model_dirs["gpt2"], crashed, *extra)) == 130
    monkeypatch.undo()
    assert main(["-q", "train", "--out", str(crashed), "--resume"]) == 0
    for name, tensor in SAE.load(full).state_dict().items():
        assert torch.equal(tensor, SAE.load(crashed).state_dict()[name]), name


def test_resume_refuses_a_different_hookpoint(trained, capsys):
    assert main(["-q", "train", "--out", str(trained), "--resume", "--hookpoint", "layers.0.mlp.out"]) == 2
    assert "--hookpoint cannot change" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, message",
    [
        (["--hookpoint", "layers.7.mlp.neurons"], "hookpoint 'layers.7.mlp.neurons' not found; this model has"),
        (["--corpus", "missing.jsonl"], "missing.jsonl: no such file"),
        (["--k", "999"], "k=999 is larger than d_sae=256"),
    ],
)
def test_bad_input_fails_before_a_run_directory_exists(tiny_model_dirs, tmp_path, capsys, change, message):
    argv = train_argv(tiny_model_dirs["gpt2"], tmp_path / "run", *change)  # the last value of a flag wins
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_model_without_weights_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert main(train_argv(tmp_path / "m", tmp_path / "run")) == 2
    assert "no model weights: expected model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
