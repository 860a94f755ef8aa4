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
    from dictionary_learning.trainers import matryoshka_batch_top_k

    return types.SimpleNamespace(dictionary=dictionary, trainers=trainers, matryoshka=matryoshka_batch_top_k)


def write_run(dl, path, trainer_class: str, **kw):
    """Train nothing, but save exactly what trainSAE saves: config.json with the trainer's config and
    ae.pt with the state dict; the weights are randomised so that every term of the maths matters."""
    trainer = getattr(dl.trainers, trainer_class, None) or getattr(dl.matryoshka, trainer_class)
    trainer = trainer(
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


def peer_load(dl, path, ae=None):
    """What dictionary_learning.utils.load_dictionary does (it imports nnsight, so not called)."""
    trainer = json.loads((path / "config.json").read_text())["trainer"]
    d, ae = dl.dictionary, str(ae or path / "ae.pt")
    return {
        "AutoEncoder": lambda: d.AutoEncoder.from_pretrained(ae),
        "GatedAutoEncoder": lambda: d.GatedAutoEncoder.from_pretrained(ae),
        "AutoEncoderTopK": lambda: dl.trainers.top_k.AutoEncoderTopK.from_pretrained(ae, k=trainer["k"]),
        "BatchTopKSAE": lambda: dl.trainers.BatchTopKSAE.from_pretrained(ae, k=trainer["k"]),
        "JumpReluAutoEncoder": lambda: d.JumpReluAutoEncoder.from_pretrained(ae),
        "MatryoshkaBatchTopKSAE": lambda: dl.matryoshka.MatryoshkaBatchTopKSAE.from_pretrained(ae, k=trainer["k"]),
        "AutoEncoderNew": lambda: d.AutoEncoderNew.from_pretrained(ae),
    }[trainer["dict_class"]]()


CASES = {
    "StandardTrainer": ("relu", {"sparsity_warmup_steps": 0}),
    "TopKTrainer": ("topk", {"k": 5}),
    "BatchTopKTrainer": ("batchtopk", {"k": 5}),
    "JumpReluTrainer": ("jumprelu", {"sparsity_warmup_steps": 0}),
    "GatedSAETrainer": ("gated", {"sparsity_warmup_steps": 0}),
    "MatryoshkaBatchTopKTrainer": ("matryoshka", {"k": 5, "group_fractions": [0.25, 0.75]}),
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


def assert_same_forward(ours, peer, scales=(1.0, 1000.0)):
    """On random inputs at each scale: rtol 1e-5, atol 1e-5 x scale."""
    for scale in scales:
        tol = {"rtol": 1e-5, "atol": 1e-5 * scale}
        x = torch.randn(30, 12) * 2 * scale
        z = peer.encode(x)
        torch.testing.assert_close(ours.encode(x), z, **tol)
        torch.testing.assert_close(ours.decode(z), peer.decode(z), **tol)
        torch.testing.assert_close(ours(x).x_hat, peer(x), **tol)
        assert 0 < int((z != 0).sum()) < z.numel()


def test_autoencoder_new_matches(dl, tmp_path):
    """AutoEncoderNew (Anthropic's April 2024 update): ReLU(encoder(x)), decoder with its own bias."""
    ae = dl.dictionary.AutoEncoderNew(12, 40)
    with torch.no_grad():
        for p in ae.parameters():
            p.normal_(0, 0.3)
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoderNew"}}))
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    ours = load_sae(tmp_path)
    assert (ours.cfg.arch, ours.cfg.apply_b_dec_to_input) == ("relu", False)
    assert_same_forward(ours, peer_load(dl, tmp_path))


def test_matryoshka_loads_as_our_matryoshka_with_the_same_inference_forward(dl, tmp_path):
    write_run(dl, tmp_path, "MatryoshkaBatchTopKTrainer", k=5, group_fractions=[0.25, 0.75])
    ours = load_sae(tmp_path)
    assert ours.cfg.arch == "matryoshka" and ours.prefixes == (10, 40)  # group_sizes [10, 30], cumulated
    assert "group_sizes become the prefixes" in ours.cfg.origin["note"]
    assert_same_forward(ours, peer_load(dl, tmp_path))


def test_checkpoints_are_detected_as_dictionary_learning(dl, tmp_path):
    """trainSAE's save_steps: trainer_i/checkpoints/ae_<step>.pt, the state dict, config.json one up."""
    trainer = write_run(dl, tmp_path / "trainer_0", "TopKTrainer", k=5)
    ckpt = tmp_path / "trainer_0" / "checkpoints" / "ae_10.pt"
    ckpt.parent.mkdir()
    torch.save({k: v.cpu() for k, v in trainer.ae.state_dict().items()}, ckpt)
    ours = load_sae(ckpt)  # was: detected as OpenAI, "missing tensor 'pre_bias'"
    assert (ours.cfg.arch, ours.cfg.origin["checkpoint_step"]) == ("topk", 10)
    assert_same_forward(ours, peer_load(dl, tmp_path / "trainer_0", ckpt))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("trainer_class", ["TopKTrainer", "StandardTrainer"])
def test_half_precision_files_compute_in_float32_as_from_pretrained_does(dl, tmp_path, dtype, trainer_class):
    trainer = write_run(dl, tmp_path, trainer_class, **CASES[trainer_class][1])
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in trainer.ae.state_dict().items()}
    torch.save(state, tmp_path / "ae.pt")
    peer = peer_load(dl, tmp_path)  # float32 modules, the file copied into them
    ours = load_sae(tmp_path)
    assert ours.cfg.dtype == "float32" and ours.cfg.origin["file_dtype"] == str(dtype).removeprefix("torch.")
    assert ours.cfg.origin["dtype_policy"] == "upcast to float32, as dictionary_learning's from_pretrained does"
    assert_same_forward(ours, peer)
    assert load_sae(tmp_path, dtype="bfloat16").cfg.dtype == "bfloat16"  # --dtype wins
