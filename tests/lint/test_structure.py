"""The linter's own layering: no import circles, no torch/TensorFlow/numpy, no private libcst."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "checks" / "lint"
FORBIDDEN = {"torch", "tensorflow", "keras", "tf_keras", "numpy"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level of its code (TYPE_CHECKING blocks included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            if node.module or not node.level:
                found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # from . import rules: the submodule
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_cycles_in_checks_lint() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(child):], child]))
            if child not in state:
                visit(child, [*trail, child])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_the_cycle_check_catches_a_planted_cycle() -> None:
    graph = _graph()
    assert "checks.lint.syntax" in graph["checks.lint.source"]  # source imports syntax ...
    graph["checks.lint.syntax"] = {"checks.lint.source"}  # ... so syntax importing source would be a cycle
    seen, stack = set(), [("checks.lint.source", ("checks.lint.source",))]
    cycle = False
    while stack and not cycle:
        node, trail = stack.pop()
        for child in graph[node]:
            cycle |= child == "checks.lint.source"
            if child not in seen:
                seen.add(child)
                stack.append((child, (*trail, child)))
    assert cycle


def test_rules_do_not_import_each_other() -> None:
    for path in (PACKAGE / "rules").glob("*.py"):
        imported = {m for m in _imports(path) if m.startswith("checks.lint.rules.")}
        assert not imported - {f"checks.lint.rules.{p.stem}" for p in (PACKAGE / "rules").glob("*.py")
                               if path.name == "__init__.py"}, path


def test_checks_lint_imports_neither_torch_tensorflow_nor_numpy() -> None:
    for path in PACKAGE.rglob("*.py"):
        heads = {m.split(".")[0] for m in _imports(path)}
        assert not heads & FORBIDDEN, path
    probe = ("import sys, checks.lint, checks.lint.cli; "
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {FORBIDDEN!r}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=PACKAGE.parents[1])
    assert done.stdout.strip() == "[]"


def test_no_private_libcst_api() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not any(m.startswith("libcst._") for m in _imports(path)), path
        assert "._computed" not in path.read_text(encoding="utf-8"), path
