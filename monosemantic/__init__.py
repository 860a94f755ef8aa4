"""monosemantic: dictionary learning with sparse autoencoders on transformer language models.

The pipeline, one folder per stage (each folder's docstring lists its files):

    sae/             SAE architectures (relu, topk, batchtopk, matryoshka, jumprelu, gated, transcoders), registry,
                     save / load
    formats/         SAEs of SAELens, sparsify, OpenAI, dictionary_learning, Gemma Scope: load, export
    models.py        load a Hugging Face causal LM (or the built-in one), hookpoints, greedy decoding
    hooks.py         capture / patch activations at hookpoints
    data/            corpora, harvesting activations (stream), the disk cache, activation files
    train/           trainer, checkpoints, run directory, the end-to-end pipeline, sweeps
    distributed/     torchrun: data-parallel and latent-sharded training, several SAEs at once
    runmodel.py      RunModel: a run's model + tokenizer + SAE; latents of a text, predictions
    analysis/        per-latent statistics, labels, `analyze`, the feature store
    eval/            metrics, spliced evaluation, toy data, probing, splitting, the benchmark
    experiments/     interventions, task sets, ablation and steering studies
    circuits/        transcoder sets, the frozen replacement model, attribution graphs, `trace`
    dashboard/       `monosemantic view`: the local web app over a run directory
    mathlm/          the built-in math corpus, model recipe and shipped weights
    cli/             the `monosemantic` command
    config.py, errors.py, atomic.py, plots.py    dataclass configs, the error base, atomic files, plots

The public names below load on first use, so `import monosemantic.sae` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "ARCHITECTURES": "monosemantic.sae",
    "SAE": "monosemantic.sae",
    "SAEConfig": "monosemantic.sae",
    "SAEOutput": "monosemantic.sae",
    "create_sae": "monosemantic.sae",
    "load_sae": "monosemantic.formats",
    "export_sae": "monosemantic.formats",
    "TrainConfig": "monosemantic.train.trainer",
    "Trainer": "monosemantic.train.trainer",
    "TensorBatches": "monosemantic.data.activations",
    "load_activation_file": "monosemantic.data.activations",
    "EvalResult": "monosemantic.eval.metrics",
    "evaluate": "monosemantic.eval.metrics",
    "AnalyzeConfig": "monosemantic.analysis.analyze",
    "analyze": "monosemantic.analysis.analyze",
    "FeatureStore": "monosemantic.analysis.store",
    "RunModel": "monosemantic.runmodel",
    "MonosemanticError": "monosemantic.errors",
}

__all__ = [*_PUBLIC, "__version__"]

if TYPE_CHECKING:
    from monosemantic.analysis.analyze import AnalyzeConfig as AnalyzeConfig
    from monosemantic.analysis.analyze import analyze as analyze
    from monosemantic.analysis.store import FeatureStore as FeatureStore
    from monosemantic.data.activations import (
        TensorBatches as TensorBatches,
    )
    from monosemantic.data.activations import (
        load_activation_file as load_activation_file,
    )
    from monosemantic.errors import MonosemanticError as MonosemanticError
    from monosemantic.eval.metrics import EvalResult as EvalResult
    from monosemantic.eval.metrics import evaluate as evaluate
    from monosemantic.formats import export_sae as export_sae
    from monosemantic.formats import load_sae as load_sae
    from monosemantic.runmodel import RunModel as RunModel
    from monosemantic.sae import (
        ARCHITECTURES as ARCHITECTURES,
    )
    from monosemantic.sae import (
        SAE as SAE,
    )
    from monosemantic.sae import (
        SAEConfig as SAEConfig,
    )
    from monosemantic.sae import (
        SAEOutput as SAEOutput,
    )
    from monosemantic.sae import (
        create_sae as create_sae,
    )
    from monosemantic.train.trainer import TrainConfig as TrainConfig
    from monosemantic.train.trainer import Trainer as Trainer


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'monosemantic' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
