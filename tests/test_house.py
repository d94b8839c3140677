"""The library's shape: no file over 400 lines, docstrings at most 15% of its lines, no circle of module imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("BNN", "VAE", "VAEAC", "CLUE", "data", "common", "weights")
MAX_LINES = 400
MAX_DOCSTRING_SHARE = 0.15


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def docstring_lines(source: str) -> int:
    """Lines taken by the docstrings of a module, its classes and its functions."""
    lines = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and ast.get_docstring(node) is not None:
            lines += node.body[0].end_lineno - node.body[0].lineno + 1
    return lines


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the library modules it imports at module level (``from a import b`` counts ``a.b`` if a module)."""
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    target = target if target in modules else node.module
                    if target in modules and target != name:
                        graph[name].add(target)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules and a.name != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_library_file_is_over_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by job: {long}"


def test_docstrings_are_at_most_15_percent_of_the_library():
    sources = [path.read_text() for path in _modules().values()]
    total = sum(len(s.splitlines()) for s in sources)
    share = sum(docstring_lines(s) for s in sources) / total
    assert share <= MAX_DOCSTRING_SHARE, f"docstrings are {share:.1%} of {total} library lines"


def test_no_circle_of_imports():
    assert cycles(import_graph(_modules())) == []


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert docstring_lines('"""One.\n\nTwo."""\n\n\ndef f():\n    """Three."""\n    return 1\n') == 4
