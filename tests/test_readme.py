"""The README's Python example runs as written (in a temporary directory)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    fvu = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < fvu < 1.0  # random Gaussian data: an SAE explains part of it, never more than all
    assert (tmp_path / "runs" / "readme" / "sae.safetensors").exists()
