"""Keras files (.keras / .h5) as a ``convert`` source, on the TF worker's side (imports Keras; never torch).

* :func:`load` reads the file with the user's ``--custom-objects`` and says which class is missing
  when one is.
* :func:`export_saved_model` writes the serving SavedModel through ``keras.export.ExportArchive`` with an
  endpoint that calls ``model(..., training=False)``. ``model.export()`` leaves ``training`` unset,
  and for some models (``Resizing`` before ``BatchNormalization``) Keras then traces BatchNorm in
  training mode: the export computes batch statistics and differs from ``model.predict``.
* :func:`call` is the reference for parity and tests: the Keras model itself with ``training=False``,
  independent of the export that the converted model came from.

Both name inputs the same way (:func:`input_names`): the Input layers' names (``input_layer``),
not the ``keras_tensor_156`` that Keras gives unnamed inputs in its own exports.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any

from migrate.core.errors import InputError, first_line
from migrate.tf import custom_objects as custom

#: A class whose ``__init__`` refuses the config Keras passes back (no ``**kwargs``).
_UNEXPECTED = re.compile(r"([\w.]+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")
#: Keras' wrappers around the real error: the deserialization and the layer-call context.
_ENCOUNTERED = re.compile(r"Exception encountered:\s*(.+)", re.DOTALL)
_CALL_CONTEXT = re.compile(r"^Exception encountered when calling [^\n]*\n(.*?)(?:\n\s*Arguments received by|\Z)", re.DOTALL)
_TF_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")

#: Keras 3 (``Could not locate class 'X'``) and legacy .h5 (``Unknown layer: 'X'``) messages for a missing class.
_MISSING = re.compile(r"Could not locate (class|function) '([^']+)'|Unknown (layer|object|activation)[^:]*: '?([\w.>]+)")


def load(source: Path, custom_objects: list[dict[str, Any]]) -> Any:
    """``keras.models.load_model(compile=False)`` with the user's custom objects imported."""
    import keras

    objects = custom.resolve(custom_objects)
    try:
        return keras.models.load_model(str(source), compile=False, custom_objects=objects or None)
    except Exception as exc:  # keras raises many types for a bad file
        missing = _MISSING.search(str(exc))
        if missing:
            kind, name = missing.group(1) or "class", missing.group(2) or missing.group(4)
            given = ("; none of the --custom-objects modules defines it" if custom_objects else
                     "; pass the module that defines it: --custom-objects module.py (or package.module:NAME; "
                     "Python: custom_objects=...)")
            raise InputError(f"{source}: the model uses the custom {kind} {name!r}, which is not "
                                   f"available{given}") from exc
        traceback.print_exc()  # the whole chain, in the worker's log (shown with --debug)
        cause = innermost(exc)
        unexpected = _UNEXPECTED.search(cause)
        if unexpected:
            cls = unexpected.group(1).split(".")[-1]
            raise InputError(f"{source}: Keras cannot rebuild the custom layer {cls} ({cause}): Keras passes the "
                             f"saved config (name, trainable, dtype, ...) back to {cls}.__init__; accept **kwargs in "
                             f"__init__ and pass them to super().__init__(**kwargs), or define get_config (and "
                             "from_config), then save the model again") from exc
        raise InputError(f"{source}: not a readable Keras model ({cause}); "
                               "check the file is a model saved by model.save") from exc


def innermost(error: BaseException, limit: int = 300) -> str:
    """``Type: text`` of the innermost error behind ``error``: the end of its ``__cause__``/``__context__`` chain,
    with Keras' wrappers ("could not be deserialized properly ... Exception encountered: X", "Exception
    encountered when calling L.call(). X Arguments received by ...") and TensorFlow's node prefix removed."""
    seen = set()
    while (error.__cause__ or error.__context__) is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    text, name = str(error).strip(), type(error).__name__
    for _ in range(4):  # Keras nests its wrappers
        nested = _ENCOUNTERED.search(text)
        call = _CALL_CONTEXT.search(text)
        if nested and not text.startswith("Exception encountered when calling"):
            text = nested.group(1).strip()
        elif call and call.group(1).strip():
            text = call.group(1).strip()
        else:
            break
    text = _TF_NODE.sub("", text)
    return f"{name}: {first_line(text, limit)}"


def _signature(model: Any) -> list[Any]:
    """The model's positional call arguments as Keras InputSpecs (nested for multi-input models).

    A subclassed model loaded from a file is built but has never been called, which Keras's own
    check refuses; its build shapes give the same signature.
    """
    from keras.src.export import export_utils

    try:
        return list(export_utils.get_input_signature(model))
    except ValueError:
        inferred = export_utils._infer_input_signature_from_model(model)
        if not inferred:
            raise
        return list(inferred)


def input_names(model: Any) -> list[str]:
    """One readable name per flattened input: dict keys, else the Input layers' names, else ``inputs_N``."""
    from keras import tree

    flat = tree.flatten(_signature(model))
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict) and len(struct) == len(flat) and all(isinstance(k, str) for k in struct):
        return sorted(struct)  # tree.flatten orders a dict by its sorted keys
    layers = getattr(model, "inputs", None) or []
    names = [getattr(getattr(t, "_keras_history", None), "operation", None) for t in layers]
    names = [getattr(op, "name", None) for op in names]
    if len(names) == len(flat) and all(names) and len(set(names)) == len(names):
        return names
    return ["inputs"] if len(flat) == 1 else [f"inputs_{i}" for i in range(len(flat))]  # not the builtin input


def _call(model: Any, flat: list[Any]) -> Any:
    from keras import tree

    return model(*tree.pack_sequence_as(_signature(model), flat), training=False)


def export_saved_model(model: Any, path: Path) -> None:
    """Write a SavedModel whose ``serve``/``serving_default`` call the model with ``training=False``.

    The endpoint takes one positional tensor per input, in the Keras model's input order, named by
    :func:`input_names`, so the signature's keys are those names.
    """
    import keras
    import tensorflow as tf
    from keras import tree

    specs = [tf.TensorSpec(s.shape, s.dtype, name=name)
             for s, name in zip(tree.flatten(_signature(model)), input_names(model))]

    def serve(*tensors: Any) -> Any:
        return _call(model, list(tensors))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=specs)
    archive.write_out(str(path), verbose=False)


def call(model: Any, feeds: dict[str, Any]) -> dict[str, Any]:
    """``model(inputs, training=False)`` on arrays keyed by :func:`input_names`; outputs keyed as the
    export's signature names them (dict keys, else ``output_0``, ``output_1``, ...)."""
    import tensorflow as tf

    names = input_names(model)
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)} (the Keras model's inputs: {', '.join(names)})")
    result = _call(model, [tf.constant(feeds[n]) for n in names])
    if isinstance(result, dict):
        return {k: v.numpy() for k, v in result.items()}
    return {f"output_{i}": t.numpy() for i, t in enumerate(tf.nest.flatten(result))}


#: Keras operations that pass an input's values on unchanged (or a slice of them): the search walks through.
_PASS_THROUGH = frozenset({"InputLayer", "Cast", "Reshape", "Flatten", "Permute", "ExpandDims", "Squeeze", "GetItem",
                           "Identity", "Slice", "Take"})


def _source_input(tensor: Any, names: dict[int, str]) -> str | None:
    """The model input whose values ``tensor`` carries (through :data:`_PASS_THROUGH` operations), else None."""
    for _ in range(32):
        if id(tensor) in names:
            return names[id(tensor)]
        history = getattr(tensor, "_keras_history", None)
        op = getattr(history, "operation", None)
        if op is None or type(op).__name__ not in _PASS_THROUGH:
            return None
        nodes = getattr(op, "_inbound_nodes", [])
        if history.node_index >= len(nodes) or not nodes[history.node_index].input_tensors:
            return None
        tensor = nodes[history.node_index].input_tensors[0]
    return None


def _loss_kind(layer: Any) -> str | None:
    """"ctc" or "sparse" for a layer whose class computes a CTC or sparse categorical loss (an endpoint layer such
    as the Keras examples' ``CTCLayer``; its name or source says which)."""
    import inspect

    try:
        text = (type(layer).__name__ + inspect.getsource(type(layer))).lower()
    except (OSError, TypeError):
        text = type(layer).__name__.lower()
    return "ctc" if "ctc" in text else "sparse" if "sparse_categorical" in text else None


def _ctc_blank_first(layer: Any) -> bool:
    """Whether a CTC layer's blank is class 0: Keras 3's ``keras.losses.ctc``/``CTC`` and ``ops.ctc_loss`` with
    its default or ``mask_index=0`` (TensorFlow's ``ctc_batch_cost`` and v1 ``ctc_loss`` take the last class)."""
    import inspect

    try:
        text = re.sub(r"\s+", "", inspect.getsource(type(layer)))
    except (OSError, TypeError):
        return False
    default = "ops.ctc_loss(" in text and "mask_index=" not in text
    return bool(re.search(r"losses\.(ctc|CTC)\(|mask_index=0\b", text)) or default


def implied_inputs(model: Any) -> dict[str, dict[str, Any]]:
    """Input name -> how the Keras graph says to draw it, for the layers that consume it directly:
    ``Embedding`` (ids in ``[0, input_dim)``), ``Rescaling`` (pixels), ``Normalization`` (its mean and std),
    and the labels of a CTC (``[0, classes - 1)``: the last class is the blank) or sparse loss (``[0, classes)``).
    """
    import numpy as np

    inputs = list(getattr(model, "inputs", None) or [])
    names = dict(zip((id(t) for t in inputs), input_names(model))) if len(inputs) == len(input_names(model)) else {}
    found: dict[str, dict[str, Any]] = {}
    for layer in getattr(model, "layers", []):
        cls = type(layer).__name__
        for node in getattr(layer, "_inbound_nodes", []):
            tensors = list(node.input_tensors)
            sources = [_source_input(t, names) for t in tensors]
            first = sources[0] if sources else None
            if cls == "Embedding" and first:
                rows = int(layer.input_dim)
                low, high = found.get(first, {}).get("low", 0), min(found.get(first, {}).get("high", rows), rows)
                found[first] = {"kind": "integers", "low": low, "high": high,
                                "reason": f"indexes Embedding {layer.name!r} ({rows} rows)"}
            elif cls == "Rescaling" and first and np.ndim(layer.scale) == 0 and 0 < float(layer.scale) < 1:
                s, o = float(layer.scale), float(np.ravel(layer.offset)[0]) if np.size(layer.offset) == 1 else 0.0
                found.setdefault(first, {"kind": "uniform", "low": 0.0, "high": float(f"{(1.0 - o) / s:.6g}"),
                                         "reason": f"rescaled by {s:.4g} (offset {o:g}) in {layer.name!r}"})
            elif cls == "Normalization" and first and getattr(layer, "mean", None) is not None:
                mean = np.asarray(layer.mean, np.float64).ravel()
                std = np.sqrt(np.maximum(np.asarray(layer.variance, np.float64).ravel(), 1e-12))
                found.setdefault(first, {"kind": "normal", "low": mean.tolist(), "high": std.tolist(),
                                         "reason": f"normalized by {layer.name!r}"})
            elif len(tensors) >= 2 and any(sources) and _loss_kind(layer):
                kind = _loss_kind(layer)
                for source, other in ((s, t) for s, t in zip(sources, reversed(tensors)) if s):
                    classes = other.shape[-1] if getattr(other, "shape", None) else None
                    if classes:
                        first = kind == "ctc" and _ctc_blank_first(layer)
                        low, high = (1, int(classes)) if first else (0, int(classes) - (kind == "ctc"))
                        blank = ", the first one the blank)" if first else ", the last one the blank)"
                        found[source] = {"kind": "integers", "low": low, "high": high,
                                         "reason": f"labels of the {kind.upper() if kind == 'ctc' else kind} loss in "
                                                   f"{layer.name!r} ({classes} classes"
                                                   + (blank if kind == "ctc" else ")")}
    return found
