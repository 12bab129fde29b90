"""The Keras side of forward parity for a hand-written module: ``python -m migrate.tf.transfer_worker REQ``.

Imports Keras/TensorFlow, never torch. ``forward``: seeded inputs (or the user's), ``model(x, training=...)``
(``training``: dropout-family layers off, for training parity),
the output of every layer with weights that the graph calls once (any number of inputs: recurrent, attention;
before a fused activation, as the torch submodule returns it) and every weight, in one .npz.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ["KERAS_BACKEND"] = "tensorflow"

from migrate.core.errors import InputError
from migrate.tf.keras_worker import (
    NOISE_LAYERS,
    all_layers,
    calls_by_layer,
    input_names,
    load_keras,
    make_inputs,
    output_names,
)


def _once_called(model: Any) -> list[tuple[Any, Any, Any]]:
    """``(layer, inputs, first output)`` of each top-level layer with weights that the graph calls once."""
    import tensorflow as tf

    nodes = calls_by_layer(model)
    out = []
    for layer in model.layers:
        calls = nodes.get(id(layer), [])
        if layer.weights and not hasattr(layer, "layers") and len(calls) == 1:
            ins = tf.nest.flatten(calls[0].input_tensors)
            out.append((layer, ins, tf.nest.flatten(calls[0].output_tensors)[0]))
    return out


def forward(request: dict[str, Any]) -> dict[str, Any]:
    import keras
    import numpy as np
    import tensorflow as tf

    from migrate.tf.train_worker import _fused, _path

    model = load_keras(Path(request["source"]))
    training = bool(request.get("training"))
    if training:  # the training-parity reference: dropout-family layers are the identity, as in train_worker
        for layer in all_layers(model):
            if NOISE_LAYERS.get(type(layer).__name__):
                setattr(layer, NOISE_LAYERS[type(layer).__name__], 0.0)
    if request.get("inputs"):
        with np.load(request["inputs"], allow_pickle=False) as data:
            feeds = {n: data[n] for n in input_names(model) if n in data.files}
        if len(feeds) != len(input_names(model)):
            raise InputError(f"--inputs needs one array per input: {', '.join(input_names(model))}")
    else:
        feeds = make_inputs(model, int(request.get("batch", 4)), int(request.get("length", 7)),
                            int(request.get("seed", 0)))
    probed = _once_called(model)
    fused = [(layer, ins) for layer, ins, _ in probed if _fused(layer) and len(ins) == 1
             and not isinstance(getattr(type(layer), "activation", None), property)]
    graph = getattr(model, "_functional", None) or model
    probe = keras.Model(graph.inputs, [*graph.outputs, *[o for _, _, o in probed], *[i[0] for _, i in fused]])
    args = [tf.constant(feeds[n]) for n in input_names(model)]
    flat = probe(args if len(args) > 1 else args[0], training=training)
    names = output_names(model)
    result = {**{f"in/{k}": v for k, v in feeds.items()},
              **{f"out/{n}": t.numpy() for n, t in zip(names, flat)},
              **{f"before/{_path(v)}": v.numpy() for v in model.weights}}
    values = flat[len(names):len(names) + len(probed)]
    result.update({f"layer/{layer.name}": v.numpy() for (layer, _, _), v in zip(probed, values)})
    for (layer, _), x in zip(fused, flat[len(names) + len(probed):]):
        activation, layer.activation = layer.activation, keras.activations.linear
        try:
            result[f"layer/{layer.name}"] = layer(x, training=training).numpy()
        finally:
            layer.activation = activation
    np.savez(request["result_npz"], **result)
    return {"layers": [{"name": layer.name, "class_name": type(layer).__name__,
                        "weights": [_path(v) for v in layer.weights]} for layer, _, _ in probed],
            "inputs": input_names(model), "outputs": names, "order": [_path(v) for v in model.weights]}


COMMANDS = {"forward": forward}


if __name__ == "__main__":
    from migrate.tf.protocol import serve

    serve(COMMANDS)
