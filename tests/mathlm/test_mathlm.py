"""monosemantic.mathlm training and evaluation: LM training resumes exactly and exports a loadable
model, greedy completion equals Hugging Face's generate, and the evaluation scores each category and
each operator form, with `solved` held to hand-worked cases. (The corpus: test_corpus.py; the
tokenizer: test_tokenizer.py; token roles in the pipeline: test_roles.py.)"""

from collections import Counter
from functools import partial

import pytest
import torch

from monosemantic.mathlm import evaluate as ev
from monosemantic.mathlm.config import MathLMConfig
from monosemantic.mathlm.corpus import Sample


def sample(text: str, category: str, operation: str, language: str, exact: bool, answer: str) -> Sample:
    start = text.rindex(answer)
    return Sample(0, text, category, operation, language, exact, start, start + len(answer))


def test_solved_by_hand():
    div = sample("7 ÷ 4 = 1.75", "div", "div", "symbols", True, "1.75")
    assert ev.solved(div, "1.75")
    assert not any(ev.solved(div, got) for got in ("1.8", "1.750", "1.75 ", "1.7", "1.75.", ""))
    approx = sample("22 ÷ 7 ≈ 3.14", "approx", "div", "symbols", False, "3.14")  # within one hundredth
    assert all(ev.solved(approx, got) for got in ("3.14", "3.13", "3.15", "3.140"))
    assert not any(ev.solved(approx, got) for got in ("3.16", "3.12", "3.1", "3.14 + 1", "pi", ""))
    estimate = sample("347 + 589 ≈ 940", "estimate", "add", "symbols", False, "940")  # within ten
    assert all(ev.solved(estimate, got) for got in ("940", "936", "930", "950"))
    assert not any(ev.solved(estimate, got) for got in ("951", "929", "960", "9400", "940 ="))
    problem = sample("Tom has 52 books and gives away 30. He has 22.", "problem_en", "sub", "en", True, "22")
    assert problem.completion == "22." and ev.solved(problem, "22.")
    assert not any(ev.solved(problem, got) for got in ("22", "22. He", "23.", "22.0"))  # the EOS must come after '.'
    words = sample("diez por dos es igual a veinte", "words_es", "mul", "es", True, "veinte")
    assert ev.solved(words, "veinte") and not ev.solved(words, "veintidós")


def test_heldout_samples_are_distinct_problems_in_symbols():
    chosen = ev.heldout_samples(3, max_documents=6000)
    keys = [s.canonical_prompt() for s in chosen]
    assert len(set(keys)) == len(keys) and all(s.text == s.with_form("symbol").text for s in chosen)
    assert max(Counter(s.category for s in chosen).values()) == 3 and all(s.id <= 6000 for s in chosen)


TINY = MathLMConfig(
    n_layer=2, d_model=32, n_head=2, tokens=512 * 12, batch_tokens=512, eval_every=6, checkpoint_every=4, bf16=False
)


@pytest.fixture
def quick_probe(monkeypatch):
    """Training's held-out accuracy probe on a short scan (the small categories never fill 20 problems)."""
    from monosemantic.mathlm import train as lm_train

    monkeypatch.setattr(lm_train, "heldout_samples", partial(ev.heldout_samples, max_documents=3000))


@pytest.mark.integration
@pytest.mark.slow  # minutes of whole-run training on 2 cores: `make test-slow` (CI runs it)
def test_training_resumes_exactly_and_exports_a_loadable_model(tmp_path, monkeypatch, quick_probe):
    from monosemantic.mathlm import train as lm_train
    from monosemantic.models import load_model

    full_dir = lm_train.train_mathlm(TINY, tmp_path / "full", progress=False)

    original, calls = lm_train.save_checkpoint, []

    def crash_after_second(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_train, "save_checkpoint", crash_after_second)
    with pytest.raises(KeyboardInterrupt):
        lm_train.train_mathlm(TINY, tmp_path / "crashed", progress=False)
    monkeypatch.setattr(lm_train, "save_checkpoint", original)
    resumed_dir = lm_train.train_mathlm(TINY, tmp_path / "crashed", progress=False)
    a, _ = load_model(full_dir)
    b, tok = load_model(resumed_dir)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert (resumed_dir / "loss.png").stat().st_size > 1000
    rows = [r for r in (resumed_dir / "log.jsonl").read_text().splitlines()]
    assert len(rows) == len((full_dir / "log.jsonl").read_text().splitlines())
    assert b.config.n_layer == 2 and b.config.n_positions == 64
    assert tok.tokenize("quince menos tres") == ["quince", " ", "menos", " ", "tres"]  # the word-level tokenizer
    assert tok.decode(tok("3 + 4 = 7")["input_ids"], skip_special_tokens=True) == "3 + 4 = 7"


@pytest.mark.integration
@pytest.mark.slow
def test_resume_refuses_another_configuration(tmp_path, quick_probe):
    from monosemantic.config import ConfigError
    from monosemantic.mathlm import train as lm_train

    lm_train.train_mathlm(TINY, tmp_path / "run", progress=False)
    other = MathLMConfig(**{**TINY.__dict__, "lr": 1e-4})
    with pytest.raises(ConfigError, match="another configuration"):
        lm_train.train_mathlm(other, tmp_path / "run", progress=False)


@pytest.mark.integration
def test_greedy_completion_matches_hugging_face_generate(tiny_model_dirs):
    from monosemantic.models import greedy_complete, load_model

    model, tok = load_model(tiny_model_dirs["gpt2"])
    prompts = [
        "12 + 30 = ",
        "7 vs 19: ",
        "x + 3 = 7, x = ",
        "1 + 1 = ",
        "diez por dos es igual a ",
    ]  # two share a length
    got = greedy_complete(model, tok, prompts, max_new=6)
    for prompt, completion in zip(prompts, got):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        ref = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id)]
        assert completion == tok.decode(ref, skip_special_tokens=True)


@pytest.mark.integration
def test_answer_accuracy_scores_each_category_and_form(tiny_model_dirs, monkeypatch):
    """With the decoder replaced by an oracle that answers every other problem right (in both of its
    forms), each category's symbol and ASCII scores must be exactly the counts of those problems."""
    from monosemantic.models import load_model

    model, tok = load_model(tiny_model_dirs["gpt2"])
    samples = ev.heldout_samples(4, max_documents=20_000)
    monkeypatch.setattr(ev, "heldout_samples", lambda per_category, seed=0, progress=False: samples)
    right = {}
    for i, s in enumerate(samples):
        for form in (s, s.with_form("ascii")):
            right[form.prompt] = form.completion if i % 2 == 0 else form.completion + " no"  # wrong even for ≈
    asked = []

    def oracle(model, tokenizer, prompts, max_new, progress=False):
        asked.extend(prompts)
        return [right[p] for p in prompts]

    monkeypatch.setattr(ev, "greedy_complete", oracle)
    scores = {s.category: s for s in ev.answer_accuracy(model, tok, per_category=4)}
    with_ascii = [i for i, s in enumerate(samples) if s.with_form("ascii").text != s.text]
    assert len(asked) == len(samples) + len(with_ascii) and len(with_ascii) > 10
    assert set(scores) == {s.category for s in samples}
    for category, score in scores.items():
        members = [i for i, s in enumerate(samples) if s.category == category]
        ascii_members = [i for i in members if i in with_ascii]
        assert (score.n, score.correct) == (len(members), sum(i % 2 == 0 for i in members))
        assert (score.n_ascii, score.correct_ascii) == (len(ascii_members), sum(i % 2 == 0 for i in ascii_members))
    assert scores["mul"].n_ascii > 0
    assert all(scores[c].n_ascii == 0 for c in scores if c.startswith(("words_", "digits_", "problem_")))
    table = ev.format_scores(list(scores.values()))
    assert table.splitlines()[0].split() == ["category", "n", "symbols", "n", "ascii", "ascii"]


@pytest.mark.slow
def test_the_shipped_model_solves_two_digit_arithmetic():
    """The built-in model's target: >= 90% greedy exact match on 2-digit + and - in digits."""
    from monosemantic.models import load_model

    model, tok = load_model("builtin")
    scores = {s.category: s for s in ev.answer_accuracy(model, tok, per_category=200)}
    assert scores["add_2d"].accuracy >= 0.9 and scores["sub_2d"].accuracy >= 0.9, scores
