"""TensorFlow only (never torch): every entry of ``migrate.tf.tf_ops.TABLE`` against the real ``tf`` function.

Run as a child process by ``tests/test_tf_ops.py`` (``python tests/tf_ops_cases.py OUT.json``). For each table
name, the case calls the ``tf`` function as user code does (``tf.nn.sigmoid(x)``, looked up on its module)
inside ``tf_ops.traced()`` on symbolic ``keras.Input`` tensors, builds a Keras model of what that recorded, runs
it on concrete inputs and compares with the real function on the same inputs. It also records the Keras op
classes each mapping leaves in the graph (the port needs an emitter for each), and a few checks of the patching
itself (unmapped functions named, Keras internals untouched, modules restored, references switched off).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import tensorflow as tf

from migrate.tf import tf_ops

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 4)).astype("float32")
Y = rng.standard_normal((2, 3, 4)).astype("float32")
POS = (np.abs(X) + 0.5).astype("float32")
UNIT = np.tanh(X).astype("float32")  # in (-1, 1)
A = rng.standard_normal((2, 3, 5)).astype("float32")
B = rng.standard_normal((2, 5, 4)).astype("float32")
BT = np.swapaxes(B, 1, 2).copy()
AT = np.swapaxes(A, 1, 2).copy()
MASK = X > 0
MASK2 = Y > 0
BIAS = rng.standard_normal((4,)).astype("float32")


def fn(name: str) -> Any:
    """``tf.<name>`` as user code reaches it (the module attribute, patched or not)."""
    return tf_ops._module(tf, name.rpartition(".")[0]).__dict__[name.rpartition(".")[2]]


#: table name (or the first of its aliases) -> (call(f, *tensors), inputs)
CASES: dict[str, tuple[Any, list[np.ndarray]]] = {
    "nn.relu": (lambda f, x: f(x), [X]), "nn.relu6": (lambda f, x: f(x * 4), [X]),
    "sigmoid": (lambda f, x: f(x), [X]), "tanh": (lambda f, x: f(x), [X]),
    "nn.softmax": (lambda f, x: f(x), [X]), "nn.log_softmax": (lambda f, x: f(x, axis=1), [X]),
    "nn.gelu": (lambda f, x: [f(x), f(x, approximate=True)], [X]),
    "nn.silu": (lambda f, x: [f(x), f(x, beta=1.5)], [X]), "nn.elu": (lambda f, x: f(x), [X]),
    "nn.selu": (lambda f, x: f(x), [X]), "nn.softplus": (lambda f, x: f(x), [X]),
    "nn.leaky_relu": (lambda f, x: [f(x), f(x, alpha=0.1)], [X]), "nn.bias_add": (lambda f, x, b: f(x, b), [X, BIAS]),
    "nn.l2_normalize": (lambda f, x: [f(x, axis=-1), f(x, axis=[1, 2]), f(x)], [X]),
    "nn.moments": (lambda f, x: [*f(x, axes=[1]), *f(x, axes=[0, 2], keepdims=True)], [X]),
    "exp": (lambda f, x: f(x), [X]), "math.log": (lambda f, x: f(x), [POS]), "sqrt": (lambda f, x: f(x), [POS]),
    "math.rsqrt": (lambda f, x: f(x), [POS]), "square": (lambda f, x: f(x), [X]), "abs": (lambda f, x: f(x), [X]),
    "sign": (lambda f, x: f(x), [X]), "math.erf": (lambda f, x: f(x), [X]), "sin": (lambda f, x: f(x), [X]),
    "cos": (lambda f, x: f(x), [X]), "floor": (lambda f, x: f(x * 3), [X]), "math.ceil": (lambda f, x: f(x * 3), [X]),
    "math.reciprocal": (lambda f, x: f(x), [POS]), "math.log1p": (lambda f, x: f(x), [POS]),
    "math.expm1": (lambda f, x: f(x), [X]), "negative": (lambda f, x: f(x), [X]),
    "logical_not": (lambda f, m: f(m), [MASK]),
    "add": (lambda f, x, y: [f(x, y), f(x, 2.0)], [X, Y]), "subtract": (lambda f, x, y: [f(x, y), f(x, 2.0)], [X, Y]),
    "multiply": (lambda f, x, y: [f(x, y), f(x, 2.0)], [X, Y]), "divide": (lambda f, x, y: [f(x, y), f(x, 2.0)], [X, POS]),
    "truediv": (lambda f, x, y: f(x, y), [X, POS]), "pow": (lambda f, x, y: [f(x, y), f(x, 2.0)], [POS, Y]),
    "maximum": (lambda f, x, y: [f(x, y), f(x, 0.0)], [X, Y]), "minimum": (lambda f, x, y: [f(x, y), f(x, 0.0)], [X, Y]),
    "equal": (lambda f, x, y: f(x, y), [X, X]), "not_equal": (lambda f, x, y: f(x, y), [X, Y]),
    "less": (lambda f, x, y: f(x, y), [X, Y]), "less_equal": (lambda f, x, y: f(x, y), [X, Y]),
    "greater": (lambda f, x, y: f(x, y), [X, Y]), "greater_equal": (lambda f, x, y: f(x, y), [X, Y]),
    "logical_and": (lambda f, a, b: f(a, b), [MASK, MASK2]), "logical_or": (lambda f, a, b: f(a, b), [MASK, MASK2]),
    "math.floordiv": (lambda f, x, y: f(x * 5, y), [X, POS]),
    "math.squared_difference": (lambda f, x, y: f(x, y), [X, Y]),
    "clip_by_value": (lambda f, x, y: [f(x, -0.5, 0.5), f(x, y, y + 1.0)], [X, Y]),
    "where": (lambda f, m, x, y: f(m, x, y), [MASK, X, Y]),
    "reduce_sum": (lambda f, x: [f(x), f(x, axis=1), f(x, axis=[0, 2], keepdims=True)], [X]),
    "reduce_mean": (lambda f, x: [f(x), f(x, axis=-1, keepdims=True)], [X]),
    "reduce_max": (lambda f, x: [f(x, axis=1), f(x)], [X]), "reduce_min": (lambda f, x: [f(x, axis=1), f(x)], [X]),
    "reduce_prod": (lambda f, x: f(x, axis=2), [X]), "reduce_all": (lambda f, m: f(m, axis=1), [MASK]),
    "reduce_any": (lambda f, m: f(m, axis=1), [MASK]), "math.reduce_std": (lambda f, x: f(x, axis=1), [X]),
    "math.reduce_variance": (lambda f, x: f(x, axis=[1, 2]), [X]),
    "argmax": (lambda f, x: [f(x, axis=-1), f(x)], [X]), "argmin": (lambda f, x: f(x, axis=1), [X]),
    "math.cumsum": (lambda f, x: f(x, axis=1), [X]),
    "matmul": (lambda f, a, b, at, bt: [f(a, b), f(at, b, transpose_a=True), f(a, bt, transpose_b=True),
                                        f(at, bt, adjoint_a=True, adjoint_b=True)], [A, B, AT, BT]),
    "einsum": (lambda f, a, b: f("bij,bjk->bik", a, b), [A, B]),
    "shape": (lambda f, x: x * float(f(x)[-1]), [X]),
    "cast": (lambda f, x: [f(x, tf.int32), f(x, "float64")], [X * 3]),
    "identity": (lambda f, x: f(x), [X]), "convert_to_tensor": (lambda f, x: f(x), [X]),
    "reshape": (lambda f, x: [f(x, [2, 12]), f(x, (-1, 4))], [X]),
    "transpose": (lambda f, x: [f(x), f(x, perm=[0, 2, 1])], [X]),
    "concat": (lambda f, x, y: f([x, y], axis=-1), [X, Y]), "stack": (lambda f, x, y: f([x, y], axis=1), [X, Y]),
    "expand_dims": (lambda f, x: f(x, 1), [X]), "squeeze": (lambda f, x: [f(x), f(x, axis=[1])], [X[:, :1]]),
    "tile": (lambda f, x: f(x, [1, 2, 1]), [X]),
    "split": (lambda f, x: [*f(x, 2, axis=-1), *f(x, [1, -1], axis=1)], [X]),
    "zeros_like": (lambda f, x: f(x), [X]), "ones_like": (lambda f, x: f(x, dtype=tf.int32), [X]),
}
#: CTC: labels padded with -1 at the end of a row or anywhere in it, logits (batch, time, classes)
PREFIX_LABELS = np.array([[1, 0, 3], [2, 2, -1]], "int32")
MASKED_LABELS = np.array([[1, 0, 3], [2, -1, 2]], "int32")
LOGITS = rng.standard_normal((2, 6, 5)).astype("float32")


def _sparse_ctc(sparse: Any, gather_nd: Any, labels: Any, logits: Any, prefix: bool, v1: bool = True) -> Any:
    """A CTC loss on a SparseTensor built from dense labels, written as user code writes it."""
    valid = fn("not_equal")(labels, -1)
    if prefix:
        valid = fn("sequence_mask")(fn("reduce_sum")(fn("cast")(valid, "int32"), axis=1), 3)
    indices = fn("where")(valid)
    labels = sparse(indices, gather_nd(labels, indices), fn("cast")(fn("shape")(labels), "int64"))
    length = fn("reduce_sum")(fn("ones_like")(logits[:, :, 0], "int32"), axis=1)
    if v1:
        return fn("compat.v1.nn.ctc_loss")(labels, logits, length, time_major=False)
    return fn("nn.ctc_loss")(labels, logits, None, length, logits_time_major=False, blank_index=-1)


CASES.update({
    "sequence_mask": (lambda f, n: [f(n, 4), f(n, 3, dtype=tf.float32)], [np.array([1, 3], "int32")]),
    "SparseTensor": (lambda f, a, b, x: [_sparse_ctc(f, fn("gather_nd"), a, x, True),
                                         _sparse_ctc(f, fn("gather_nd"), b, x, False)],
                     [PREFIX_LABELS, MASKED_LABELS, LOGITS]),
    "gather_nd": (lambda f, a, x: _sparse_ctc(fn("SparseTensor"), f, a, x, False), [MASKED_LABELS, LOGITS]),
    "compat.v1.nn.ctc_loss": (lambda f, a, x: _sparse_ctc(fn("SparseTensor"), fn("gather_nd"), a, x, True),
                              [PREFIX_LABELS, LOGITS]),
    "nn.ctc_loss": (lambda f, a, b, x: [f(b, x, fn("reduce_sum")(fn("cast")(fn("not_equal")(b, 0), "int32"), axis=1),
                                          fn("reduce_sum")(fn("ones_like")(x[:, :, 0], "int32"), axis=1),
                                          logits_time_major=False),
                                        _sparse_ctc(fn("SparseTensor"), fn("gather_nd"), a, x, False, v1=False)],
                    [MASKED_LABELS, np.array([[1, 2, 0], [3, 3, 4]], "int32"), LOGITS]),
})
#: creation functions: called on Python values (recorded as graph nodes by the port; here run as keras.ops)
CREATION = {"range": lambda f: [f(5), f(1, 7, 2), f(0.5, 2.0, 0.5)], "zeros": lambda f: f((2, 3)),
            "ones": lambda f: f([3], dtype=tf.int32)}
RANDOM = {"random.normal": lambda f: f((2, 3), mean=1.5), "random.uniform": lambda f: f((4,), minval=2.0, maxval=4.0),
          "random.truncated_normal": lambda f: f((3,), mean=-1.0)}


def _flat(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _compare(want: list[Any], got: list[Any]) -> float:
    if len(want) != len(got):
        return float("inf")
    err = 0.0
    for w, g in zip(want, got):
        w, g = np.asarray(w), np.asarray(g)
        if w.shape != g.shape or w.dtype != g.dtype and not (w.dtype.kind == g.dtype.kind == "i"):
            return float("inf")
        diff = np.abs(w.astype("float64") - g.astype("float64")) / np.maximum(1.0, np.abs(w.astype("float64")))
        err = max(err, float(diff.max(initial=0.0)))
    return err


def run_case(name: str, call: Any, arrays: list[np.ndarray]) -> dict[str, Any]:
    want = _flat(call(fn(name), *[tf.constant(a) for a in arrays]))  # the real function, nothing patched
    inputs = [keras.Input(batch_shape=a.shape, dtype=str(a.dtype)) for a in arrays]
    with tf_ops.traced():
        out = _flat(call(fn(name), *inputs))
    model = keras.Model(inputs, out)
    got = _flat(model([tf.constant(a) for a in arrays]))
    ops = sorted({type(op).__name__ for op in model.operations if type(op).__name__ != "InputLayer"})
    return {"err": _compare([w.numpy() for w in want], [g.numpy() for g in got]), "ops": ops}


def checks() -> dict[str, Any]:
    found: dict[str, Any] = {}
    before = {name: fn(name) for name in ("nn.sigmoid", "image.resize", "matmul", "function")}
    x = keras.Input(batch_shape=(2, 4, 4, 3))
    with tf_ops.traced():
        try:
            tf.image.resize(x, (8, 8))
            found["unmapped"] = "no error"
        except tf_ops.NoMapping as exc:
            found["unmapped"] = str(exc)
        found["concrete_unmapped"] = list(tf.image.resize(tf.zeros((1, 2, 2, 1)), (4, 4)).shape)
        found["keras_inside"] = list(keras.layers.Dense(5)(keras.ops.sigmoid(x)).shape)
        found["eager_inside"] = float(tf.nn.sigmoid(tf.constant(0.0)).numpy())
        size = tf.shape(x)[-1]
        scale = tf.cast(size, x.dtype)
        found["numbers"] = [type(size).__name__, size, type(scale).__name__, scale, tf.sqrt(scale)]
        found["dropout"] = [type(layer).__name__ for layer in _producers(tf.nn.dropout(x, rate=0.25))]
        found["dropout_rate"] = [getattr(layer, "rate", None) for layer in _producers(tf.nn.dropout(x, rate=0.25))]
    found["restored"] = all(fn(name) is value for name, value in before.items())
    with tf_ops.references_off():
        found["dropout_off"] = bool(np.array_equal(tf.nn.dropout(tf.constant(X), rate=0.5).numpy(), X))
        found["random_off"] = {n: np.unique(call(fn(n)).numpy()).tolist() for n, call in RANDOM.items()}
    found["dropout_on"] = not np.array_equal(tf.nn.dropout(tf.constant(X), rate=0.5).numpy(), X)
    for name, call in CREATION.items():
        want = _flat(call(fn(name)))
        with tf_ops.traced():
            got = _flat(call(fn(name)))
        found[f"creation:{name}"] = _compare([w.numpy() for w in want], [np.asarray(g) for g in got])
    for name, call in RANDOM.items():
        want = call(fn(name))
        with tf_ops.traced():
            got = call(fn(name))
        found[f"creation:{name}"] = 0.0 if tuple(want.shape) == tuple(got.shape) else float("inf")
    return found


def _producers(tensor: Any) -> list[Any]:
    history = getattr(tensor, "_keras_history", None)
    return [history.operation] if history else []


def main(out: str) -> None:
    groups: dict[int, list[str]] = {}
    for name, mapped in tf_ops.TABLE.items():
        groups.setdefault(id(mapped), []).append(name)
    results: dict[str, Any] = {}
    for names in groups.values():
        case = next((CASES[n] for n in names if n in CASES), None)
        for name in names:
            if name in CREATION or name in RANDOM or name == "nn.dropout":
                continue  # checks() below
            if case is None:
                results[name] = {"err": None, "ops": [], "missing": True}
                continue
            try:
                results[name] = run_case(name, *case)
            except Exception as exc:  # reported per name by the test
                results[name] = {"err": None, "ops": [], "error": f"{type(exc).__name__}: {exc}"[:500]}
    Path(out).write_text(json.dumps({"cases": results, "checks": checks()}, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
