"""The built-in math language model: corpus, tokenizer, model recipe, training, evaluation, and the
shipped weights (`monosemantic/mathlm/model/`, a standard Hugging Face directory).

    from monosemantic.models import load_model
    model, tokenizer = load_model("builtin")

    corpus.py        the generator of math problems in several languages, with document metadata
    tokenizer.py     the model's tokenizer, built from the corpus' alphabet
    config.py        MathLMConfig: the model's and the training's settings
    train.py         training (resumable from atomic checkpoints) and export to a model directory
    evaluate.py      greedy exact-match answer accuracy per category on the held-out split
    model/           the shipped weights, config and tokenizer
"""

from pathlib import Path

BUILTIN_MODEL_DIR = Path(__file__).parent / "model"
