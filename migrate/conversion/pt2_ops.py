"""The operators a ``model.pt2`` may call: exactly those tf2torch's converters and passes emit.

Derived by converting the fixture zoo (``python -m tests.derive_pt2_ops`` prints the union of every
converted program's targets; ``tests/test_safety_ops.py`` checks that each converted fixture stays within
this list and that nothing here reads or writes files). A target not listed here is refused by
``migrate.conversion.pt2_check``, naming it. Deliberately absent: ``from_file``, ``save``, ``_print`` and every other
operator with a path or free-text string argument, every ``.out`` variant, and in-place/mutating
overloads except ``detach_`` (which tf2torch's recurrent programs contain; it writes no data).
"""

from __future__ import annotations

import re

#: ``torch.ops.<namespace>.<op>.<overload>`` targets, sorted: the union over the fixture zoo's programs.
OPERATORS = frozenset((
    "torch.ops.aten._assert_tensor_metadata.default",
    "torch.ops.aten.abs.default",
    "torch.ops.aten.add.Tensor",
    "torch.ops.aten.alias.default",
    "torch.ops.aten.amax.default",
    "torch.ops.aten.arange.default",
    "torch.ops.aten.arange.start_step",
    "torch.ops.aten.argsort.stable",
    "torch.ops.aten.avg_pool2d.default",
    "torch.ops.aten.avg_pool3d.default",
    "torch.ops.aten.bitwise_not.default",
    "torch.ops.aten.cat.default",
    "torch.ops.aten.chunk.default",
    "torch.ops.aten.clamp.default",
    "torch.ops.aten.clone.default",
    "torch.ops.aten.conv2d.default",
    "torch.ops.aten.conv3d.default",
    "torch.ops.aten.conv_transpose2d.input",
    "torch.ops.aten.cos.default",
    "torch.ops.aten.cumsum.default",
    "torch.ops.aten.detach_.default",
    "torch.ops.aten.div.Tensor",
    "torch.ops.aten.div.Tensor_mode",
    "torch.ops.aten.eq.Tensor",
    "torch.ops.aten.erf.default",
    "torch.ops.aten.exp.default",  # the VAE fixture (port_vae_sampling): exp(0.5 * z_log_var)
    "torch.ops.aten.expand.default",
    "torch.ops.aten.expand_as.default",
    "torch.ops.aten.flatten.using_ints",
    "torch.ops.aten.flip.default",
    "torch.ops.aten.full.default",
    "torch.ops.aten.gather.default",
    "torch.ops.aten.ge.Scalar",
    "torch.ops.aten.greater.Tensor",
    "torch.ops.aten.greater_equal.Tensor",
    "torch.ops.aten.hardtanh.default",
    "torch.ops.aten.index.Tensor",
    "torch.ops.aten.index_select.default",
    "torch.ops.aten.leaky_relu.default",
    "torch.ops.aten.less.Tensor",
    "torch.ops.aten.linear.default",
    "torch.ops.aten.logical_and.default",
    "torch.ops.aten.logical_not.default",
    "torch.ops.aten.lt.Scalar",
    "torch.ops.aten.lt.Tensor",
    "torch.ops.aten.matmul.default",
    "torch.ops.aten.max_pool2d.default",
    "torch.ops.aten.max_pool3d.default",
    "torch.ops.aten.mean.dim",
    "torch.ops.aten.mul.Tensor",
    "torch.ops.aten.narrow.default",
    "torch.ops.aten.neg.default",
    "torch.ops.aten.ones.default",
    "torch.ops.aten.ones_like.default",
    "torch.ops.aten.pad.default",
    "torch.ops.aten.permute.default",
    "torch.ops.aten.pow.Tensor_Tensor",
    "torch.ops.aten.rand.default",  # converters/random.py: ONNX RandomUniform(Like), a draw by design
    "torch.ops.aten.randn.default",  # converters/random.py: ONNX RandomNormal(Like), a draw by design
    "torch.ops.aten.reciprocal.default",
    "torch.ops.aten.relu.default",
    "torch.ops.aten.remainder.Tensor",
    "torch.ops.aten.repeat.default",
    "torch.ops.aten.reshape.default",
    "torch.ops.aten.rsub.Scalar",
    "torch.ops.aten.scalar_tensor.default",
    "torch.ops.aten.select.int",
    "torch.ops.aten.sigmoid.default",
    "torch.ops.aten.sin.default",
    "torch.ops.aten.slice.Tensor",
    "torch.ops.aten.softmax.int",
    "torch.ops.aten.split.Tensor",
    "torch.ops.aten.sqrt.default",
    "torch.ops.aten.squeeze.dims",
    "torch.ops.aten.stack.default",
    "torch.ops.aten.sub.Tensor",
    "torch.ops.aten.sum.dim_IntList",
    "torch.ops.aten.sym_size.int",
    "torch.ops.aten.tanh.default",
    "torch.ops.aten.to.device",
    "torch.ops.aten.to.dtype",
    "torch.ops.aten.transpose.int",
    "torch.ops.aten.unflatten.int",
    "torch.ops.aten.unsqueeze.default",
    "torch.ops.aten.upsample_bilinear2d.vec",
    "torch.ops.aten.upsample_nearest2d.vec",
    "torch.ops.aten.where.self",
    "torch.ops.aten.zeros_like.default",
    "torch.ops.higher_order.cond",
    "torch.ops.higher_order.scan",
))
#: Operators whose arguments include graphs (``cond``'s branches, ``scan``'s step), parsed like the program.
HIGHER_ORDER = frozenset(o for o in OPERATORS if o.startswith("torch.ops.higher_order."))

#: Shape arithmetic torch.export records between operators (SymInt/SymBool/SymFloat values).
SYMBOLIC = frozenset((
    "_operator.add", "_operator.sub", "_operator.mul", "_operator.floordiv", "_operator.truediv", "_operator.mod",
    "_operator.pow", "_operator.neg", "_operator.pos", "_operator.abs", "_operator.eq", "_operator.ne",
    "_operator.lt", "_operator.le", "_operator.gt", "_operator.ge", "_operator.and_", "_operator.or_",
    "_operator.not_", "math.ceil", "math.floor", "math.trunc", "torch.sym_max", "torch.sym_min", "torch.sym_float",
    "torch.sym_int", "torch.sym_not", "torch.sym_ite",
))

#: Operator -> argument name -> the only strings it may be given (every other string argument is refused).
STRING_ARGUMENTS: dict[str, dict[str, re.Pattern[str]]] = {
    "torch.ops.aten.pad.default": {"mode": re.compile(r"constant|reflect|replicate|circular")},
    "torch.ops.aten.div.Tensor_mode": {"rounding_mode": re.compile(r"trunc|floor")},
}

#: Operators that read or write files, print, or write into a given tensor: never tf2torch's output.
_NEVER = re.compile(r"torch\.ops\.[a-z_]+\.(from_file|save|load|_print|print|_assert_async|_foreach_\w+)\.\w+"
                    r"|torch\.ops\.[a-z_]+\.\w+\.(out|\w+_out)"
                    r"|torch\.ops\.[a-z_]+\.\w+_\.\w+|torch\.ops\.aten\.copy_?\.\w+")


def never_allowed(target: str) -> bool:
    """True for operators no tf2torch program could contain (file access, printing, out= and in-place)."""
    return _NEVER.fullmatch(target) is not None
