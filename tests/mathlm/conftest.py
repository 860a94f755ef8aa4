"""A tiny pretrained SAE set, made once for the session by the code that makes the shipped one:
one TopK SAE (64 latents, k 4) per layer of the tiny GPT-2, trained for 8 steps of 512 tokens with
a checkpoint after 4, then exported in bf16 and measured on 1500 held-out tokens."""

import pytest
import torch

from monosemantic.mathlm.pretrained import PretrainedConfig, export_pretrained, train_pretrained


@pytest.fixture(scope="session")
def tiny_recipe() -> PretrainedConfig:
    return PretrainedConfig(d_sae=64, k=4, tokens=4096, batch_size=512, checkpoint_every=4, heldout_tokens=1500)


@pytest.fixture(scope="session")
def trained(tiny_model_dirs, tiny_recipe, tmp_path_factory):
    """(training directory, model directory, {hookpoint: SAE})"""
    work = tmp_path_factory.mktemp("pretrained") / "work"
    model = str(tiny_model_dirs["gpt2"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return work, model, train_pretrained(work, tiny_recipe, model=model, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def exported(trained, tiny_recipe, tmp_path_factory):
    """(set directory, its manifest)"""
    dest = tmp_path_factory.mktemp("exported") / "saes"
    return dest, export_pretrained(trained[0], dest, heldout_tokens=tiny_recipe.heldout_tokens)
