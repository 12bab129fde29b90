"""TF-side fixes that let tf2onnx export graphs it otherwise leaves half converted (TensorFlow only).

* Keras 3 runs grouped convolutions (ConvNeXt's depthwise ``Conv2D(groups=C)``) and channels-first
  3D convolutions in a nested ``tf.function(jit_compile=True)``. The call node and the function carry
  ``_XlaMustCompile``/``_noinline``, so freezing keeps a ``StatefulPartitionedCall`` that tf2onnx
  cannot convert. Dropping those attributes and re-running grappler inlines the function.
* ``tf.nn.gelu(approximate=False)`` (Keras ``gelu``) computes ``erfc``; tf2onnx has no handler for
  TF ``Erfc``. ONNX has no Erfc either, so it is exported as ``1 - Erf(x)``.

Imported only by the TF worker; never imports torch.
"""

from __future__ import annotations

from typing import Any

#: Attributes that stop grappler from inlining a function call.
NO_INLINE_ATTRS = ("_XlaMustCompile", "_noinline", "_XlaCompile", "_XlaScope")
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})

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
    class Erfc:  # noqa: F841 - the decorator registers it
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
