"""The README's Python example runs as written (in a temporary directory), and prints the FVU of the SAE it
trained, checked against the formula by hand."""

import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration  # trains or analyses whole runs: see tests/conftest.py

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    fvu = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < fvu < 1.0  # random Gaussian data: an SAE explains part of it, never more than all
    assert (tmp_path / "runs" / "readme" / "sae.safetensors").exists()
    # PRODUCT.md: FVU = sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean||^2, over the 10k rows it evaluates
    assert {"sae", "acts"} <= namespace.keys(), "the example no longer names its SAE `sae` and its data `acts`"
    x = namespace["acts"][:10_000]
    with torch.no_grad():
        x_hat = namespace["sae"].decode(namespace["sae"].encode(x))
    x, x_hat = x.double(), x_hat.double()
    assert fvu == pytest.approx(((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item(), rel=1e-6)
