"""monosemantic: dictionary learning with sparse autoencoders on transformer language models.

The pipeline, one module per stage:
    activations.py   activation files and resumable batch iterators
    sae/             SAE architectures (relu, topk, batchtopk, jumprelu, gated), save/load
    formats/         SAEs of SAELens, sparsify, OpenAI, dictionary_learning, Gemma Scope: load, export
    trainer.py       Iterator[Tensor] + SAE -> trained SAE, checkpoints, metrics.jsonl
    metrics.py       FVU, normalised MSE, L0, dead/dense latents, MMCS; `evaluate`
    toy.py           synthetic superposition benchmark
    cli.py           the `monosemantic` command
"""

__version__ = "0.1.0"

from monosemantic.activations import TensorBatches, load_activation_file
from monosemantic.formats import export_sae, load_sae
from monosemantic.metrics import EvalResult, evaluate
from monosemantic.sae import ARCHITECTURES, SAE, SAEConfig, SAEOutput, create_sae
from monosemantic.trainer import TrainConfig, Trainer

__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "SAEOutput", "create_sae", "load_sae", "export_sae",
    "TrainConfig", "Trainer", "TensorBatches", "load_activation_file", "EvalResult", "evaluate",
    "__version__",
]
