"""monosemantic: dictionary learning with sparse autoencoders on transformer language models.

The pipeline, one module per stage:
    activations.py   activation files and resumable batch iterators
    sae/             SAE architectures (relu, topk, batchtopk, jumprelu, gated), save/load
    formats/         SAEs of SAELens, sparsify, OpenAI, dictionary_learning, Gemma Scope: load, export
    trainer.py       Iterator[Tensor] + SAE -> trained SAE, checkpoints, metrics.jsonl
    metrics.py       FVU, normalised MSE, L0, dead/dense latents, MMCS; `evaluate`
    toy.py           synthetic superposition benchmark
    models.py        load a Hugging Face causal LM (or the built-in one), name its hookpoints
    hooks.py         capture / patch activations at hookpoints
    corpora.py       text corpora, packing with provenance
    harvest.py       model + hookpoint + corpus -> shuffled activation batches; cache.py: on disk
    splice.py        the SAE spliced into the model: CE loss recovered, KL
    pipeline.py      train / evaluate an SAE on a model end to end
    latent_stats.py  streaming per-latent statistics, top and quantile examples
    labels.py        automatic labels with held-out precision and recall
    analyze.py       feature analysis of a run -> store.py, the feature store
    interventions.py ablate / clamp / steer latents inside the running model
    probe.py         one text through model + SAE: per-token latents, predictions under interventions
    dashboard/       `monosemantic view`: the local web app over a run directory
    mathlm/          the built-in math corpus, model recipe and shipped weights
    cli.py           the `monosemantic` command
"""

__version__ = "0.1.0"

from monosemantic.activations import TensorBatches, load_activation_file
from monosemantic.analyze import AnalyzeConfig, analyze
from monosemantic.formats import export_sae, load_sae
from monosemantic.metrics import EvalResult, evaluate
from monosemantic.sae import ARCHITECTURES, SAE, SAEConfig, SAEOutput, create_sae
from monosemantic.store import FeatureStore
from monosemantic.trainer import TrainConfig, Trainer

__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "SAEOutput", "create_sae", "load_sae", "export_sae",
    "TrainConfig", "Trainer", "TensorBatches", "load_activation_file", "EvalResult", "evaluate",
    "AnalyzeConfig", "analyze", "FeatureStore", "__version__",
]
