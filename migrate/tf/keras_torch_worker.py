"""The Keras 3 torch backend (the "keep the Keras code" migration path), run as a child process.

``python -m migrate.tf.keras_torch_worker REQUEST.json`` sets ``KERAS_BACKEND=torch`` before Keras loads, so this
process imports torch and never TensorFlow. :func:`backend_run` uses only backend-neutral Keras API; the
TensorFlow side of ``tf2torch parity --keras-backend torch`` runs the same function in
``migrate.tf.train_worker`` (``backend_run``), so both backends do exactly the same thing:

* every model output and every single-call layer's output (``training=False``, then ``training=True`` with
  dropout-family layers the identity);
* with ``train``: one ``model.train_on_batch`` with a fresh copy of the compiled (or requested) optimizer,
  its loss, and every variable after the step.
"""

from __future__ import annotations

import os
from typing import Any

from migrate.core.errors import ConversionError, InputError, first_line
from migrate.tf.keras_worker import NOISE_LAYERS

LOSS_CLASSES = {"sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
                "categorical_crossentropy": "CategoricalCrossentropy", "binary_crossentropy": "BinaryCrossentropy",
                "mean_squared_error": "MeanSquaredError", "mean_absolute_error": "MeanAbsoluteError",
                "huber": "Huber"}


def _layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_layers(layer))
        for inner in ("layer", "forward_layer", "backward_layer"):
            if getattr(layer, inner, None) is not None:
                out.append(getattr(layer, inner))
    return out


def _probed(model: Any) -> list[tuple[Any, Any]]:
    """``(layer, output)`` for each top-level layer the model's graph calls once with one output tensor."""
    graph = getattr(model, "_functional", None) or model
    nodes: dict[int, list[Any]] = {}
    for depth_nodes in getattr(graph, "_nodes_by_depth", {}).values():
        for node in depth_nodes:
            nodes.setdefault(id(node.operation), []).append(node)
    out = []
    for layer in model.layers:
        calls = nodes.get(id(layer), [])
        if type(layer).__name__ != "InputLayer" and len(calls) == 1 and len(calls[0].output_tensors) == 1:
            out.append((layer, calls[0].output_tensors[0]))
    return out


def _load(request: dict[str, Any]) -> Any:
    import keras

    from migrate.tf.custom_objects import resolve

    try:
        objects = resolve(request.get("custom_objects") or [])
        return keras.models.load_model(request["source"], compile=True, custom_objects=objects)
    except Exception as exc:  # which layer failed is in Keras' message, whatever its type
        raise ConversionError(f"Keras with the {keras.backend.backend()} backend cannot load {request['source']}: "
                           f"{type(exc).__name__}: {first_line(exc, 300, default=type(exc).__name__)}") from exc


def _numpy(value: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(value)


def _compile(model: Any, request: dict[str, Any]) -> None:
    """A fresh optimizer (no saved slots) and the compiled or requested loss, the same on both backends."""
    import keras

    spec = request.get("optimizer")
    if spec is None and getattr(model, "optimizer", None) is None:
        raise InputError("the model was saved without a compiled optimizer; pass --optimizer")
    optimizer = (keras.optimizers.get({"class_name": spec["class_name"], "config": spec["config"]}) if spec
                 else type(model.optimizer).from_config(model.optimizer.get_config()))
    loss = request.get("loss")
    if loss is not None:
        loss = keras.losses.get({"class_name": LOSS_CLASSES[loss["name"]], "config": loss["config"]})
    elif getattr(model, "loss", None) is None:
        raise InputError("the model was saved without a compiled loss; pass --loss")
    model.compile(optimizer=optimizer, loss=loss if loss is not None else model.loss)


def backend_run(request: dict[str, Any]) -> dict[str, Any]:
    """Outputs, layer outputs and (with ``train``) one ``train_on_batch`` under the running Keras backend."""
    import keras
    import numpy as np

    model = _load(request)
    for layer in _layers(model):
        if NOISE_LAYERS.get(type(layer).__name__):
            setattr(layer, NOISE_LAYERS[type(layer).__name__], 0.0)
    graph = getattr(model, "_functional", None) or model
    names = [t.name for t in graph.inputs]
    with np.load(request["inputs"], allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    feeds = [arrays[f"in/{n}"] for n in names]
    x = feeds if len(feeds) > 1 else feeds[0]
    probed = _probed(model)
    try:
        probe = keras.Model(graph.inputs, [*graph.outputs, *[t for _, t in probed]])
    except Exception as exc:  # Keras raises many types
        raise ConversionError(f"Keras with the {keras.backend.backend()} backend cannot rebuild the model's graph: "
                           f"{first_line(exc, 300, default=type(exc).__name__)}") from exc
    result: dict[str, Any] = {}
    outputs = len(graph.outputs)
    for mode, training in (("eval", False), ("train", True)):
        try:
            values = probe(x, training=training)
        except Exception as exc:  # Keras names the layer that failed in its message
            raise ConversionError(f"Keras with the {keras.backend.backend()} backend cannot run the model "
                               f"(training={training}): {type(exc).__name__}: {first_line(exc, 300, default=type(exc).__name__)}") from exc
        values = values if isinstance(values, (list, tuple)) else [values]
        result.update({f"{mode}/out/{i}": _numpy(v) for i, v in enumerate(values[:outputs])})
        result.update({f"{mode}/layer/{layer.name}": _numpy(v) for (layer, _), v in zip(probed, values[outputs:])})
    answer: dict[str, Any] = {"layers": [layer.name for layer, _ in probed], "outputs": outputs,
                              "backend": keras.backend.backend()}
    if request.get("train"):
        _compile(model, request)
        targets = [arrays[f"target/{i}"] for i in range(outputs)]
        loss = model.train_on_batch(x, targets if len(targets) > 1 else targets[0])
        result["loss"] = np.asarray(float(np.ravel(loss)[0]))
        result.update({f"after/{v.path}": _numpy(v) for v in model.weights})
        answer["order"] = [v.path for v in model.weights]
    np.savez(request["result_npz"], **result)
    return answer


if __name__ == "__main__":
    os.environ["KERAS_BACKEND"] = "torch"  # before anything imports Keras: this process never loads TensorFlow
    from migrate.tf.protocol import serve

    serve({"backend_run": backend_run})
