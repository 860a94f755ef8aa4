"""Speed-ups of `analyze`'s bookkeeping leave its output as it was: the store of the tiny run
(shard tensors, every SQLite table, the manifest but for the shard files' byte hashes, which a
safetensors header's random metadata order changes, and the model's temporary path) against its
digest as the code before them wrote it; and the example roles read from the documents at hand,
tokenized together, against those of one document at a time, generated anew."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_shard_latents import store_digest

from monosemantic.analysis.analyze import AnalyzeConfig, analyze, example_roles
from monosemantic.analysis.latent_stats import Examples
from monosemantic.analysis.store import MANIFEST, features_dir
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.mathlm.roles import document_roles, samples_roles
from monosemantic.mathlm.tokenizer import build_tokenizer

# sha256 of `digest` for the tiny run as analysed before the bookkeeping speed-ups (/work/main at
# f6c7408); a change of the analysis' results must change this on purpose, with the reason.
STORE_DIGEST = "4acf54e076ba6c85ce28d59351b4eec3e094a076414a1505e7387348ca0aa3c0"
# sha256 of the tiny run's trained SAE (its tensors) from which STORE_DIGEST was recorded: another CPU
# (another BLAS kernel, no native bf16) trains other weights, and their store is not comparable
SAE_DIGEST = "8f8aca36a0a3e3770370dd8a4936649546333d0cee3fab2c17c425f7b79270b1"


def sae_digest(run) -> str:
    tensors = load_file(run / "sae.safetensors")
    return hashlib.sha256(
        b"".join(name.encode() + tensors[name].numpy().tobytes() for name in sorted(tensors))
    ).hexdigest()


def digest(run) -> str:
    manifest = json.loads((features_dir(run) / MANIFEST).read_text())
    for entry in manifest["shards"].values():
        del entry["sha256"]
    del manifest["settings"]["model"]  # the tiny model's temporary directory
    whole = {**store_digest(run), "manifest": manifest}
    return hashlib.sha256(json.dumps(whole, sort_keys=True).encode()).hexdigest()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_the_store_is_what_it_was(tiny_run, tmp_path):
    if sae_digest(tiny_run) != SAE_DIGEST:
        pytest.skip("the tiny run's SAE trained to other weights on this machine: the recorded store does not apply")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = AnalyzeConfig(tokens=6000, shard_latents=64, batch_tokens=1024, top_k=6, window=8)
    analyze(run, cfg, progress=False)
    assert digest(run) == STORE_DIGEST


def test_roles_of_samples_tokenized_together_are_those_of_one_at_a_time():
    corpus, tok = MathCorpus(), build_tokenizer()
    samples = list(corpus.documents(limit=300))
    assert samples_roles(samples, tok) == [document_roles(corpus, s.id, tok) for s in samples]
    assert samples_roles([], tok) == []


def test_example_roles_from_documents_at_hand_are_those_generated_anew():
    corpus, tok = MathCorpus(), build_tokenizer()
    examples = Examples(3, 4, 2)
    gen = torch.Generator().manual_seed(0)
    examples.doc[:] = torch.randint(-1, 40, (3, 4), generator=gen)
    examples.pos[:] = torch.randint(1, 4, (3, 4), generator=gen)
    read = {s.id: s for s in corpus.documents(limit=20)}  # some documents at hand, the others generated
    anew = example_roles(corpus, tok, [examples])
    assert len(anew) > 5 and example_roles(corpus, tok, [examples], read=read) == anew
