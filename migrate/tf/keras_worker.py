"""The Keras side of ``tf2torch port``, run as a child process: ``python -m migrate.tf.keras_worker REQUEST.json``.

Like ``migrate.tf.export_worker`` it imports Keras/TensorFlow and never torch; it talks to the parent through files:

* ``describe``   - load SOURCE, write ``graph.json`` (layers, their configs, every call's inbound tensors,
  nested models, inputs/outputs), ``weights.npz`` (every variable, no pickle) and ``reference.npz``
  (seeded inputs and ``model(x, training=False)`` at each requested batch size and sequence length).
* ``predict``    - run the model on the arrays of ``.npz`` files (``training`` true or false).
* ``train_step`` - with every dropout-family layer made the identity, one forward pass in training mode,
  mean-squared-error loss against given targets, one SGD step; writes the outputs, the loss and every
  variable after the step (the reference for the torch module's ``train()`` semantics).

Request and answer follow ``migrate.tf.export_worker`` (``{"ok": false, "exit_code": 1|2, "message": ...}``).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from migrate.core.errors import ConversionError, InputError, first_line
from migrate.tf.source_kind import port_source_kind
from migrate.tf.tf_import import import_tf

#: Layers whose training-time noise the train-step reference switches off (rate/stddev set to 0).
NOISE_LAYERS = {"Dropout": "rate", "SpatialDropout1D": "rate", "SpatialDropout2D": "rate",
                "SpatialDropout3D": "rate", "GaussianDropout": "rate", "GaussianNoise": "stddev",
                "AlphaDropout": "rate"}
MODEL_CLASSES = {"Functional", "Sequential", "Model"}


def load_keras(source: Path, custom_objects: list[dict[str, Any]] | None = None) -> Any:
    """The Keras model in SOURCE (.keras, .h5 with the user's custom objects; a Keras-2 SavedModel through
    tf_keras)."""
    kind = port_source_kind(source)
    import_tf()
    if kind != "saved_model":
        from migrate.tf import keras_source
        return keras_source.load(source, custom_objects or [])
    try:
        import tf_keras
    except ImportError as exc:
        raise InputError(f"{source}: a Keras 2 SavedModel needs the tf_keras package; install it with: "
                          "pip install tf-keras") from exc
    try:
        return tf_keras.models.load_model(str(source), compile=False)
    except Exception as exc:  # tf_keras raises many types for a bad SavedModel
        raise InputError(f"{source}: not a readable Keras 2 SavedModel ({type(exc).__name__}: "
                          f"{first_line(exc, 300)})") from exc


def _functional(model: Any) -> bool:
    """A Functional model, possibly of a subclass built functionally (keras-hub backbones)."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def graph_config(model: Any) -> dict[str, Any]:
    """The layer-graph config: Functional's own, also where a subclass's get_config returns its arguments."""
    if not _functional(model):
        return model.get_config()
    import keras
    from keras.src.models import functional
    from keras.src.saving import serialization_lib

    like = functional.functional_like_constructor
    serialize = serialization_lib.serialize_keras_object

    def tolerant(obj: Any) -> Any:
        """A custom layer whose ``get_config`` cannot serialise its constructor arguments (keras-hub's ViT
        ``MLP``) or fails (keras-hub 0.32's ``LlamaTransformerDecoder`` reads an attribute it never sets) still
        has a place in the graph: the port opens it up and never reads its config."""
        try:
            return serialize(obj)
        except (NotImplementedError, AttributeError):
            if not (isinstance(obj, keras.layers.Layer) and custom_layer(obj)):
                raise
            return {"module": type(obj).__module__, "class_name": type(obj).__name__,
                    "config": {"name": obj.name, "trainable": obj.trainable}, "registered_name": None}

    functional.functional_like_constructor = lambda cls: True  # the graph, whatever the subclass's constructor
    serialization_lib.serialize_keras_object = tolerant
    try:
        return functional.Functional.get_config(model)
    finally:
        functional.functional_like_constructor = like
        serialization_lib.serialize_keras_object = serialize



def graph_model(model: Any) -> Any:
    """``model`` itself, or for a subclassed Model a Functional one whose only layer is it (so it has inputs,
    outputs and a layer graph; the port opens the subclass up like any custom layer)."""
    if type(model).__name__ in MODEL_CLASSES - {"Model"} or not custom_layer(model) or _functional(model):
        return model
    import keras

    build = model.get_build_config() or {}
    shapes = build.get("input_shape") or build.get("shapes_dict")
    if shapes is None:
        raise ConversionError(f"model {model.name!r} is a subclassed {type(model).__name__} that was saved "
                              "without being built, so its input shape is unknown; call it once before saving")
    params = [p for p in inspect.signature(model.call).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if isinstance(shapes, dict):
        names = [k.removesuffix("_shape") for k in shapes]
        inputs = [keras.Input(batch_shape=tuple(s), name=n) for n, s in zip(names, shapes.values())]
    else:
        inputs = [keras.Input(batch_shape=tuple(shapes), name=params[0].name if params else "inputs")]
    outputs = model(*inputs)
    return keras.Model(inputs, outputs, name=model.name)


_GRAPHS: dict[int, Any] = {}
#: registered names (``keras_hub>CachedMultiHeadAttention``) of library classes the port has an emitter for:
#: described like Keras' own layers (config and weights), not opened up (set by the ``describe`` request)
EMITTED: set[str] = set()


def _graph(model: Any) -> Any:
    """:func:`graph_model` once per model (input and output names of a subclassed Model come from it)."""
    if id(model) not in _GRAPHS:
        _GRAPHS[id(model)] = graph_model(model)
    return _GRAPHS[id(model)]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _tensor_ref(arg: Any) -> Any:
    """Config args -> the same structure with tensors as ``{"tensor": "layer:node:index", ...}``."""
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        name, node, index = arg["config"]["keras_history"]
        return {"tensor": f"{name}:{node}:{index}", "shape": list(arg["config"]["shape"]),
                "dtype": arg["config"]["dtype"]}
    if isinstance(arg, (list, tuple)):
        if len(arg) in (3, 4) and isinstance(arg[0], str) and isinstance(arg[1], int):  # Keras 2 history
            return {"tensor": f"{arg[0]}:{arg[1]}:{arg[2]}", "shape": None, "dtype": None}
        return [_tensor_ref(a) for a in arg]
    if isinstance(arg, dict):
        return {k: _tensor_ref(v) for k, v in arg.items()}
    return arg


def _calls(layer_config: dict[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for node in layer_config.get("inbound_nodes", []):
        if isinstance(node, dict):
            calls.append({"args": _tensor_ref(list(node.get("args", []))), "kwargs": _tensor_ref(node.get("kwargs", {}))})
        else:  # Keras 2: a list of [layer, node, index, kwargs] for the inputs
            refs = [_tensor_ref(entry[:3]) for entry in node]
            kwargs = node[0][3] if node and len(node[0]) > 3 else {}
            calls.append({"args": [refs[0] if len(refs) == 1 else refs], "kwargs": _tensor_ref(kwargs)})
    return calls


def _endpoints(spec: Any) -> list[str]:
    if isinstance(spec, dict):  # dict outputs: Keras flattens them (model.outputs, nest.flatten) by sorted key
        spec = [spec[key] for key in sorted(spec)]
    spec = spec if spec and isinstance(spec[0], (list, tuple)) else [spec]
    return [f"{name}:{node}:{index}" for name, node, index in spec]


def _weights(layer: Any, arrays: dict[str, Any]) -> list[dict[str, Any]]:
    """Every variable of ``layer``, stored under a fresh key; names are relative to the layer (its name, or
    its path inside a custom layer: ``transformer_block/dense_3/kernel`` -> ``kernel``)."""
    trainable_ids = {id(w) for w in layer.trainable_weights}
    out = []
    prefixes = [p + "/" for p in (getattr(layer, "path", None), layer.name) if p]
    for var in layer.weights:
        path = getattr(var, "path", None) or var.name.split(":")[0]
        name = next((path[len(p):] for p in prefixes if path.startswith(p)), path)
        key = f"w{len(arrays)}"
        arrays[key] = var.numpy()
        out.append({"name": name, "path": path, "key": key, "shape": list(arrays[key].shape),
                    "dtype": str(arrays[key].dtype), "trainable": id(var) in trainable_ids})
    return out


def custom_layer(layer: Any) -> bool:
    """A layer whose ``call`` is the user's Python (a custom class, a subclassed Model, a Lambda): the port
    opens it up (``migrate.tf.keras_open``); Keras' own layer classes have emitters."""
    module = type(layer).__module__
    return type(layer).__name__ == "Lambda" or not module.startswith(("keras.", "tf_keras."))


def describe_model(model: Any, arrays: dict[str, Any], attrs: dict[int, str] | None = None,
                   input_masks: list[Any] | None = None) -> dict[str, Any]:
    """The layer graph of a Functional or Sequential model (nested models recursively); ``attrs`` names the
    layers of an opened custom layer by the attribute that holds them (``self.att``); ``input_masks`` are the
    masks (refs, None where none) that the outer graph hands a nested model's inputs."""
    functional = getattr(model, "_functional", None) or model
    mask_inputs: list[str] = []
    if input_masks and any(m is not None for m in input_masks):
        functional, mask_inputs = _with_input_masks(functional, input_masks)
    outputs = list(getattr(functional, "outputs", None) or [])
    original = functional
    functional, masks, output_masks = _with_masks(functional, bool(mask_inputs))
    config = graph_config(functional)
    if functional is not original:
        config["output_layers"] = config["output_layers"][:len(outputs)]  # the masks were extra outputs
    if "layers" not in config or "input_layers" not in config:
        raise ConversionError(f"model {model.name!r} is a subclassed {type(model).__name__} whose call() is Python "
                          "code, so it has no layer graph to port; use 'tf2torch convert' for an inference "
                          "program")
    layers = []
    for layer_config in config["layers"]:
        name = layer_config.get("name") or layer_config["config"]["name"]
        entry = {"name": name, "class_name": layer_config["class_name"], "module": layer_config.get("module"),
                 "registered_name": layer_config.get("registered_name"),
                 "config": _jsonable(layer_config.get("config", {})), "trainable": True,
                 "calls": _calls(layer_config), "weights": []}
        if entry["module"] == "migrate.tf.keras_worker":  # a creation op recorded by opening a custom layer: ops.arange, ...
            entry.update(class_name=entry["config"]["fn"], module="keras.src.ops.creation")
        if (entry["module"] or "").startswith(("keras.src.ops", "keras.ops")):
            layers.append(entry)  # a keras.ops call (x + 3.0): an operation, not a layer; no weights
            continue
        layer = functional.get_layer(name)
        entry["trainable"] = bool(layer.trainable)
        entry["attr"] = attrs.get(id(layer)) if attrs else None
        if entry["class_name"] in MODEL_CLASSES or hasattr(layer, "_functional") or _functional(layer) or (
                hasattr(layer, "layers") and hasattr(layer, "get_layer") and "layers" in layer.get_config()):
            entry["graph"] = describe_model(layer, arrays, input_masks=_call_masks(entry["calls"], name))
            entry["weights"] = []
        elif custom_layer(layer) and entry["registered_name"] not in EMITTED:
            from migrate.tf.keras_open import merged_call, open_layer

            for call, refs in zip(entry["calls"], masks.get(id(layer), [])):
                _add_masks(call, refs)
            entry["open"] = open_layer(layer, merged_call(entry["calls"]), arrays, describe_model)  # one class, every call
            entry["weights"] = _weights(layer, arrays)  # for an emitter the user registers for the class
        else:
            entry["weights"] = _weights(layer, arrays)
        layers.append(entry)
    _fill_shapes(functional, layers)
    return {"name": model.name, "class_name": type(model).__name__, "layers": layers,
            "inputs": _endpoints(config["input_layers"]),
            "outputs": _nested_outputs(functional, _endpoints(config["output_layers"])),
            "output_shapes": [[None if d is None else int(d) for d in t.shape] for t in outputs or functional.outputs],
            **({"output_masks": output_masks} if output_masks else {}),
            **({"mask_inputs": mask_inputs} if mask_inputs else {})}


def _nested_outputs(functional: Any, endpoints: list[str]) -> list[str]:
    """Keras 3's ``output_layers`` numbers a nested Functional's calls from 1 (its node 0 is its own graph's)
    while the calls that read its outputs number them from 0: an output that a nested model returns, by the
    call that computes it as the graph's calls are numbered."""
    from keras.src.models.functional import Functional

    nodes = {id(n) for depth in getattr(functional, "_nodes_by_depth", {}).values() for n in depth}
    out = []
    for end, tensor in zip(endpoints, getattr(functional, "outputs", None) or []):
        op, index, k = getattr(tensor, "_keras_history", (None, 0, 0))
        if not isinstance(op, Functional):
            out.append(end)
            continue
        kept = [i for i, n in enumerate(op._inbound_nodes) if id(n) in nodes]
        out.append(f"{op.name}:{kept.index(index)}:{k}" if index in kept else end)
    return out + endpoints[len(out):]


def _call_masks(calls: list[dict[str, Any]], name: str) -> list[Any] | None:
    """The masks Keras hands a nested model's inputs (its calls' ``mask`` keyword, one per input), or None.
    Every call must mask the same inputs: the nested class has one forward."""
    patterns = [_flat_masks(call["kwargs"].get("mask")) for call in calls]
    if any([m is None for m in p] != [m is None for m in patterns[0]] for p in patterns[1:]):
        raise ConversionError(f"nested model {name!r} is called both with and without a Keras mask on the same "
                              "input; use 'tf2torch convert' for an inference program")
    return patterns[0] if patterns else None


def _flat_masks(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [m for v in value for m in _flat_masks(v)]
    if isinstance(value, dict) and "tensor" not in value:
        return [m for key in sorted(value) for m in _flat_masks(value[key])]
    return [value]


def _with_input_masks(functional: Any, masks: list[Any]) -> tuple[Any, list[str]]:
    """A nested model whose inputs Keras hands masks (the padding of an outer ``compute_mask``): its layers
    traced again from fresh inputs that carry masks, each mask one more input (``<input>_mask``), as
    ``Functional.call`` sets them at run time; the layers, and so the weights, are the model's own."""
    import keras
    from keras.src.backend import set_keras_mask

    inputs = keras.tree.flatten(functional._inputs_struct)
    if len(inputs) != len(masks):
        raise ConversionError(f"nested model {functional.name!r}: {len(masks)} masks for {len(inputs)} inputs; "
                              "use 'tf2torch convert' for an inference program")
    fresh = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history[0].name) for t in inputs]
    extra, names = [], []
    for tensor, mask in zip(fresh, masks):
        if mask is not None:
            names.append(f"{tensor._keras_history[0].name}_mask")
            extra.append(keras.Input(batch_shape=mask["shape"], dtype=mask["dtype"], name=names[-1]))
            set_keras_mask(tensor, extra[-1])
    def call(op: Any, *args: Any, **kwargs: Any) -> Any:
        """The recorded call, with the mask of its one tensor argument where it was recorded without one, as
        Keras fills it in at run time."""
        tensors = [t for t in keras.tree.flatten([args, kwargs]) if isinstance(t, keras.KerasTensor)]
        if getattr(op, "_call_has_mask_arg", False) and kwargs.get("mask") is None and len(tensors) == 1:
            kwargs["mask"] = getattr(tensors[0], "_keras_mask", None)
        return op(*args, **kwargs)

    outputs = functional._run_through_graph(fresh, call_fn=call)  # Functional.call would convert the inputs
    return keras.Model([*fresh, *extra], outputs, name=functional.name), names


def _with_masks(functional: Any, masked_inputs: bool = False) -> tuple[Any, dict[int, list[list[Any] | None]],
                                                                    list[Any] | None]:
    """The Keras masks that the tensor arguments of each custom layer's calls carry (``_keras_mask``, which
    Keras hands to sublayers inside ``call``), as tensor ids of the graph: ``id(layer)`` -> per call, one
    entry per tensor argument (None: no mask); and the masks of the model's outputs (Keras' compiled loss
    averages over the steps they keep), or None. A mask no layer of the graph consumes (the decoder's
    ``compute_mask`` when its ``call`` takes two tensors) is not in the graph's config; the model is then
    rebuilt with those masks as extra outputs, so the ops that compute them are described too. A nested model
    handed masks (``masked_inputs``) reports its outputs' masks even where no custom layer reads one."""
    nodes = [n for depth in getattr(functional, "_nodes_by_depth", {}).values() for n in depth]
    if not nodes or not all(hasattr(n, "arguments") for n in nodes):
        return functional, {}, None
    custom = [n for n in nodes if isinstance(n.operation, _layer_type()) and custom_layer(n.operation)]
    found = [m for n in custom for m in _arg_masks(n) if m is not None]
    if not found and not masked_inputs:
        return functional, {}, None
    ends = [getattr(t, "_keras_mask", None) for t in functional.outputs]
    found += [m for m in ends if m is not None]
    known = {id(op) for op in functional.operations}
    missing = [m for m in found if id(m._keras_history[0]) not in known]
    if missing and not isinstance(getattr(functional, "_outputs_struct", None), dict):
        import keras

        outputs = keras.tree.flatten(functional._outputs_struct)
        unique = list({id(m): m for m in missing}.values())
        names = {op.name for op in functional.operations}
        for mask in unique:  # an op Keras named like one in the graph (a second ``not_equal``) gets its own name
            op = mask._keras_history[0]
            base, n = op.name, 1
            while op.name in names:
                op.name, n = f"{base}_mask{n}", n + 1
            names.add(op.name)
        try:
            functional = keras.Model(functional._inputs_struct, [*outputs, *unique], name=functional.name)
        except ValueError:  # a mask computed outside this graph (a nested model's own): no masks, as before
            return functional, {}, None
        nodes = [n for depth in functional._nodes_by_depth.values() for n in depth]
    node_ids = {id(n) for n in nodes}

    def ref(mask: Any) -> Any:
        op, index, k = mask._keras_history
        kept = [i for i, n in enumerate(op._inbound_nodes) if id(n) in node_ids]
        return {"tensor": f"{op.name}:{kept.index(index) if index in kept else index}:{k}",
                "shape": [None if d is None else int(d) for d in mask.shape], "dtype": str(mask.dtype)}

    by_layer: dict[int, list[list[Any] | None]] = {}
    for layer in {id(n.operation): n.operation for n in custom}.values():
        calls = [n for n in layer._inbound_nodes if id(n) in node_ids]
        by_layer[id(layer)] = [[None if m is None else ref(m) for m in _arg_masks(n)]
                               if any(m is not None for m in _arg_masks(n)) else None for n in calls]
    return functional, by_layer, [None if m is None else ref(m) for m in ends] if any(m is not None for m in ends) else None


def _layer_type() -> Any:
    import keras

    return keras.layers.Layer


def _arg_masks(node: Any) -> list[Any]:
    """Per tensor of a call node's positional arguments, the mask it carries (None where it has none). A
    one-tensor call that also names its ``mask`` (Keras filled it in from that tensor when the model was built)
    gets that tensor where the two are the same op on the same inputs (loading a model computes them twice)."""
    import keras

    tensors = [t for t in keras.tree.flatten(node.arguments.args) if isinstance(t, keras.KerasTensor)]
    masks = [getattr(t, "_keras_mask", None) for t in tensors]
    named = node.arguments.kwargs.get("mask")
    if len(masks) == 1 and isinstance(named, keras.KerasTensor) and masks[0] is not None and _same_op(masks[0], named):
        masks = [named]
    return masks


def _same_op(a: Any, b: Any) -> bool:
    """Two tensors computed by the same kind of operation, with the same configuration, from the same inputs."""
    (op_a, node_a, _), (op_b, node_b, _) = a._keras_history, b._keras_history
    if a is b or (op_a is op_b and node_a == node_b):
        return True
    if type(op_a) is not type(op_b) or not hasattr(op_a, "get_config"):
        return False
    try:
        config_a, config_b = dict(op_a.get_config()), dict(op_b.get_config())
    except NotImplementedError:
        return False
    config_a.pop("name", None), config_b.pop("name", None)
    args_a, args_b = op_a._inbound_nodes[node_a].arguments, op_b._inbound_nodes[node_b].arguments
    return config_a == config_b and _same_args((args_a.args, args_a.kwargs), (args_b.args, args_b.kwargs))


def _same_args(a: Any, b: Any) -> bool:
    import keras

    if isinstance(a, keras.KerasTensor) or isinstance(b, keras.KerasTensor):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_args(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_args(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # an array or tensor argument: not compared, so not the same
        return False


def _add_masks(call: dict[str, Any], refs: list[Any] | None) -> None:
    """List the masks of a call's tensor arguments under ``__masks__`` (the last keyword, so the port passes
    them after the call's own tensors); one that is already a tensor of the call is ``"same:<id>"``."""
    from migrate.tf.keras_open import MASKS, SAME, tensor_refs

    if not refs:
        return
    present = {r["tensor"] for r in tensor_refs([call["args"], call["kwargs"]])}
    listed: list[Any] = []
    for r in refs:
        listed.append(SAME + r["tensor"] if r is not None and r["tensor"] in present else r)
        if r is not None:
            present.add(r["tensor"])
    call["kwargs"][MASKS] = listed


def _fill_shapes(functional: Any, layers: list[dict[str, Any]]) -> None:
    """Keras 2 configs name a call's input tensors without their shapes: ask the producing layer."""
    def fill(value: Any) -> None:
        if isinstance(value, dict) and "tensor" in value and value.get("shape") is None:
            name, node, index = value["tensor"].rsplit(":", 2)
            shape = functional.get_layer(name).get_output_shape_at(int(node))
            shape = shape[int(index)] if isinstance(shape, list) else shape
            value["shape"] = [None if d is None else int(d) for d in shape]
        elif isinstance(value, (list, dict)):
            for v in value.values() if isinstance(value, dict) else value:
                fill(v)

    for entry in layers:
        fill(entry["calls"])


def _int_bound(model: Any) -> int:
    """Integer test inputs stay below every Embedding's vocabulary."""
    bounds = [layer.input_dim for layer in all_layers(model) if _embedding(layer)]
    return min(bounds, default=10)


def all_layers(model: Any) -> list[Any]:
    """Every layer inside ``model``, recursively (those a custom layer holds as attributes too)."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None and (custom_layer(model) or any(custom_layer(l) for l in getattr(model, "layers", []))):
        return list(flatten(include_self=False, recursive=True))
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(all_layers(layer))
        for inner in ("layer", "forward_layer", "backward_layer"):
            if hasattr(layer, inner) and getattr(layer, inner) is not None:
                out.append(getattr(layer, inner))
    return out


def io_specs(model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Names, dtypes and shapes of the model's inputs and outputs, in call order."""
    def spec(tensor: Any, name: str) -> dict[str, Any]:
        return {"name": name, "dtype": str(getattr(tensor.dtype, "name", tensor.dtype)),
                "shape": [None if d is None else int(d) for d in tensor.shape]}

    graph = _graph(model)
    inputs = [spec(t, n) for t, n in zip(graph.inputs, input_names(model))]
    for entry in inputs:
        if entry["dtype"].startswith("float") and token_ids(model, entry):
            entry["token_ids"] = _int_bound(model)  # whole numbers below this, held as floats
    outputs = [spec(t, n) for t, n in zip(graph.outputs, output_names(model))]
    return inputs, outputs


def model_inputs(model: Any, args: list[Any]) -> Any:
    """What to call ``model`` with, given one array per input in :func:`input_names` order: the structure its
    inputs were built with (a dict of named inputs for keras-hub's BERT, a list, or the one tensor)."""
    graph = _graph(model)
    struct = getattr(graph, "_inputs_struct", None)
    if isinstance(struct, dict) and len(args) == len(graph.inputs):
        by_id = {id(t): a for t, a in zip(graph.inputs, args)}
        if all(id(t) in by_id for t in struct.values()):
            return {key: by_id[id(t)] for key, t in struct.items()}
    return args if len(args) > 1 else args[0]


def input_names(model: Any) -> list[str]:
    return [getattr(t, "name", f"input_{i}").split(":")[0] for i, t in enumerate(_graph(model).inputs)]


def output_names(model: Any) -> list[str]:
    functional = getattr(model, "_functional", None) or _graph(model)
    spec = graph_config(functional)["output_layers"]
    if isinstance(spec, dict):
        return sorted(spec)
    names = [t.split(":")[0] for t in _endpoints(spec)]
    return [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]


def _padding_value(model: Any) -> float | None:
    """What marks a padded step (0 for ``Embedding(mask_zero=True)``, ``Masking``'s mask_value), if anything."""
    for layer in all_layers(model):
        if type(layer).__name__ == "Masking":
            return float(layer.mask_value)
        if type(layer).__name__ == "Embedding" and layer.mask_zero:
            return 0.0
    return None


def token_ids(model: Any, spec: dict[str, Any]) -> bool:
    """A float (batch, length) input of a model with an Embedding: token ids held as floats, as Keras examples
    write them (``layers.Input(shape=(maxlen,))``); test inputs are then whole numbers below the vocabulary."""
    return len(spec["shape"]) == 2 and any(_embedding(layer) for layer in all_layers(model))


def _embedding(layer: Any) -> bool:
    """An Embedding or a subclass of it (keras.layers.ReversibleEmbedding, keras-hub's token embeddings)."""
    import keras

    return isinstance(layer, keras.layers.Embedding)


def padded_steps(batch: int, length: int) -> list[list[int]]:
    """Per sequence, the steps made padding: inside and at the end, at the start and inside, trailing."""
    patterns = [[1, length - 1], [0, length // 2], [length - 2, length - 1]]
    return [patterns[i % 3] for i in range(batch)]


def calls_by_layer(model: Any) -> dict[int, list[Any]]:
    """``id(layer)`` -> the nodes of the model's graph that call it (a Sequential's layers carry extra nodes from
    building, so the graph's own count is the one that tells a layer called once)."""
    functional = getattr(model, "_functional", None) or model
    nodes: dict[int, list[Any]] = {}
    for depth_nodes in getattr(functional, "_nodes_by_depth", {}).values():
        for node in depth_nodes:
            nodes.setdefault(id(getattr(node, "operation", None) or node.layer), []).append(node)
    return nodes


def make_inputs(model: Any, batch: int, length: int, seed: int, pixels: bool = False) -> dict[str, Any]:
    """Seeded inputs: floats standard normal, integers in [1, smallest vocabulary); for a masked model,
    sequences are padded (steps set to the padding value) inside and at both ends. With ``pixels``, an image
    input (float, N,H,W,C with 1-4 channels) gets pixel values in [0, 255), as convert's parity draws them:
    keras.applications-style models normalise inside, and N(0,1) there is far from what they were built for.
    The labels a CTC or sparse loss layer reads are drawn in its class range (a CTC loss refuses others)."""
    import numpy as np

    from migrate.tf import keras_source

    rng = np.random.default_rng(seed)
    pad = _padding_value(model)
    implied = keras_source.implied_inputs(model) if _functional(model) else {}  # Keras 3 graphs (tf_keras: none)
    labels = {name: spec for name, spec in implied.items() if spec["reason"].startswith("labels of the")}
    feeds = {}
    for spec in io_specs(model)[0]:
        shape = [batch if i == 0 else (length if d is None else d) for i, d in enumerate(spec["shape"])]
        if spec["name"] in labels:
            label = labels[spec["name"]]
            array = rng.integers(label["low"], label["high"], shape).astype(spec["dtype"])
        elif "int" in spec["dtype"] or token_ids(model, spec):
            array = rng.integers(0 if pad is None else 1, _int_bound(model), shape).astype(spec["dtype"])
        elif pixels and len(shape) == 4 and 1 <= shape[3] <= 4:
            array = rng.uniform(0.0, 255.0, shape).astype(spec["dtype"])
        else:
            array = rng.standard_normal(shape).astype(spec["dtype"])
        if pad is not None and len(shape) >= 2 and spec["shape"][1] is None:
            for row, steps in enumerate(padded_steps(batch, length)):
                array[row, steps] = pad
        feeds[spec["name"]] = array
    return feeds


def run_model(model: Any, feeds: dict[str, Any], training: bool) -> dict[str, Any]:
    """``model(x, training=...)`` with inputs in the model's order; outputs by name as numpy arrays."""
    import tensorflow as tf

    args = [tf.constant(feeds[n]) for n in input_names(model)]
    result = model(model_inputs(model, args), training=training)
    flat = tf.nest.flatten(result)
    return {name: t.numpy() for name, t in zip(output_names(model), flat)}


def added_losses(model: Any) -> Any:
    """The ``add_loss`` terms of the model's last call (activity regularisers' included, no weight
    regulariser), each summed and added as Keras' ``compute_loss`` adds them; None where there are none."""
    import numpy as np

    if not hasattr(model, "_get_own_losses"):  # tf_keras: no add_loss terms the port opens up
        return None
    terms = [t for layer in model._flatten_layers(include_self=True) for t in layer._get_own_losses()]
    return np.asarray(sum(float(np.sum(np.asarray(t))) for t in terms), "float32") if terms else None


def describe(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    source = Path(request["source"])
    EMITTED.update(request.get("emitters", []))
    model = graph_model(load_keras(source, request.get("custom_objects")))
    arrays: dict[str, Any] = {}
    graph = describe_model(model, arrays)
    inputs, outputs = io_specs(model)
    import keras

    graph.update({"io_inputs": inputs, "io_outputs": outputs, "source_kind": port_source_kind(source),
                  "versions": {"keras": keras.__version__, "tensorflow": import_tf().__version__}})
    Path(request["graph"]).write_text(json.dumps(graph, indent=1))
    np.savez(request["weights"], **arrays)
    reference = {}
    dynamic = any(d is None for spec in inputs for d in spec["shape"][1:])
    cases = [(b, t) for b in request.get("batches", [1, 3]) for t in (request.get("lengths", [7, 5]) if dynamic else [7])]
    from migrate.tf.keras_open import random_off

    for i, (batch, length) in enumerate(cases):
        feeds = make_inputs(model, batch, length, seed=i, pixels=True)
        reference.update({f"case{i}/in/{k}": v for k, v in feeds.items()})
        with random_off():
            reference.update({f"case{i}/out/{k}": v for k, v in run_model(model, feeds, training=False).items()})
        added = added_losses(model)
        if added is not None:
            reference[f"case{i}/loss/added"] = added
    np.savez(request["reference"], **reference)
    return {"cases": len(cases)}


def predict(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    model = graph_model(load_keras(Path(request["source"]), request.get("custom_objects")))
    from migrate.tf.keras_open import random_off

    for src, dst in zip(request["inputs"], request["outputs"]):
        with np.load(src) as data:
            feeds = {k: data[k] for k in data.files}
        with random_off():  # keras.random draws give their mean, as the port's RandomDraw with p = 0
            np.savez(dst, **run_model(model, feeds, training=bool(request.get("training", False))))
    return {}


def train_step(request: dict[str, Any]) -> dict[str, Any]:
    """One SGD step on ``mean((y - target)**2)`` summed over outputs, dropout-family layers off."""
    import numpy as np
    import tensorflow as tf

    model = load_keras(Path(request["source"]), request.get("custom_objects"))
    for layer in all_layers(model):
        attr = NOISE_LAYERS.get(type(layer).__name__)
        if attr:
            setattr(layer, attr, 0.0)
    with np.load(request["inputs"]) as data:
        feeds = {k: data[k] for k in data.files if not k.startswith("target/")}
        targets = {k[len("target/"):]: data[k] for k in data.files if k.startswith("target/")}
    args = [tf.constant(feeds[n]) for n in input_names(model)]
    with tf.GradientTape() as tape:
        flat = tf.nest.flatten(model(model_inputs(model, args), training=True))
        outs = dict(zip(output_names(model), flat))
        loss = tf.add_n([tf.reduce_mean(tf.square(outs[k] - targets[k])) for k in outs])
    grads = tape.gradient(loss, model.trainable_weights)
    lr = float(request.get("lr", 0.1))
    for var, grad in zip(model.trainable_weights, grads):
        if grad is not None:
            var.assign_sub(lr * tf.convert_to_tensor(grad))
    result = {f"out/{k}": v.numpy() for k, v in outs.items()}
    result.update({f"weight/{getattr(w, 'path', w.name)}": w.numpy() for w in model.weights})
    result["loss"] = np.asarray(float(loss))
    np.savez(request["result_npz"], **result)
    return {"loss": float(loss)}


COMMANDS = {"describe": describe, "predict": predict, "train_step": train_step}


if __name__ == "__main__":
    from migrate.tf.protocol import serve

    serve(COMMANDS)
