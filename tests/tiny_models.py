"""Tiny random Hugging Face models of each supported family, saved to a directory like a real
checkpoint (config.json, model.safetensors, tokenizer files), so tests use the real loading path."""

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from monosemantic.mathlm.tokenizer import build_tokenizer

FAMILIES = ("gpt2", "llama", "gpt_neox")


def tiny_model(family: str, vocab_size: int, *, layers: int = 2, width: int = 32, parallel: bool = True):
    special = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(n_layer=layers, n_embd=width, n_head=2, vocab_size=vocab_size, n_positions=64, **special)
        )
    if family == "llama":
        return LlamaForCausalLM(
            LlamaConfig(
                num_hidden_layers=layers,
                hidden_size=width,
                intermediate_size=3 * width,
                num_attention_heads=2,
                num_key_value_heads=2,
                vocab_size=vocab_size,
                max_position_embeddings=64,
                **special,
            )
        )
    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            num_hidden_layers=layers,
            hidden_size=width,
            intermediate_size=4 * width,
            num_attention_heads=2,
            vocab_size=vocab_size,
            max_position_embeddings=64,
            use_parallel_residual=parallel,
            **special,
        )
    )


def save_tiny_model(path: Path, family: str = "gpt2", seed: int = 0, **kwargs) -> Path:
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = tiny_model(family, len(tokenizer), **kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_train_argv(
    model_dir: Path, out: Path, *extra: str, expansion_factor: int = 2, tokens: str = "16k"
) -> list[str]:
    """`monosemantic train` of a small TopK SAE (k 8) on the tiny GPT-2's layer-1 MLP neurons with small
    batches: the run most tests train; `extra` adds or overrides flags."""
    return (
        ["-q", "train", "--model_path", str(model_dir), "--hookpoint", "layers.1.mlp.neurons"]
        + ["--expansion_factor", str(expansion_factor), "--k", "8", "--tokens", tokens]
        + ["--batch-size", "512", "--batch-tokens", "1024", "--chunk-tokens", "4096", "--out", str(out), *extra]
    )
