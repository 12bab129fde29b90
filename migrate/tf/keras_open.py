"""Open up a custom Keras layer (a ``Layer`` subclass, a subclassed ``Model``, a ``Lambda``) for ``port``.

Runs in the Keras worker. The layer's own ``call`` is run once on symbolic ``keras.Input`` tensors, so its
tracked sublayers and its ``keras.ops`` arithmetic record themselves as a Functional graph, which
:func:`migrate.tf.keras_worker.describe_model` then describes like any model (custom sublayers recursively).
Three things make that graph faithful:

* sizes: dimensions Keras leaves open (batch, a dynamic length) get sentinel sizes while tracing, and the
  graph says which input axis each sentinel is, so the port computes ``x.shape[1]`` at run time where
  ``call`` used ``ops.shape(x)[1]`` (a traced size is never baked in);
* creation ops (``ops.arange(0, n)``, ``keras.random.normal(shape)``) called from the user's code become
  graph nodes instead of constants;
* the layer's own variables (``add_weight``) are swapped for named inputs while tracing, so the graph reads
  them where ``call`` does; the port makes them parameters or buffers with the Keras attribute's name.

``tf.*`` functions the user's code calls are traced as their ``keras.ops`` equivalents (:mod:`migrate.tf.tf_ops`).
What cannot be traced this way (a ``tf.*`` function without a mapping, Python on tensor values) is reported in
one line naming the class, the construct and the file:line of the ``call`` that does it.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from migrate.core.errors import ConversionError, first_line
from migrate.tf import tf_ops

#: the traced batch size and the traced sizes of dynamic axes 1, 2, ... (primes no real layer uses)
BATCH = 9973
DIMS = (9967, 9949, 9941, 9931, 9929, 9923, 9907, 9901, 9887, 9883, 9871, 9859)
SENTINELS = {BATCH, *DIMS}
#: the call keyword under which the described graph lists the masks a custom layer's tensor arguments carry
MASKS = "__masks__"
#: a mask listed there that is also another tensor of the call: ``"same:<tensor id>"`` (not a second input)
SAME = "same:"
#: functions that build a tensor from Python values: recorded as graph nodes when the user's code calls them
CREATORS = {"ops": ("arange", "ones", "zeros", "full", "eye", "tri"),
            "random": ("normal", "uniform", "truncated_normal")}


def open_layer(layer: Any, call: dict[str, Any], arrays: dict[str, Any],
               describe: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The graph of ``layer.call`` on inputs shaped like the tensors of ``call`` (a node's args/kwargs).

    Each input's dynamic axes get sizes of their own (two sequences of independent lengths stay apart); where
    ``call`` combines them as one size, the trace is retried with one size per axis for every input."""
    try:
        return _open(layer, call, arrays, describe, own_sizes=True)
    except ConversionError:
        if not _has_dynamic_pair(call):
            raise
        return _open(layer, call, arrays, describe, own_sizes=False)


def _has_dynamic_pair(call: dict[str, Any]) -> bool:
    """Two tensor inputs with a dynamic axis (so the per-input sizes may differ from a shared size)."""
    found = [r for r in tensor_refs([call["args"], call["kwargs"]]) if any(d is None for d in (r["shape"] or [])[1:])]
    return len(found) > 1


def tensor_refs(value: Any) -> Iterator[dict[str, Any]]:
    """The tensor references in a described call's (nested) arguments, in order."""
    if isinstance(value, dict) and "tensor" in value:
        yield value
    elif isinstance(value, (list, dict)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from tensor_refs(v)


def _open(layer: Any, call: dict[str, Any], arrays: dict[str, Any], describe: Callable[..., dict[str, Any]],
          own_sizes: bool) -> dict[str, Any]:
    import keras

    names = _arg_names(layer)
    inputs: list[Any] = []
    taken: set[str] = set()
    dims: dict[int, list[Any]] = {}
    by_ref: dict[str, Any] = {}
    taken_sizes = {d for r in tensor_refs([call["args"], call["kwargs"]]) for d in r["shape"] or [] if d in SENTINELS}
    pool = iter([d for d in DIMS if d not in taken_sizes])  # an enclosing trace's sizes are not reused
    first_sizes: list[list[int]] = []

    def symbolic(value: Any, name: str, like: list[int] | None = None) -> Any:
        if isinstance(value, str) and value.startswith(SAME):  # a mask that is another input of the call
            return by_ref[value[len(SAME):]]
        if isinstance(value, dict) and "tensor" in value:
            # open: None, or a sentinel of the trace this layer is nested in (a sublayer of an opened layer),
            # which keeps its value so that sizes equal there (a (T, T) mask) stay equal here
            open_axes = [d is None or d in SENTINELS for d in value["shape"]]
            if like is not None:  # a mask: the sizes of the tensor it masks
                shape = [d if d is not None else like[i] for i, d in enumerate(value["shape"])]
            elif own_sizes:
                shape = [d if d is not None else (BATCH if i == 0 else next(pool, DIMS[i - 1]))
                         for i, d in enumerate(value["shape"])]
            else:
                shape = [d if d is not None else (BATCH if i == 0 else DIMS[i - 1]) for i, d in enumerate(value["shape"])]
            unique = _unique(name, taken)
            tensor = keras.Input(batch_shape=shape, dtype=value["dtype"], name=unique)
            for axis, o in enumerate(open_axes):
                if o:
                    dims.setdefault(shape[axis], [unique, axis])
            inputs.append(tensor)
            by_ref.setdefault(value["tensor"], tensor)
            first_sizes.append(shape)
            return tensor
        if isinstance(value, list):
            return [symbolic(v, f"{name}_{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: symbolic(v, f"{name}_{k}" if name != k else k) for k, v in value.items()}
        return value

    args = [symbolic(a, names[i] if i < len(names) else f"arg{i}") for i, a in enumerate(call["args"])]
    first = first_sizes[0] if first_sizes else None
    kwargs = {k: symbolic(v, k, like=first if k == "mask" and isinstance(v, dict) else None)
              for k, v in call["kwargs"].items() if k not in ("training", MASKS)}
    _attach_masks(args, call["kwargs"].get(MASKS), symbolic)
    if "training" in inspect.signature(layer.call).parameters:
        kwargs["training"] = False
    if not inputs:
        raise _error(layer, "a call without tensor inputs", None)
    own = _own_variables(layer)
    params = {attr: keras.Input(batch_shape=tuple(var.shape), dtype=var.dtype, name=f"param__{attr}")
              for attr, var in own.items()}
    constants = _own_constants(layer)
    params.update({attr: keras.Input(batch_shape=tuple(value.shape), dtype=value.dtype, name=f"const__{attr}")
                   for attr, value in constants.items()})
    consts = {f"const__{attr}": {"name": attr, "shape": list(value.shape), "dtype": str(value.dtype),
                                 "values": value.tolist()} for attr, value in constants.items()}
    attrs = _sublayer_attrs(layer)
    trainable = {id(w) for w in layer.trainable_weights}
    weights = {}
    for attr, var in own.items():
        key = f"w{len(arrays)}"
        arrays[key] = var.numpy()
        weights[f"param__{attr}"] = {"name": attr, "path": var.path, "key": key, "shape": list(var.shape),
                                     "dtype": str(arrays[key].dtype), "trainable": id(var) in trainable}
    file, line = _call_site(layer)

    def graph_of(training: bool) -> dict[str, Any]:
        losses: list[Any] = []
        try:
            with _swapped(layer, params), _creators(inputs[0]), tf_ops.traced(), _capture_losses(layer, losses), \
                    _lenient_symbolic_calls():
                result = layer.call(*args, **{**kwargs, "training": training} if "training" in kwargs else kwargs)
            outputs = keras.tree.flatten(result)
            if not outputs or not all(isinstance(t, keras.KerasTensor) for t in outputs):
                raise TypeError("call() returned something other than tensors computed from its inputs")
            functional = keras.Model([*inputs, *params.values()], [*outputs, *losses], name=layer.name)
        except ConversionError:
            raise
        except Exception as exc:  # Keras and TF raise many types on a symbolic tensor they cannot take
            raise _error(layer, _construct(exc), exc) from exc
        graph = describe(functional, arrays, attrs)
        graph["custom"] = {"class": type(layer).__name__, "file": file, "line": line,
                           "params": weights, "consts": consts, "dims": {str(k): v for k, v in dims.items()},
                           "losses": len(losses), "outputs": len(outputs),
                           "structure": "single" if not isinstance(result, (list, tuple, dict)) else "tuple",
                           "operations": sorted(type(op).__name__ for op in functional.operations)}
        _forget_sentinels(graph)
        return graph

    graph = graph_of(False)
    if "training" in kwargs:
        train = graph_of(True)  # an ``if training:`` around ops: forward gets ``if self.training:``
        if train["custom"]["operations"] != graph["custom"]["operations"]:
            graph["custom"]["train_graph"] = train
    return graph


def _attach_masks(args: list[Any], masks: list[Any] | None, symbolic: Callable[..., Any]) -> None:
    """The Keras masks the call's tensors carry (``x._keras_mask``: a ``compute_mask`` upstream, or masking
    passed through by ``supports_masking`` layers) ride on the symbolic inputs too, so sublayers that read
    them (MultiHeadAttention's query/value/key masks) record them as in a real forward pass. Each is an input
    of the opened graph named after the tensor (``inputs_mask``), or the ``mask`` argument where it is that."""
    import keras
    from keras.src.backend import set_keras_mask

    tensors = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
    for tensor, ref in zip(tensors, masks or []):
        if ref is not None:
            set_keras_mask(tensor, symbolic(ref, f"{tensor.name}_mask", like=list(tensor.shape)))


def merged_call(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The first call, with the sizes that differ between calls left open: one class serves every call, so a
    size it is called with more than one way (keras-hub's rotary embedding on 4 query heads and 2 key heads)
    is read off the input at run time instead of being the first call's."""
    def merge(first: Any, others: list[Any]) -> Any:
        if isinstance(first, dict) and "tensor" in first and first.get("shape") is not None:
            shapes = [o["shape"] for o in others if isinstance(o, dict) and len(o.get("shape") or ()) == len(first["shape"])]
            shape = [None if any(s[i] != d for s in shapes) else d for i, d in enumerate(first["shape"])]
            return {**first, "shape": shape}
        if isinstance(first, list):
            return [merge(v, [o[i] for o in others if isinstance(o, list) and len(o) > i]) for i, v in enumerate(first)]
        if isinstance(first, dict):
            return {k: merge(v, [o[k] for o in others if isinstance(o, dict) and k in o]) for k, v in first.items()}
        return first

    return merge(calls[0], calls[1:])


def _arg_names(layer: Any) -> list[str]:
    params = inspect.signature(layer.call).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _unique(name: str, taken: set[str]) -> str:
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _own_variables(layer: Any) -> dict[str, Any]:
    """Variables the layer itself holds as attributes (``self.pos = self.add_weight(...)``), by attribute."""
    import keras

    return {attr: value for attr, value in vars(layer).items()
            if isinstance(value, keras.Variable) and not attr.startswith("_")}


def _own_constants(layer: Any) -> dict[str, Any]:
    """Concrete tensors the layer holds as attributes (keras-hub's ViT builds ``self.position_ids =
    ops.expand_dims(ops.arange(n), 0)``), by attribute, as numpy arrays. While tracing they are named inputs
    like the variables, so a sublayer called on one (``self.position_embedding(self.position_ids)``) is a
    graph node instead of a constant computed from the weights; the port makes them buffers."""
    import keras
    import numpy as np

    return {attr: np.asarray(keras.ops.convert_to_numpy(value)) for attr, value in vars(layer).items()
            if not attr.startswith("_") and keras.ops.is_tensor(value) and not isinstance(value, keras.Variable)
            and not isinstance(value, keras.KerasTensor)}


def _sublayer_attrs(layer: Any) -> dict[int, str]:
    """id(sublayer) -> the attribute that holds it (``att``; ``blocks_0`` for an item of a list)."""
    import keras

    found: dict[int, str] = {}
    for attr, value in vars(layer).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, keras.layers.Layer):
            found.setdefault(id(value), attr)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, keras.layers.Layer):
                    found.setdefault(id(item), f"{attr}_{i}")
    return found


@contextlib.contextmanager
def _swapped(layer: Any, params: dict[str, Any]) -> Iterator[None]:
    saved = {attr: vars(layer)[attr] for attr in params}
    try:
        for attr, tensor in params.items():
            object.__setattr__(layer, attr, tensor)  # bypass Keras' tracking: a symbolic stand-in while tracing
        yield
    finally:
        for attr, value in saved.items():
            object.__setattr__(layer, attr, value)


@contextlib.contextmanager
def _capture_losses(layer: Any, found: list[Any]) -> Iterator[None]:
    """``self.add_loss(term)`` inside call: the term becomes an extra graph output (the port's added loss)."""
    original = layer.add_loss
    object.__setattr__(layer, "add_loss", found.append)
    try:
        yield
    finally:
        object.__setattr__(layer, "add_loss", original)


@contextlib.contextmanager
def _lenient_symbolic_calls() -> Iterator[None]:
    """Sublayer calls while a ``call`` is traced: the masks their tensors carry become explicit keywords
    (:func:`_explicit_masks`). A sublayer called on symbolic tensors computes its output with
    ``compute_output_spec``; a subclass that
    adds keywords to its base's ``call`` (keras-hub's ``CachedMultiHeadAttention(..., cache=None)``) inherits
    a spec method that does not take them. Keywords passed as None that it does not take are left out there
    (the node still records the call as written); in a real forward pass Keras never calls it this way."""
    from keras.src.layers.layer import Layer

    original = Layer.symbolic_call

    def symbolic_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            params = inspect.signature(self.compute_output_spec).parameters
        except (TypeError, ValueError):
            return original(self, *args, **kwargs)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if v is not None or k in params}
        return original(self, *args, **kwargs)

    def call_with_masks(self: Any, *args: Any, **kwargs: Any) -> Any:
        return layer_call(self, *args, **_explicit_masks(self, args, kwargs))

    layer_call = Layer.__call__
    Layer.symbolic_call = symbolic_call
    Layer.__call__ = call_with_masks
    try:
        yield
    finally:
        Layer.symbolic_call = original
        Layer.__call__ = layer_call


def _explicit_masks(layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The masks a sublayer takes off its tensors in a real forward pass (``query._keras_mask`` as
    MultiHeadAttention's ``query_mask``; ``x._keras_mask`` as ``mask`` for a one-tensor call) passed as the
    keywords they become, so the traced graph records them; Keras' symbolic call leaves them out."""
    from keras.src.backend import get_keras_mask
    from keras.src.backend.common.keras_tensor import KerasTensor

    try:
        signature = inspect.signature(layer.call)
        bound = signature.bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return kwargs
    tensors = {k: v for k, v in bound.items() if isinstance(v, KerasTensor)}
    out = dict(kwargs)
    for name, tensor in tensors.items():
        mask = get_keras_mask(tensor)
        key = "mask" if len(tensors) == 1 and "mask" in signature.parameters else f"{name}_mask"
        if mask is not None and key in signature.parameters and bound.get(key) is None:
            out[key] = mask
    return out


class Creation:
    """Factory for the graph node of a creation op (defined lazily: it subclasses Keras' Operation)."""

    cls: Any = None

    @classmethod
    def make(cls) -> Any:
        if cls.cls is None:
            from keras.src import backend
            from keras.src.ops.operation import Operation

            class CreationOp(Operation):
                """``fn(**kwargs)`` as a node whose only input (``anchor``) ties it to the traced graph."""

                def __init__(self, fn: str, kwargs: dict[str, Any], name: str | None = None) -> None:
                    super().__init__(name=name)
                    self.fn, self.arguments = fn, kwargs

                def call(self, anchor: Any) -> Any:
                    return _real(self.fn)(**self.arguments)

                def compute_output_spec(self, anchor: Any) -> Any:
                    return backend.compute_output_spec(lambda: _real(self.fn)(**self.arguments))

                def get_config(self) -> dict[str, Any]:
                    return {"name": self.name, "fn": self.fn, "arguments": self.arguments}

            CreationOp.__module__ = "migrate.tf.keras_worker"  # describe_model recognises these nodes
            cls.cls = CreationOp
        return cls.cls


_REAL: dict[str, Any] = {}


def _real(fn: str) -> Any:
    return _REAL[fn]


@contextlib.contextmanager
def _creators(anchor: Any) -> Iterator[None]:
    """Patch the public ``keras.ops``/``keras.random`` creators: calls from user code become graph nodes."""
    import keras

    modules = {"ops": keras.ops, "random": keras.random}
    patched = []
    for group, fns in CREATORS.items():
        for fn in fns:
            real = getattr(modules[group], fn)
            _REAL.setdefault(f"{group}.{fn}", real)
            setattr(modules[group], fn, _recording(f"{group}.{fn}", real, anchor))
            patched.append((modules[group], fn, real))
    try:
        yield
    finally:
        for module, fn, real in patched:
            setattr(module, fn, real)


def _recording(key: str, real: Any, anchor: Any) -> Any:
    signature = inspect.signature(real)

    def record(*args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("keras."):
            return real(*args, **kwargs)  # Keras' own internals stay as they are
        bound = dict(signature.bind(*args, **kwargs).arguments)
        bound.pop("seed", None)
        bound = {k: _plain(v) for k, v in bound.items()}
        from keras.src.utils.naming import auto_name

        return Creation.make()(key, bound, name=auto_name(key.split(".")[-1]))(anchor)

    return record


def _plain(value: Any) -> Any:
    """Python sizes and dtypes as JSON values (``ops.shape`` may give numpy ints or dtype objects)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "name", value))


def _forget_sentinels(graph: dict[str, Any]) -> None:
    """Tensor shapes in the described graph say None where Keras does (sentinels stay in op arguments only)."""
    def plain(shape: list[Any]) -> list[Any]:
        return [None if d in SENTINELS else d for d in shape]

    def refs(node: Any) -> None:
        if isinstance(node, dict) and "tensor" in node and isinstance(node.get("shape"), list):
            node["shape"] = plain(node["shape"])
        elif isinstance(node, (list, dict)):
            for value in node.values() if isinstance(node, dict) else node:
                refs(value)

    graph["output_shapes"] = [plain(s) for s in graph["output_shapes"]]
    for entry in graph["layers"]:
        if entry["class_name"] == "InputLayer":
            entry["config"]["batch_shape"] = plain(entry["config"]["batch_shape"])
        refs(entry["calls"])


def _call_site(layer: Any) -> tuple[str, int]:
    fn = getattr(layer, "function", None) if type(layer).__name__ == "Lambda" else type(layer).call
    fn = getattr(fn, "__wrapped__", fn)
    try:
        return inspect.getsourcefile(fn) or "?", inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return "?", 0


def _construct(exc: BaseException) -> str:
    if isinstance(exc, tf_ops.NoMapping):
        return str(exc)  # "tf.image.resize has no port mapping yet"
    text = first_line(exc, 200)
    if "KerasTensor" in text and ("TensorFlow function" in text or "tf." in text):
        return "a TensorFlow op (tf.*) on a symbolic tensor, which has no keras.ops emitter"
    if "bool" in text.lower() or "truth value" in text.lower() or "iterate" in text.lower():
        return f"Python control flow on tensor values ({text})"
    return f"{type(exc).__name__}: {text}"


def _error(layer: Any, construct: str, exc: BaseException | None) -> ConversionError:
    """One line: the class, the construct, and the file:line in the user's code where tracing stopped."""
    file, line = _call_site(layer)
    if exc is not None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == file]
        if frames:
            line = frames[-1].lineno
    return ConversionError(f"cannot port custom layer {layer.name!r} ({type(layer).__name__}): {construct}, in "
                           f"call() at {file}:{line}; register an emitter for the class (docs/port.md) or use "
                           "'tf2torch convert' for an inference program")


@contextlib.contextmanager
def random_off() -> Iterator[None]:
    """``keras.random`` draws give their mean (a uniform draw its midpoint) while references are computed:
    the port's ``RandomDraw`` does the same with ``p = 0``, as dropout is switched off for a comparison."""
    import keras

    def mean(kind: str, real: Any) -> Any:
        signature = inspect.signature(real)

        def draw(*args: Any, **kwargs: Any) -> Any:
            a = signature.bind(*args, **kwargs).arguments
            value = (a.get("minval", 0.0) + a.get("maxval", 1.0)) / 2 if kind == "uniform" else a.get("mean", 0.0)
            return keras.ops.full(a["shape"], value, dtype=a.get("dtype") or "float32")
        return draw

    saved = {fn: getattr(keras.random, fn) for fn in CREATORS["random"]}
    try:
        for fn, real in saved.items():
            setattr(keras.random, fn, mean(fn, real))
        with tf_ops.references_off():  # and the user's tf.nn.dropout / tf.random.* the same way
            yield
    finally:
        for fn, real in saved.items():
            setattr(keras.random, fn, real)
