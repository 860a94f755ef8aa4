"""monosemantic.formats.dictionary_learning: ae.pt + config.json written the way dictionary_learning's
`trainSAE` writes them (its trainers' own `config`, `torch.save(ae.state_dict())`) load with
`load_sae` and match the forward pass of the classes its `load_dictionary` would pick."""

import importlib.util
import json
import sys
import types

import pytest
import torch

from monosemantic import SAE, load_sae
from monosemantic.sae import SAEFormatError

TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def dl():
    """The dictionary_learning package, without its __init__: that imports nnsight (for activation
    buffers), which pins other torch versions and is not installed; the SAE classes and trainers
    need only torch and einops."""
    spec = importlib.util.find_spec("dictionary_learning")
    if spec is None:
        pytest.skip("dictionary-learning is not installed (pip install -c constraints.txt -e '.[peers]')")
    if "dictionary_learning" not in sys.modules:
        package = types.ModuleType("dictionary_learning")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["dictionary_learning"] = package
    from dictionary_learning import dictionary, trainers

    return types.SimpleNamespace(dictionary=dictionary, trainers=trainers)


def write_run(dl, path, trainer_class: str, **kw):
    """Train nothing, but save exactly what trainSAE saves: config.json with the trainer's config and
    ae.pt with the state dict; the weights are randomised so that every term of the maths matters."""
    trainer = getattr(dl.trainers, trainer_class)(
        steps=10,
        activation_dim=12,
        dict_size=40,
        layer=3,
        lm_name="EleutherAI/pythia-70m",
        device="cpu",
        submodule_name="resid_post_layer_3",
        warmup_steps=0,
        **kw,
    )
    with torch.no_grad():
        for _name, p in trainer.ae.named_parameters():
            p.normal_(0, 0.3)
        if hasattr(trainer.ae, "threshold"):  # JumpReLU: per latent; BatchTopK: one scalar
            trainer.ae.threshold.uniform_(0.1, 0.5) if trainer.ae.threshold.ndim else trainer.ae.threshold.fill_(0.3)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"trainer": trainer.config}, indent=4))
    torch.save({k: v.cpu() for k, v in trainer.ae.state_dict().items()}, path / "ae.pt")
    return trainer


def peer_load(dl, path):
    """What dictionary_learning.utils.load_dictionary does (it imports nnsight, so not called)."""
    trainer = json.loads((path / "config.json").read_text())["trainer"]
    d, ae = dl.dictionary, str(path / "ae.pt")
    return {
        "AutoEncoder": lambda: d.AutoEncoder.from_pretrained(ae),
        "GatedAutoEncoder": lambda: d.GatedAutoEncoder.from_pretrained(ae),
        "AutoEncoderTopK": lambda: dl.trainers.top_k.AutoEncoderTopK.from_pretrained(ae, k=trainer["k"]),
        "BatchTopKSAE": lambda: dl.trainers.BatchTopKSAE.from_pretrained(ae, k=trainer["k"]),
        "JumpReluAutoEncoder": lambda: d.JumpReluAutoEncoder.from_pretrained(ae),
    }[trainer["dict_class"]]()


CASES = {
    "StandardTrainer": ("relu", {"sparsity_warmup_steps": 0}),
    "TopKTrainer": ("topk", {"k": 5}),
    "BatchTopKTrainer": ("batchtopk", {"k": 5}),
    "JumpReluTrainer": ("jumprelu", {"sparsity_warmup_steps": 0}),
    "GatedSAETrainer": ("gated", {"sparsity_warmup_steps": 0}),
}


@pytest.mark.parametrize("trainer_class", sorted(CASES))
def test_saved_runs_match_dictionary_learnings_forward_pass(dl, tmp_path, trainer_class):
    arch, kw = CASES[trainer_class]
    write_run(dl, tmp_path / "trainer_0", trainer_class, **kw)
    peer = peer_load(dl, tmp_path / "trainer_0")
    for path in (tmp_path / "trainer_0", tmp_path / "trainer_0" / "ae.pt"):
        ours = load_sae(path)
        assert (ours.cfg.arch, ours.cfg.hookpoint) == (arch, "resid_post_layer_3")
        assert ours.cfg.model == "EleutherAI/pythia-70m"
        x = torch.randn(30, 12) * 2
        z = peer.encode(x)
        torch.testing.assert_close(ours.encode(x), z, **TOL)
        torch.testing.assert_close(ours.decode(z), peer.decode(z), **TOL)
        torch.testing.assert_close(ours(x).x_hat, peer(x), **TOL)
        assert 0 < int((z != 0).sum()) < z.numel()
    with pytest.raises(SAEFormatError, match="load with monosemantic.load_sae"):  # ours only
        SAE.load(tmp_path / "trainer_0")


def test_a_run_with_several_trainers_asks_which(dl, tmp_path):
    for i in range(2):
        write_run(dl, tmp_path / f"trainer_{i}", "TopKTrainer", k=5)
    with pytest.raises(SAEFormatError, match=r"holds 2 SAEs, in trainer_0, trainer_1"):
        load_sae(tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c, s: c["trainer"].update(dict_class="CrossCoder"), r"dict_class 'CrossCoder' not supported"),
        (lambda c, s: c["trainer"].update(k=7), r"k=5, but config.json's trainer says k=7"),
        (lambda c, s: c.pop("trainer"), r"config.json: missing key 'trainer'"),
        (lambda c, s: s.pop("b_dec"), r"ae.pt: missing tensor 'b_dec'"),
        (
            lambda c, s: s.update({"encoder.weight": s["encoder.weight"].T.contiguous()}),
            r"'encoder.weight' has shape \[12, 40\]; expected \[d_sae, d_in\] = \[40, 12\] \(transposed\?\)",
        ),
    ],
)
def test_wrong_files_give_clear_errors(dl, tmp_path, damage, message):
    write_run(dl, tmp_path, "TopKTrainer", k=5)
    cfg = json.loads((tmp_path / "config.json").read_text())
    state = torch.load(tmp_path / "ae.pt", weights_only=True)
    damage(cfg, state)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    torch.save(state, tmp_path / "ae.pt")
    with pytest.raises(SAEFormatError, match=message):
        load_sae(tmp_path)
