"""The TensorFlow side of tf2torch, run as a child process: ``python -m migrate.tf.export_worker REQUEST.json``.

TensorFlow and torch must never share a process (on standard builds ``import tensorflow``
followed by torch._dynamo/triton/torchvision aborts with an LLVM error), so everything that
needs TensorFlow lives here and talks to the torch side through files only:

* ``export``  - load SOURCE, pick a signature, write ``signature.json`` and ``model.onnx`` (tf2onnx).
* ``predict`` - run the signature on arrays from an ``.npz`` and write the outputs to an ``.npz``
  (a Keras file runs as the Keras model itself, ``training=False``: the independent reference).
* ``implied`` - what a Keras file's layers say about each input's values (parity's default inputs).

The request is a JSON object ``{"command": ..., "result": PATH, ...}``; the worker writes
``{"ok": true, ...}`` or ``{"ok": false, "exit_code": 1|2, "message": "..."}`` to ``result``.
This module never imports torch (tests check it).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # reproducible float results across runs

from migrate.core.errors import ConversionError, InputError, Tf2TorchError, first_line
from migrate.tf.source_kind import source_kind
from migrate.tf.tf_import import import_tf, quiet_tf

#: TF ops whose NHWC data makes a rank-4 tensor an "image" for layout purposes.
SPATIAL_OPS = frozenset({
    "Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "MaxPool", "MaxPoolV2", "AvgPool",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "ResizeBilinear", "ResizeNearestNeighbor",
    "ResizeBicubic", "ResizeArea", "SpaceToDepth", "DepthToSpace", "ExtractImagePatches",
})
#: Ops that move data without caring about its meaning; layout analysis walks through them.
LAYOUT_TRANSPARENT_STOP = frozenset({"Reshape", "Transpose", "Squeeze", "ExpandDims", "Flatten"})
#: Names Keras gives unnamed inputs in its own SavedModel exports (``model.export``).
KERAS_AUTO_NAME = re.compile(r"keras_tensor(?:_(\d+))?")


class LoadedModel:
    """A signature's concrete function plus what the torch side needs to know about it."""

    def __init__(self, func: Any, kind: str, signature: str, keepalive: Any) -> None:
        self.func = func
        self.kind = kind
        self.signature = signature
        self._keepalive = keepalive  # the object/tempdir owning the function's variables

    def input_specs(self) -> list[tuple[str, Any]]:
        """(signature key, TensorSpec) in the order of the function's placeholders."""
        import tensorflow as tf

        args, kwargs = self.func.structured_input_signature
        flat = [s for s in tf.nest.flatten(args) if isinstance(s, tf.TensorSpec)]
        named = [(s.name, s) for s in flat] + sorted(kwargs.items())
        return named

    def call_order(self) -> list[str]:
        """Signature keys in the order the model is called with, else in the signature's (sorted) order.

        A signature's inputs are keyword arguments, sorted by name; the SavedModel's own function with
        exactly those inputs as positional arguments (``serve`` of a Keras export: the Keras model's
        input order; the tf.function the signature was made from) keeps the order users call it with.
        """
        import tensorflow as tf

        keys = [k for k, _ in self.input_specs()]
        owner = self._keepalive[-1] if self._keepalive else None
        for value in vars(owner).values() if owner is not None else ():
            for concrete in getattr(value, "concrete_functions", None) or ():
                args, kwargs = concrete.structured_input_signature
                names = [s.name for s in tf.nest.flatten(args) if isinstance(s, tf.TensorSpec)]
                if not kwargs and len(names) == len(keys) and set(names) == set(keys):
                    return names
        return keys

    def output_specs(self) -> list[tuple[str, Any]]:
        """(output key, tensor) in the order of ``func.outputs`` (flattened structured outputs)."""
        import tensorflow as tf

        structured = self.func.structured_outputs
        if isinstance(structured, dict):
            keys = sorted(structured)
        else:
            keys = [f"output_{i}" for i in range(len(tf.nest.flatten(structured)))]
        return list(zip(keys, self.func.outputs))


def load_model(source: Path, signature: str, custom_objects: list[dict[str, Any]] | None = None) -> LoadedModel:
    """Load SOURCE and return the concrete function of SIGNATURE.

    Keras files are exported to a temporary SavedModel first (``keras_source``: ``training=False``,
    Input layer names) so that every kind of source goes through the same signature machinery
    (names, None dims, dict outputs).
    """
    kind = source_kind(source)
    tf = import_tf()
    keepalive: list[Any] = []
    if kind in ("keras", "h5"):
        from migrate.tf import keras_source
        model = keras_source.load(source, custom_objects or [])
        tmp = tempfile.TemporaryDirectory(prefix="tf2torch-keras-")
        keepalive.append(tmp)
        try:
            keras_source.export_saved_model(model, Path(tmp.name))
        except Exception as exc:
            raise ConversionError(f"{source}: Keras could not export a serving signature "
                              f"({type(exc).__name__}: {first_line(exc, 300)})") from exc
        path = Path(tmp.name)
    else:
        path = source
    try:
        obj = tf.saved_model.load(str(path))
    except Exception as exc:
        raise InputError(f"{source}: cannot read the SavedModel ({type(exc).__name__}: {first_line(exc, 300)}); "
                          "the files may be truncated or corrupt, re-export the model") from exc
    keepalive.append(obj)
    signatures = dict(obj.signatures)
    if signature not in signatures:
        available = ", ".join(sorted(signatures)) or "none"
        raise InputError(f"{source}: no signature {signature!r}; available signatures: {available}"
                          + ("" if signatures else " (save the model with signatures=... or model.export)"))
    return LoadedModel(signatures[signature], kind, signature, keepalive)


def _readable_names(keys: list[str]) -> dict[str, str]:
    """Signature key -> manifest name: Keras's ``keras_tensor_N`` become ``input_layer``, ``input_layer_1``, ...
    (in the order Keras created them), the names Keras gives those Input layers and what converting the
    .keras file gives; every other key is kept."""
    auto = sorted((k for k in keys if KERAS_AUTO_NAME.fullmatch(k)),
                  key=lambda k: int(KERAS_AUTO_NAME.fullmatch(k).group(1) or 0))
    names = {k: k for k in keys}
    for i, key in enumerate(auto):
        name = f"input_layer_{i}" if i else "input_layer"
        if name not in keys:
            names[key] = name
    return names


def _dims(shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _placeholders(input_specs: list[tuple[str, Any]], input_names: list[str]) -> dict[str, str]:
    """Map signature keys to placeholder tensor names (by the spec's name, else by position)."""
    by_name = {n.split(":")[0]: n for n in input_names}
    if all(s.name in by_name for _, s in input_specs):
        return {k: by_name[s.name] for k, s in input_specs}
    return {k: n for (k, _), n in zip(input_specs, input_names)}


def _spatial_reach(graph_def: Any, start: set[str], forward: bool) -> set[str]:
    """Tensor names in ``start`` connected (downstream if forward, else upstream) to a spatial op."""
    consumers: dict[str, list[Any]] = {}
    producers: dict[str, Any] = {}
    for node in graph_def.node:
        producers[node.name] = node
        for inp in node.input:
            consumers.setdefault(inp.split(":")[0].lstrip("^"), []).append(node)
    hits = set()
    for tensor in start:
        seen: set[str] = set()
        stack = [tensor.split(":")[0]]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if forward:
                nexts = consumers.get(name, [])
            else:
                node = producers.get(name)
                nexts = [producers[i.split(":")[0].lstrip("^")] for i in (node.input if node else [])
                         if i.split(":")[0].lstrip("^") in producers]
            for node in nexts:
                if node.op in SPATIAL_OPS:
                    hits.add(tensor)
                    stack.clear()
                    break
                if node.op not in LAYOUT_TRANSPARENT_STOP:
                    stack.append(node.name)
    return hits


def _unsupported_nodes(model_proto: Any) -> dict[str, list[str]]:
    """Nodes tf2onnx left as raw TF ops (it converts with continue_on_error)."""
    import onnx

    bad: dict[str, list[str]] = {}

    def visit(graph: Any) -> None:
        for node in graph.node:
            if not onnx.defs.has(node.op_type, node.domain or ""):
                bad.setdefault(node.op_type, []).append(node.name)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model_proto.graph)
    return bad


def export(request: dict[str, Any]) -> dict[str, Any]:
    """SOURCE -> model.onnx + signature.json, choosing channels-first at the boundary unless asked not to."""
    t0 = time.perf_counter()
    loaded = load_model(Path(request["source"]), request["signature"], request.get("custom_objects"))
    tf = quiet_tf()
    import tf2onnx
    from tf2onnx import convert as tf2onnx_convert
    from tf2onnx import tf_loader

    from migrate.tf import graph_fixes as tf_graph_fixes
    func = loaded.func
    input_specs = loaded.input_specs()
    if not input_specs:
        raise InputError(f"signature {loaded.signature!r} takes no inputs, so its outputs are constants and there "
                          "is no model to convert; export a signature with inputs")
    # Captured tensors (e.g. Keras Normalization constants) follow the arguments in func.inputs: not inputs.
    arguments = func.inputs[:len(func.inputs) - len(func.captured_inputs)]
    input_names = [t.name for t in arguments if t.dtype != tf.dtypes.resource]
    output_specs = loaded.output_specs()
    output_names = [t.name for _, t in output_specs]
    for key, spec in input_specs:
        if spec.dtype == tf.string:
            raise ConversionError(f"input {key!r} is a string tensor; string inputs cannot be converted to torch "
                              "(export a signature that takes the tokenized ids instead)")
    placeholder_by_key = _placeholders(input_specs, input_names)
    readable = _readable_names([key for key, _ in input_specs])  # manifest names; ONNX keeps the keys
    rename = {placeholder_by_key[key]: key for key, _ in input_specs}
    keras_file = loaded.kind in ("keras", "h5")
    warnings = tf_graph_fixes.training_mode_warnings(func.graph.as_graph_def(), output_names, keras_file)
    rename.update({name: key for (key, _), name in zip(output_specs, output_names)})

    try:
        with tf.device("/cpu:0"):
            graph_def = tf_loader.from_function(func, input_names, output_names)
            # tf2torch fixes (issue 3): inline XLA-marked nested functions, register missing handlers.
            graph_def = tf_graph_fixes.prepare_for_tf2onnx(graph_def, input_names, output_names)
            # Outputs that depend on a random draw (parity compares their distribution); the draws by design
            # (a VAE's sampling) become ops tf2onnx exports (fresh draws on every call).
            random_outputs = tf_graph_fixes.random_outputs(
                graph_def, {key: name for (key, _), name in zip(output_specs, output_names)})
            by_design = tf_graph_fixes.designed_random(graph_def)
            tf_graph_fixes.rewrite_designed_random(graph_def)
    except Exception as exc:
        raise ConversionError(f"TensorFlow could not freeze signature {loaded.signature!r} "
                          f"({type(exc).__name__}: {first_line(exc, 300)})") from exc

    rank4_in = {placeholder_by_key[k] for k, s in input_specs if s.shape.rank == 4}
    rank4_out = {name for (_, t), name in zip(output_specs, output_names) if t.shape.rank == 4}
    image_in = _spatial_reach(graph_def, rank4_in, forward=True)
    image_out = _spatial_reach(graph_def, rank4_out, forward=False)
    nchw_in, nchw_out = (set(), set()) if request.get("keep_layout") else (image_in, image_out)
    t_load = time.perf_counter() - t0

    opset = int(request["opset"])
    try:
        with tf.device("/cpu:0"):
            model_proto, _ = tf2onnx_convert._convert_common(
                graph_def, name=loaded.signature, continue_on_error=True, opset=opset,
                input_names=input_names, output_names=output_names,
                inputs_as_nchw=sorted(nchw_in) or None, outputs_as_nchw=sorted(nchw_out) or None,
                tensors_to_rename=rename, output_path=None,
            )
    except Exception as exc:
        raise ConversionError(f"tf2onnx failed to convert the graph ({type(exc).__name__}: {first_line(exc, 300)})") from exc
    bad = _unsupported_nodes(model_proto)
    random = tf_graph_fixes.random_layers(func.graph.as_graph_def(), output_names)
    if bad and random and set(bad) <= tf_graph_fixes.RANDOM_OPS | tf_graph_fixes.AUGMENTATION_OPS:
        raise ConversionError(tf_graph_fixes.random_warning(random, tf_graph_fixes.KERAS_FILE_HINT if keras_file
                                                            else "") + f" (these have no ONNX export: "
                              f"{', '.join(sorted(bad))})")
    if bad:
        parts = [f"{op} ({len(names)} node{'s' if len(names) > 1 else ''}, first: {', '.join(names[:3])})"
                 for op, names in sorted(bad.items(), key=lambda kv: -len(kv[1]))]
        raise ConversionError("unsupported TensorFlow op(s) for ONNX export: " + "; ".join(parts)
                          + ". Replace them in the model or open an issue with this line")

    import onnx

    onnx.save(model_proto, request["onnx"])

    def describe(key: str, shape: Any, dtype: Any, tensor: str, images: set[str], nchw: set[str]) -> dict[str, Any]:
        dims = _dims(shape)
        is_image, is_nchw = tensor in images, tensor in nchw
        return {"name": readable.get(key, key), "tf_name": key, "dtype": dtype.name,
                "shape": [dims[0], dims[3], dims[1], dims[2]] if is_nchw else dims, "tf_shape": dims,
                "layout": "NCHW" if is_nchw else ("NHWC" if is_image else None),
                "tf_layout": "NHWC" if is_image else None}

    def describe_output(key: str, shape: Any, dtype: Any, tensor: str) -> dict[str, Any]:
        spec = describe(key, shape, dtype, tensor, image_out, nchw_out)
        if key in random_outputs:
            spec["random"] = random_outputs[key]  # the random ops it depends on (RandomNormal, RandomUniform)
        return spec

    call_order = loaded.call_order()  # the order model.pt2 takes its inputs in
    signature_info = {
        "source": {"path": str(Path(request["source"]).resolve()), "kind": loaded.kind,
                   "signature": loaded.signature},
        "inputs": [describe(k, s.shape, s.dtype, placeholder_by_key[k], image_in, nchw_in)
                   for k, s in sorted(input_specs, key=lambda ks: call_order.index(ks[0]))],
        "outputs": [describe_output(k, t.shape, t.dtype, n) for (k, t), n in zip(output_specs, output_names)],
        "versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__},
        "timings_s": {"tf_load": round(t_load, 3), "tf_export": round(time.perf_counter() - t0, 3)},
        "warnings": warnings,
        "random_by_design": by_design,  # node names: the converter refuses every other random op (training mode)
    }
    Path(request["signature_json"]).write_text(json.dumps(signature_info, indent=2))
    return {"ok": True}


def predict(request: dict[str, Any]) -> dict[str, Any]:
    """Run the signature on every batch in ``inputs`` (a list of .npz) and write one .npz of outputs each.

    A Keras source is run as the Keras model itself, ``model(x, training=False)``: parity's reference
    must not be the export the converted model was made from.
    """
    import numpy as np

    if source_kind(Path(request["source"])) in ("keras", "h5"):
        return _predict_keras(request)
    loaded = load_model(Path(request["source"]), request["signature"])
    tf = quiet_tf()
    keys = [k for k, _ in loaded.input_specs()]
    for in_path, out_path in zip(request["inputs"], request["outputs"]):
        with np.load(in_path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise InputError(f"{in_path}: missing input(s) {', '.join(missing)}")
            feeds = {k: tf.constant(data[k]) for k in keys}
        try:
            result = loaded.func(**feeds)
        except Exception as exc:
            from migrate.tf.keras_source import innermost

            traceback.print_exc()
            raise InputError(f"TensorFlow failed to run signature {loaded.signature!r} ({innermost(exc)})") from exc
        flat = {k: v.numpy() for k, v in result.items()} if isinstance(result, dict) else {
            f"output_{i}": t.numpy() for i, t in enumerate(tf.nest.flatten(result))}
        np.savez(out_path, **flat)
    return {"ok": True}


def _predict_keras(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from migrate.tf import keras_source
    import_tf()
    model = keras_source.load(Path(request["source"]), request.get("custom_objects") or [])
    for in_path, out_path in zip(request["inputs"], request["outputs"]):
        with np.load(in_path, allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
        try:
            outputs = keras_source.call(model, feeds)
        except Tf2TorchError as exc:
            raise type(exc)(f"{in_path}: {exc}") from exc
        except Exception as exc:
            traceback.print_exc()  # the whole chain, in the worker's log (shown with --debug)
            raise InputError(f"Keras failed to run the model ({keras_source.innermost(exc)})") from exc
        np.savez(out_path, **outputs)
    return {"ok": True}


def implied(request: dict[str, Any]) -> dict[str, Any]:
    """What a Keras source's layer graph says about realistic values of each input (``keras_source.implied_inputs``);
    nothing for a SavedModel (its ONNX graph answers that)."""
    if source_kind(Path(request["source"])) not in ("keras", "h5"):
        return {"inputs": {}}
    from migrate.tf import keras_source
    import_tf()
    model = keras_source.load(Path(request["source"]), request.get("custom_objects") or [])
    return {"inputs": keras_source.implied_inputs(model)}


COMMANDS = {"export": export, "predict": predict, "implied": implied}


if __name__ == "__main__":
    from migrate.tf.protocol import serve

    serve(COMMANDS)
