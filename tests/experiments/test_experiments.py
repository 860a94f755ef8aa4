"""Ablation and steering experiments on a tiny analysed run: scores against per-item brute force,
controls of similar density, bootstrap intervals against scipy, the CLI and its errors."""

import contextlib
import json
import shutil

import numpy as np
import pytest
import torch

from monosemantic.analysis.store import FeatureStore
from monosemantic.cli.main import main
from monosemantic.experiments.ablate import ablate, matched_controls
from monosemantic.experiments.scoring import bootstrap_ci
from monosemantic.experiments.steer import steer
from monosemantic.experiments.tasks import (
    BUILTIN_TASKS,
    Task,
    TaskError,
    TaskItem,
    builtin_task,
    contrast_of,
    task_from_file,
)
from monosemantic.runmodel import RunModel

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments") / "run"
    shutil.copytree(tiny_run, out)
    assert main(["-q", "analyze", str(out), "--tokens", "6000", "--batch-tokens", "1024"]) == 0
    return out


def test_bootstrap_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    sample = np.random.default_rng(3).binomial(1, 0.3, size=150).astype(float)
    mean, low, high = bootstrap_ci(sample, n_resamples=20_000)
    ref = stats.bootstrap(
        (sample,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    assert mean == pytest.approx(sample.mean())
    assert low == pytest.approx(ref.low, abs=0.01) and high == pytest.approx(ref.high, abs=0.01)
    assert bootstrap_ci([np.nan, 1.0, 1.0]) == (1.0, 1.0, 1.0)


def test_clean_scores_match_a_per_item_computation(run):
    task = Task(
        "mine", [TaskItem("12 + 7 = ", "19", "29"), TaskItem("3 × 4 = ", "12", "22"), TaskItem("8 − 5 = ", "3", None)]
    )
    result = ablate(run, [0, 1], task=task, controls=1)
    src = RunModel.of_run(run)
    clean = result.scores["clean"]
    for i, item in enumerate(task.items):
        ids = src.tokenizer(item.prompt + item.target)["input_ids"]  # BOS + characters
        n_prompt = len(src.tokenizer(item.prompt)["input_ids"])
        logp = torch.log_softmax(src.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        target = torch.tensor(ids[n_prompt:])
        rows = logp[n_prompt - 1 : len(ids) - 1]
        assert clean.ce[i] == pytest.approx(-rows.gather(1, target[:, None]).mean().item(), rel=1e-4)
        assert clean.next_token[i] == pytest.approx((rows.argmax(-1) == target).float().mean().item())
        if item.contrast:
            contrast = src.tokenizer(item.contrast, add_special_tokens=False)["input_ids"][0]
            assert clean.logit_diff[i] == pytest.approx((rows[0, target[0]] - rows[0, contrast]).item(), rel=1e-4)
        else:
            assert np.isnan(clean.logit_diff[i])
        out, seq = "", list(ids[:n_prompt])
        for _ in range(len(item.target)):
            nxt = int(src.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            out += src.tokenizer.decode([nxt])
        assert clean.greedy[i] == float(out == item.target)
    assert (clean.kl == 0).all() and (result.scores["ablated"].kl >= -1e-6).all()


def test_controls_have_similar_density_and_exclude_the_chosen():
    density = np.array([0.0, 0.1, 0.11, 0.5, 0.52, 0.2, 0.21, 0.0, 0.9, 0.12])
    sets = matched_controls(density, [1, 3], draws=20, seed=0, window=2)
    for s in sets:
        assert len(s) == 2 and len(set(s)) == 2 and not set(s) & {1, 3} and density[s].min() > 0
        assert s[0] in (2, 9) and s[1] in (4, 8, 6)  # the live latents nearest in density


def test_ablate_by_label_and_the_cli_outputs(run, capsys):
    store = FeatureStore.open(run)
    labelled = store.list(order="f1", limit=1, labelled=True)[0]
    token = labelled.label.strip('"')[:1]
    assert (
        main(
            [
                "ablate",
                str(run),
                "--label",
                token,
                "--task",
                "addition",
                "--n",
                "20",
                "--controls",
                "2",
                "--min-precision",
                "0",
                "--name",
                "t",
                "--positions",
                "relation",
                "--bound",
                "--mean-documents",
                "20",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "answer accuracy (greedy)" in out and "2 draws of as many random features of similar density" in out
    assert "bound: the whole activation replaced by its mean over the 20 first documents of mathlm" in out
    assert "positions relation: tokens of role relation" in out and "features / bound" in out
    saved = json.loads((run / "experiments" / "t.json").read_text())
    assert saved["n_items"] == 20 and len(saved["controls"]) == 2 and labelled.index in saved["features"]
    assert set(saved["summary"]) == {"clean", "ablated", "control", "Δ ablated", "Δ control"}
    assert list(saved["sites"]) == ["all", "firing", "relation"]
    greedy = saved["sites"]["relation"]["effects"]["all"]["greedy"]
    assert set(greedy) == {"clean", "features", "control", "bound"} and "sd" in greedy["control"]
    for line in out.splitlines():
        if line.startswith("relation ") and "±" in line:
            assert line.split()[1] == f"{greedy['features']['mean']:.3g}"
            break
    else:
        raise AssertionError("no relation row in the table")
    assert (run / "experiments" / "t.png").stat().st_size > 5000


def test_steering_curve_is_flat_at_zero_and_the_cli_generates(run, capsys):
    result = steer(run, 5, [0.0, 20.0], task="equality", n=10)
    assert result.kl[0][0] == pytest.approx(0.0, abs=1e-6)
    assert result.kl[1][0] > 1e-4
    target_id = FeatureStore.open(run).vocab.index(result.target)
    src = RunModel.of_run(run)
    prompts = [i.prompt for i in builtin_task("equality", 10).items]
    clean = np.mean(
        [
            torch.softmax(src.model(input_ids=torch.tensor([src.tokenizer(p)["input_ids"]])).logits[0, -1], -1)[
                target_id
            ].item()
            for p in prompts
        ]
    )
    assert result.p_target[0][0] == pytest.approx(clean, rel=1e-4)
    # the default target is the token the strongest alpha raises most, by brute force over the vocabulary
    from monosemantic.experiments.interventions import intervene
    from monosemantic.experiments.interventions import steer as steer_latents

    def mean_probs(ctx=None):
        rows = []
        for p in prompts:
            with ctx() if ctx else contextlib.nullcontext():
                logits = src.model(input_ids=torch.tensor([src.tokenizer(p)["input_ids"]])).logits[0, -1]
            rows.append(torch.softmax(logits, -1))
        return torch.stack(rows).mean(0)

    with torch.no_grad():
        raised = mean_probs(lambda: intervene(src.model, src.sae, [steer_latents(5, 20.0, positions=slice(1, None))]))
        assert target_id == int((raised - mean_probs()).argmax())
    assert result.target_reason == "raised most at alpha 20"
    assert steer(run, 5, [0.0, 20.0], task="equality", n=10, target="7").target == "7"
    assert (
        main(
            [
                "steer",
                str(run),
                "--feature",
                "5",
                "--alpha=-50..50",
                "--steps",
                "3",
                "--n",
                "5",
                "--generate",
                "3 + 4 = ",
                "--max-new",
                "6",
                "--answers",
                "--positions",
                "answer_start",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "without steering" in out and "alpha = 50" in out and (run / "experiments" / "steer_5_equality.png").exists()
    assert "steering feature 5 at positions answer_start" in out and "answer = contrast" in out
    saved = json.loads((run / "experiments" / "steer_5_equality.json").read_text())
    assert [row["alpha"] for row in saved["answers"]["all"]] == [-50.0, 0.0, 50.0]


def test_tasks_and_their_errors(tmp_path, run, capsys):
    assert contrast_of("28") == "38" and contrast_of("−9") == "−0" and contrast_of("siete") == "tiete"
    eq = builtin_task("equality", 30)
    exact_relations = ("= ", "equals ", "es igual a ", "égale ")
    assert len(eq.items) == 30 and all(i.prompt.endswith(exact_relations) for i in eq.items)
    assert any(i.prompt.endswith("= ") for i in eq.items) and not any(i.prompt.endswith("≈ ") for i in eq.items)
    approx_relations = ("≈ ", "is approximately ", "es aproximadamente ", "égale environ ")
    assert all(i.prompt.endswith(approx_relations) for i in builtin_task("approximation", 5).items)
    with pytest.raises(TaskError, match="unknown task 'equalty'; built-in tasks are equality"):
        builtin_task("equalty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1 + 1 = ", "target": "2"}\n{"prompt": "x"}\n')
    with pytest.raises(TaskError, match=r"bad.jsonl:2: expected an object with string \"prompt\" and \"target\""):
        task_from_file(bad)
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "1 + 1 = ", "target": "2", "contrast": "3"}\n\n')
    assert task_from_file(good).items == [TaskItem("1 + 1 = ", "2", "3")]
    assert main(["ablate", str(run), "--features", "3,999", "--task", "equality"]) == 2
    assert "feature(s) [999] do not exist; this SAE has features 0-255" in capsys.readouterr().err
    assert main(["ablate", str(run), "--features", "3", "--task", "nonsense"]) == 2
    assert "unknown task 'nonsense'" in capsys.readouterr().err
    assert main(["ablate", str(run), "--features", "3", "--task", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["ablate", str(run), "--label", "§§§", "--task", "equality"]) == 2
    assert "no feature has a label mentioning '§§§'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["steer", str(run), "--feature", "3", "--alpha=8..-4"])
    assert "LOW <= HIGH" in capsys.readouterr().err
    assert set(BUILTIN_TASKS) >= {"equality", "approximation", "division", "spanish"}
