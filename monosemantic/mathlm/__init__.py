"""The built-in math language model: corpus, tokenizer, model recipe, training, evaluation, the
shipped weights (`monosemantic/mathlm/model/`, a standard Hugging Face directory), and pretrained
SAEs on its residual stream (`monosemantic/mathlm/saes/`).

    from monosemantic.models import load_model
    model, tokenizer = load_model("builtin")

    corpus.py        the corpus: samples drawn from the generators, held-out split, token roles
    problems.py      the problem generators (arithmetic, =/≈ pairs, words, word problems, ...)
    sample.py        Sample, Role and the Builder that writes a text span by span with roles
    language.py      the words of the corpus in English, Spanish and French
    roles.py         token roles of harvested tokens (document, position) and of task prompts
    tokenizer.py     the model's tokenizer: a token per word of the corpus, per digit, bytes otherwise
    config.py        MathLMConfig: the model's and the training's settings
    train.py         training (resumable from atomic checkpoints) and export to a model directory
    evaluate.py      greedy exact-match answer accuracy per category on the held-out split
    model/           the shipped weights, config and tokenizer
    pretrained.py    the shipped SAEs (one per layer): recipe, training, bf16 export with a manifest, loading
    pretrained_run.py    one of them as an analysed run directory in the user's cache (`monosemantic view builtin`)
    saes/            the shipped SAEs and their manifest.json
"""

from pathlib import Path

BUILTIN_MODEL_DIR = Path(__file__).parent / "model"
