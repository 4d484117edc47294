"""The import graph keeps its shape: no cycles, no import from a lower layer to a higher one, and
``harness/`` never names a method (they plug in through entry points).

The graph is read from the source with ``ast`` (imports inside functions count: they run too;
``if TYPE_CHECKING:`` blocks do not). Independent of the code it checks: nothing here imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("harness", "methods", "leaderboard")

# What each part of the harness may import (besides itself, the standard library and third parties).
# A part not listed here fails the test: a new sub-package states its place.
ALLOWED = {
    "harness": set(),  # harness/__init__.py
    "harness.api": set(),
    "harness.backbones": {"harness.api"},
    "harness.analysis": {"harness.api"},
    "harness.latent": {"harness.api", "harness.backbones"},
    "harness.scoring": {"harness.api"},
    "harness.benchmarks": {"harness.api", "harness.scoring"},
    "harness.data": {"harness.api", "harness.benchmarks", "harness.scoring"},
    "harness.train": {"harness.api", "harness.backbones", "harness.latent", "harness.data"},
    # The zoo trains and evaluates through the registries (benchmark, methods) and the real Backbone.
    "harness.zoo": {"harness.api", "harness.backbones", "harness.data"},
    # Benchmarks and methods reach the runner through the registries only.
    "harness.run": {"harness", "harness.api", "harness.backbones"},
    "harness.testing": {"harness.api", "harness.benchmarks", "harness.scoring"},
    "harness.integrations": {"harness.api", "harness.backbones", "harness.benchmarks", "harness.run",
                             "harness.commands._common"},
    "harness.commands": {"harness", "harness.api", "harness.backbones", "harness.latent", "harness.benchmarks",
                         "harness.scoring", "harness.data", "harness.run", "harness.train", "harness.analysis",
                         "harness.testing", "harness.integrations", "harness.zoo", "harness.ci", "leaderboard"},
    "harness.cli": {"harness.api", "harness.commands", "harness.run"},
    "harness.ci": {"harness", "harness.api", "harness.backbones", "harness.run", "harness.analysis", "harness.testing"},
    # Methods build on the interfaces, backbones and the latent layer (a recipe never imports the training
    # loop: the loop reads it from TRAINERS); their own commands use the runner and the CLI's helpers.
    "methods": {"harness", "harness.api", "harness.backbones", "harness.latent", "harness.data", "harness.run",
                "harness.commands._common"},
    "leaderboard": {"harness.api", "harness.run", "harness.analysis"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for top in OURS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        out = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                # the deepest of our modules the import names (a from-import may name a submodule)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] in OURS:
                    out.add(target)
        edges[name] = out
    return edges


def _part(module: str) -> str:
    """The ALLOWED key a module belongs to: the longest one that prefixes it."""
    keys = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    return max(keys, key=len) if keys else module


def _allowed(source: str, target: str) -> bool:
    src, dst = _part(source), target
    if dst == src or dst.startswith(src + "."):
        return True
    if src.startswith("methods") and dst.startswith("methods"):
        return True
    if src.startswith("leaderboard") and dst.startswith("leaderboard"):
        return True
    return any(dst == ok or dst.startswith(ok + ".") for ok in ALLOWED.get(src, ()))


def test_every_import_goes_down_the_layers():
    modules = _modules()
    unknown = sorted({_part(m) for m in modules if _part(m) not in ALLOWED})
    assert not unknown, f"parts with no place in ALLOWED: {unknown}"
    bad = sorted(f"{src} -> {dst}" for src, targets in _edges(modules).items() for dst in targets
                 if not _allowed(src, dst))
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_harness_never_imports_a_method():
    bad = sorted(f"{src} -> {dst}" for src, targets in _edges(_modules()).items() if src.startswith("harness")
                 for dst in targets if dst.startswith("methods"))
    assert not bad, bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components; each of two or more modules is a cycle."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    cycles = _cycles(_edges(_modules()))
    assert not cycles, cycles


def test_the_checker_sees_a_back_edge_and_a_cycle(tmp_path):
    """The rules can fail: planted back-edges and a cycle hidden in a function are all reported."""
    files = {"harness.api.fake": "def f():\n    from harness.run import fake\n",
             "harness.run.fake": "from harness.api.fake import f\nimport methods.fake\n",
             "methods.fake": "if TYPE_CHECKING:\n    import harness.run.fake\n"}
    modules = {}
    for name, text in files.items():
        path = tmp_path / (name.replace(".", "_") + ".py")
        path.write_text(text)
        modules[name] = path
    edges = _edges(modules)
    assert edges == {"harness.api.fake": {"harness.run.fake"}, "harness.run.fake": {"harness.api.fake", "methods.fake"},
                     "methods.fake": set()}
    assert _cycles(edges) == [["harness.api.fake", "harness.run.fake"]]
    assert not _allowed("harness.api.fake", "harness.run.fake")
    assert not _allowed("harness.run.runner", "methods.ivt_lr.method")
    assert _allowed("harness.run.runner", "harness.api.types")
    assert _part("harness.commands._common") == "harness.commands"
