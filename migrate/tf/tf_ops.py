"""``tf.*`` functions a custom layer's ``call`` uses, as ``keras.ops`` while ``port`` traces the layer.

Runs in the Keras worker (:mod:`migrate.tf.keras_open`). A layer written with raw TensorFlow
(``tf.linalg.matmul``, ``tf.nn.sigmoid``, ``tf.shape``) cannot run on the symbolic ``keras.Input`` tensors the
trace feeds it: TF functions do not take KerasTensors. While the layer is traced, :func:`traced` replaces the
public functions of ``tf``, ``tf.nn``, ``tf.math``, ``tf.linalg``, ``tf.image``, ``tf.signal`` and ``tf.random``
(module attributes, which is where user code reaches them: ``tf.nn.sigmoid(x)``) with wrappers and restores
them afterwards. A wrapper diverts only a call from the user's code (not Keras' or TensorFlow's own) that
hands it a KerasTensor:

* a function in :data:`TABLE` runs its ``keras.ops`` equivalent, written below with TensorFlow's own
  signature (one small entry per function), so the call records ops the port's op emitters know;
* any other function raises :class:`NoMapping` (``tf.image.resize has no port mapping yet``), which the port
  reports in its one line;
* creation functions (``tf.range``, ``tf.zeros``, ``tf.random.normal``, ...) are diverted from user code
  even without a tensor argument, so they become graph nodes as ``keras.ops.arange`` does;
* a table function on plain Python numbers (``tf.cast(tf.shape(x)[-1], x.dtype)``, ``tf.sqrt(scale)`` on a
  static size) runs the real function and gives back a Python number, a constant of the graph.

:func:`references_off` is the counterpart for the Keras references (eval and ``parity --train``): in user code
``tf.nn.dropout`` is the identity and ``tf.random.*`` draws give their mean, as the port's ``nn.Dropout`` and
``RandomDraw`` with ``p = 0``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any

#: ``tf`` submodules whose public functions are patched while a layer is traced ("" is ``tf`` itself)
MODULES = ("", "nn", "math", "linalg", "image", "signal", "random", "compat.v1", "compat.v1.nn")
#: ``tf`` classes a traced call may build from symbolic parts (a proxy that keeps ``isinstance`` working)
CLASSES = ("SparseTensor", "compat.v1.SparseTensor")
#: callers whose ``tf.*`` calls are never diverted (Keras and TensorFlow call them on their own tensors)
INTERNAL = ("keras", "tensorflow", "tf_keras", "tensorflow_probability", "numpy")

#: "nn.sigmoid" -> its keras.ops equivalent (TensorFlow's signature)
TABLE: dict[str, Callable[..., Any]] = {}
#: names in TABLE diverted from user code even without a KerasTensor argument (they create tensors)
CREATION: set[str] = set()


class NoMapping(Exception):
    """A ``tf.*`` function on a symbolic tensor that the table does not map (or an argument it cannot map)."""

    def __init__(self, name: str, detail: str = "") -> None:
        self.name = name
        super().__init__(f"tf.{name}{detail} has no port mapping yet")


def tf_op(*names: str, creation: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the keras.ops equivalent of the ``tf`` functions ``names`` (paths below ``tf``)."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            TABLE[name] = fn
            if creation:
                CREATION.add(name)
        return fn
    return register


def _ops() -> Any:
    import keras

    return keras.ops  # looked up at each call: keras_open's creation recorders are patched in there


def _dtype(dtype: Any) -> Any:
    """A tf.DType (``tf.float32``) as Keras' dtype name."""
    return None if dtype is None else getattr(dtype, "name", dtype)


# --- activations (tf.nn) ----------------------------------------------------------------------------------

@tf_op("nn.relu")
def relu(features: Any, name: Any = None) -> Any:
    return _ops().relu(features)


@tf_op("nn.relu6")
def relu6(features: Any, name: Any = None) -> Any:
    return _ops().relu6(features)


@tf_op("sigmoid", "math.sigmoid", "nn.sigmoid")
def sigmoid(x: Any, name: Any = None) -> Any:
    return _ops().sigmoid(x)


@tf_op("tanh", "math.tanh", "nn.tanh")
def tanh(x: Any, name: Any = None) -> Any:
    return _ops().tanh(x)


@tf_op("nn.softmax", "math.softmax")
def softmax(logits: Any, axis: Any = None, name: Any = None) -> Any:
    return _ops().softmax(logits, axis=-1 if axis is None else axis)


@tf_op("nn.log_softmax", "math.log_softmax")
def log_softmax(logits: Any, axis: Any = None, name: Any = None) -> Any:
    return _ops().log_softmax(logits, axis=-1 if axis is None else axis)


@tf_op("nn.gelu")
def gelu(features: Any, approximate: bool = False, name: Any = None) -> Any:
    return _ops().gelu(features, approximate=bool(approximate))  # TF's default is the exact erf form


@tf_op("nn.silu", "nn.swish")
def silu(features: Any, beta: float = 1.0) -> Any:
    ops = _ops()
    return ops.silu(features) if beta == 1.0 else features * ops.sigmoid(features * beta)


@tf_op("nn.elu")
def elu(features: Any, name: Any = None) -> Any:
    return _ops().elu(features)


@tf_op("nn.selu")
def selu(features: Any, name: Any = None) -> Any:
    return _ops().selu(features)


@tf_op("nn.softplus", "math.softplus")
def softplus(features: Any, name: Any = None) -> Any:
    return _ops().softplus(features)


@tf_op("nn.leaky_relu")
def leaky_relu(features: Any, alpha: float = 0.2, name: Any = None) -> Any:
    ops = _ops()
    return ops.where(ops.greater(features, 0), features, features * alpha)


@tf_op("nn.bias_add")
def bias_add(value: Any, bias: Any, data_format: Any = None, name: Any = None) -> Any:
    if data_format not in (None, "NHWC", "NWC", "NDHWC", "N...C"):
        raise NoMapping("nn.bias_add", f"(data_format={data_format!r})")
    return value + bias


@tf_op("nn.l2_normalize", "math.l2_normalize", "linalg.l2_normalize")
def l2_normalize(x: Any, axis: Any = None, epsilon: float = 1e-12, name: Any = None, dim: Any = None) -> Any:
    ops = _ops()  # TF's formula: x * rsqrt(max(sum(x**2), epsilon))
    axis = dim if axis is None else axis
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


@tf_op("nn.moments")
def moments(x: Any, axes: Any, shift: Any = None, keepdims: bool = False, name: Any = None) -> Any:
    ops = _ops()
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    return ops.mean(x, axis=axes, keepdims=keepdims), ops.var(x, axis=axes, keepdims=keepdims)


@tf_op("nn.dropout")
def dropout(x: Any, rate: float, noise_shape: Any = None, seed: Any = None, name: Any = None) -> Any:
    """A Keras Dropout layer in the traced graph: ``nn.Dropout`` in model.py, active in ``train()``."""
    import keras

    if not isinstance(rate, (int, float)):
        raise NoMapping("nn.dropout", " with a tensor rate")
    return keras.layers.Dropout(float(rate), noise_shape=noise_shape)(x, training=True)


# --- elementwise (tf, tf.math) ----------------------------------------------------------------------------

def _unary(names: tuple[str, ...], op: str) -> None:
    def fn(x: Any, name: Any = None) -> Any:
        return getattr(_ops(), op)(x)
    fn.__name__ = fn.__qualname__ = op
    tf_op(*names)(fn)


for _names, _op in [(("exp", "math.exp"), "exp"), (("math.log",), "log"), (("sqrt", "math.sqrt"), "sqrt"),
                    (("math.rsqrt",), "rsqrt"), (("square", "math.square"), "square"), (("abs", "math.abs"), "abs"),
                    (("sign", "math.sign"), "sign"), (("math.erf",), "erf"), (("sin", "math.sin"), "sin"),
                    (("cos", "math.cos"), "cos"), (("floor", "math.floor"), "floor"), (("math.ceil",), "ceil"),
                    (("math.reciprocal",), "reciprocal"), (("math.log1p",), "log1p"), (("math.expm1",), "expm1"),
                    (("negative", "math.negative"), "negative"), (("logical_not", "math.logical_not"), "logical_not")]:
    _unary(_names, _op)


def _binary(names: tuple[str, ...], op: str) -> None:
    def fn(x: Any, y: Any, name: Any = None) -> Any:
        return getattr(_ops(), op)(x, y)
    fn.__name__ = fn.__qualname__ = op
    tf_op(*names)(fn)


for _names, _op in [(("add", "math.add"), "add"), (("subtract", "math.subtract"), "subtract"),
                    (("multiply", "math.multiply"), "multiply"), (("divide", "math.divide"), "divide"),
                    (("truediv", "math.truediv"), "true_divide"), (("pow", "math.pow"), "power"),
                    (("maximum", "math.maximum"), "maximum"), (("minimum", "math.minimum"), "minimum"),
                    (("equal", "math.equal"), "equal"), (("not_equal", "math.not_equal"), "not_equal"),
                    (("less", "math.less"), "less"), (("less_equal", "math.less_equal"), "less_equal"),
                    (("greater", "math.greater"), "greater"), (("greater_equal", "math.greater_equal"), "greater_equal"),
                    (("logical_and", "math.logical_and"), "logical_and"), (("logical_or", "math.logical_or"), "logical_or"),
                    (("math.floordiv",), "floor_divide")]:
    _binary(_names, _op)


@tf_op("math.squared_difference")
def squared_difference(x: Any, y: Any, name: Any = None) -> Any:
    return _ops().square(x - y)


@tf_op("clip_by_value")
def clip_by_value(t: Any, clip_value_min: Any, clip_value_max: Any, name: Any = None) -> Any:
    ops = _ops()
    if isinstance(clip_value_min, (int, float)) and isinstance(clip_value_max, (int, float)):
        return ops.clip(t, clip_value_min, clip_value_max)
    return ops.minimum(ops.maximum(t, clip_value_min), clip_value_max)


@tf_op("where", "compat.v1.where", "compat.v1.where_v2")
def where(condition: Any, x: Any = None, y: Any = None, name: Any = None) -> Any:
    if x is None and y is None:
        return Indices(condition)  # a mask's indices: only a SparseTensor takes them (sparse labels, below)
    if x is None or y is None:
        raise NoMapping("where", " with one of x and y")
    return _ops().where(condition, x, y)


# --- reductions -------------------------------------------------------------------------------------------

def _reduce(names: tuple[str, ...], op: str) -> None:
    def fn(input_tensor: Any, axis: Any = None, keepdims: bool = False, name: Any = None) -> Any:
        axis = tuple(axis) if isinstance(axis, list) else axis
        return getattr(_ops(), op)(input_tensor, axis=axis, keepdims=bool(keepdims))
    fn.__name__ = fn.__qualname__ = f"reduce_{op}"
    tf_op(*names)(fn)


for _names, _op in [(("reduce_sum", "math.reduce_sum"), "sum"), (("reduce_mean", "math.reduce_mean"), "mean"),
                    (("reduce_max", "math.reduce_max"), "max"), (("reduce_min", "math.reduce_min"), "min"),
                    (("reduce_prod", "math.reduce_prod"), "prod"), (("reduce_all", "math.reduce_all"), "all"),
                    (("reduce_any", "math.reduce_any"), "any"), (("math.reduce_std",), "std"),
                    (("math.reduce_variance",), "var")]:
    _reduce(_names, _op)


@tf_op("argmax", "math.argmax")
def argmax(input: Any, axis: Any = None, output_type: Any = None, name: Any = None) -> Any:
    ops = _ops()
    return ops.cast(ops.argmax(input, axis=0 if axis is None else axis), _dtype(output_type) or "int64")


@tf_op("argmin", "math.argmin")
def argmin(input: Any, axis: Any = None, output_type: Any = None, name: Any = None) -> Any:
    ops = _ops()
    return ops.cast(ops.argmin(input, axis=0 if axis is None else axis), _dtype(output_type) or "int64")


@tf_op("math.cumsum", "cumsum")
def cumsum(x: Any, axis: int = 0, exclusive: bool = False, reverse: bool = False, name: Any = None) -> Any:
    if exclusive or reverse:
        raise NoMapping("math.cumsum", " with exclusive or reverse")
    return _ops().cumsum(x, axis=axis)


# --- linear algebra ---------------------------------------------------------------------------------------

@tf_op("matmul", "linalg.matmul")
def matmul(a: Any, b: Any, transpose_a: bool = False, transpose_b: bool = False, adjoint_a: bool = False,
           adjoint_b: bool = False, a_is_sparse: bool = False, b_is_sparse: bool = False, output_type: Any = None,
           grad_a: bool = False, grad_b: bool = False, name: Any = None) -> Any:
    ops = _ops()  # real tensors: the adjoint is the transpose
    if transpose_a or adjoint_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b or adjoint_b:
        b = ops.swapaxes(b, -1, -2)
    out = ops.matmul(a, b)
    return out if output_type is None else ops.cast(out, _dtype(output_type))


@tf_op("einsum", "linalg.einsum")
def einsum(equation: str, *inputs: Any, **kwargs: Any) -> Any:
    return _ops().einsum(equation, *inputs)


# --- shapes and dtypes ------------------------------------------------------------------------------------

@tf_op("shape")
def shape(input: Any, out_type: Any = None, name: Any = None) -> Any:
    """``ops.shape``: a tuple of sizes (a dynamic one is the trace's sentinel, read back as ``x.shape[i]``)."""
    return _ops().shape(input)


@tf_op("cast", "compat.v1.cast")
def cast(x: Any, dtype: Any, name: Any = None) -> Any:
    if isinstance(x, Symbolic):
        return x.cast(_dtype(dtype))
    return _ops().cast(x, _dtype(dtype))


@tf_op("identity")
def identity(input: Any, name: Any = None) -> Any:
    return input


@tf_op("convert_to_tensor")
def convert_to_tensor(value: Any, dtype: Any = None, dtype_hint: Any = None, name: Any = None) -> Any:
    return value if dtype is None else _ops().cast(value, _dtype(dtype))


@tf_op("reshape")
def reshape(tensor: Any, shape: Any, name: Any = None) -> Any:
    return _ops().reshape(tensor, tuple(shape))


@tf_op("transpose")
def transpose(a: Any, perm: Any = None, conjugate: bool = False, name: Any = None) -> Any:
    return _ops().transpose(a, axes=None if perm is None else tuple(perm))


@tf_op("concat")
def concat(values: Any, axis: int, name: Any = None) -> Any:
    return _ops().concatenate(list(values), axis=axis)


@tf_op("stack")
def stack(values: Any, axis: int = 0, name: Any = None) -> Any:
    return _ops().stack(list(values), axis=axis)


@tf_op("expand_dims")
def expand_dims(input: Any, axis: int, name: Any = None) -> Any:
    return _ops().expand_dims(input, axis)


@tf_op("squeeze")
def squeeze(input: Any, axis: Any = None, name: Any = None) -> Any:
    axis = tuple(axis) if isinstance(axis, list) else axis
    return _ops().squeeze(input, axis=axis)


@tf_op("tile")
def tile(input: Any, multiples: Any, name: Any = None) -> Any:
    return _ops().tile(input, tuple(multiples))


@tf_op("split")
def split(value: Any, num_or_size_splits: Any, axis: int = 0, num: Any = None, name: Any = None) -> Any:
    if isinstance(num_or_size_splits, int):
        return _ops().split(value, num_or_size_splits, axis=axis)
    sizes = list(num_or_size_splits)
    if -1 in sizes:
        sizes[sizes.index(-1)] = value.shape[axis] - sum(s for s in sizes if s != -1)
    bounds = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
    return _ops().split(value, bounds, axis=axis)


@tf_op("zeros_like")
def zeros_like(input: Any, dtype: Any = None, name: Any = None) -> Any:
    return _ops().zeros_like(input, dtype=_dtype(dtype))


@tf_op("ones_like")
def ones_like(input: Any, dtype: Any = None, name: Any = None) -> Any:
    return _ops().ones_like(input, dtype=_dtype(dtype))


# --- creation (recorded as graph nodes from user code) ----------------------------------------------------

@tf_op("range", creation=True)
def range_(start: Any, limit: Any = None, delta: Any = 1, dtype: Any = None, name: Any = "range") -> Any:
    if limit is None:
        start, limit = 0, start
    return _ops().arange(start, limit, delta, dtype=_dtype(dtype) or ("int32" if all(
        isinstance(v, int) for v in (start, limit, delta)) else "float32"))


@tf_op("zeros", creation=True)
def zeros(shape: Any, dtype: Any = "float32", name: Any = None, layout: Any = None) -> Any:
    return _ops().zeros(tuple(shape) if isinstance(shape, (list, tuple)) else (shape,), dtype=_dtype(dtype))


@tf_op("ones", creation=True)
def ones(shape: Any, dtype: Any = "float32", name: Any = None, layout: Any = None) -> Any:
    return _ops().ones(tuple(shape) if isinstance(shape, (list, tuple)) else (shape,), dtype=_dtype(dtype))


@tf_op("random.normal", creation=True)
def random_normal(shape: Any, mean: float = 0.0, stddev: float = 1.0, dtype: Any = "float32", seed: Any = None,
                  name: Any = None) -> Any:
    import keras

    return keras.random.normal(tuple(shape), mean=mean, stddev=stddev, dtype=_dtype(dtype))


@tf_op("random.uniform", creation=True)
def random_uniform(shape: Any, minval: float = 0, maxval: Any = None, dtype: Any = "float32", seed: Any = None,
                   name: Any = None) -> Any:
    import keras

    return keras.random.uniform(tuple(shape), minval=minval, maxval=1.0 if maxval is None else maxval,
                                dtype=_dtype(dtype))


@tf_op("random.truncated_normal", creation=True)
def random_truncated_normal(shape: Any, mean: float = 0.0, stddev: float = 1.0, dtype: Any = "float32",
                            seed: Any = None, name: Any = None) -> Any:
    import keras

    return keras.random.truncated_normal(tuple(shape), mean=mean, stddev=stddev, dtype=_dtype(dtype))


# --- sparse labels and CTC --------------------------------------------------------------------------------
# TensorFlow's CTC loss takes its labels as a SparseTensor, which user code builds from a dense label tensor:
# ``indices = tf.where(tf.sequence_mask(lengths, maxlen)); values = tf.gather_nd(labels, indices);
# tf.SparseTensor(indices, values, dense_shape)``. A SparseTensor has no KerasTensor, so these steps give
# symbolic stand-ins (``Symbolic``) that remember the dense tensor and its mask; the CTC loss on them is
# ``keras.ops.ctc_loss`` on padded labels and lengths, which is what ``F.ctc_loss`` takes.

class Symbolic:
    """A TensorFlow value with no KerasTensor while a call is traced: a step of the dense -> sparse labels."""

    def cast(self, dtype: Any) -> Symbolic:
        raise NoMapping("cast", f" of {type(self).__name__.lower()}")


class Indices(Symbolic):
    """``tf.where(mask)``: the indices of a mask's true elements (row-major)."""

    def __init__(self, mask: Any) -> None:
        self.mask = mask


class Gathered(Symbolic):
    """``tf.gather_nd(dense, tf.where(mask))``: the dense tensor's elements where the mask is true."""

    def __init__(self, dense: Any, mask: Any) -> None:
        self.dense, self.mask = dense, mask

    def cast(self, dtype: Any) -> Symbolic:
        return Gathered(_ops().cast(self.dense, dtype), self.mask)


class SparseLabels(Symbolic):
    """A SparseTensor of labels: each row's values where the mask is true, as padded ``dense`` and ``lengths``."""

    def __init__(self, dense: Any, lengths: Any) -> None:
        self.dense, self.lengths = dense, lengths

    def cast(self, dtype: Any) -> Symbolic:
        return SparseLabels(_ops().cast(self.dense, dtype), self.lengths)


def _proxy_class(real: type, divert: Callable[..., Any]) -> type:
    """``real`` whose construction from user code goes through ``divert``; ``isinstance``/``issubclass`` and
    attributes stay the real class's (Keras and TensorFlow test tensors against it while the call is traced)."""
    class Meta(type):
        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, real)

        def __subclasscheck__(cls, sub: type) -> bool:
            return issubclass(sub, real)

        def __getattr__(cls, attr: str) -> Any:
            return getattr(real, attr)

        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            return divert(*args, **kwargs)

    proxy = Meta(real.__name__, (), {"__doc__": real.__doc__, "__tf2torch_real__": real})
    proxy.__module__ = real.__module__
    return proxy


@tf_op("sequence_mask", "compat.v1.sequence_mask")
def sequence_mask(lengths: Any, maxlen: Any = None, dtype: Any = "bool", name: Any = None) -> Any:
    """``arange(maxlen) < lengths[..., None]``; the mask remembers its lengths (a SparseTensor's row sizes)."""
    ops = _ops()
    if maxlen is None:
        raise NoMapping("sequence_mask", " without maxlen")
    mask = ops.less(ops.arange(maxlen), ops.expand_dims(lengths, -1))
    mask = mask if _dtype(dtype) == "bool" else ops.cast(mask, _dtype(dtype))
    mask._tf2torch_lengths = lengths  # read by SparseTensor below
    return mask


@tf_op("gather_nd", "compat.v1.gather_nd")
def gather_nd(params: Any, indices: Any, batch_dims: int = 0, name: Any = None, bad_indices_policy: str = "") -> Any:
    if not isinstance(indices, Indices) or batch_dims:
        raise NoMapping("gather_nd", " with indices other than tf.where(mask)")
    return Gathered(params, indices.mask)


@tf_op("SparseTensor", "compat.v1.SparseTensor")
def sparse_tensor(indices: Any, values: Any, dense_shape: Any) -> Any:
    """Labels as padded rows: a row's values where its mask is true, in order. From a ``tf.sequence_mask`` they
    are the row's first ``lengths``; from any other (N, L) mask (``labels != -1``) a stable sort moves them first."""
    if not (isinstance(indices, Indices) and isinstance(values, Gathered) and values.mask is indices.mask):
        raise NoMapping("SparseTensor", " with values other than tf.gather_nd(labels, tf.where(mask))")
    mask, dense = indices.mask, values.dense
    lengths = getattr(mask, "_tf2torch_lengths", None)
    if lengths is not None:
        return SparseLabels(dense, lengths)
    if len(mask.shape) != 2:
        raise NoMapping("SparseTensor", f" of rank {len(mask.shape)} labels")
    ops = _ops()
    keep = ops.cast(ops.not_equal(mask, 0), "int32")
    size = mask.shape[1]
    order = ops.argsort((1 - keep) * size + ops.arange(size), axis=1)  # kept positions first, each in order
    return SparseLabels(ops.take_along_axis(dense, order, axis=1), ops.sum(keep, axis=1))


def _ctc(labels: Any, logits: Any, label_length: Any, logit_length: Any, time_major: bool, blank: Any,
         name: str) -> Any:
    """TensorFlow's CTC loss (it takes ``log_softmax`` of ``logits``) as ``keras.ops.ctc_loss``: (batch,)."""
    ops = _ops()
    if isinstance(labels, SparseLabels):
        labels, label_length = labels.dense, labels.lengths
    elif isinstance(labels, Symbolic) or label_length is None:
        raise NoMapping(name, " with labels other than a dense tensor or a SparseTensor made from one")
    if time_major:
        logits = ops.transpose(logits, (1, 0, 2))
    classes = logits.shape[-1]
    blank = classes - 1 if blank is None else blank + classes if blank < 0 else blank
    return ops.ctc_loss(ops.cast(labels, "int32"), logits, label_length, logit_length, mask_index=int(blank))


@tf_op("compat.v1.nn.ctc_loss")
def ctc_loss_v1(labels: Any, inputs: Any = None, sequence_length: Any = None, preprocess_collapse_repeated: bool = False,
                ctc_merge_repeated: bool = True, ignore_longer_outputs_than_inputs: bool = False,
                time_major: bool = True, logits: Any = None) -> Any:
    """Blank = the last class; merged repeats, as ``F.ctc_loss``. An input shorter than its labels: TF raises
    (or gives 0 with ``ignore_longer_outputs_than_inputs``), ``F.ctc_loss`` gives inf."""
    if preprocess_collapse_repeated or not ctc_merge_repeated:
        raise NoMapping("compat.v1.nn.ctc_loss", " with preprocess_collapse_repeated or ctc_merge_repeated=False")
    return _ctc(labels, logits if inputs is None else inputs, None, sequence_length, time_major, None,
                "compat.v1.nn.ctc_loss")


@tf_op("nn.ctc_loss", "compat.v1.nn.ctc_loss_v2")
def ctc_loss_v2(labels: Any, logits: Any, label_length: Any, logit_length: Any, logits_time_major: bool = True,
                unique: Any = None, blank_index: Any = None, name: Any = None) -> Any:
    """Dense labels (blank 0 unless ``blank_index``) or a SparseTensor made from dense labels."""
    if blank_index is None and not isinstance(labels, SparseLabels):
        blank_index = 0
    return _ctc(labels, logits, label_length, logit_length, logits_time_major, blank_index, "nn.ctc_loss")


# --- the patches ------------------------------------------------------------------------------------------

def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def _internal(frame: Any) -> bool:
    return str(frame.f_globals.get("__name__", "")).split(".")[0] in INTERNAL


def _number(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (bool, int, float, np.generic))


def _wrap(name: str, real: Callable[..., Any], mapped: Callable[..., Any] | None) -> Callable[..., Any]:
    import keras

    creation = name in CREATION

    def divert(*args: Any, **kwargs: Any) -> Any:
        if _internal(sys._getframe(1)):
            return real(*args, **kwargs)
        leaves = list(_leaves((args, kwargs)))
        if any(isinstance(v, (keras.KerasTensor, Symbolic)) for v in leaves) or (creation and mapped is not None):
            if mapped is None:
                raise NoMapping(name)
            return mapped(*args, **kwargs)
        if mapped is not None and any(_number(v) for v in leaves) and not any(
                hasattr(v, "shape") and not _number(v) for v in leaves):
            result = real(*args, **kwargs)  # arithmetic on static sizes: a Python number, a graph constant
            if getattr(result, "shape", None) == () and hasattr(result, "numpy"):
                return result.numpy().item()
            return result
        return real(*args, **kwargs)

    if inspect.isclass(real):
        return _proxy_class(real, divert)
    divert = functools.wraps(real)(divert)
    divert.__tf2torch_real__ = real  # type: ignore[attr-defined]
    return divert


def _module(tf: Any, path: str) -> Any:
    module = tf
    for part in filter(None, path.split(".")):
        module = getattr(module, part)
    return module


def _patch(tf: Any, fn: Callable[[str, Any], Any | None]) -> list[tuple[Any, str, Any]]:
    """Set every public function of MODULES to ``fn(name, real)`` (where not None); the undo list."""
    patched = []
    for path in MODULES:
        module = _module(tf, path)
        for attr, real in list(vars(module).items()):
            name = f"{path}.{attr}" if path else attr
            if attr.startswith("_") or not (inspect.isfunction(real) or (inspect.isclass(real) and name in CLASSES)):
                continue
            real = getattr(real, "__tf2torch_real__", real)
            replacement = fn(name, real)
            if replacement is not None:
                setattr(module, attr, replacement)
                patched.append((module, attr, real))
    return patched


@contextlib.contextmanager
def _patched(fn: Callable[[str, Any], Any | None]) -> Iterator[None]:
    from migrate.tf.tf_import import import_tf

    undo = _patch(import_tf(), fn)
    try:
        yield
    finally:
        for module, attr, real in reversed(undo):
            setattr(module, attr, real)


def traced() -> contextlib.AbstractContextManager[None]:
    """While a custom layer's call is traced: tf.* from user code on KerasTensors runs as keras.ops."""
    return _patched(lambda name, real: _wrap(name, real, TABLE.get(name)))


def references_off() -> contextlib.AbstractContextManager[None]:
    """While Keras references are computed: ``tf.nn.dropout`` is the identity and ``tf.random.*`` draws give
    their mean (a uniform draw its midpoint), as the port's dropouts and ``RandomDraw`` with ``p = 0``."""
    def mean(name: str, real: Any) -> Any:
        if name == "nn.dropout":
            return functools.wraps(real)(lambda x, *args, **kwargs: x)
        if name not in ("random.normal", "random.uniform", "random.truncated_normal"):
            return None
        signature = inspect.signature(real)

        def draw(*args: Any, **kwargs: Any) -> Any:
            a = signature.bind(*args, **kwargs).arguments
            if name == "random.uniform":
                value = (a.get("minval", 0) + (1.0 if a.get("maxval") is None else a["maxval"])) / 2
            else:
                value = a.get("mean", 0.0)
            return _fill(a["shape"], value, a.get("dtype"))
        return functools.wraps(real)(draw)

    return _patched(mean)


def _fill(shape: Any, value: Any, dtype: Any) -> Any:
    from migrate.tf.tf_import import import_tf

    tf = import_tf()
    return tf.fill(shape, tf.cast(value, dtype or tf.float32))
