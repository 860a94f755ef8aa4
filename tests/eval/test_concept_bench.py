"""The labelling benchmark: concept recall and concept-labelled features counted by hand, and on a
tiny run against a brute-force pass, for the SAE and the neuron baseline."""

import pytest
import torch

from monosemantic.eval.concept_bench import ConceptCounts, concept_benchmark, concept_scores


def test_counts_and_scores_by_hand():
    counts = ConceptCounts({"d": 3})
    relation, digit = (("kind", "relation"),), (("kind", "digit"),)
    # tokens: = 7 = 4 x ; feature 0 fires on both `=`, feature 1 on `7` and the first `=`, feature 2 on `x`
    roles = [relation, digit, relation, digit, None]
    acts = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    counts.add([counts.concept_ids(r) for r in roles], {"d": acts})
    assert counts.tokens == 5 and counts.support.tolist() == [2, 2]
    assert counts.fires["d"].tolist() == [2, 2, 1]
    assert counts.joint["d"].tolist() == [[2, 0], [1, 1], [0, 0]]
    per_concept, summary = concept_scores(counts.fires["d"], counts.support, counts.joint["d"], ["relation", "digit"])
    # relation: feature 0, P = 2/2, R = 2/2; digit: feature 1, P = 1/2, R = 1/2
    assert [(c["feature"], c["precision"], c["recall"], c["f1"]) for c in per_concept] == [
        (0, 1.0, 1.0, 1.0),
        (1, 0.5, 0.5, 0.5),
    ]
    assert summary["concept_recall"] == pytest.approx(0.75)
    assert summary["concept_labelled"] == 1 and summary["concept_labelled_share"] == pytest.approx(1 / 3)


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_the_benchmark_of_a_tiny_run_against_a_brute_force_pass(tiny_run):
    from monosemantic.analysis.concepts import concept_phrase, concepts_of, document_roles
    from monosemantic.data.corpora import kept_tokens, open_corpus, pack
    from monosemantic.hooks import run_and_capture
    from monosemantic.runmodel import RunModel

    out = concept_benchmark(tiny_run, tokens=1500, min_support=20, batch_tokens=512)
    assert out["corpus"] == "mathlm:heldout" and out["tokens"] >= 1500
    assert out["sae"]["features"] == 256 and out["neurons"]["features"] == 2 * 128
    run = RunModel.of_run(tiny_run)
    roles = {}

    def distinct():  # held-out documents, each text once, as the benchmark reads them
        seen = set()
        for doc in open_corpus("mathlm:heldout").documents():
            if doc.text not in seen:
                seen.add(doc.text)
                roles[doc.id] = document_roles(doc, run.tokenizer)
                yield doc

    fires, concepts, n = {"sae": [], "neurons": []}, [], 0
    with torch.inference_mode():
        for batch in pack(distinct(), run.tokenizer, run.seq_len, 512):
            keep = kept_tokens(batch, run.tokenizer)
            x = run_and_capture(run.model, batch.input_ids, [run.hook], batch.attention_mask)[run.hook.name][keep]
            fires["sae"].append(run.sae.encode(x) > 0)
            fires["neurons"].append(torch.cat([x > 0, x < 0], 1))
            for d, p in zip(batch.doc_ids[keep].tolist(), batch.positions[keep].tolist()):
                role = roles[d][p]
                concepts.append({concept_phrase(*c) for c in concepts_of(role)} if role else set())
            n += int(keep.sum())
            if n >= 1500:
                break
    assert len(concepts) == out["tokens"]
    assert len(out["sae"]["per_concept"]) == len(out["neurons"]["per_concept"]) == out["concepts"] > 5
    for name in ("sae", "neurons"):
        f = torch.cat(fires[name]).double()
        for row in out[name]["per_concept"]:
            holds = torch.tensor([row["concept"] in c for c in concepts], dtype=torch.float64)
            assert row["support"] == int(holds.sum()) >= 20
            joint = f.T @ holds
            precision, recall = joint / f.sum(0).clamp(min=1), joint / holds.sum()
            f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
            assert row["f1"] == pytest.approx(f1.max().item())
            assert (row["precision"], row["recall"]) == pytest.approx(
                (precision[row["feature"]].item(), recall[row["feature"]].item())
            )
