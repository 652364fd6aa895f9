"""Imports run one way through shared/'s rooms (shared.LAYERS, bottom first): a room imports the rooms below it,
never one above, and no two modules import each other in a circle. Imports inside functions count (they run,
later); imports under `if TYPE_CHECKING:` do not (they never run: the type checker's only)."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import shared

ROOT = Path(__file__).resolve().parents[2]
RANK = {room: i for i, room in enumerate(shared.LAYERS)}
TOP = len(shared.LAYERS)   # functions/, the CLI, local/: above every room


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, module: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, module) of every import that can run: module level, inside functions, `import_module("…")`.
    `module`: the file's module name (default: from its path under the repo)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    module = module or module_name(path)
    package = module.rpartition(".")[0] if path.name != "__init__.py" else module
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base
            # `from shared.run import states`: the submodule is the dependency
            yield from ((node.lineno, f"{base}.{a.name}") for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) ==
              "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            yield node.lineno, str(node.args[0].value)


def rank(module: str) -> int | None:
    """The layer of one of our modules; None for a module that is not ours."""
    parts = module.split(".")
    if parts[0] in ("functions", "ftops_cli", "local", "function_app"):
        return TOP
    if parts[0] != "shared" or len(parts) == 1:
        return None
    return RANK.get(parts[1])


def our_files() -> list[Path]:
    return sorted((ROOT / "shared").rglob("*.py"))


def edges() -> Iterator[tuple[Path, int, str, str]]:
    known = {module_name(p) for p in our_files()}
    for path in our_files():
        for line, target in runtime_imports(path):
            if target in known:
                yield path, line, module_name(path), target


def test_every_module_lives_in_a_room() -> None:
    loose = [module_name(p) for p in our_files() if rank(module_name(p)) is None and p.parent != ROOT / "shared"]
    rooms = {p.name for p in (ROOT / "shared").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert loose == [] and rooms == set(shared.LAYERS)
    assert [p.name for p in (ROOT / "shared").glob("*.py")] == ["__init__.py"], "a module outside the rooms"


def test_each_room_says_what_it_may_import() -> None:
    for room in shared.LAYERS:
        doc = ast.get_docstring(ast.parse((ROOT / "shared" / room / "__init__.py").read_text()))
        assert doc and "may import" in doc.lower(), f"shared/{room}/__init__.py: say what lives there and what it may import"


def test_no_import_runs_up_the_layers() -> None:
    upward = [f"{path.relative_to(ROOT)}:{line}: {source} imports {target}"
              for path, line, source, target in edges()
              if (rank(target) or 0) > (rank(source) or 0)]
    assert upward == []


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {}
    for _, _, source, target in edges():
        if source != target and not source.startswith(target + "."):  # a module and its own package
            graph.setdefault(source, set()).add(target)
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" → ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


@pytest.mark.parametrize("source, expect", [
    ("from shared.stages import intake\n", ["shared.stages", "shared.stages.intake"]),
    ("def f():\n    from shared.operator.api import handle\n", ["shared.operator.api", "shared.operator.api.handle"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shared.app.bootstrap import Deps\n",
     ["typing", "typing.TYPE_CHECKING"]),
    ("importlib.import_module('shared.stages.training')\n", ["shared.stages.training"]),
])
def test_the_scan_sees_what_runs_and_skips_what_does_not(tmp_path: Path, source: str, expect: list[str]) -> None:
    # in tmp_path, not in shared/: the other scans (run in parallel, `make test`) would find it there
    sample = tmp_path / "_sample_for_test.py"
    sample.write_text(source)
    assert [m for _, m in runtime_imports(sample, "shared.run._sample_for_test")] == expect
