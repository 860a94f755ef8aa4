"""monosemantic.mathlm: the corpus states true facts with correct metadata, the splits never share a
problem, the tokenizer round-trips, and LM training resumes exactly and exports a loadable model."""

import math
import re
from collections import Counter
from fractions import Fraction

import pytest
import torch

from monosemantic.mathlm.config import MathLMConfig
from monosemantic.mathlm.corpus import CATEGORIES, MINUS, WORDS, MathCorpus, generate, split_of
from monosemantic.mathlm.tokenizer import build_tokenizer

pytestmark = pytest.mark.integration  # trains or analyses whole runs: see tests/conftest.py

SAMPLES = list(MathCorpus("train", seed=0).documents(limit=6000))


def number(text: str) -> int:
    return int(text.replace(MINUS, "-"))


def frac(text: str) -> Fraction:
    return Fraction(text.replace(MINUS, "-"))


def check_symbolic(s) -> None:
    left, rel, right = re.fullmatch(r"(.+) (=|≈) (.+)", s.text).groups()
    assert s.answer == right and s.exact == (rel == "=")
    if s.category.startswith(("add", "sub")) or s.category in ("mul", "div"):
        a, op, b = left.split(" ")
        expected = {"+": lambda: a_ + b_, MINUS: lambda: a_ - b_, "×": lambda: a_ * b_, "÷": lambda: a_ / b_}
        a_, b_ = int(a), int(b)
        assert number(right) == expected[op]()
        digits = max(len(a), len(b))
        assert s.category in ("mul", "div") or s.category == f"{s.operation}_{digits}d"
    elif s.category == "approx" and s.operation == "div":
        a, _, b = left.split(" ")
        assert right == f"{int(a) / int(b):.2f}" and int(a) % int(b) != 0
    elif s.category == "approx" and s.operation == "sqrt":
        assert right == f"{math.sqrt(int(left[1:])):.2f}"
    elif s.category == "fraction":
        if s.operation == "simplify":
            assert frac(left) == frac(right) and frac(right).denominator == int(
                right.split("/")[1] if "/" in right else 1
            )
        else:
            a, op, b = left.split(" ")
            value = {"+": frac(a) + frac(b), MINUS: frac(a) - frac(b), "×": frac(a) * frac(b)}[op]
            assert value == frac(right)


def test_every_answer_is_correct_and_the_metadata_agrees():
    for s in SAMPLES:
        assert s.prompt + s.completion == s.text
        if s.category in ("compare",):
            a, b = map(int, re.fullmatch(r"(\d+) vs (\d+): ", s.prompt).groups())
            assert s.answer == ("<" if a < b else ">" if a > b else "=")
        elif s.category == "linear":
            eq, var = re.fullmatch(r"(.+), (\w) = ", s.prompt).groups()
            x = int(s.answer)
            lhs, rhs = eq.split(" = ")
            value = eval(lhs.replace(MINUS, "-").replace(var, f"*{x}" if lhs[0].isdigit() else str(x)))
            assert value == int(rhs)
        elif s.category.startswith("words_"):
            lang = s.category[-2:]
            names = {w: i for i, w in enumerate(WORDS[lang])}
            a, b, c = (names[w] for w in re.findall(r"[\w-]+", s.text) if w in names)
            assert c == {"add": a + b, "sub": a - b, "mul": a * b}[s.operation] and s.language == lang
        elif s.category.startswith(("digits_", "problem_")):
            a, b, c = map(int, re.findall(r"\d+", s.text))
            assert c == {"add": a + b, "sub": a - b, "mul": a * b}[s.operation] and s.answer == str(c)
        elif s.category != "trig":
            check_symbolic(s)
        assert len(s.text) <= 62  # BOS + text + EOS fit the 64-character context


def test_all_categories_and_languages_occur():
    counts = Counter(s.category for s in SAMPLES)
    assert set(counts) == set(CATEGORIES)
    assert {s.language for s in SAMPLES} == {"symbols", "en", "es", "fr"}
    assert any(not s.exact for s in SAMPLES) and any("≈" in s.text for s in SAMPLES)


def test_samples_are_a_pure_function_of_seed_and_index():
    assert generate(3, 17) == generate(3, 17)
    assert generate(3, 17).text != generate(4, 17).text or generate(3, 18).text != generate(4, 18).text


def test_the_held_out_split_never_shares_a_problem_with_training():
    held = list(MathCorpus("heldout", seed=0).documents(limit=800))
    train_prompts = {s.prompt for s in MathCorpus("train", seed=0).documents(limit=40000)}
    assert all(split_of(s) == "heldout" for s in held)
    assert not any(s.prompt in train_prompts for s in held)
    assert 0.03 < len(held) / held[-1].id < 0.07  # about 5% of the stream


def test_corpus_resumes_at_an_index():
    full = list(MathCorpus("train").documents(limit=50))
    assert list(MathCorpus("train").documents(start=full[30].id, limit=20)) == full[30:]


def test_tokenizer_round_trips_every_sample_one_token_per_character():
    tok = build_tokenizer()
    for s in SAMPLES[:500]:
        ids = tok(s.text)["input_ids"]
        assert ids[0] == tok.bos_token_id and len(ids) == len(s.text) + 1
        assert tok.decode(ids, skip_special_tokens=True) == s.text
    assert tok("☃")["input_ids"][1] == tok.unk_token_id


TINY = MathLMConfig(
    n_layer=2, d_model=32, n_head=2, tokens=512 * 12, batch_tokens=512, eval_every=6, checkpoint_every=4, bf16=False
)


def test_training_resumes_exactly_and_exports_a_loadable_model(tmp_path, monkeypatch):
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
    monkeypatch.undo()
    resumed_dir = lm_train.train_mathlm(TINY, tmp_path / "crashed", progress=False)
    a, _ = load_model(full_dir)
    b, tok = load_model(resumed_dir)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert (resumed_dir / "loss.png").stat().st_size > 1000
    rows = [r for r in (resumed_dir / "log.jsonl").read_text().splitlines()]
    assert len(rows) == len((full_dir / "log.jsonl").read_text().splitlines())
    assert b.config.n_layer == 2 and b.config.n_positions == 64
    assert tok.decode(tok("3 + 4 = 7")["input_ids"], skip_special_tokens=True) == "3 + 4 = 7"


def test_resume_refuses_another_configuration(tmp_path):
    from monosemantic.mathlm import train as lm_train

    lm_train.train_mathlm(TINY, tmp_path / "run", progress=False)
    other = MathLMConfig(**{**TINY.__dict__, "lr": 1e-4})
    with pytest.raises(ValueError, match="another configuration"):
        lm_train.train_mathlm(other, tmp_path / "run", progress=False)


def test_greedy_completion_matches_hugging_face_generate(tiny_model_dirs):
    from monosemantic.models import greedy_complete, load_model

    model, tok = load_model(tiny_model_dirs["gpt2"])
    prompts = ["12 + 30 = ", "7 vs 19: ", "x + 3 = 7, x = ", "1 + 1 = "]  # two share a length
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


def test_answer_accuracy_scores_each_category(tiny_model_dirs, monkeypatch):
    """With the decoder replaced by an oracle that answers every other sample right, each category's
    score must be exactly the count of those samples."""
    from monosemantic.mathlm import evaluate as ev
    from monosemantic.models import load_model

    model, tok = load_model(tiny_model_dirs["gpt2"])
    samples = ev.heldout_samples(4)

    def oracle(model, tokenizer, prompts, max_new):
        return [s.completion if i % 2 == 0 else s.completion + "0" for i, s in enumerate(samples)]

    monkeypatch.setattr(ev, "greedy_complete", oracle)
    scores = {s.category: s for s in ev.answer_accuracy(model, tok, per_category=4)}
    expected = Counter(s.category for i, s in enumerate(samples) if i % 2 == 0)
    assert set(scores) == set(CATEGORIES)
    for category, score in scores.items():
        assert score.n == 4 and score.correct == expected[category]


@pytest.mark.slow
def test_the_shipped_model_solves_two_digit_arithmetic():
    """The built-in model's target: >= 90% greedy exact match on 2-digit + and - in digits."""
    from monosemantic.mathlm.evaluate import answer_accuracy
    from monosemantic.models import load_model

    model, tok = load_model("builtin")
    scores = {s.category: s for s in answer_accuracy(model, tok, per_category=200)}
    assert scores["add_2d"].accuracy >= 0.9 and scores["sub_2d"].accuracy >= 0.9, scores
