"""`monosemantic analyze` and the feature store on a tiny model: numbers against a brute-force pass,
labels on a `.jsonl` corpus with token roles against a brute-force count, resume after a kill, tamper
detection, stores of the old label definition, readers during writing, search, inspect, trace, the CLI."""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from label_rules import holds

from monosemantic.analysis import concepts
from monosemantic.analysis.analyze import AnalyzeConfig, analyze, example_roles
from monosemantic.analysis.latent_stats import Examples
from monosemantic.analysis.store import DB_FILE, MANIFEST, FeatureStore, StoreError, features_dir
from monosemantic.analysis.terminal import format_feature
from monosemantic.analysis.writer import StoreWriter
from monosemantic.cli.main import main
from monosemantic.data.corpora import TextFileCorpus, document_meta, encode, kept_tokens, open_corpus, pack
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.mathlm.tokenizer import build_tokenizer
from monosemantic.models import direct_logit_path, load_model
from monosemantic.runmodel import RunModel, token_features

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
TOKENS, SHARD = "6000", "64"  # 256 latents -> 4 shards


def analyze_argv(run, *extra):
    return [
        "-q",
        "--threads",
        "1",
        "analyze",
        str(run),
        "--tokens",
        TOKENS,
        "--shard-latents",
        SHARD,
        "--batch-tokens",
        "1024",
        "--top-k",
        "6",
        "--window",
        "8",
        *extra,
    ]


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def analysed(run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("analysed") / "run"
    shutil.copytree(run, copy)
    assert main(analyze_argv(copy)) == 0
    return copy


def all_latents(run):
    """Brute force: every kept token's latents, in corpus order, for the tokens the analysis reads."""
    src = RunModel.of_run(run)
    zs, toks = [], []
    n = 0
    with torch.inference_mode():
        for batch in pack(src.corpus.documents(), src.tokenizer, src.seq_len, 1024):
            keep = kept_tokens(batch, src.tokenizer)
            zs.append(src.latents(batch.input_ids, batch.attention_mask, keep))
            toks.append(torch.stack([batch.doc_ids[keep], batch.positions[keep]], 1))
            n += int(keep.sum())
            if n >= int(TOKENS):
                break
    return torch.cat(zs), torch.cat(toks)


def test_statistics_and_top_contexts_match_a_brute_force_pass(analysed):
    z, where = all_latents(analysed)
    store = FeatureStore.open(analysed)
    assert store.tokens == z.shape[0] and store.n_latents == 256
    for i in (0, 63, 64, 200, 255):  # across shard boundaries
        f = store.feature(i)
        col = z[:, i]
        assert f.fires == int((col > 0).sum())
        assert f.density == pytest.approx(f.fires / z.shape[0])
        if f.fires:
            assert f.max_act == pytest.approx(col.max().item(), rel=1e-5)
            assert f.mean_act == pytest.approx(col[col > 0].mean().item(), rel=1e-4)
        top = col.topk(min(6, f.fires))
        assert [e.value for e in f.top_examples] == pytest.approx(top.values.tolist(), rel=1e-5)
        row = {tuple(w): j for j, w in enumerate(where.tolist())}
        for e in f.top_examples:  # the activation there (documents that begin alike tie at their first tokens)
            assert col[row[e.doc, e.position]].item() == pytest.approx(e.value, rel=1e-5)
        assert sum(f.histogram) == f.fires
        assert sum(r.count for r in f.samples) == f.fires


@pytest.mark.process
def test_a_killed_analysis_resumes_to_the_same_store_and_readers_work_meanwhile(run, analysed, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monosemantic", *analyze_argv(copy)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    manifest = features_dir(copy) / MANIFEST
    deadline = time.time() + 120
    while time.time() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["shards"]:
            break
        time.sleep(0.02)
    reader = FeatureStore.open(copy)  # while the analysis writes
    assert reader.feature(0).fires >= 0
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = json.loads(manifest.read_text())["shards"]
    assert 1 <= len(done) < 4, "the kill should land between the first and the last shard"
    with pytest.raises(StoreError, match="not analysed yet"):
        reader.feature(255)
    analyze(
        copy,
        AnalyzeConfig(tokens=int(TOKENS), shard_latents=int(SHARD), batch_tokens=1024, top_k=6, window=8),
        progress=False,
    )
    ours, reference = features_dir(copy), features_dir(analysed)
    for name in json.loads((reference / MANIFEST).read_text())["shards"]:
        assert (ours / name).read_bytes() == (reference / name).read_bytes(), name
    resumed = FeatureStore.open(copy)
    assert [resumed.feature(i) for i in (0, 100, 255)] == [
        FeatureStore.open(analysed).feature(i) for i in (0, 100, 255)
    ]
    rows = resumed.db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    assert rows == 256 and reader.feature(255).index == 255  # the old reader sees the finished shards too


def test_a_tampered_shard_is_detected(analysed, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(analysed, copy)
    shard = sorted(features_dir(copy).glob("latents_*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = FeatureStore.open(copy)
    store.feature(0)  # other shards still read
    with pytest.raises(StoreError, match="sha256"):
        store.feature(64)


def test_resuming_with_other_settings_is_refused(analysed, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(analysed, copy)
    before = hashlib.sha256((features_dir(copy) / DB_FILE).read_bytes()).hexdigest()
    assert main(analyze_argv(copy, "--top-k", "7")) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "top_k" in err
    assert hashlib.sha256((features_dir(copy) / DB_FILE).read_bytes()).hexdigest() == before


def test_search_list_inspect_and_trace(analysed):
    store = FeatureStore.open(analysed)
    labelled = store.list(order="f1", limit=5, labelled=True)
    assert labelled and all(s.label for s in labelled)
    assert [s.precision for s in store.list(order="precision", limit=10, labelled=True)] == sorted(
        [s.precision for s in store.list(order="precision", limit=10, labelled=True)], reverse=True
    )
    words = {
        s.index: s.label.strip('"').replace("␣", " ").replace('"', " ").split()
        for s in store.list(order="f1", limit=256, labelled=True)
    }
    index, word = next((i, w[0]) for i, w in words.items() if w and w[0] != "<bos>")
    assert index in [s.index for s in store.search(word, limit=256)]
    best = store.feature(labelled[0].index)
    text = "12 + 7 = 19"
    src = RunModel.of_run(analysed)
    per_token = token_features(src, text, 3, store.labels)
    assert "".join(t.token for t in per_token) == text
    ids = torch.tensor([[src.tokenizer.bos_token_id, *src.tokenizer(text, add_special_tokens=False)["input_ids"]]])
    z = src.latents(ids, None, ids != src.tokenizer.bos_token_id)
    for t, row in zip(per_token, z):
        assert [j for j, _, _ in t.features] == [j for j in row.topk(3).indices.tolist() if row[j] > 0]
    traced = store.trace(best.index, 3)
    for doc, ex in zip(traced, best.top_examples):
        token = src.tokenizer.convert_ids_to_tokens(encode(src.tokenizer, doc.text)[ex.position])
        assert doc.doc == ex.doc and ex.tokens[ex.active] == token
        assert doc.meta["language"] in ("symbols", "English", "Spanish", "French")


def role_by_hand(tok, doc: int, position: int) -> tuple[str, str]:
    """(token, role in words) of token `position` of math document `doc`: the role of the character the
    token starts at, counting characters from the text of the tokens before it."""
    sample = MathCorpus().sample(doc)
    ids = encode(tok, sample.text)
    token = tok.convert_ids_to_tokens(ids[position])
    if position in (0, len(ids) - 1):
        return token, "bos" if position == 0 else "eos"
    start = len("".join(tok.convert_ids_to_tokens(ids[1:position])))
    return token, sample.role_at(start).describe()


def test_examples_carry_the_token_role_of_their_token(analysed):
    store, tok = FeatureStore.open(analysed), build_tokenizer()  # the tiny model's tokenizer
    kinds = set()
    for i in range(0, store.n_latents, 3):
        f = store.feature(i)
        for ex in f.top_examples + [e for r in f.samples for e in r.examples]:
            token, role = role_by_hand(tok, ex.doc, ex.position)
            assert ex.tokens[ex.active] == token and ex.role == role, (i, ex)
            kinds.add(role.split()[0])
    assert {"operand_digit", "operator", "relation", "answer_digit", "space"} <= kinds
    text = format_feature(store.feature(3))
    assert all(f"({ex.role})" in text for ex in store.feature(3).top_examples[:8])


def test_stores_without_roles_still_load(analysed, tmp_path):
    """A store from before token roles (and content hashes): no roles table. It reads, without roles;
    continuing it adds one."""
    old = tmp_path / "run"
    shutil.copytree(analysed, old)
    with sqlite3.connect(features_dir(old) / DB_FILE) as db:
        db.execute("DROP TABLE roles")
    manifest = json.loads((features_dir(old) / MANIFEST).read_text())
    del manifest["tables_sha256"]
    for entry in manifest["shards"].values():
        del entry["rows_sha256"]
    (features_dir(old) / MANIFEST).write_text(json.dumps(manifest))
    store = FeatureStore.open(old)
    f = store.feature(3)
    assert f.top_examples and all(ex.role is None for ex in f.top_examples + f.samples[0].examples)
    assert "operand_digit" not in format_feature(f)
    assert [ex.value for ex in f.top_examples] == [
        ex.value for ex in FeatureStore.open(analysed).feature(3).top_examples
    ]
    store.close()
    manifest = json.loads((features_dir(old) / MANIFEST).read_text())
    StoreWriter(features_dir(old), manifest["settings"], 256, 64, store.vocab).finish()
    with sqlite3.connect(features_dir(old) / DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM roles").fetchone() == (0,)  # the table is back, empty


def test_only_the_math_corpus_gives_roles(tmp_path):
    tok = build_tokenizer()
    examples = Examples(2, 3, 4)
    examples.doc[0, :2], examples.pos[0, :2] = torch.tensor([7, 2]), torch.tensor([1, 3])
    examples.doc[1, 0], examples.pos[1, 0] = 7, 1  # the same token twice: one row
    rows = example_roles(MathCorpus(), tok, [examples])
    assert rows == [(2, 3, role_by_hand(tok, 2, 3)[1]), (7, 1, role_by_hand(tok, 7, 1)[1])]
    (tmp_path / "plain.txt").write_text("3 + 4 = 7\n" * 10)
    assert example_roles(TextFileCorpus(tmp_path / "plain.txt"), tok, [examples]) == []


def test_the_cli_commands(analysed, capsys):
    assert main(["feature", str(analysed), "3", "--color", "never", "--trace"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("feature 3:") and "top contexts:" in out and "⟦" in out and "documents behind it" in out
    assert main(["features", str(analysed), "--search", "=", "--limit", "5"]) == 0
    assert "feature" in capsys.readouterr().out
    assert main(["inspect", str(analysed), "3 + 4 = 7"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len("3 + 4 = 7")
    assert main(["feature", str(analysed), "256"]) == 2
    assert "feature 256 does not exist; this SAE has features 0-255" in capsys.readouterr().err
    assert main(["inspect", str(analysed), "x" * 5000]) == 2
    assert "at most 4096" in capsys.readouterr().err
    assert (analysed / "plots" / "feature_density.png").stat().st_size > 5000
    assert (analysed / "plots" / "label_precision.png").stat().st_size > 5000


def test_bad_settings_and_missing_stores_are_clear_errors(run, capsys):
    assert main(["analyze", str(run), "--label-fit", "1.5"]) == 2
    assert "label_fit must be between 0 and 1" in capsys.readouterr().err
    assert main(["features", str(run)]) == 2
    assert "no feature store yet; run `monosemantic analyze" in capsys.readouterr().err
    assert not features_dir(run).exists()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_direct_logit_path_by_hand(tiny_model_dirs, family):
    model, _ = load_model(tiny_model_dirs[family])
    d = torch.randn(3, model.config.intermediate_size if family == "llama" else 4 * model.config.n_embd)
    got = direct_logit_path(model, "layers.1.mlp.neurons")(d)
    if family == "gpt2":
        block = model.transformer.h[1]
        resid = d @ block.mlp.c_proj.weight  # Conv1D: x @ W + b
        resid = resid - resid.mean(-1, keepdim=True)
        expected = (resid * model.transformer.ln_f.weight) @ model.lm_head.weight.T
    else:
        resid = d @ model.model.layers[1].mlp.down_proj.weight.T
        expected = (resid * model.model.norm.weight) @ model.lm_head.weight.T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert direct_logit_path(model, "transformer.h.0.mlp.c_fc" if family == "gpt2" else "model.embed_tokens") is None


def test_a_store_with_the_old_label_definition_is_refused_and_analyze_redoes_it(analysed, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(analysed, copy)
    manifest = features_dir(copy) / MANIFEST
    old = json.loads(manifest.read_text())
    del old["labels"]  # as every store written before labels version 2
    manifest.write_text(json.dumps(old))
    assert main(["features", str(copy), "--labelled"]) == 2
    err = capsys.readouterr().err
    assert "label precision and recall were swapped" in err and f"rerun `monosemantic analyze {copy}`" in err
    with pytest.raises(StoreError, match="swapped"):
        FeatureStore.open(copy)
    assert main(analyze_argv(copy)) == 0
    again, reference = FeatureStore.open(copy), FeatureStore.open(analysed)
    assert [again.feature(i) for i in (0, 100, 255)] == [reference.feature(i) for i in (0, 100, 255)]


def test_labels_agree_with_their_top_contexts(analysed):
    """Where a label's rule holds on the top contexts of its feature (read from the corpus): on average
    over the labelled features, on a share within 0.1 of the labels' held-out precision P(rule | fires).
    Per label it holds for about three quarters of them on this random tiny model, whose features
    fire in narrow activation ranges where the top few are not their typical firings."""
    store, tok = FeatureStore.open(analysed), build_tokenizer()
    vocab, specials = store.vocab, set(tok.all_special_ids)
    precision, share = [], []
    for summary in store.list(limit=store.n_latents, labelled=True):
        f = store.feature(summary.index)
        holding = []
        for ex in f.top_examples:
            doc = store.document(ex.doc)
            roles = [None if r is None else dict(r) for r in concepts.document_roles(doc, tok)]
            ids = encode(tok, doc.text)
            assert ids[ex.position] == tok.convert_tokens_to_ids(ex.tokens[ex.active])
            holding.append(holds(f.label.rule, ids, roles, document_meta(doc), ex.position, vocab, specials))
        precision.append(f.label.precision)
        share.append(sum(holding) / len(holding))
    assert len(share) >= 50
    assert sum(share) / len(share) >= sum(precision) / len(precision) - 0.1


# ---- a .jsonl corpus with token roles ------------------------------------------------------------


def jsonl_corpus(path, n: int = 1200) -> None:
    """The first n math documents as a .jsonl corpus with `roles`: the generator's roles, less the
    number a digit belongs to, the answer's first character marked answer_start."""
    with open(path, "w", encoding="utf-8") as f:
        for sample in MathCorpus().documents(limit=n):
            spans = []
            for span in sample.spans:
                role = {k: v for k, v in span.role.as_dict().items() if k != "value"}
                if span.start == sample.answer_start:
                    role["answer_start"] = True
                spans.append({"start": span.start, "end": span.end, "role": role})
            f.write(json.dumps({"text": sample.text, "roles": spans}, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def jsonl_run(run, tmp_path_factory):
    root = tmp_path_factory.mktemp("jsonl")
    corpus = root / "math.jsonl"
    jsonl_corpus(corpus)
    copy = root / "run"
    shutil.copytree(run, copy)
    assert main(analyze_argv(copy, "--corpus", str(corpus))) == 0
    return copy, corpus


def roles_by_hand(tok, ids: list[int], spans: list[dict]) -> list[dict | None]:
    """The role of each token: that of the span its first character lies in (BOS and EOS: none)."""
    out = [None]
    for p in range(1, len(ids) - 1):
        start = len("".join(tok.convert_ids_to_tokens(ids[1:p])))
        out.append(next((s["role"] for s in spans if s["start"] <= start < s["end"]), None))
    return out + [None]


def held_out(run_dir, corpus: str) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Latents and (document, position) of the tokens the labels are scored on, by brute force: the
    batches after the fit part, up to --tokens, each text counted where it is first met."""
    src = RunModel.of_run(run_dir, corpus)
    fit, seen, owner, zs, where = int(int(TOKENS) * AnalyzeConfig().label_fit), 0, {}, [], []
    texts = {d.id: d.text for d in open_corpus(corpus).documents()}
    with torch.inference_mode():
        for batch in pack(open_corpus(corpus).documents(), src.tokenizer, src.seq_len, 1024):
            keep = kept_tokens(batch, src.tokenizer)
            fitting, seen = seen < fit, seen + int(keep.sum())
            counted = {d: owner.setdefault(texts[d], d) == d for d in batch.doc_ids[:, 0].tolist()}
            if not fitting:
                z = src.latents(batch.input_ids, batch.attention_mask, keep)
                for j, (d, p) in enumerate(zip(batch.doc_ids[keep].tolist(), batch.positions[keep].tolist())):
                    if counted[d]:
                        zs.append(z[j])
                        where.append((d, p))
            if seen >= int(TOKENS):
                break
    return torch.stack(zs), where


def test_labels_on_a_jsonl_corpus_with_roles_match_a_brute_force_count(jsonl_run):
    run_dir, corpus = jsonl_run
    store, tok = FeatureStore.open(run_dir), build_tokenizer()
    records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    vocab, specials = store.vocab, set(tok.all_special_ids)
    z, where = held_out(run_dir, str(corpus))
    docs = {}
    for d in {d for d, _ in where}:
        ids = encode(tok, records[d]["text"])
        docs[d] = ids, roles_by_hand(tok, ids, records[d]["roles"])
    kinds = []
    for i in range(store.n_latents):
        label = store.feature(i).label
        if label is None or label.precision is None:
            continue
        kinds.append(label.kind)
        rule = torch.tensor([holds(label.rule, *docs[d], {}, p, vocab, specials) for d, p in where])
        fires = z[:, i] > 0
        hits = int((rule & fires).sum())
        assert label.support == int(rule.sum()), (i, label)
        assert label.precision == pytest.approx(hits / int(fires.sum())), (i, label)
        assert label.recall == pytest.approx(hits / int(rule.sum())), (i, label)
    assert {"concept", "concept+token"} & set(kinds), kinds  # concept labels from the .jsonl roles
    f = store.feature(next(i for i in range(store.n_latents) if store.feature(i).top_examples))
    ex = f.top_examples[0]
    role = roles_by_hand(tok, encode(tok, records[ex.doc]["text"]), records[ex.doc]["roles"])[ex.position]
    assert ex.role == (
        None
        if role is None
        else " ".join([role["kind"], *(f"{k}={v}" for k, v in sorted(role.items()) if k != "kind")])
    )
