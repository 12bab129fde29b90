"""TF-side fixes that let tf2onnx export graphs it otherwise leaves half converted (TensorFlow only).

* Keras 3 runs grouped convolutions (ConvNeXt's depthwise ``Conv2D(groups=C)``) and channels-first
  3D convolutions in a nested ``tf.function(jit_compile=True)``. The call node and the function carry
  ``_XlaMustCompile``/``_noinline``, so freezing keeps a ``StatefulPartitionedCall`` that tf2onnx
  cannot convert. Dropping those attributes and re-running grappler inlines the function.
* ``tf.nn.gelu(approximate=False)`` (Keras ``gelu``) computes ``erfc``; tf2onnx has no handler for
  TF ``Erfc``. ONNX has no Erfc either, so it is exported as ``1 - Erf(x)``.

And one check, :func:`training_mode_warnings`: a serving function that computes BatchNorm with batch
statistics or draws random numbers (dropout, augmentation) that reach an output was exported in training
mode. Converting it faithfully gives a model that is wrong for inference, so the user is told how to
re-export. Random ops that reach no output (an LSTM's dropout masks in inference mode) are not reported.

Random draws that are the model's inference behaviour by design (a VAE's ``Sampling`` layer drawing
``keras.random.normal``) are told apart from training-mode ones by :func:`classify_random` (the rule is in
docs/convert.md, "Random outputs"): a normal or uniform draw is *by design* unless it lies in the name scope
of a dropout, noise or augmentation layer or is thresholded into a mask (the dropout pattern). Draws by
design are not reported as training mode; :func:`rewrite_designed_random` turns their stateless forms into
the stateful ops tf2onnx exports (``RandomNormal(Like)``/``RandomUniform(Like)``: fresh draws on every call).

Imported only by the TF worker; never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

#: Attributes that stop grappler from inlining a function call.
NO_INLINE_ATTRS = ("_XlaMustCompile", "_noinline", "_XlaCompile", "_XlaScope")
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})

#: TF ops that draw random numbers: in a serving function, dropout or noise layers left in training mode.
RANDOM_OPS = frozenset({
    "RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal", "RandomGamma", "RandomPoisson",
    "RandomPoissonV2", "Multinomial", "RandomShuffle", "StatelessRandomUniform", "StatelessRandomUniformV2",
    "StatelessRandomUniformInt", "StatelessRandomUniformIntV2", "StatelessRandomUniformFullInt",
    "StatelessRandomUniformFullIntV2", "StatelessRandomNormal", "StatelessRandomNormalV2",
    "StatelessTruncatedNormal", "StatelessTruncatedNormalV2", "StatelessRandomBinomial", "StatelessMultinomial",
})
FUSED_BATCH_NORM_OPS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
REEXPORT_HINT = ("re-export with inference semantics (keras.export.ExportArchive with an endpoint calling "
                 "model(x, training=False)), or convert the .keras/.h5 file, which tf2torch exports that way")
KERAS_FILE_HINT = ("tf2torch calls this .keras/.h5 model with training=False, so a layer forces training mode "
                   "itself (training=True in its call): call it with the training flag it is given")
#: TF ops of Keras' image augmentation layers besides the random draws (RandomRotation, RandomZoom, ...).
AUGMENTATION_OPS = frozenset({"ImageProjectiveTransformV2", "ImageProjectiveTransformV3"})

#: Random draws a layer may make on purpose at inference (-> the ONNX op the converted model runs).
DESIGNED_RANDOM_OPS = {
    "RandomStandardNormal": "RandomNormal", "StatelessRandomNormal": "RandomNormal",
    "StatelessRandomNormalV2": "RandomNormal",
    "RandomUniform": "RandomUniform", "StatelessRandomUniform": "RandomUniform",
    "StatelessRandomUniformV2": "RandomUniform",
}
#: The stateful op tf2onnx exports, for each stateless draw (the seed inputs are dropped: fresh draws).
STATEFUL_FORM = {"StatelessRandomNormal": "RandomStandardNormal", "StatelessRandomNormalV2": "RandomStandardNormal",
                 "StatelessRandomUniform": "RandomUniform", "StatelessRandomUniformV2": "RandomUniform"}
#: Keras layers (snake-case names, as they name their scopes) whose randomness is training-only.
TRAINING_RANDOM_LAYERS = re.compile(
    r"\w*dropout\w*|gaussian_noise|\w*augment\w*|aug_mix|mix_up|cut_mix|solarization|random_(?:flip|rotation|"
    r"zoom|translation|contrast|brightness|crop|height|width|grayscale|hue|saturation|sharpness|shear|"
    r"color_jitter|color_degeneration|posterization|erasing|gaussian_blur|perspective|elastic_transform|invert|"
    r"apply|choice)")
#: Ops through which a draw is only scaled or shifted (``mean + stddev * draw``, ``low + (high - low) * draw``).
_AFFINE_OPS = frozenset({"Mul", "AddV2", "Add", "Sub", "Identity", "Cast"})
#: A draw compared with a threshold is a mask: dropout's ``random_uniform >= rate``.
_COMPARE_OPS = frozenset({"GreaterEqual", "Greater", "Less", "LessEqual"})

_registered = False


def register_tf2onnx_handlers() -> None:
    """Register tf2onnx handlers for TF ops it lacks (idempotent)."""
    global _registered
    if _registered:
        return
    import numpy as np
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:
        @classmethod
        def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
            node.type = "Erf"
            erf_out = node.output[0]
            sub = ctx.insert_new_node_on_output("Sub", erf_out, name=utils.make_name(f"{node.name}_erfc"),
                                                inputs=[one.output[0], erf_out])
            ctx.copy_shape(erf_out, sub.output[0])
            ctx.set_dtype(sub.output[0], ctx.get_dtype(erf_out))

    _registered = True


def _remaining_calls(graph_def: Any) -> list[Any]:
    return [n for n in graph_def.node if n.op in CALL_OPS]


def inline_nested_functions(graph_def: Any, input_names: list[str], output_names: list[str]) -> Any:
    """Inline function calls that freezing kept because they were marked for XLA or no-inline."""
    calls = _remaining_calls(graph_def)
    if not calls:
        return graph_def
    for node in calls:
        for attr in NO_INLINE_ATTRS:
            node.attr.pop(attr, None)
    for function in graph_def.library.function:
        for attr in NO_INLINE_ATTRS:
            function.attr.pop(attr, None)
    import tensorflow as tf
    from tf2onnx import tf_loader

    with tf.Graph().as_default():
        return tf_loader.tf_optimize(input_names, output_names, graph_def)


def prepare_for_tf2onnx(graph_def: Any, input_names: list[str], output_names: list[str]) -> Any:
    """Everything this module fixes, for a frozen graph about to go through tf2onnx."""
    register_tf2onnx_handlers()
    return inline_nested_functions(graph_def, input_names, output_names)


def _nodes(graph_def: Any, outputs: list[str] | None = None) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Every node of the graph and of its function library, with the node map of the body it lives in; with
    ``outputs`` (tensor names), only the nodes an output depends on (and the functions those call)."""
    functions = {f.signature.name: f for f in graph_def.library.function}
    if outputs is None:
        bodies = [list(graph_def.node)] + [list(f.node_def) for f in functions.values()]
    else:
        bodies = [_reaching(list(graph_def.node), [o.split(":")[0] for o in outputs])]
        called, queue = set(), list(bodies[0])
        while queue:
            node = queue.pop()
            for name in [node.op, *(a.func.name for a in node.attr.values() if a.HasField("func"))]:
                if name in functions and name not in called:
                    called.add(name)
                    body = functions[name]
                    returns = [r.split(":")[0] for r in body.ret.values()]
                    kept = _reaching(list(body.node_def), returns)
                    bodies.append(kept)
                    queue.extend(kept)
    for body in bodies:
        by_name = {n.name: n for n in body}
        for node in body:
            yield node, by_name


def _reaching(body: list[Any], targets: list[str]) -> list[Any]:
    """The nodes of ``body`` that ``targets`` depend on through data inputs (control edges do not count)."""
    by_name = {n.name: n for n in body}
    seen, stack = set(), [t for t in targets if t in by_name]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(i.split(":")[0] for i in by_name[name].input if not i.startswith("^") and i.split(":")[0] in by_name)
    return [n for n in body if n.name in seen]


def _layer(node_name: str) -> str:
    """The Keras layer path of a node (``model/bn/moments/Mean`` -> ``model/bn``)."""
    scope = node_name.rsplit("/", 1)[0] if "/" in node_name else node_name
    return scope.removesuffix("/moments")


def _reduces_batch_axis(node: Any, by_name: dict[str, Any]) -> bool:
    """A ``Mean`` whose constant reduction axes include axis 0: statistics over the batch."""
    from tensorflow.python.framework import tensor_util

    if node.op != "Mean" or len(node.input) < 2:
        return False
    axes = by_name.get(node.input[1].split(":")[0].lstrip("^"))
    if axes is None or axes.op != "Const":
        return False
    return 0 in tensor_util.MakeNdarray(axes.attr["value"].tensor).reshape(-1).tolist()


def _batch_statistics(graph_def: Any, outputs: list[str] | None) -> list[str]:
    """Layers computing BatchNorm from the batch: training-mode FusedBatchNorm, or Keras 3's moments
    (``SquaredDifference(x, StopGradient(Mean(x, axes incl. 0)))``, what its BatchNormalization runs)."""
    layers = []
    for node, by_name in _nodes(graph_def, outputs):
        if node.op in FUSED_BATCH_NORM_OPS and node.attr["is_training"].b:
            layers.append(_layer(node.name))
        elif node.op == "SquaredDifference":
            for inp in node.input:
                stop = by_name.get(inp.split(":")[0].lstrip("^"))
                if stop is not None and stop.op == "StopGradient":
                    mean = by_name.get(stop.input[0].split(":")[0].lstrip("^"))
                    if mean is not None and _reduces_batch_axis(mean, by_name):
                        layers.append(_layer(node.name))
                        break
    return sorted(set(layers))


def _training_scope(node_name: str) -> bool:
    """Whether a scope of the node's name is a dropout, noise or augmentation layer's (``model/dropout_2/...``)."""
    return any(TRAINING_RANDOM_LAYERS.fullmatch(re.sub(r"_\d+$", "", part.lower()))
               for part in node_name.split("/")[:-1])


def _thresholded(node: Any, consumers: dict[str, list[Any]]) -> bool:
    """Whether the draw, scaled or shifted only, is compared with a threshold (a dropout mask)."""
    seen, stack = set(), [node.name]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for user in consumers.get(name, []):
            if user.op in _COMPARE_OPS:
                return True
            if user.op in _AFFINE_OPS:
                stack.append(user.name)
    return False


def classify_random(node: Any, consumers: dict[str, list[Any]]) -> str:
    """``"design"``: a normal/uniform draw a layer makes on purpose at inference (a VAE's sampling);
    ``"training"``: anything else (a dropout, noise or augmentation layer's draw, a dropout mask, or a
    kind of draw tf2torch does not convert on purpose: truncated normal, multinomial, gamma, ...)."""
    if node.op not in DESIGNED_RANDOM_OPS or _training_scope(node.name) or _thresholded(node, consumers):
        return "training"
    return "design"


def _consumers(body: dict[str, Any]) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = {}
    for n in body.values():
        for inp in n.input:
            if not inp.startswith("^"):
                users.setdefault(inp.split(":")[0], []).append(n)
    return users


def random_draws(graph_def: Any, outputs: list[str] | None = None) -> list[tuple[Any, str]]:
    """Every random op that reaches an output (all of them when ``outputs`` is None), with its class
    (:func:`classify_random`)."""
    found, users_of = [], {}
    for node, by_name in _nodes(graph_def, outputs):
        if node.op in RANDOM_OPS:
            users = users_of.setdefault(id(by_name), _consumers(by_name))
            found.append((node, classify_random(node, users)))
    return found


def random_layers(graph_def: Any, outputs: list[str] | None = None) -> list[str]:
    """Layers (name scopes) whose training-mode random-number ops reach an output (all of them when ``outputs``
    is None); draws by design (:func:`classify_random`) are not listed."""
    return sorted({_layer(n.name) for n, kind in random_draws(graph_def, outputs) if kind == "training"})


def random_outputs(graph_def: Any, outputs: dict[str, str]) -> dict[str, list[str]]:
    """For each output key (-> tensor name) that depends on a random op of the (frozen, flat) graph: the ops,
    as the converted model runs them (``RandomNormal``, ``RandomUniform``; other kinds by their TF name)."""
    result = {}
    for key, tensor in outputs.items():
        ops = {DESIGNED_RANDOM_OPS.get(n.op, n.op) for n in _reaching(list(graph_def.node), [tensor.split(":")[0]])
               if n.op in RANDOM_OPS}
        if ops:
            result[key] = sorted(ops)
    return result


def designed_random(graph_def: Any) -> list[str]:
    """Names of the random ops by design in a frozen, flat graph (tf2onnx keeps them as the ONNX nodes' names)."""
    by_name = {n.name: n for n in graph_def.node}
    users = _consumers(by_name)
    return sorted(n.name for n in graph_def.node if n.op in RANDOM_OPS and classify_random(n, users) == "design")


def rewrite_designed_random(graph_def: Any) -> list[str]:
    """Replace every stateless normal/uniform draw by design (frozen, flat graph) with the stateful op of the same
    distribution, which tf2onnx exports: ``StatelessRandomNormalV2(shape, key, counter, alg)`` ->
    ``RandomStandardNormal(shape)``. The frozen seed would otherwise give the same draw on every call. Returns
    the names of the rewritten nodes."""
    by_name = {n.name: n for n in graph_def.node}
    users = _consumers(by_name)
    rewritten = []
    for node in graph_def.node:
        if node.op not in STATEFUL_FORM or classify_random(node, users) != "design":
            continue
        shape, dtype = node.input[0], node.attr["dtype"].type
        shape_type = node.attr["Tshape"].type if "Tshape" in node.attr else node.attr["T"].type
        node.op = STATEFUL_FORM[node.op]
        del node.input[:]
        node.input.append(shape)
        for key in list(node.attr):
            del node.attr[key]
        node.attr["dtype"].type = dtype
        node.attr["T"].type = shape_type
        node.attr["seed"].i = 0
        node.attr["seed2"].i = 0
        rewritten.append(node.name)
    return rewritten


def training_mode_warnings(graph_def: Any, outputs: list[str] | None = None, keras_file: bool = False) -> list[str]:
    """One line per training-mode behaviour that reaches an output of a serving function (empty when clean).

    ``keras_file``: the source is the .keras/.h5 file, which tf2torch already exports with ``training=False``,
    so the hint is to fix the layer's call, not to convert the file.
    """
    hint = KERAS_FILE_HINT if keras_file else REEXPORT_HINT
    warnings = []
    batch_norms = _batch_statistics(graph_def, outputs)
    if batch_norms:
        warnings.append(f"the serving function computes BatchNorm with batch statistics (training mode) in "
                        f"{len(batch_norms)} layer(s), first: {', '.join(batch_norms[:3])}; the converted model "
                        f"does the same, so its outputs depend on the rest of the batch; {hint}")
    random = random_layers(graph_def, outputs)
    if random:
        warnings.append(random_warning(random, hint))
    return warnings


def random_warning(layers: list[str], hint: str = "") -> str:
    """The line for random ops that reach an output: dropout, noise or augmentation left in training mode."""
    return (f"the serving function draws random numbers (dropout, noise or augmentation layers in training mode) in "
            f"{len(layers)} place(s), first: {', '.join(layers[:3])}; outputs change from call to call; "
            f"{hint or REEXPORT_HINT}. (A layer whose inference output is random by design converts: a normal or "
            f"uniform draw outside dropout, noise and augmentation layers that is not thresholded into a mask)")
