"""The adain_jax package imports no module in a circle (STYLE.md: shared types live below).

Every module is parsed with `ast`, not imported, so the test needs no JAX and sees the
imports inside functions too: a late import only defers a circle, it does not remove it.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "adain_jax"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names() -> dict[str, Path]:
    """{dotted module name: file} for every module of the package (sub-packages too)."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` names in any import statement, at any depth.

    `from adain_jax import ops` names the module adain_jax.ops; `from adain_jax import
    apply` names the package itself. Importing a submodule also runs its package's
    __init__, but that is Python's doing, not an edge of this module's.
    """
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, `level` steps up
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known
                       else module for alias in node.names]
        else:
            continue
        for target in targets:
            # `import adain_jax.ops.x` needs adain_jax.ops: take the longest known prefix
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []  # state: 1 on the current path, 2 finished

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def test_find_cycle_finds_one():
    """The checker itself: a three-module circle is found and named in order."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_sees_the_known_edges(tmp_path):
    """The parse finds `from adain_jax import x`, `from adain_jax.x import y`, relative
    imports and imports inside functions (a throw-away package, then the real one)."""
    files = {"__init__.py": "", "a.py": "from pkg import b\n",
             "b.py": "def f():\n    from .c import g\n", "c.py": "import pkg.a\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    edges = {name: imported_modules(name, tmp_path / f"{name[4:] or '__init__'}.py", known)
             for name in ("pkg.a", "pkg.b", "pkg.c")}
    assert edges == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}
    graph = import_graph()
    assert "adain_jax.models" in graph["adain_jax.densenet"]
    assert "adain_jax.architectures" in graph["adain_jax.transfer"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, ("import cycle: " + " -> ".join(cycle) + "; move what they share "
                           "into a module below all of them (as adain_jax/errors.py)")
