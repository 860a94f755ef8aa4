"""`monosemantic train` / `eval` on a model (monosemantic.train.pipeline through the CLI): the run directory
records its provenance, a crashed run resumes bit-exactly (streaming and from a cache), run directories
written before the typed RunConfig resume too, the hookpoint is resolved once per job, and bad input
fails before anything is written."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_train_argv

import monosemantic.train.trainer
from monosemantic.cli.main import main
from monosemantic.data.corpora import kept_tokens, open_corpus, pack
from monosemantic.hooks import patch
from monosemantic.models import load_model
from monosemantic.sae import SAE

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
# train_config.json and hookpoints.json as the code before RunConfig wrote them (main at ea9eb98), for
# train_argv on the tiny GPT-2 ("MODEL_DIR": its directory)
OLD_LAYOUT = Path(__file__).parent / "old_layout"


def train_argv(model_dir, out, *extra):
    # --matmul-dtype float32: the old layout's runs selected in fp32 (the default then; now "auto")
    flags = ["--checkpoint-every", "15", "--log-every", "5", "--dead-window", "5k", "--matmul-dtype", "float32"]
    return tiny_train_argv(model_dir, out, *flags, *extra, tokens="24k")


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


def crash_at_second_checkpoint(monkeypatch, argv: list[str]) -> None:
    """Run `main(argv)` until its second checkpoint is written, then interrupt it (exit 130)."""
    original, calls = monosemantic.train.trainer.ckpt.save_checkpoint, []

    def crash_on_second(*args, **kwargs):
        path = original(*args, **kwargs)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(monosemantic.train.trainer.ckpt, "save_checkpoint", crash_on_second)
    assert main(argv) == 130
    monkeypatch.undo()


def assert_same_sae(a: Path, b: Path) -> None:
    for name, tensor in SAE.load(a).state_dict().items():
        assert torch.equal(tensor, SAE.load(b).state_dict()[name]), name


def old_layout(name: str, model_dir: Path) -> str:
    return (OLD_LAYOUT / name).read_text().replace("MODEL_DIR", str(model_dir))


@pytest.mark.parametrize("variant", ["stream", "cache", "old layout"])
def test_a_crashed_run_resumes_bit_exactly(tiny_model_dirs, tmp_path, monkeypatch, variant):
    model_dir = tiny_model_dirs["gpt2"]
    extra = ["--cache", str(tmp_path / "cache")] if variant == "cache" else []
    full = tmp_path / "full"
    assert main(train_argv(model_dir, full, *extra)) == 0
    crashed = tmp_path / "crashed"
    crash_at_second_checkpoint(monkeypatch, train_argv(model_dir, crashed, *extra))
    if variant == "old layout":  # its train_config.json as the code before RunConfig wrote it
        old = old_layout("train_config.json", model_dir)
        assert json.loads((crashed / "train_config.json").read_text()) == json.loads(old)  # same keys and values
        (crashed / "train_config.json").write_text(old)
    assert main(["-q", "train", "--out", str(crashed), "--resume"]) == 0
    assert_same_sae(full, crashed)


def test_several_hookpoints_of_the_old_layout_resume_bit_exactly(tiny_model_dirs, tmp_path):
    model_dir, hooks = tiny_model_dirs["gpt2"], ["layers.0.mlp.neurons", "layers.1.mlp.neurons"]
    together = tmp_path / "together"
    assert main(train_argv(model_dir, together, "--hookpoint", "layers.*.mlp.neurons")) == 0
    files = {f"{h}/train_config.json": f"{h}.train_config.json" for h in hooks}
    files["hookpoints.json"] = "hookpoints.json"
    for path, name in files.items():
        assert json.loads((together / path).read_text()) == json.loads(old_layout(name, model_dir)), path
    run = Path(shutil.copytree(together, tmp_path / "run"))
    for path, name in files.items():
        (run / path).write_text(old_layout(name, model_dir))
    shutil.rmtree(run / hooks[1] / "checkpoints" / "step_000000046")  # a kill between the SAEs' last checkpoints
    for hook in hooks:
        (run / hook / "sae.safetensors").unlink()
    assert main(["-q", "train", "--out", str(run), "--resume"]) == 0
    for hook in hooks:
        assert_same_sae(together / hook, run / hook)


@pytest.mark.parametrize("hookpoint", ["layers.1.mlp.neurons", "layers.*.mlp.neurons"])
def test_a_job_resolves_its_hookpoints_once(tiny_model_dirs, tmp_path, monkeypatch, hookpoint):
    calls = []
    for module in [m for name, m in sys.modules.items() if name.startswith("monosemantic")]:
        real = getattr(module, "resolve_hookpoints", None)
        if real is not None:
            monkeypatch.setattr(module, "resolve_hookpoints", lambda *a, real=real: calls.append(a) or real(*a))
    argv = train_argv(tiny_model_dirs["gpt2"], tmp_path / "run", "--hookpoint", hookpoint, "--tokens", "2048")
    assert main(argv) == 0
    assert len(calls) == 1


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
