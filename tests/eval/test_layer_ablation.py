"""monosemantic.eval.layer_ablation and `monosemantic mathlm ablate-layers`: each sublayer's zero and
mean ablation against an independent reference (a copy of the model whose output projection is
replaced by a constant: weight 0, bias 0 or the mean read by a plain hook on each document alone),
the clean CE against the Hugging Face model's own loss, and the answer-token CE against labels masked
by hand."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monosemantic.cli.main import main
from monosemantic.config import ConfigError
from monosemantic.data.corpora import TextFileCorpus, encode
from monosemantic.eval.layer_ablation import ablate_layers, answer_spans, distinct_documents, texts
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.models import load_model

pytestmark = pytest.mark.integration  # runs the model over and over: see tests/conftest.py

N_DOCS = 10
# each family's sublayer output projections, by layer
PROJECTIONS = {
    "gpt2": {"attn": "transformer.h.{}.attn.c_proj", "mlp": "transformer.h.{}.mlp.c_proj"},
    "llama": {"attn": "model.layers.{}.self_attn.o_proj", "mlp": "model.layers.{}.mlp.down_proj"},
    "gpt_neox": {"attn": "gpt_neox.layers.{}.attention.dense", "mlp": "gpt_neox.layers.{}.mlp.dense_4h_to_h"},
}


@pytest.fixture(scope="module")
def documents():
    return distinct_documents(MathCorpus("heldout", seed=0), N_DOCS)


@pytest.fixture(scope="module", params=sorted(PROJECTIONS))
def family(request, tiny_model_dirs, documents):
    """(family, model, tokenizer, result of ablate_layers on the documents)."""
    model, tokenizer = load_model(tiny_model_dirs[request.param])
    scored, for_means = documents
    result = ablate_layers(
        model, tokenizer, texts(scored), texts(for_means), answer_spans(scored), batch_tokens=256, progress=False
    )
    return request.param, model, tokenizer, result


def answer_labels(tokenizer, sample, ids: list[int]) -> list[int]:
    """ids with -100 on every token not in the sample's answer; a token's first character is found by
    decoding the tokens before it (the tokenizer round-trips)."""
    labels = [-100] * len(ids)
    for i in range(1, len(ids) - 1):  # BOS and EOS are not in the text
        start = len(tokenizer.decode(ids[1:i]))
        if sample.answer_start <= start < sample.answer_end:
            labels[i] = ids[i]
    return labels


def reference_ce(model, tokenizer, docs) -> tuple[float, float]:
    """Mean next-token CE of the documents, each read alone: over every token, from the model's own loss,
    and over the answer tokens."""
    total, n, answer_total, n_answer = 0.0, 0, 0.0, 0
    for doc in docs:
        ids = encode(tokenizer, doc.text)
        assert tokenizer.decode(ids[1:-1]) == doc.text
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
        total += out.loss.item() * (len(ids) - 1)
        n += len(ids) - 1
        labels = torch.tensor(answer_labels(tokenizer, doc, ids))
        answer_total += F.cross_entropy(out.logits[0, :-1], labels[1:], reduction="sum").item()  # -100: ignored
        n_answer += int((labels != -100).sum())
    return total / n, answer_total / n_answer


def projection_mean(model, tokenizer, path: str, docs) -> torch.Tensor:
    """The mean output of the module at `path` over every position of the documents, each read alone."""
    outputs = []
    handle = model.get_submodule(path).register_forward_hook(lambda _m, _a, out: outputs.append(out[0].double()))
    try:
        for doc in docs:
            model(input_ids=torch.tensor([encode(tokenizer, doc.text)]))
    finally:
        handle.remove()
    return torch.cat(outputs).mean(0)


def constant_projection(model, path: str, value: torch.Tensor):
    """A copy of the model whose module at `path` outputs `value` everywhere: weight 0, bias `value`."""
    out = copy.deepcopy(model)
    proj = out.get_submodule(path)
    if proj.bias is None:  # Llama's projections have no bias: a linear layer with one takes their place
        parent, name = path.rsplit(".", 1)
        in_features, out_features = proj.weight.shape[1], proj.weight.shape[0]
        proj = nn.Linear(in_features, out_features, bias=True)
        setattr(out.get_submodule(parent), name, proj)
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.copy_(value)
    return out


def test_clean_ce_is_the_models_own_loss(family, documents):
    _, model, tokenizer, result = family
    scored, for_means = documents
    assert result.n_documents == result.n_mean_documents == N_DOCS
    assert result.n_tokens == sum(len(encode(tokenizer, d.text)) - 1 for d in scored)
    assert result.n_mean_positions == sum(len(encode(tokenizer, d.text)) for d in for_means)
    ce, answer_ce = reference_ce(model, tokenizer, scored)
    assert result.ce_clean == pytest.approx(ce, rel=1e-5)
    assert result.answer_ce_clean == pytest.approx(answer_ce, rel=1e-5)


def test_each_ablation_equals_a_model_with_a_constant_projection(family, documents):
    name, model, tokenizer, result = family
    scored, for_means = documents
    assert [(c.layer, c.component) for c in result.components] == [(0, "attn"), (0, "mlp"), (1, "attn"), (1, "mlp")]
    for cost in result.components:
        path = PROJECTIONS[name][cost.component].format(cost.layer)
        mean = projection_mean(model, tokenizer, path, for_means)
        zero_ce, zero_answer = reference_ce(constant_projection(model, path, torch.zeros_like(mean)), tokenizer, scored)
        mean_ce, mean_answer = reference_ce(constant_projection(model, path, mean.float()), tokenizer, scored)
        where = f"{name} layer {cost.layer} {cost.component}"
        assert cost.ce_zero == pytest.approx(zero_ce, rel=1e-5), where
        assert cost.ce_mean == pytest.approx(mean_ce, rel=1e-5), where
        assert cost.answer_ce_zero == pytest.approx(zero_answer, rel=1e-5), where
        assert cost.answer_ce_mean == pytest.approx(mean_answer, rel=1e-5), where
        assert abs(cost.ce_zero - result.ce_clean) > 1e-4, where  # the ablation did change the model


def test_distinct_documents_are_the_first_distinct_texts_in_corpus_order(documents):
    scored, for_means = documents
    expected: list[str] = []
    for doc in MathCorpus("heldout", seed=0).documents():
        if doc.text not in expected:
            expected.append(doc.text)
        if len(expected) == 2 * N_DOCS:
            break
    assert texts(scored) + texts(for_means) == expected


def test_too_few_distinct_documents_and_overlaps_are_refused(tmp_path, tiny_model_dirs):
    path = tmp_path / "few.txt"
    path.write_text("1 + 1 = 2\n2 + 2 = 4\n1 + 1 = 2\n3 + 3 = 6\n")
    with pytest.raises(ConfigError, match="3 distinct documents in 4 read.*at most 1"):
        distinct_documents(TextFileCorpus(path), 2)
    model, tokenizer = load_model(tiny_model_dirs["gpt2"])
    with pytest.raises(ConfigError, match="distinct"):
        ablate_layers(model, tokenizer, ["1 + 1 = 2", "2 + 2 = 4"], ["2 + 2 = 4"], progress=False)
    without_answers = ablate_layers(model, tokenizer, ["1 + 1 = 2"], ["2 + 2 = 4"], progress=False)
    assert without_answers.answer_ce_clean is None and without_answers.n_answer_tokens == 0


def test_cli_prints_the_table_and_writes_json(tiny_model_dirs, documents, tmp_path, capsys):
    out = tmp_path / "ablate.json"
    argv = ["-q", "mathlm", "ablate-layers", "--model", str(tiny_model_dirs["gpt2"]), "--documents", str(N_DOCS)]
    assert main([*argv, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    saved = json.loads(out.read_text())
    model, tokenizer = load_model(tiny_model_dirs["gpt2"])
    assert saved["ce_clean"] == pytest.approx(reference_ce(model, tokenizer, documents[0])[0], rel=1e-5)
    assert f"clean CE {saved['ce_clean']:.4f} nats/token over {saved['n_tokens']} tokens of {N_DOCS}" in table
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [
        [str(c["layer"]), c["component"]]
        + [f"{c[k]:+.4f}" for k in ("delta_zero", "delta_mean", "answer_delta_zero", "answer_delta_mean")]
        for c in saved["components"]
    ]
    assert len(rows) == 4
    for c in saved["components"]:
        assert c["delta_mean"] == pytest.approx(c["ce_mean"] - saved["ce_clean"])


def test_cli_rejects_bad_input(tiny_model_dirs, tmp_path, capsys):
    model = ["--model", str(tiny_model_dirs["gpt2"])]
    with pytest.raises(SystemExit) as exit_info:
        main(["mathlm", "ablate-layers", *model, "--documents", "0"])
    assert exit_info.value.code == 2
    assert "--documents: expected a positive integer, got '0'" in capsys.readouterr().err
    few = tmp_path / "few.txt"
    few.write_text("1 + 1 = 2\n2 + 2 = 4\n3 + 3 = 6\n")
    assert main(["-q", "mathlm", "ablate-layers", *model, "--documents", "2", "--corpus", str(few)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "3 distinct documents" in line and "at most 1" in line
    assert main(["-q", "mathlm", "ablate-layers", "--model", str(tmp_path / "nowhere")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "nowhere does not exist" in line
