"""tf2torch's converter registry, installed into onnx2torch's only for the duration of a conversion.

onnx2torch looks converters up by (domain, op_type, since_version) and knows one exact version per
registration; where the semantics did not change across versions we register them all. Registrations go
into :data:`CONVERTERS`, never straight into onnx2torch's global dict: :func:`installed` lays them over
onnx2torch's own (each wrapped so a failure names its node) and restores onnx2torch's dict afterwards, so
importing tf2torch changes nothing in the user's process. Replacing one of onnx2torch's converters is
explicit (``override=True``); registering a key twice is an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from onnx import defs
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import get_const_value

from migrate.conversion.onnx2torch_contract import OVERRIDDEN, REUSED
from migrate.core.errors import ConversionError, first_line

#: onnx2torch's own registry as imported (before any conversion installed ours).
_ORIGINAL: dict[OperationDescription, Callable] = dict(_CONVERTER_REGISTRY)


#: Our converters by onnx2torch key.
CONVERTERS: dict[OperationDescription, Callable] = {}
#: The keys where ours replace onnx2torch's own converter (each registered with ``override=True``).
OVERRIDES: set[OperationDescription] = set()


def converter(op_type: str, versions: Iterable[int], domain: str = defs.ONNX_DOMAIN, *,
              override: bool = False) -> Callable:
    """Decorator: register ``fn(node, graph) -> OperationConverterResult`` for every version given.

    ``override=True`` says that onnx2torch has its own converter for (some of) these versions and ours
    replaces it; without it such a registration is refused, so a new onnx2torch converter never gets
    silently shadowed.
    """

    def deco(fn: Callable) -> Callable:
        for version in versions:
            key = OperationDescription(domain=domain, operation_type=op_type, version=version)
            if key in CONVERTERS:
                raise RuntimeError(f"two tf2torch converters for {op_type} version {version}: "
                                   f"{CONVERTERS[key].__module__} and {fn.__module__}")
            if key in _ORIGINAL and not override:
                raise RuntimeError(f"{fn.__module__}: onnx2torch has its own {op_type} version {version} converter; "
                                   "register with override=True to replace it")
            if key in _ORIGINAL:
                if domain == defs.ONNX_DOMAIN and (op_type, version) not in OVERRIDDEN:
                    raise RuntimeError(f"{fn.__module__}: replacing onnx2torch's {op_type} version {version} converter "
                                       "relies on it: list the key in onnx2torch_contract.OVERRIDDEN")
                OVERRIDES.add(key)
            CONVERTERS[key] = fn
        return fn

    return deco


def onnx2torch_converter(op_type: str, version: int) -> Callable:
    """onnx2torch's own converter for ``op_type`` at exactly ``version`` (for converters that reuse it)."""
    if (op_type, version) not in REUSED:
        raise RuntimeError(f"reusing onnx2torch's {op_type} version {version} converter relies on it: list the key "
                           "in onnx2torch_contract.REUSED")
    return _ORIGINAL[OperationDescription(domain=defs.ONNX_DOMAIN, operation_type=op_type, version=version)]


def known() -> set[OperationDescription]:
    """Every key a conversion can use: onnx2torch's and ours."""
    return set(_ORIGINAL) | set(CONVERTERS)


def is_supported(op_type: str, version: int, domain: str = "") -> bool:
    """Whether onnx2torch (with our converters) can convert ``op_type`` at opset ``version``."""
    domain = domain or defs.ONNX_DOMAIN
    try:
        since = defs.get_schema(op_type, max_inclusive_version=version, domain=domain).since_version
    except (RuntimeError, defs.SchemaError):
        since = version
    return OperationDescription(domain=domain, operation_type=op_type, version=since) in known()


@contextmanager
def installed() -> Iterator[None]:
    """onnx2torch's registry with ours laid over it, every converter naming its node on failure; restored after."""
    saved = dict(_CONVERTER_REGISTRY)
    _CONVERTER_REGISTRY.update({key: _name_failures(fn) for key, fn in {**saved, **CONVERTERS}.items()})
    try:
        yield
    finally:
        _CONVERTER_REGISTRY.clear()
        _CONVERTER_REGISTRY.update(saved)


def _name_failures(fn: Callable) -> Callable:
    """Wrap a converter so any failure says which node and op it was converting."""

    @functools.wraps(fn)
    def wrapper(node: Any, graph: Any) -> Any:
        try:
            return fn(node, graph)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"cannot convert ONNX {node.operation_type} node {node.name!r}: "
                                  f"{first_line(exc, default=type(exc).__name__)}") from exc

    return wrapper


def const_input(node: OnnxNode, graph: OnnxGraph, index: int, what: str) -> torch.Tensor | None:
    """Input ``index`` as a tensor known at conversion time (None when absent).

    tf2torch's converters bake such inputs (axes, sizes, pads) into the module as python values
    so the result exports and compiles; one computed at run time is refused, naming ``what``.
    """
    if len(node.input_values) <= index or not node.input_values[index]:
        return None
    try:
        return torch.as_tensor(get_const_value(node.input_values[index], graph))
    except KeyError as exc:
        raise NotImplementedError(f"{node.operation_type} with {what} computed at run time "
                                  "(it must be a constant)") from exc
