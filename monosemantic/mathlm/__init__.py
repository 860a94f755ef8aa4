"""The built-in math language model: corpus, tokenizer, model recipe, training, evaluation, and the
shipped weights (`monosemantic/mathlm/model/`, a standard Hugging Face directory).

    from monosemantic.models import load_model
    model, tokenizer = load_model("builtin")
"""

from pathlib import Path

BUILTIN_MODEL_DIR = Path(__file__).parent / "model"
