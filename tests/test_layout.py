"""The package's shape, as issue 14 states it: no import cycle (imports inside functions and
`if TYPE_CHECKING:` blocks included), no private name imported across modules, `import monosemantic.sae`
stays light, no two top-level names that a reader could confuse, and a README map that matches the tree.
The import graph comes from the source (package_imports.py), lazy imports included."""

import ast
import difflib
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from package_imports import (
    describe,
    import_graph,
    package_modules,
    private_imports,
    shortest_cycle,
    strongly_connected,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monosemantic"
WEIGHTS = PACKAGE / "mathlm" / "model"  # the built-in model's files, not code

# What `import monosemantic.sae` must not load (issue 14, "Done when")
HEAVY = (
    "monosemantic.analysis",
    "monosemantic.dashboard",
    "monosemantic.distributed",
    "monosemantic.experiments",
    "monosemantic.data",
    "transformers",
)


def package_knots() -> list[tuple[list[str], str]]:
    """(modules, description) of every knot in the package."""
    modules = package_modules(PACKAGE, exclude=(WEIGHTS,))
    graph = import_graph(modules)
    assert sum(map(len, graph.values())) > 100, "the graph reader found almost no imports: it is broken"
    return [(knot, describe(knot, graph, modules, ROOT)) for knot in strongly_connected(graph)]


def test_no_import_cycle():
    knots = [text for _, text in package_knots()]
    assert not knots, "import cycles (lazy imports included):\n" + "\n".join(knots)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(source)
    return root / "pkg"


def test_cycle_finder_sees_lazy_and_type_checking_cycles(tmp_path):
    """A package whose only cycles go through a function body and a TYPE_CHECKING block; a package
    __init__ that re-exports its submodules, and a `from package import module`, are not cycles."""
    pkg = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import f\nfrom pkg.sub import g\n",
            "pkg/a.py": "from pkg import b\n\ndef f():\n    return b.h()\n",
            "pkg/b.py": "def h():\n    from .a import f\n    return f\n",
            "pkg/sub/__init__.py": "from .c import g\n",
            "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..sub.d import D\ng = 1\n",
            "pkg/sub/d.py": "import pkg.sub.c\nimport importlib\nD = importlib.import_module('pkg.a')\n",
            "pkg/e.py": "from importlib import import_module\n\ndef f():\n    return import_module('pkg.sub.c')\n",
        },
    )
    modules = package_modules(pkg)
    graph = import_graph(modules)
    assert graph == {
        "pkg": {"pkg.a": 1, "pkg.sub": 2},
        "pkg.a": {"pkg.b": 1},
        "pkg.b": {"pkg.a": 2},
        "pkg.sub": {"pkg.sub.c": 1},
        "pkg.sub.c": {"pkg.sub.d": 3},
        "pkg.sub.d": {"pkg.sub.c": 1, "pkg.a": 3},
        "pkg.e": {"pkg.sub.c": 4},
    }
    assert [describe(k, graph, modules, tmp_path) for k in strongly_connected(graph)] == [
        "pkg.a, pkg.b: pkg.a (pkg/a.py:1) -> pkg.b (pkg/b.py:2) -> pkg.a",
        "pkg.sub.c, pkg.sub.d: pkg.sub.c (pkg/sub/c.py:3) -> pkg.sub.d (pkg/sub/d.py:1) -> pkg.sub.c",
    ]


def test_a_knot_is_reported_once_by_its_shortest_cycle():
    """Three modules in a ring with a chord: one knot; a module that only imports into it is not in it."""
    graph = {"x": {"y": 1}, "y": {"z": 1, "x": 2}, "z": {"x": 1}, "w": {"x": 1}}
    assert strongly_connected(graph) == [["x", "y", "z"]]
    assert shortest_cycle(graph, "x") == ["x", "y", "x"] and shortest_cycle(graph, "w") == []
    assert strongly_connected({"x": {"y": 1}, "y": {}}) == []


def package_private_imports() -> list[tuple[str, int, str]]:
    modules = package_modules(PACKAGE, exclude=(WEIGHTS,))
    return [(name, line, what) for name, path in modules.items() for line, what in private_imports(name, path, modules)]


def test_no_private_names_across_modules():
    found = [f"{n}:{line} uses {what}" for n, line, what in package_private_imports()]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_private_name_finder(tmp_path):
    pkg = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import __version__\n",
            "pkg/a.py": "__version__ = '1'\n_hidden = 2\ndef _f():\n    return _hidden\n",
            "pkg/b.py": "from .a import _f\nimport pkg.a as m\nx = m._hidden\n",
            "pkg/c.py": "from pkg import a\ndef g():\n    return a._f(), a.__version__\n",
        },
    )
    modules = package_modules(pkg)
    found = [(name, *hit) for name, path in modules.items() for hit in private_imports(name, path, modules)]
    assert found == [("pkg.b", 1, "pkg.a._f"), ("pkg.b", 3, "pkg.a._hidden"), ("pkg.c", 3, "pkg.a._f")]


def subprocess_env() -> dict[str, str]:
    """This checkout's package first on the path, whatever the caller's PYTHONPATH holds."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def heavy(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HEAVY)


@pytest.mark.process
def test_import_sae_is_light_by_importtime():
    """`python -X importtime -c "import monosemantic.sae"`, the check issue 14 names: its report (stderr,
    one line per module: 'import time: self | cumulative | <indented name>') lists no heavy module."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import monosemantic.sae"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = [line.rpartition("|")[2].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert "monosemantic.sae" in loaded and "torch" in loaded, run.stderr[-2000:]
    assert not [m for m in loaded if heavy(m)], [m for m in loaded if heavy(m)]


@pytest.mark.process
def test_import_sae_is_light_by_sys_modules():
    """The same through sys.modules, which also sees modules that importtime would not report (an
    import from a .pth file, a module put there by hand)."""
    script = "import sys, monosemantic.sae; print(monosemantic.__file__); print('\\n'.join(sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env()
    )
    assert run.returncode == 0, run.stderr[-2000:]
    origin, *loaded = run.stdout.split()
    assert Path(origin).parent == PACKAGE, origin  # this checkout's package, not an installed copy
    assert "monosemantic.sae.topk" in loaded
    assert not [m for m in loaded if heavy(m)], [m for m in loaded if heavy(m)]


def top_level_names(package_dir: Path) -> list[str]:
    """Module and package names directly in the package: 'sae', 'models', ... (no dunders, no caches)."""
    names = []
    for entry in sorted(package_dir.iterdir()):
        if entry.suffix == ".py" and not entry.stem.startswith("__"):
            names.append(entry.stem)
        elif entry.is_dir() and (entry / "__init__.py").exists():
            names.append(entry.name)
    return names


def confusable(a: str, b: str) -> str | None:
    """Why a reader could take `a` for `b`, or None."""
    if a.startswith(b) or b.startswith(a):
        return "prefix"
    if difflib.SequenceMatcher(None, a, b).ratio() >= 0.8:
        return "near-copy"

    def stem(n: str) -> str:
        return n.replace("_", "").removesuffix("s")

    if stem(a) == stem(b):
        return "same word"
    return None


def test_top_level_names_cannot_be_confused():
    names = top_level_names(PACKAGE)
    assert {"sae", "models", "train", "cli"} <= set(names), names
    clashes = [f"{a} / {b}: {why}" for a, b in itertools.combinations(names, 2) if (why := confusable(a, b))]
    assert not clashes, clashes


def test_confusable():
    assert confusable("store", "store_writer") == "prefix"
    assert confusable("probe", "probing") is None  # 0.67: the collision issue 14 names is one of meaning
    assert confusable("report", "reports") == "prefix"
    assert confusable("feature_view", "feature_views") == "prefix"
    assert confusable("distributed", "distribute") == "prefix"
    assert confusable("harvest", "harvester") == "prefix"
    assert confusable("analysis", "analyses") == "near-copy"
    assert confusable("latent_stat", "latentstats") == "near-copy"
    assert confusable("data_set", "dataset") == "near-copy"
    assert confusable("cli", "eval") is None
    assert confusable("data", "dashboard") is None


# An entry of a map: 'name/' or 'name.py' (several separated by ', '), then two spaces or the end of the line
ENTRY = re.compile(r"^( *)((?:[A-Za-z_]\w*(?:/|\.py))(?:, [A-Za-z_]\w*(?:/|\.py))*)(?: {2,}|$)")


def map_entries(lines: list[str]) -> set[str]:
    """Paths ('sae/', 'models.py', 'sae/topk.py') a tree drawing names: each level indents deeper than its
    folder; other lines (descriptions that wrap, blank lines) are skipped."""
    entries: set[str] = set()
    folders: list[tuple[int, str]] = []  # (indent, path) of the open folders, outermost first
    for line in lines:
        match = ENTRY.match(line)
        if not match:
            continue
        indent, names = len(match.group(1)), match.group(2).split(", ")
        while folders and folders[-1][0] >= indent:
            folders.pop()
        parent = folders[-1][1] if folders else ""
        entries.update(parent + n for n in names)
        if names[-1].endswith("/"):
            folders.append((indent, parent + names[-1]))
    return entries


def readme_map(readme: str) -> list[str]:
    """The lines under `monosemantic/` in the first fenced block after the heading '## The package'."""
    heading = re.search(r"^## The package\b.*$", readme, re.M)
    assert heading, "README.md has no '## The package' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", readme[heading.end() :], re.M | re.S)
    assert block, "README.md's '## The package' section has no fenced code block"
    lines = block.group(1).splitlines()
    root = next((i for i, line in enumerate(lines) if line.strip() == "monosemantic/"), None)
    assert root is not None, "the package map's block has no 'monosemantic/' line"
    return lines[root + 1 :]


def docstring_map(init: Path) -> list[str]:
    """The package docstring's indented lines: its map of the tree."""
    doc = ast.get_docstring(ast.parse(init.read_text()), clean=False) or ""
    return [line for line in doc.splitlines() if line.startswith("    ")]


def tree_entries(package_dir: Path) -> set[str]:
    """What a map must name: every top-level module and package, and every package below them."""
    top = {f"{n}/" if (package_dir / n).is_dir() else f"{n}.py" for n in top_level_names(package_dir)}
    nested = {
        f"{init.parent.relative_to(package_dir).as_posix()}/"
        for init in package_dir.glob("*/**/__init__.py")
        if init.parent.parent != package_dir
    }
    return top | nested


def check_map(entries: set[str], package_dir: Path, where: str) -> None:
    missing = sorted(tree_entries(package_dir) - entries)
    absent = sorted(e for e in entries if not (package_dir / e).exists())
    assert not missing and not absent, f"{where}: not in the map {missing}; in the map but not in the tree {absent}"


def test_readme_map_matches_the_tree():
    check_map(map_entries(readme_map((ROOT / "README.md").read_text())), PACKAGE, "README.md '## The package'")


def test_docstring_map_matches_the_tree():
    check_map(map_entries(docstring_map(PACKAGE / "__init__.py")), PACKAGE, "monosemantic/__init__.py docstring")


def test_map_reader(tmp_path):
    readme = """# x

## The package

Some words.

```
monosemantic/
  sae/            architectures, registry.py; a leaf: imports torch/safetensors only
    topk.py       TopK (Gao et al. 2024)
  models.py       load an LM
                  (a description that wraps onto a line of its own)
  config.py, errors.py    configs, the error base
  dashboard/
    static/       HTML, JS
  hooks.py
```
"""
    assert map_entries(readme_map(readme)) == {
        "sae/",
        "sae/topk.py",
        "models.py",
        "config.py",
        "errors.py",
        "dashboard/",
        "dashboard/static/",
        "hooks.py",
    }
    pkg = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/__main__.py": "",
            "pkg/models.py": "",
            "pkg/sae/__init__.py": "",
            "pkg/sae/topk.py": "",
            "pkg/sae/kernels/__init__.py": "",
            "pkg/data/corpus.txt": "",  # not a package: no __init__.py
        },
    )
    assert tree_entries(pkg) == {"models.py", "sae/", "sae/kernels/"}
    check_map({"models.py", "sae/", "sae/topk.py", "sae/kernels/", "__main__.py"}, pkg, "map")
    with pytest.raises(AssertionError, match=r"not in the map \['sae/kernels/'\]; in the map but not in the tree \[\]"):
        check_map({"models.py", "sae/"}, pkg, "map")
    with pytest.raises(AssertionError, match=r"not in the map \[\]; in the map but not in the tree \['hooks.py'\]"):
        check_map({"models.py", "sae/", "sae/kernels/", "hooks.py"}, pkg, "map")
