"""The Keras side of training-step parity, run as a child process: ``python -m migrate.tf.train_worker REQ``.

Imports Keras/TensorFlow, never torch; talks through files like ``migrate.tf.keras_worker``:

* ``config`` - the model's training setup: its compiled optimizer and loss(es) (or the ones the request
  names), loss weights and every weight regulariser, as JSON (``train.py`` is rendered from it).
* ``losses`` - Keras' value of given losses on given arrays (the reference for the loss registry).
* ``train_on_batch`` - Keras' own ``model.train_on_batch`` (the reference for ``train.py``'s first step).
* ``train``  - with every dropout-family layer made the identity and a fresh optimizer: the training-mode
  outputs (and each single-call layer's output) of the first step, its loss (data and regularisation),
  every trainable variable's gradient, then ``steps`` optimizer steps on the same batch and every variable
  after them (BatchNorm moving statistics included).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ["KERAS_BACKEND"] = "tensorflow"  # this worker is the TensorFlow side, whatever the user's default

from migrate.core.errors import ConversionError, InputError, first_line
from migrate.tf.keras_worker import (
    NOISE_LAYERS,
    added_losses,
    all_layers,
    calls_by_layer,
    custom_layer,
    graph_model,
    input_names,
    make_inputs,
    model_inputs,
    output_names,
    run_model,
)
from migrate.tf.source_kind import source_kind
from migrate.tf.tf_import import import_tf

#: Keras loss classes by the registry key of ``migrate.training.losses``.
LOSS_CLASSES = {"sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
                "categorical_crossentropy": "CategoricalCrossentropy", "binary_crossentropy": "BinaryCrossentropy",
                "mean_squared_error": "MeanSquaredError", "mean_absolute_error": "MeanAbsoluteError",
                "huber": "Huber"}
#: ``<name>_regularizer`` attributes whose penalty applies to the layer's (or its cell's) ``<name>`` variable.
REGULARIZED = ("kernel", "bias", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel", "embeddings",
               "gamma", "beta")


#: Keras' augmentation layers, run in inference mode for training parity (the port switches them off too)
AUGMENTATION = {"RandomFlip", "RandomRotation", "RandomZoom", "RandomCrop", "RandomTranslation", "RandomContrast"}


def _inference_call(layer: Any) -> Any:
    call = type(layer).call

    def inference(data: Any, training: Any = None) -> Any:
        return call(layer, data, training=False)
    return inference


def load_compiled(source: Path, custom_objects: list[dict[str, Any]] | None = None) -> Any:
    """The model with its compile state when it was saved compiled (``model.optimizer`` is None otherwise).

    A Keras-2 SavedModel (``keras_metadata.pb``, what ``tf2torch port`` accepts) loads through tf_keras,
    uncompiled: pass --optimizer and --loss."""
    if source_kind(source) == "saved_model":
        from migrate.tf.keras_worker import load_keras

        return load_keras(source)
    import_tf()
    import keras

    from migrate.tf.custom_objects import resolve

    try:
        return keras.models.load_model(str(source), compile=True, custom_objects=resolve(custom_objects or []))
    except Exception as exc:  # keras raises many types for a bad file
        raise InputError(f"{source}: not a readable Keras model ({type(exc).__name__}: {first_line(exc, 300)})") from exc


def _keras(model: Any) -> Any:
    """The Keras package MODEL belongs to: Keras 3, or tf_keras for a Keras-2 SavedModel."""
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    import keras

    return keras


def _path(variable: Any) -> str:
    """A variable's Keras path (``layer/kernel``); tf_keras has only the TF name (``layer/kernel:0``)."""
    return getattr(variable, "path", None) or variable.name.split(":")[0]


def _loss_entry(loss: Any) -> dict[str, Any]:
    """A compiled loss (name, Loss object or function) -> ``{"name", "config"}`` in the torch registry's terms."""
    import keras

    from migrate.training.losses import canonical

    if isinstance(loss, keras.losses.Loss):
        name, config = type(loss).__name__, loss.get_config()
    else:
        name, config = (loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)), {}
    config = {k: v for k, v in config.items() if k in ("from_logits", "label_smoothing", "delta")}
    return {"name": canonical(name), "config": config}


def _losses(model: Any, override: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One ``{"output", "name", "config", "weight"}`` per model output (DESIGN order)."""
    outputs = output_names(model)
    if override is not None:
        return [dict(override, output=o, weight=1.0) for o in outputs]
    if getattr(model, "loss", None) is None:
        if _adds_losses(model):  # compiled with an optimizer only: the add_loss terms are the loss (CTC)
            return [{"output": o, "name": "add_loss", "config": {}, "weight": 1.0} for o in outputs]
        raise InputError("the model was saved without a compiled loss; pass --loss (e.g. "
                          "sparse_categorical_crossentropy:from_logits=true)")
    loss = model.loss
    if isinstance(loss, dict):
        per = [loss[o] for o in outputs]
    elif isinstance(loss, (list, tuple)):
        per = list(loss)
    else:
        per = [loss] * len(outputs)
    weights = getattr(model, "_compile_config", None)
    weights = weights.config.get("loss_weights") if weights is not None else None
    if isinstance(weights, dict):
        weights = [weights.get(o, 1.0) for o in outputs]
    weights = list(weights) if weights else [1.0] * len(outputs)
    return [dict(_loss_entry(item), output=o, weight=float(w)) for item, o, w in zip(per, outputs, weights)]


def _adds_losses(model: Any) -> bool:
    """Whether a call of the model adds ``add_loss`` terms (a custom layer's; one call on seeded inputs tells)."""
    if not any(custom_layer(layer) for layer in all_layers(model)):
        return False
    run_model(model, make_inputs(model, 2, 7, 0), training=False)
    return added_losses(model) is not None


def _regularizers(model: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Weight regularisers (variable, l1, l2) and the names of layers with an activity regulariser."""
    found, activity = [], []
    for layer in all_layers(model):
        for owner in (layer, getattr(layer, "cell", None)):
            if owner is None:
                continue
            for attr in REGULARIZED:
                reg, var = getattr(owner, f"{attr}_regularizer", None), getattr(owner, attr, None)
                if reg is None or var is None:
                    continue
                cfg = reg.get_config()
                if type(reg).__name__ not in ("L1", "L2", "L1L2"):
                    raise ConversionError(f"layer {layer.name}: regulariser {type(reg).__name__} has no torch mapping "
                                      "(L1, L2 and L1L2 are mapped)")
                found.append({"keras": _path(var), "layer": layer.name, "l1": float(cfg.get("l1", 0.0)),
                              "l2": float(cfg.get("l2", 0.0))})
        if getattr(layer, "activity_regularizer", None) is not None:
            activity.append(layer.name)  # the port's forward sets model.activity_loss for these
    return found, activity


def _optimizer(model: Any, override: dict[str, Any] | None) -> Any:
    """A fresh optimizer: the override, else the compiled one rebuilt from its config (no saved slots)."""
    keras = _keras(model)
    if override is not None:
        return keras.optimizers.get({"class_name": override["class_name"], "config": override["config"]})
    if getattr(model, "optimizer", None) is None:
        raise InputError("the model was saved without a compiled optimizer; pass --optimizer (e.g. adam or "
                          "sgd:learning_rate=0.01,momentum=0.9)")
    return type(model.optimizer).from_config(model.optimizer.get_config())


def _serialize_optimizer(opt: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(opt.get_config(), default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    lr = opt._learning_rate if hasattr(opt, "_learning_rate") else None
    if lr is not None and hasattr(lr, "get_config") and not hasattr(lr, "numpy"):
        config["learning_rate"] = {"class_name": type(lr).__name__, "config": lr.get_config()}
    return {"class_name": type(opt).__name__, "config": config}


def training_config(model: Any, request: dict[str, Any]) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    opt = _optimizer(model, request.get("optimizer"))
    losses = _losses(model, request.get("loss"))
    regs, activity = _regularizers(model)
    metrics = []
    compile_config = getattr(model, "_compile_config", None)
    if compile_config is not None:
        for m in compile_config.config.get("metrics") or []:
            metrics.append(m if isinstance(m, str) else str(getattr(m, "name", m)))
    config = {"optimizer": _serialize_optimizer(opt), "losses": losses, "regularizers": regs, "activity": activity,
              "notes": [], "metrics": metrics, "compiled": getattr(model, "optimizer", None) is not None}
    return config, opt, losses


def config(request: dict[str, Any]) -> dict[str, Any]:
    model = load_compiled(Path(request["source"]), request.get("custom_objects"))
    if getattr(model, "optimizer", None) is None and request.get("optimizer") is None:
        return {"config": None}
    return {"config": training_config(model, request)[0]}


def _probed_layers(model: Any) -> list[tuple[Any, Any, Any]]:
    """``(layer, input, output)`` for each top-level layer with variables that the model's graph calls once with
    one input and one output tensor (a Sequential's layers carry extra nodes from building; the graph's count)."""
    import tensorflow as tf

    nodes = calls_by_layer(model)
    out = []
    for layer in model.layers:
        calls = nodes.get(id(layer), [])
        if not layer.weights or hasattr(layer, "layers") or len(calls) != 1:
            continue
        if _fused(layer) and isinstance(getattr(type(layer), "activation", None), property):
            continue  # an RNN's cell activation: its module's output is not comparable step by step
        ins, outs = tf.nest.flatten(calls[0].input_tensors), tf.nest.flatten(calls[0].output_tensors)
        if len(ins) == 1 and len(outs) == 1:
            out.append((layer, ins[0], outs[0]))
    return out


def _fused(layer: Any) -> bool:
    return getattr(getattr(layer, "activation", None), "__name__", "linear") != "linear"


def _layer_value(layer: Any, inputs: Any, output: Any) -> Any:
    """The layer's output before a fused activation (the torch module returns that; the activation follows)."""
    if not _fused(layer):
        return output.numpy()
    activation, layer.activation = layer.activation, _keras(layer).activations.linear
    try:
        return layer(inputs).numpy()
    finally:
        layer.activation = activation


def _own_error(probe: Any, x: Any, model: Any, names: list[str], layers: list[Any], eager: list[Any]) -> dict[str, Any]:
    """Keras' own rounding error on the training-mode forward: eager (what is compared) against the same call
    traced by ``tf.function`` (``own/out/NAME``, ``own/layer/NAME``; ``migrate.core.compare``'s reference term).
    A LayerNorm over one channel gives beta + 6.75e-5 eagerly and beta traced. Statistics the call updates
    (BatchNorm) are restored, so the training step itself is unchanged."""
    import numpy as np
    import tensorflow as tf

    saved = [v.numpy() for v in model.non_trainable_variables]
    traced = tf.function(lambda inputs: probe(inputs, training=True))(x)
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    gaps = [np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max(initial=0.0)
            for a, b in zip(eager, tf.nest.flatten(traced))]
    keys = [f"own/out/{n}" for n in names] + [f"own/layer/{layer.name}" for layer in layers]
    return {k: np.asarray(g) for k, g in zip(keys, gaps)}


def _summed_duplicates(grads: list[Any]) -> tuple[list[Any], dict[int, tuple[int, float]]]:
    """Sparse gradients (``tf.IndexedSlices``: an Embedding's, a gather's) with one slice per row, the slices of
    a row that occurs several times in the batch summed: what tf.keras' optimizers apply (their
    ``_deduplicate_sparse_grad``), and Keras 3 on JAX or torch and torch itself, whose gradient is dense. Keras 3's
    TensorFlow backend skips that sum, so an optimizer that squares the gradient (Adam's second moment) adds
    sum(g_i**2) for such a row instead of (sum g_i)**2; applied as they come, parity would hold the port to that
    one backend's arithmetic. Returns the gradients and, by position, (repeated rows, largest gap between the two
    squares) for each gradient that had repeats (a dense gradient is returned as is)."""
    import tensorflow as tf

    out, repeated = [], {}
    for i, grad in enumerate(grads):
        if isinstance(grad, tf.IndexedSlices):
            unique, position = tf.unique(grad.indices)
            rows = int(tf.shape(unique)[0])
            if rows < int(tf.shape(grad.indices)[0]):
                summed = tf.math.unsorted_segment_sum(grad.values, position, rows)
                squares = tf.math.unsorted_segment_sum(tf.square(grad.values), position, rows)
                counts = tf.math.unsorted_segment_sum(tf.ones_like(position), position, rows)
                repeated[i] = (int(tf.reduce_sum(tf.cast(counts > 1, tf.int32))),
                               float(tf.reduce_max(tf.abs(squares - tf.square(summed)))))
                grad = tf.IndexedSlices(summed, unique, grad.dense_shape)
        out.append(grad)
    return out, repeated


def _repeated_note(optimizer: str, variables: list[Any], grads: list[Any], repeated: dict[int, tuple[int, float]]) -> str:
    where = "; ".join(f"{_path(variables[i])}: {rows} row(s), largest |sum(g_i**2) - (sum g_i)**2| {gap:.3g} at "
                      f"step 1 (gradient scale {float(_max_abs(grads[i])):.3g})"
                      for i, (rows, gap) in repeated.items())
    return (f"rows repeated in the batch have several sparse gradient slices ({where}); parity applied {optimizer} "
            "to their sum, as tf.keras, Keras 3 on JAX or torch and torch do. Keras 3's TensorFlow backend applies "
            "the slices one by one, so its second moment gets sum(g_i**2) there instead of (sum g_i)**2: training "
            "with it moves those rows differently from all of these")


def _max_abs(grad: Any) -> Any:
    import tensorflow as tf

    values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
    return tf.reduce_max(tf.abs(values))


def train(request: dict[str, Any]) -> dict[str, Any]:
    from migrate.tf.keras_open import random_off

    with random_off():  # keras.random draws give their mean on both sides, like dropout switched off
        return _train(request)


def _train(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    from migrate.training.losses import LOSSES, make_targets

    model = load_compiled(Path(request["source"]), request.get("custom_objects"))
    keras = _keras(model)
    setup, opt, losses = training_config(model, request)
    disabled = []
    for layer in all_layers(model):
        attr = NOISE_LAYERS.get(type(layer).__name__)
        if attr:
            setattr(layer, attr, 0.0)
            disabled.append(layer.name)
        elif type(layer).__name__ in AUGMENTATION:  # off like dropout: their inference behaviour
            object.__setattr__(layer, "call", _inference_call(layer))
            disabled.append(layer.name)
    rng = np.random.default_rng(int(request.get("seed", 0)))
    if request.get("inputs"):
        with np.load(request["inputs"], allow_pickle=False) as data:
            feeds = {n: data[n] for n in input_names(model) if n in data.files}
        missing = [n for n in input_names(model) if n not in feeds]
        if missing:
            raise InputError(f"--inputs has no array for input(s) {', '.join(missing)}")
    else:
        feeds = make_inputs(model, int(request.get("batch", 4)), int(request.get("length", 7)),
                            int(request.get("seed", 0)))
    args = [tf.constant(feeds[n]) for n in input_names(model)]
    x = model_inputs(model, args)
    names = output_names(model)
    if request.get("targets"):
        with np.load(request["targets"], allow_pickle=False) as data:
            targets = {n: data[n] for n in names if n in data.files}
        if len(targets) != len(names):
            raise InputError(f"--targets needs one array per output: {', '.join(names)}")
    else:
        shapes = [model(x, training=False)] if len(names) == 1 else tf.nest.flatten(model(x, training=False))
        targets = {n: make_targets(LOSSES[loss["name"]].targets, list(t.shape), rng)
                   for n, t, loss in zip(names, shapes, losses)}
    probed = _probed_layers(model)
    graph = getattr(model, "_functional", None) or graph_model(model)  # a Sequential's own graph
    probe = keras.Model(graph.inputs, [*graph.outputs, *[o for _, _, o in probed], *[i for _, i, _ in probed]])
    result: dict[str, Any] = {**{f"in/{k}": v for k, v in feeds.items()},
                              **{f"target/{k}": v for k, v in targets.items()},
                              **{f"before/{_path(v)}": v.numpy() for v in model.weights}}
    trainable = model.trainable_variables
    y = [tf.constant(targets[n]) for n in names]
    steps = int(request.get("steps", 1))
    for step in range(steps):
        with tf.GradientTape() as tape:
            flat = tf.nest.flatten(probe(x, training=True) if step == 0 else model(x, training=True))
            preds = list(flat[:len(names)])
            total = model.compute_loss(x=x, y=y if len(y) > 1 else y[0], y_pred=preds if len(preds) > 1
                                       else preds[0], training=True) if getattr(model, "compiled", False) else None
            if total is None or request.get("loss") is not None:
                terms = [loss["weight"] * keras.losses.get({"class_name": LOSS_CLASSES[loss["name"]],
                                                            "config": loss["config"]})(t, p)
                         for loss, t, p in zip(losses, y, preds) if loss["name"] != "add_loss"]
                total = tf.add_n(terms) if terms else tf.constant(0.0)
                total = total + _added(model) if model.losses else total
            reg = _added(model) if model.losses else tf.constant(0.0)
        grads, repeated = _summed_duplicates(tape.gradient(total, trainable))
        if step == 0 and repeated and type(opt).__name__ != "SGD":
            setup["notes"].append(_repeated_note(type(opt).__name__, trainable, grads, repeated))
        if step == 0:
            result.update({f"out/{n}": t.numpy() for n, t in zip(names, preds)})
            values, ins = flat[len(names):len(names) + len(probed)], flat[len(names) + len(probed):]
            result.update({f"layer/{layer.name}": _layer_value(layer, i, t)
                           for (layer, _, _), i, t in zip(probed, ins, values)})
            result.update({f"grad/{_path(v)}": tf.convert_to_tensor(g).numpy()  # Embedding: IndexedSlices
                           for v, g in zip(trainable, grads) if g is not None})
            result["loss_total"] = np.asarray(float(total))
            result["loss_reg"] = np.asarray(float(reg))
            result.update(_own_error(probe, x, model, names, [layer for layer, _, _ in probed], flat))
        opt.apply_gradients(zip(grads, trainable))
    result.update({f"after/{_path(v)}": v.numpy() for v in model.weights})
    np.savez(request["result_npz"], **result)
    layers = [{"name": layer.name, "weights": [_path(v) for v in layer.weights]} for layer, _, _ in probed]
    order = [_path(v) for v in model.weights]
    return {"config": setup, "layers": layers, "order": order, "disabled": disabled,
            "inputs": input_names(model), "outputs": names}


def _added(model: Any) -> Any:
    """``model.losses`` (regularisers, ``add_loss`` terms) added as Keras' ``compute_loss`` adds them: each summed."""
    import tensorflow as tf

    return tf.add_n([tf.reduce_sum(loss) for loss in model.losses])


def train_on_batch(request: dict[str, Any]) -> dict[str, Any]:
    """``model.train_on_batch`` on the compiled model (dropout-family layers off): its loss and the weights after."""
    import numpy as np

    model = load_compiled(Path(request["source"]), request.get("custom_objects"))
    for layer in all_layers(model):
        if NOISE_LAYERS.get(type(layer).__name__):
            setattr(layer, NOISE_LAYERS[type(layer).__name__], 0.0)
    with np.load(request["inputs"], allow_pickle=False) as data:
        feeds = [data[n] for n in input_names(model)]
        targets = [data[f"target/{n}"] for n in output_names(model)]
    loss = model.train_on_batch(model_inputs(model, feeds), targets if len(targets) > 1 else targets[0])
    loss = float(np.ravel(loss)[0])
    np.savez(request["result_npz"], loss=np.asarray(loss), **{f"after/{v.path}": v.numpy() for v in model.weights})
    return {"loss": loss}


def loss_values(request: dict[str, Any]) -> dict[str, Any]:
    """Keras' value of each ``{"name", "config", "case"}`` loss on the arrays ``case/y_true``, ``case/y_pred``."""
    import keras
    import numpy as np

    with np.load(request["arrays"], allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    values = []
    for loss in request["losses"]:
        fn = keras.losses.get({"class_name": LOSS_CLASSES[loss["name"]], "config": loss["config"]})
        values.append(float(fn(arrays[f"{loss['case']}/y_true"], arrays[f"{loss['case']}/y_pred"])))
    return {"values": values}


def backend_run(request: dict[str, Any]) -> dict[str, Any]:
    """The TensorFlow side of ``--keras-backend torch``: ``keras_torch_worker.backend_run`` under TensorFlow.

    It first writes the batch both backends use (``request["batch_npz"]``): the user's arrays, or seeded
    inputs and targets that fit the loss.
    """
    import numpy as np

    from migrate.tf.keras_torch_worker import backend_run as run
    from migrate.training.losses import LOSSES, make_targets

    model = load_compiled(Path(request["source"]), request.get("custom_objects"))
    batch: dict[str, Any] = {}
    if request.get("user_inputs"):
        with np.load(request["user_inputs"], allow_pickle=False) as data:
            missing = [n for n in input_names(model) if n not in data.files]
            if missing:
                raise InputError(f"--inputs has no array for input(s) {', '.join(missing)}")
            batch.update({f"in/{n}": data[n] for n in input_names(model)})
    else:
        feeds = make_inputs(model, int(request.get("batch", 4)), 7, int(request.get("seed", 0)))
        batch.update({f"in/{k}": v for k, v in feeds.items()})
    if request.get("train"):
        names = output_names(model)
        if request.get("user_targets"):
            with np.load(request["user_targets"], allow_pickle=False) as data:
                if any(n not in data.files for n in names):
                    raise InputError(f"--targets needs one array per output: {', '.join(names)}")
                batch.update({f"target/{i}": data[n] for i, n in enumerate(names)})
        else:
            losses = _losses(model, request.get("loss"))
            feeds = [batch[f"in/{n}"] for n in input_names(model)]
            outs = model(feeds if len(feeds) > 1 else feeds[0], training=False)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            rng = np.random.default_rng(int(request.get("seed", 0)))
            batch.update({f"target/{i}": make_targets(LOSSES[loss["name"]].targets, list(t.shape), rng)
                          for i, (t, loss) in enumerate(zip(outs, losses))})
    np.savez(request["batch_npz"], **batch)
    return dict(run(dict(request, inputs=request["batch_npz"])), outputs_named=output_names(model))


COMMANDS = {"backend_run": backend_run, "config": config, "train": train, "train_on_batch": train_on_batch, "losses": loss_values}


if __name__ == "__main__":
    from migrate.tf.protocol import serve

    serve(COMMANDS)
