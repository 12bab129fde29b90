"""The onnx2torch internals tf2torch relies on (migrate/conversion/onnx2torch_contract.py) exist in the installed
onnx2torch, and the conversion code relies on none that the contract does not list.

Torch and onnx2torch only: no TensorFlow in this process.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import torch

from migrate.conversion import onnx2torch_contract as contract
from migrate.conversion.onnx2torch_compat import onnx2torch

ROOT = Path(__file__).resolve().parents[1]
CONVERSION = ROOT / "migrate" / "conversion"
#: where the conversion code touches onnx2torch
SCANNED = [*sorted((CONVERSION / "converters").glob("*.py")), *sorted((CONVERSION / "passes").glob("*.py")),
           CONVERSION / "to_torch.py", CONVERSION / "onnx2torch_compat.py"]
#: attributes the code reads that are not onnx2torch's: torch's (nn.Module's ``training``, ``_buffers``; fx.Node's
#: ``_rename``) and ``op`` of tf2torch's own opset-18 Reduce module (converters/reduce.py)
NOT_ONNX2TORCH = frozenset({"op", *dir(torch.nn.Module()), *dir(torch.fx.GraphModule), *dir(torch.fx.Node)})
_CLASS_NAME = re.compile(r"^Onnx[A-Z]\w*$")


# ---- checker 1: every contract entry exists in the installed onnx2torch ----

def _onnx2torch_class(name: str) -> type | None:
    """An onnx2torch class by name, from any imported onnx2torch module."""
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("onnx2torch") and isinstance(getattr(module, name, None), type):
            return getattr(module, name)
    return None


def _instance_attributes(cls: type) -> set[str]:
    """Names ``self.X = ...`` assigns in the onnx2torch classes of ``cls``'s MRO, plus fields and class members."""
    names = set(dir(cls)) | set(getattr(cls, "_fields", ())) | set(getattr(cls, "__dataclass_fields__", {}))
    for klass in cls.__mro__:
        if not klass.__module__.startswith("onnx2torch"):
            continue
        for node in ast.walk(ast.parse(inspect.getsource(klass))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                    and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            # self.register_buffer("name", ...) / self.register_parameter("name", ...)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("register_buffer", "register_parameter") and node.args \
                    and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    return names


def missing_in_onnx2torch(imports: Mapping[str, Iterable[str]], members: Mapping[str, Iterable[str]],
                          modules: Mapping[str, Iterable[str]], keys: Iterable[tuple[str, int]]) -> list[str]:
    """What the contract lists that the installed onnx2torch lacks (empty when it holds)."""
    onnx2torch()
    importlib.import_module("onnx2torch.node_converters")
    problems = []
    for module_name, names in imports.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"module {module_name}: {exc}")
            continue
        problems += [f"{module_name}.{name}" for name in names if not hasattr(module, name)]
    for group in (members, modules):
        for class_name, attributes in group.items():
            cls = _onnx2torch_class(class_name)
            if cls is None:
                problems.append(f"class {class_name}")
                continue
            have = _instance_attributes(cls)
            problems += [f"{class_name}.{attribute}" for attribute in attributes if attribute not in have]
    from onnx2torch.node_converters.registry import OperationDescription

    from migrate.conversion.converters.registry import _ORIGINAL

    problems += [f"registry key {op} version {version}" for op, version in sorted(keys)
                 if OperationDescription(domain="", operation_type=op, version=version) not in _ORIGINAL]
    return problems


def test_contract_holds_for_installed_onnx2torch():
    keys = contract.OVERRIDDEN | contract.REUSED
    assert missing_in_onnx2torch(contract.RELIED_ON_IMPORTS, contract.RELIED_ON_MEMBERS, contract.RELIED_ON_MODULES,
                                 keys) == []


def test_checker_reports_what_onnx2torch_lacks():
    problems = missing_in_onnx2torch(
        {"onnx2torch.node_converters.registry": ("_CONVERTER_REGISTRY", "_NO_SUCH_REGISTRY"),
         "onnx2torch.no_such_module": ("x",)},
        {"OperationDescription": ("domain", "no_such_field"), "OnnxNode": ("input_values", "no_such_property")},
        {"OnnxGather": ("_axis", "_no_such_axis"), "OnnxNoSuchModule": ()},
        {("Conv", 11), ("Conv", 999), ("NoSuchOp", 1)})
    assert problems == ["onnx2torch.node_converters.registry._NO_SUCH_REGISTRY",
                        "module onnx2torch.no_such_module: No module named 'onnx2torch.no_such_module'",
                        "OperationDescription.no_such_field", "OnnxNode.no_such_property",
                        "OnnxGather._no_such_axis", "class OnnxNoSuchModule",
                        "registry key Conv version 999", "registry key NoSuchOp version 1"]


# ---- checker 2: the conversion code relies on nothing the contract does not list ----

def unlisted_uses(sources: Mapping[str, str], imports: Mapping[str, Iterable[str]],
                  modules: Mapping[str, Iterable[str]]) -> list[str]:
    """onnx2torch names the code uses that the contract lacks: imports from onnx2torch (any depth, import_module
    literals too), ``Onnx*`` class-name strings (or prefixes of listed ones), attributes read from a ``module``
    variable (the passes' name for an onnx2torch module) and private attributes read from anything but
    ``self``/``cls``/torch (torch's own attributes excepted)."""
    listed_imports = {(m, n) for m, names in imports.items() for n in names} | {(m, None) for m in imports}
    attributes = {a for names in modules.values() for a in names} | NOT_ONNX2TORCH
    known_names = {n for names in imports.values() for n in names}
    problems = []
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            used: list[tuple[str, str | None]] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "onnx2torch":
                used = [(node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                used = [(a.name, None) for a in node.names if a.name.split(".")[0] == "onnx2torch"]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                    and str(node.args[0].value).split(".")[0] == "onnx2torch":
                used = [(node.args[0].value, None)]
            problems += [f"{where}:{node.lineno}: import {m}{'.' + n if n else ''}" for m, n in used
                         if (m, n) not in listed_imports]
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _CLASS_NAME.match(node.value) \
                    and node.value not in known_names and not any(c.startswith(node.value) for c in modules):
                problems.append(f"{where}:{node.lineno}: class name {node.value!r}")
            attribute = None
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name):
                owner = node.value.id
                if (owner == "module" and not node.attr.startswith("__")) or (
                        node.attr.startswith("_") and not node.attr.startswith("__")
                        and owner not in ("self", "cls", "torch")):
                    attribute = node.attr
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                    and isinstance(node.args[0], ast.Name) and node.args[0].id == "module" \
                    and isinstance(node.args[1], ast.Constant):
                attribute = node.args[1].value
            if attribute is not None and attribute not in attributes:
                problems.append(f"{where}:{node.lineno}: attribute {attribute!r}")
    return problems


def _sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in SCANNED}


def test_code_relies_on_nothing_unlisted():
    assert unlisted_uses(_sources(), contract.RELIED_ON_IMPORTS, contract.RELIED_ON_MODULES) == []


def test_scan_sees_the_code():
    """The scan would pass vacuously on an empty tree: it must see the converters and passes."""
    sources = _sources()
    assert "migrate/conversion/passes/shape_ops.py" in sources and len(sources) > 15
    assert unlisted_uses(sources, {}, {}) != []


def test_scan_reports_unlisted_uses():
    planted = textwrap.dedent("""
        from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, _NEW_PRIVATE
        import onnx2torch.node_converters.nms
        RULES = {"OnnxShape": 1, "OnnxNewModule": 2}

        def rule(module, sub):
            return getattr(module, "_start"), getattr(module, "_new_attr", 0), module.new_public, sub._hidden
    """).lstrip()
    problems = unlisted_uses({"planted.py": planted}, contract.RELIED_ON_IMPORTS, contract.RELIED_ON_MODULES)
    assert problems == ["planted.py:1: import onnx2torch.node_converters.registry._NEW_PRIVATE",
                        "planted.py:2: import onnx2torch.node_converters.nms",
                        "planted.py:3: class name 'OnnxNewModule'",
                        "planted.py:6: attribute '_new_attr'", "planted.py:6: attribute 'new_public'",
                        "planted.py:6: attribute '_hidden'"]


# ---- checker 3: the registry keys the code overrides and reuses are the contract's ----

def test_overridden_and_reused_keys_are_the_contracts():
    onnx2torch()
    from migrate.conversion.converters import registry, versions

    assert {(k.operation_type, k.version) for k in registry.OVERRIDES if k.domain == ""} == contract.OVERRIDDEN
    assert {(op, base) for op, (base, _, _) in versions.SAME_SEMANTICS.items()} == contract.REUSED


def test_registry_refuses_keys_missing_from_the_contract():
    onnx2torch()
    from migrate.conversion.converters import registry

    with pytest.raises(RuntimeError, match="onnx2torch_contract.REUSED"):
        registry.onnx2torch_converter("Relu", 14)
    with pytest.raises(RuntimeError, match="onnx2torch_contract.OVERRIDDEN"):
        registry.converter("Relu", versions=(14,), override=True)(lambda node, graph: None)
    assert not any(k.operation_type == "Relu" for k in registry.CONVERTERS)
