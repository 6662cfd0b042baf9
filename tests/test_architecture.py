"""The package's shape: imports flow one way down the pipeline, no cycles, no private names across modules.

Layers, lowest first (a module may import from its own layer and the layers before it):

    outputs -> config -> inputs -> models -> scoring -> backends -> analysis -> report -> run

Importing persona_bench.a.b also runs persona_bench/a/__init__.py, so an import from outside a package
counts as an import of the package's __init__ too. The scripts in benchmarks/ and tools/ use public
names only, and nothing finds the package by patching sys.path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "persona_bench"
LAYERS = ["outputs", "config", "inputs", "models", "scoring", "backends", "analysis", "report", "run"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `importer`)."""
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[importer].name == "__init__.py"
    base = importer.split(".")[: len(importer.split(".")) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported persona_bench module, names taken from it, line) for every import in a module, at any depth."""
    out = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "persona_bench"]
        elif isinstance(node, ast.ImportFrom):
            mod = resolve(name, node)
            if mod.split(".")[0] != "persona_bench":
                continue
            plain = [a.name for a in node.names if f"{mod}.{a.name}" not in MODULES]
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            if plain:
                out.append((mod, plain, node.lineno))
            out += [(s, [], node.lineno) for s in subs]
    return out


def edges(name: str) -> set[str]:
    """Modules whose code runs when `name` imports: each imported module and, from outside a package, the
    package's __init__ on the way."""
    out = set()
    for mod, _, _ in imports(name):
        parts = mod.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in MODULES and (prefix == mod or not (name + ".").startswith(prefix + ".")):
                out.add(prefix)
    out.discard(name)
    return out


def layer(name: str) -> int:
    parts = name.split(".")
    return -1 if len(parts) == 1 else LAYERS.index(parts[1])


def test_every_module_belongs_to_a_layer():
    unknown = sorted(n for n in MODULES if n != "persona_bench" and n.split(".")[1] not in LAYERS + ["resources"])
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


def test_the_package_has_no_import_cycles():
    graph = {n: edges(n) for n in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_flow_down_the_pipeline():
    upward = []
    for n in MODULES:
        if n == "persona_bench" or n.split(".")[1] == "resources":
            continue
        for mod, _, line in imports(n):
            if mod != "persona_bench" and layer(mod) > layer(n):
                upward.append(f"{MODULES[n].relative_to(ROOT)}:{line} imports {mod} ({LAYERS[layer(mod)]} is above "
                              f"{LAYERS[layer(n)]})")
    assert not upward, "\n".join(upward)


SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "tools").glob("*.py"))


@pytest.mark.parametrize("path", sorted(MODULES.values()) + SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_imported_from_another_module(path):
    tree = ast.parse(path.read_text())
    importer = module_name(path) if path.is_relative_to(PKG) else None
    bad = []
    aliases = {}  # local name -> persona_bench module, for attribute access like `scoring._head`
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = resolve(importer, node) if importer else (node.module or "")
            if mod.split(".")[0] != "persona_bench":
                continue
            for a in node.names:
                if f"{mod}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{mod}.{a.name}"
                elif a.name.startswith("_") and a.name != "__version__":
                    bad.append(f"line {node.lineno}: from {mod} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "persona_bench" and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_")):
            bad.append(f"line {node.lineno}: {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    assert not bad, f"{path.relative_to(ROOT)} uses private names of other modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_find_the_package_without_patching_sys_path(path):
    """benchmarks/ and tools/ import the installed package (pip install -e .); only tests/ helpers may be added
    to sys.path, for the tiny test models."""
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("insert", "append")
                and ast.unparse(node.func.value) == "sys.path"):
            assert "tests" in ast.unparse(node.args[-1]), f"{path.name}:{node.lineno}: {ast.unparse(node)}"
