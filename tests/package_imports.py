"""The imports of a package, read from its source (ast) rather than from a running interpreter, so that
an import inside a function or under `if TYPE_CHECKING:` counts as much as a top-level one: a cycle
through a function body is still a cycle the day someone hoists the import. Used by test_layout.py."""

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path


def package_modules(package_dir: Path, exclude: tuple[Path, ...] = ()) -> dict[str, Path]:
    """{dotted module name: file} of every .py under `package_dir` (a package is named by its __init__.py)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        if any(path.is_relative_to(folder) for folder in exclude):
            continue
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def absolute_module(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The module `from <node.module> import ...` reads, with relative imports resolved against `name`."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import anywhere in the file: top level, function bodies,
    `if TYPE_CHECKING:` blocks, and `importlib.import_module("constant")`. Only modules of `modules`.

    `from a.b import c` reads the module a.b.c when there is one, else the name c of a.b. No edge is added
    to the parent packages a and a.b: Python runs their __init__ too, but a package re-exporting its own
    submodules is the layout we want, not a cycle."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = absolute_module(name, path, node)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in modules:
                    yield target, node.lineno
                elif source in modules:
                    yield source, node.lineno
        elif isinstance(node, ast.Call) and called_name(node) == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and node.args[0].value in modules:
                yield node.args[0].value, node.lineno


def called_name(call: ast.Call) -> str | None:
    """'f' for f(...) and for x.f(...)."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """{module: {imported module: line of its first import}}, self-imports left out."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line in imports_of(name, path, modules):
            if target != name:
                edges.setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def shortest_cycle(graph: dict[str, dict[str, int]], start: str) -> list[str]:
    """[start, ..., start] with the fewest imports (breadth first); [] when start is on no cycle."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    return []


def describe(knot: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path], root: Path) -> str:
    """'a, b, c: a (a.py:12) -> b (b.py:40) -> a': a knot's modules, then its shortest cycle through the first,
    each arrow with the line that makes it."""
    cycle = shortest_cycle(graph, knot[0])
    steps = [f"{a} ({modules[a].relative_to(root).as_posix()}:{graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return f"{', '.join(knot)}: " + " -> ".join([*steps, cycle[-1]])


def private_imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, 'pkg.other._name') for every single-underscore name this module imports from another module
    of its package (`from m import _x`, `import m._x`), or reads as an attribute of a module it imported
    (`m._x`). Dunder names (__version__) are public."""
    package = name.partition(".")[0]
    module_aliases: dict[str, str] = {}  # local name -> the module of the package it is bound to
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] == package:
                    if any(map(private, alias.name.split("."))):
                        yield node.lineno, alias.name
                    bound = alias.name if alias.asname else package  # `import a.b` binds a
                    module_aliases[alias.asname or package] = bound
        elif isinstance(node, ast.ImportFrom):
            source = absolute_module(name, path, node)
            for alias in node.names if source.partition(".")[0] == package else []:
                if any(map(private, [*source.split("."), alias.name])):
                    yield node.lineno, f"{source}.{alias.name}"
                if f"{source}.{alias.name}" in modules:
                    module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        dotted = dotted_name(node.value) if isinstance(node, ast.Attribute) and private(node.attr) else None
        if dotted and dotted.partition(".")[0] in module_aliases:
            head, _, rest = dotted.partition(".")
            module = ".".join(filter(None, [module_aliases[head], rest]))
            if module in modules and module != name:
                yield node.lineno, f"{module}.{node.attr}"


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def dotted_name(node: ast.expr) -> str | None:
    """'a.b.c' for the expression a.b.c, None for anything else (a call, a subscript)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted_name(node.value)
        return f"{head}.{node.attr}" if head else None
    return None
