"""Inputs for a parity run: generated from the manifest (seeded, dtype-aware) or read from a user .npz.

Integer inputs usually index an embedding table, and an index past the table makes TensorFlow fail,
so their range is read from the ONNX graph: an integer input that reaches a Gather's indices gets
``[0, table rows)``. Arrays are returned in the TF layout, keyed by the manifest's ``name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checks.parity.specs import TensorSpec
from migrate.artifacts import not_regular
from migrate.errors import InputError

#: Range for integer inputs that feed no Gather: small enough for any lookup table, wide enough to vary.
FALLBACK_INT_RANGE = (0, 10)
#: Ops whose output carries no values of their input (only its shape): the index search stops there.
_SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
_STRING_KINDS = frozenset("USO")


@dataclass
class InputOptions:
    """How to generate inputs. Ranges are half-open ``[low, high)`` like Python's ``range``."""

    seed: int = 0
    iterations: int = 1
    batch_size: int = 2
    dim_size: int = 8
    float_range: tuple[float, float] | None = None  # None: standard normal; else uniform in the range
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


def _is_string(dtype: str) -> bool:
    return dtype in ("string", "str", "object", "bytes")


def string_input_error(spec: TensorSpec) -> InputError:
    return InputError(f"input {spec.name!r} is a string tensor; parity compares numeric tensors only, so check "
                      "a signature that takes the tokenized ids (and convert that one)")


def infer_index_ranges(onnx_path: Path, specs: tuple[TensorSpec, ...]) -> dict[str, tuple[int, int]]:
    """Integer input name -> ``(0, rows)`` for inputs whose values reach the indices of a Gather."""
    import onnx

    integer_inputs = {s.name for s in specs if s.dtype.startswith(("int", "uint"))}
    if not integer_inputs or not Path(onnx_path).is_file():
        return {}
    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    dims = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            dims[node.output[0]] = list(node.attribute[0].t.dims)
    if any(n.op_type == "Gather" and n.input[0] not in dims for n in graph.node):
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
        except Exception:  # inference is best effort; without it those tables are just skipped
            inferred = []
        for info in inferred:
            shape = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
            dims.setdefault(info.name, shape)

    ranges: dict[str, tuple[int, int]] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = dims.get(node.input[0])
        if not table or not -len(table) <= axis < len(table) or not table[axis]:
            continue
        rows = int(table[axis])
        for name in _upstream_inputs(node.input[1], producers, integer_inputs):
            low, high = ranges.get(name, (0, rows))
            ranges[name] = (low, min(high, rows))
    return ranges


def _upstream_inputs(tensor: str, producers: dict[str, Any], inputs: set[str]) -> set[str]:
    found, seen, stack = set(), set(), [tensor]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        node = producers.get(name)
        if node is not None and node.op_type not in _SHAPE_ONLY_OPS:
            stack.extend(i for i in node.input if i)
    return found


def _dims(spec: TensorSpec, options: InputOptions) -> tuple[int, ...]:
    dims = spec.tf_dims()
    if dims is None:
        raise InputError(f"input {spec.name!r} has unknown rank, so inputs cannot be generated; "
                         "pass them with --inputs FILE.npz")
    return tuple(options.batch_size if (d is None and i == 0) else options.dim_size if d is None else int(d)
                 for i, d in enumerate(dims))


def generate(specs: tuple[TensorSpec, ...], options: InputOptions,
             index_ranges: dict[str, tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """``options.iterations`` batches of seeded random inputs, each ``{name: array in the TF layout}``."""
    import numpy as np

    unknown = sorted(set(options.ranges) - {s.name for s in specs})
    if unknown:
        raise InputError(f"--range names unknown input(s) {', '.join(unknown)}; "
                         f"inputs are: {', '.join(s.name for s in specs)}")
    rng = np.random.default_rng(options.seed)
    batches = []
    for _ in range(options.iterations):
        batch = {}
        for spec in specs:
            if _is_string(spec.dtype):
                raise string_input_error(spec)
            shape, dtype = _dims(spec, options), np.dtype(spec.dtype)
            if dtype == np.bool_:
                batch[spec.name] = rng.random(shape) < 0.5
            elif np.issubdtype(dtype, np.integer):
                low, high = options.ranges.get(spec.name) or (index_ranges or {}).get(spec.name) or FALLBACK_INT_RANGE
                batch[spec.name] = rng.integers(int(low), int(high), shape, dtype=dtype)
            elif np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
                low_high = options.ranges.get(spec.name) or options.float_range
                values = rng.standard_normal(shape) if low_high is None else rng.uniform(*low_high, shape)
                batch[spec.name] = values.astype(dtype)
            else:
                raise InputError(f"input {spec.name!r} has dtype {spec.dtype}, which parity cannot generate; "
                                 "pass inputs with --inputs FILE.npz")
        batches.append(batch)
    return batches


def load_npz(path: str | Path, specs: tuple[TensorSpec, ...], layout: str = "tf") -> list[dict[str, Any]]:
    """One batch from a user's .npz (one array per input, ``layout`` "tf" or "torch"), checked and in the TF layout."""
    import numpy as np

    path = Path(path)
    special = not_regular(path)
    if special:
        raise InputError(f"{path}: is {special}, not an .npz file; pass an .npz written by numpy.savez")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read inputs ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                         "pass an .npz written by numpy.savez with one array per input") from exc
    batch = {}
    for spec in specs:
        key = spec.name if spec.name in arrays else spec.tf_name
        if key not in arrays:
            raise InputError(f"{path}: no array for input {spec.name!r} (it has: {', '.join(sorted(arrays)) or 'none'}); "
                             f"save one array per input: {', '.join(s.name for s in specs)}")
        array = arrays[key]
        if _is_string(spec.dtype) or array.dtype.kind in _STRING_KINDS:
            raise string_input_error(spec)
        expected = spec.shape if layout == "torch" else spec.tf_dims()
        named = spec.layout if layout == "torch" else spec.tf_layout
        if expected is not None and (array.ndim != len(expected)
                                     or any(d is not None and d != a for d, a in zip(expected, array.shape))):
            want = "(" + ", ".join("?" if d is None else str(d) for d in expected) + ")"
            raise InputError(f"{path}: input {spec.name!r} has shape {tuple(array.shape)}, expected {want} in the "
                             f"{layout.upper() if layout == 'tf' else layout} layout"
                             + (f" ({named})" if named else "")
                             + ("; pass --inputs-layout torch for channels-first arrays" if spec.perm and layout == "tf"
                                else ""))
        dtype = np.dtype(spec.dtype)
        if array.dtype != dtype:
            if array.dtype.kind != dtype.kind and not (array.dtype.kind in "iu" and dtype.kind in "iu"):
                raise InputError(f"{path}: input {spec.name!r} has dtype {array.dtype}, expected {dtype}")
            array = array.astype(dtype)
        batch[spec.name] = spec.to_tf_layout(array) if layout == "torch" else array
    return [batch]
