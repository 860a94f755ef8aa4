"""`monosemantic train --transcoder`, `eval-transcoders` and `trace` end to end on the tiny GPT-2, and
their refusals of bad input as one `error:` line."""

import json

import pytest
import torch
from bad_input import without_first_line

from monosemantic.circuits.evaluate import evaluate_transcoders
from monosemantic.circuits.transcoders import load_transcoder_set
from monosemantic.cli.main import main
from monosemantic.data.corpora import open_corpus
from monosemantic.eval.metrics import fvu
from monosemantic.hooks import capture
from monosemantic.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tc_run(tiny_model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tc") / "run"
    argv = ["-q", "train", "--model", str(tiny_model_dirs["gpt2"]), "--transcoder", "--hookpoint", "layers.*.mlp"]
    argv += ["--expansion-factor", "2", "--k", "4", "--tokens", "4k", "--batch-size", "512", "--batch-tokens", "1024"]
    assert main([*argv, "--chunk-tokens", "2048", "--out", str(out)]) == 0
    return out


def test_train_writes_one_transcoder_per_mlp_recording_both_hookpoints(tc_run):
    tset = load_transcoder_set(tc_run)
    assert [tc.cfg.arch for tc in tset.transcoders] == ["transcoder", "transcoder"]
    assert [(tc.cfg.hookpoint, tc.cfg.output_hookpoint) for tc in tset.transcoders] == [
        ("layers.0.mlp.in", "layers.0.mlp.out"),
        ("layers.1.mlp.in", "layers.1.mlp.out"),
    ]
    assert json.loads((tc_run / "hookpoints.json").read_text())["hookpoints"] == ["layers.0.mlp", "layers.1.mlp"]


def test_eval_fvu_matches_the_metric_on_captured_activations_and_a_null_transcoder_recovers_nothing(tc_run):
    tset = load_transcoder_set(tc_run)
    model, tokenizer = load_model(tset.model)
    corpus = open_corpus("mathlm:heldout")
    result = evaluate_transcoders(model, tokenizer, tset.transcoders, corpus, 300, progress=False)
    # reference FVU: the transcoder on every kept token of the same batches, through eval.metrics.fvu
    from monosemantic.data.corpora import kept_tokens
    from monosemantic.eval.splice import eval_batches

    names = ["layers.1.mlp.in", "layers.1.mlp.out"]
    xs, ys = [], []
    for batch in eval_batches(corpus, tokenizer, 64, 2048, 300):
        with capture(model, names) as acts, torch.no_grad():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        keep = kept_tokens(batch, tokenizer)
        xs.append(acts[names[0]][keep])
        ys.append(acts[names[1]][keep])
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        expected = fvu(y, tset.transcoders[1].transcode(x)).item()
    assert result.layers[1].fvu == pytest.approx(expected, rel=1e-6)
    # a transcoder whose output is zero is the zero ablation: it recovers exactly nothing
    null = tset.transcoders[0].with_dtype("float32")
    with torch.no_grad():
        null.W_dec.zero_()
        null.b_dec.zero_()
    nulled = evaluate_transcoders(model, tokenizer, [null, tset.transcoders[1]], corpus, 300, progress=False)
    assert nulled.layers[0].ce_spliced == nulled.layers[0].ce_zero_ablated
    assert nulled.layers[0].ce_loss_recovered == 0.0 and nulled.layers[0].normalized_mse == pytest.approx(1.0)
    assert 0 <= result.next_token_agreement <= 1 and result.kl_all_spliced >= 0


def test_trace_writes_the_graph_and_prints_the_top_paths(tc_run, capsys):
    assert main(["trace", str(tc_run), "47 + 35 = ", "--target", "8"]) == 0
    printed = capsys.readouterr().out
    graph = json.loads((tc_run / "graphs" / "47_35_8.json").read_text())
    assert graph["target"]["token"] == "8" and graph["settings"]["node_threshold"] == 0.8
    assert {"replacement", "completeness"} <= graph["scores"].keys()
    ids = {n["id"] for n in graph["nodes"]}
    assert graph["edges"] and all(e["source"] in ids and e["target"] in ids for e in graph["edges"])
    assert all(n["kind"] != "token" or n["id"] in ids for n in graph["nodes"])
    assert "top paths" in printed and "logit '8'" in printed


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target", "88"], "error: target '88' is 2 tokens"),
        (["--node-threshold", "1.5"], "error: node_threshold must be in (0, 1], got 1.5"),
    ],
)
def test_bad_trace_input_is_one_error_line(tc_run, capsys, extra, message):
    assert main(["trace", str(tc_run), "47 + 35 = ", *extra]) == 2
    err = stderr_after_the_first_line(capsys)
    assert err.startswith(message) and "\n" not in err


def test_trace_of_a_directory_without_transcoders_is_one_error_line(tmp_path, capsys):
    assert main(["trace", str(tmp_path), "1 + 1 = "]) == 2
    err = stderr_after_the_first_line(capsys)
    assert err.startswith(f"error: {tmp_path}: no hookpoints.json") and "\n" not in err


def test_check_graphs_writes_the_check_and_prints_the_table(tc_run, capsys):
    argv = ["check-graphs", str(tc_run), "--prompts", "3", "--nodes", "2", "--bootstrap", "50"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((tc_run / "graphs" / "check.json").read_text())
    assert len(result["graphs"]) == 3 and all(len(g["rows"]) == 4 for g in result["graphs"])
    assert {g["prompt"][-2:] for g in result["graphs"]} <= {"= ", "≈ "}
    assert "graph    total" in printed and "random   direct" in printed and "CIs" in printed


def test_export_transcoders_writes_circuit_tracers_layout(tc_run, tmp_path, capsys):
    assert main(["export-transcoders", str(tc_run), str(tmp_path / "ct")]) == 0
    assert "TopK(4)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "ct").iterdir()) == [
        "config.yaml",
        "layer_0.safetensors",
        "layer_1.safetensors",
    ]


def test_check_graphs_with_an_unknown_category_is_one_error_line(tc_run, capsys):
    assert main(["check-graphs", str(tc_run), "--categories", "add_9d"]) == 2
    assert stderr_after_the_first_line(capsys).startswith("error: unknown categories ['add_9d']")


def stderr_after_the_first_line(capsys) -> str:
    """stderr without the command's own first line (what it loads: cli/progress.py)."""
    return "\n".join(without_first_line(capsys.readouterr().err.strip().splitlines()))
