"""What the ONNX graph implies about realistic values for each input, read before generating inputs.

Standard-normal noise is what a model least expects: an image model that rescales by 1/255 sees
near-black images, an embedding indexed past its table makes TensorFlow fail, a padding mask of
random bits masks the middle of a sequence. So, per input:

- integer input reaching a ``Gather``'s indices (an embedding): ``[0, rows)``; a float input too when it gets
  there through a ``Cast`` (Keras' Embedding casts float ids), drawn as whole numbers;
- float input whose first arithmetic is an affine map by constants ``y = s*x + o``:
  a scalar scale below 1 (``Rescaling``) gives uniform ``x`` in ``[0, (1 - o)/s]``, so ``y`` spans
  ``[o, 1]`` (``[0, 255]`` for ``Rescaling(1/255)`` and for ``Rescaling(1/127.5, offset=-1)``);
  otherwise (``Normalization``: subtract a mean, divide by a std) ``x ~ N(-o/s, 1/|s|)``, so ``y ~ N(0, 1)``;
- float image input (rank 4, 1 or 3 channels) with neither: pixel values, uniform ``[0, 255]``
  (what keras.applications models take, their preprocessing sitting outside the model);
- input named like a mask (``*mask*``), or a bool input of rank >= 2: 1 for a random-length prefix
  of each row (at least one position), 0 after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checks.parity.specs import TensorSpec

#: Ops whose output carries no values of their input (only its shape): the index search stops there.
_SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
#: Ops that move values without changing them: the affine search walks through them.
_PASS_THROUGH = frozenset({"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten"})
_AFFINE = frozenset({"Mul", "Div", "Add", "Sub"})
PIXEL_RANGE = (0.0, 255.0)


@dataclass(frozen=True)
class Implied:
    """How to draw one input: ``kind`` is "uniform", "normal", "integers" or "prefix_mask"."""

    kind: str
    low: Any = None  # uniform/integers: bounds; normal: mean (scalar or per-channel)
    high: Any = None  # uniform/integers: bounds; normal: std
    reason: str = ""

    def describe(self) -> str:
        if self.kind == "normal":
            return f"normal(mean {_short(self.low)}, std {_short(self.high)})"
        if self.kind == "prefix_mask":
            return "0/1 mask, 1 on a random-length prefix"
        return f"{self.kind}[{_short(self.low)}, {_short(self.high)})"


def _short(value: Any) -> str:
    import numpy as np

    array = np.asarray(value, dtype=np.float64).ravel()
    if array.size == 1:
        return f"{array[0]:.4g}"
    return f"{array.min():.4g}..{array.max():.4g} per channel"


def infer(onnx_path: Path, specs: tuple[TensorSpec, ...]) -> dict[str, Implied]:
    """Input name -> how the graph says to draw it (inputs it says nothing about are left out)."""
    import onnx

    implied: dict[str, Implied] = {}
    graph = None
    if Path(onnx_path).is_file():  # a port output has no model.onnx: the shape rules below still apply
        model = onnx.load(str(onnx_path), load_external_data=False)
        for name, (low, high) in index_ranges(model, specs).items():
            implied[name] = Implied("integers", low, high, f"indexes a table of {high} rows")
        graph = _Graph(model)
    for spec in specs:
        if spec.name in implied:
            continue
        if _is_mask(spec):
            implied[spec.name] = Implied("prefix_mask", 0, 2, "a padding mask")
        elif spec.dtype.startswith(("float", "bfloat")):
            found = graph.affine_after(spec.tf_name) if graph else None  # model.onnx's input names are the TF keys
            if found is not None:
                implied[spec.name] = _from_affine(*found, spec)
            elif _is_image(spec):
                implied[spec.name] = Implied("uniform", *PIXEL_RANGE, "an image input: pixel values")
    return implied


def from_keras(source: str | Path, specs: tuple[TensorSpec, ...], custom_objects: Any = None,
               debug: bool = False) -> dict[str, Implied]:
    """What a Keras file's layer graph implies (the TF worker's ``implied``: Embedding table sizes, Rescaling,
    Normalization, the labels of a CTC or sparse loss), by manifest input name; {} for other sources."""
    from migrate.tf.client import run_worker
    from migrate.tf.custom_objects import specs as custom_specs
    from migrate.tf.source_kind import source_kind

    if source_kind(Path(source)) not in ("keras", "h5"):
        return {}
    answer = run_worker("implied", {"source": str(source), "custom_objects": custom_specs(custom_objects)},
                        debug=debug)
    by_key = {key: spec.name for spec in specs for key in (spec.tf_name, spec.name)}
    return {by_key[key]: Implied(h["kind"], h["low"], h["high"], h["reason"])
            for key, h in answer["inputs"].items() if key in by_key}


def _is_mask(spec: TensorSpec) -> bool:
    rank = len(spec.tf_shape or spec.shape or ())
    return rank >= 2 and ("mask" in spec.name.lower() or spec.dtype == "bool")


def _is_image(spec: TensorSpec) -> bool:
    shape = spec.tf_shape or spec.shape or ()
    channels = shape[-1] if (spec.tf_layout or "NHWC") == "NHWC" else shape[1] if len(shape) > 1 else None
    return len(shape) == 4 and channels in (1, 3)


def _from_affine(first: str, scale: Any, offset: Any, spec: TensorSpec) -> Implied:
    import numpy as np

    scale, offset = np.asarray(scale, np.float64).ravel(), np.asarray(offset, np.float64).ravel()
    if first in ("Mul", "Div") and scale.size == 1 and offset.size == 1 and 0 < scale[0] < 1:
        s, o = float(scale[0]), float(offset[0])
        high = float(f"{(1.0 - o) / s:.6g}")  # 254.99998 from a float32 1/127.5 is 255
        return Implied("uniform", 0.0, high, f"rescaled by {s:.4g} (offset {o:g}) at the input")
    channels = (spec.tf_shape or (None,))[-1]
    size = max(scale.size, offset.size)
    if size > 1 and size != channels:  # constants that do not line up with the TF channel axis: summarise
        scale, offset = np.array([np.mean(scale)]), np.array([np.mean(offset)])
    safe = np.where(scale == 0, 1.0, scale)
    return Implied("normal", -offset / safe, 1.0 / np.abs(safe), "normalized (x - mean) / std at the input")


def index_ranges(model: Any, specs: tuple[TensorSpec, ...]) -> dict[str, tuple[int, int]]:
    """Integer input name -> ``(0, rows)`` for inputs whose values reach the indices of a Gather."""
    import onnx

    # model.onnx names its inputs by the TF signature's keys (tf_name); the ranges are keyed by name.
    integer_inputs = {s.tf_name: s.name for s in specs if s.dtype.startswith(("int", "uint"))}
    float_inputs = {s.tf_name: s.name for s in specs if s.dtype.startswith(("float", "bfloat"))}
    if not integer_inputs and not float_inputs:
        return {}
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
        found = {integer_inputs[n] for n in _upstream_inputs(node.input[1], producers, set(integer_inputs))}
        found |= {float_inputs[n] for n in _cast_ids(node.input[1], producers, set(float_inputs))}
        for name in found:
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


def _cast_ids(tensor: str, producers: dict[str, Any], inputs: set[str]) -> set[str]:
    """Float inputs whose values reach a Gather's indices through a Cast (Keras' Embedding casts float ids:
    ``Input(shape=(maxlen,))`` feeding an Embedding). Between the Gather and the Cast any op may sit (Keras
    wraps negative ids); between the Cast and the input only value-preserving ops, not arithmetic."""
    found, seen, stack = set(), set(), [(tensor, False)]
    while stack:
        name, cast = stack.pop()
        if (name, cast) in seen:
            continue
        seen.add((name, cast))
        if name in inputs and cast:
            found.add(name)
        node = producers.get(name)
        if node is None or node.op_type in _SHAPE_ONLY_OPS or (cast and node.op_type not in _ID_PATH):
            continue
        data = node.input[:1] if cast and node.op_type in _INDEXED else node.input
        stack.extend((i, cast or node.op_type == "Cast") for i in data if i)
    return found


#: Ops a float id passes through between the input and its Cast (only the data operand of those in _INDEXED).
_ID_PATH = frozenset({"Cast", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Identity", "Transpose", "Flatten", "Gather"})
_INDEXED = frozenset({"Gather", "Slice", "Reshape", "Squeeze", "Unsqueeze"})


class _Graph:
    """Consumers and constant values of an ONNX graph, for following an input to its first arithmetic."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.consumers: dict[str, list[Any]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def _only_consumer(self, name: str) -> Any:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None

    def affine_after(self, name: str) -> tuple[str, Any, Any] | None:
        """``(first op, s, o)`` when ``name`` flows (through value-preserving ops) into ``s*x + o`` by constants."""
        node = self._only_consumer(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            name = node.output[0]
            node = self._only_consumer(name)
        if node is None or node.op_type not in _AFFINE:
            return None
        first, scale, offset, steps = node.op_type, 1.0, 0.0, 0
        while node is not None and node.op_type in _AFFINE and len(node.input) == 2:
            other = node.input[1] if node.input[0] == name else node.input[0]
            if other not in self.constants or other == name:
                break
            c = self.constants[other].astype("float64")
            op, x_first = node.op_type, node.input[0] == name
            if op == "Mul":
                scale, offset = scale * c, offset * c
            elif op == "Div" and x_first:
                scale, offset = scale / c, offset / c
            elif op == "Add":
                offset = offset + c
            elif op == "Sub":
                scale, offset = (scale, offset - c) if x_first else (-scale, c - offset)
            else:
                break
            steps += 1
            name = node.output[0]
            node = self._only_consumer(name)
        return (first, scale, offset) if steps else None
