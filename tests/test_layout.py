"""The package keeps the shape the house style asks for: small modules and no import cycle
(function-level imports included: a lazy import that only hides a cycle still counts)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bayes_scaling"
IMPORT = re.compile(r"^\s*(?:from (bayes_scaling[\w.]*) import|import (bayes_scaling[\w.]*))", re.M)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        found = {a or b for a, b in IMPORT.findall(path.read_text(encoding="utf-8"))}
        graph[name] = {target for target in found if target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_module_is_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 400, {k: v for k, v in sizes.items() if v > 400}


def test_there_is_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    # The check itself can fail: a two-module loop is reported.
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
