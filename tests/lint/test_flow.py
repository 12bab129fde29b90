"""The data-flow layer (checks/lint/dataflow.py), positions, and the registry's import direction."""
from __future__ import annotations

import ast
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from checks.lint.context import FileContext

from .helpers import FIXTURES

SOURCE = '''
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Pairs(Dataset):
    def __getitem__(self, i):
        return torch.zeros(8, 8, 3), i


def fit(model, loader, criterion=None, *, epochs=1):
    for i, (x, y) in enumerate(loader):
        model(x)


def unclear(model):
    return model


def twice(model):
    pass


def twice(model):
    pass


if __name__ == "__main__":
    net = nn.Linear(2, 2)
    fit(net, DataLoader(Pairs()), epochs=2)
    fit(model=net, loader=DataLoader(Pairs()))
    unclear(nn.Linear(2, 2))
    unclear(nn.Conv2d(1, 1, 1))
    unclear(*[net])
    twice(net)
'''


@pytest.fixture(scope="module")
def ctx() -> FileContext:
    return FileContext(cst.parse_module(SOURCE), SOURCE, "flow.py")


def _function(ctx: FileContext, name: str, which: int = 0) -> cst.FunctionDef:
    return [f for f in ctx.nodes(cst.FunctionDef) if f.name.value == name][which]


def _param(func: cst.FunctionDef, name: str) -> cst.Param:
    return next(p for p in (*func.params.params, *func.params.kwonly_params) if p.name.value == name)


def test_a_parameter_holds_what_every_call_site_passes(ctx: FileContext) -> None:
    fit = _function(ctx, "fit")
    assert [ctx.code(a) for _, a in ctx.flow.arguments(_param(fit, "model"))] == ["net", "net"]
    assert [ctx.code(a) for _, a in ctx.flow.arguments(_param(fit, "criterion"))] == ["None", "None"]  # defaults
    assert ctx.kind(fit.body.body[0].body.body[0].body[0].value.func) == "torch.nn.Linear"  # model(x) in fit


def test_unclear_flow_gives_no_answer(ctx: FileContext) -> None:
    unclear = _function(ctx, "unclear")
    assert ctx.flow.arguments(_param(unclear, "model")) is None  # one call site passes *args
    assert ctx.flow.call_sites(_function(ctx, "twice")) == []  # defined twice
    assert ctx.flow.arguments(_param(_function(ctx, "twice", 1), "model")) is None


def test_dataloader_batches_come_from_the_local_dataset(ctx: FileContext) -> None:
    loop = ctx.nodes(cst.For)[0]
    assert ctx.code(ctx.flow.batch_element(loop, (1, 0))) == "torch.zeros(8, 8, 3)"
    assert ctx.code(ctx.flow.batch_element(loop, (1, 1))) == "i"
    assert ctx.flow.batch_element(loop, (0,)) is None  # the enumerate counter


def test_returned_elements() -> None:
    tuple_ = cst.parse_expression("(a, b)")
    dict_ = cst.parse_expression('{"probs": p, "logits": z}')
    from checks.lint.dataflow import Flow

    assert Flow.element(tuple_, 1).value == "b"  # type: ignore[union-attr]
    assert Flow.element(tuple_, 2) is None
    assert Flow.element(dict_, "logits").value == "z"  # type: ignore[union-attr]


def _fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("**/*.py"))


@pytest.mark.parametrize("path", _fixture_files()[::9], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_positions_match_libcst(path: Path) -> None:
    """Positions located from one top-level statement equal libcst's PositionProvider, node by node,
    whether a node is the first asked for in its statement or comes after the statement was indexed."""
    source = path.read_text(encoding="utf-8")
    module = cst.parse_module(source)
    expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    nodes = [n for n in expected if n is not module]
    ctx = FileContext(module, source, str(path))
    assert all(ctx.position(n) == expected[n] for n in nodes)
    for node in nodes[:: max(1, len(nodes) // 4)]:
        assert FileContext(module, source, str(path)).position(node) == expected[node]


def test_positions_with_cr_and_crlf_line_endings() -> None:
    for newline in ("\r", "\r\n"):
        source = newline.join(["import torch", "x = (torch.softmax(", "  y, 1))", "if a:", "    b = c", ""])
        module = cst.parse_module(source)
        expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        for node, where in expected.items():
            if node is not module:
                assert FileContext(module, source, "x.py").position(node) == where


def test_rule_modules_do_not_import_the_registry() -> None:
    """Rules register through checks/lint/rule.py; only registry.py imports the rules package."""
    rules = Path(__file__).resolve().parents[2] / "checks" / "lint" / "rules"
    for path in rules.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("registry",) and not (node.module or "").endswith(".registry"), path
    tree = ast.parse((rules.parent / "rule.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "collections.abc", "re", "dataclasses", "functools", "typing", "context", "finding"}
