"""Inputs for a parity run: generated from the manifest (seeded, dtype-aware) or read from a user .npz.

Generated values follow what the graph implies about each input (``checks.parity.implied``: pixel
ranges, normalization statistics, embedding table sizes, padding masks) unless the user gives a range.
Arrays are returned in the TF layout, keyed by the manifest's ``name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checks.parity import implied
from checks.parity.specs import TensorSpec
from migrate.core.artifacts import not_regular
from migrate.core.errors import InputError

#: Range for integer inputs that feed no Gather: small enough for any lookup table, wide enough to vary.
FALLBACK_INT_RANGE = (0, 10)
_STRING_KINDS = frozenset("USO")


@dataclass
class InputOptions:
    """How to generate inputs. Ranges are half-open ``[low, high)`` like Python's ``range``."""

    seed: int = 0
    iterations: int = 1
    batch_size: int = 2
    dim_size: int = 8
    float_range: tuple[float, float] | None = None  # None: standard normal; else uniform in the range
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


def _is_string(dtype: str) -> bool:
    return dtype in ("string", "str", "object", "bytes")


def string_input_error(spec: TensorSpec) -> InputError:
    return InputError(f"input {spec.name!r} is a string tensor; parity compares numeric tensors only, so check "
                      "a signature that takes the tokenized ids (and convert that one)")


def infer_index_ranges(onnx_path: Path, specs: tuple[TensorSpec, ...]) -> dict[str, tuple[int, int]]:
    """Integer input name -> ``(0, rows)`` for inputs whose values reach the indices of a Gather."""
    return {name: (i.low, i.high) for name, i in implied.infer(onnx_path, specs).items() if i.kind == "integers"}


def _dims(spec: TensorSpec, options: InputOptions) -> tuple[int, ...]:
    dims = spec.tf_dims()
    if dims is None:
        raise InputError(f"input {spec.name!r} has unknown rank, so inputs cannot be generated; "
                         "pass them with --inputs FILE.npz")
    return tuple(options.batch_size if (d is None and i == 0) else options.dim_size if d is None else int(d)
                 for i, d in enumerate(dims))


def generate(specs: tuple[TensorSpec, ...], options: InputOptions,
             hints: dict[str, implied.Implied | tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """``options.iterations`` batches of seeded random inputs, each ``{name: array in the TF layout}``.

    Precedence per input: ``options.ranges[name]``, then ``options.float_range`` (floats), then ``hints``
    (what the graph implies; a ``(low, high)`` tuple is an integer range), then the dtype's fallback
    (standard normal, ``[0, 10)``, fair coin).
    """
    import numpy as np

    unknown = sorted(set(options.ranges) - {s.name for s in specs})
    if unknown:
        raise InputError(f"--range names unknown input(s) {', '.join(unknown)}; "
                         f"inputs are: {', '.join(s.name for s in specs)}")
    hints = {name: h if isinstance(h, implied.Implied) else implied.Implied("integers", *h)
             for name, h in (hints or {}).items()}
    rng = np.random.default_rng(options.seed)
    batches = []
    for _ in range(options.iterations):
        batch = {}
        for spec in specs:
            if _is_string(spec.dtype):
                raise string_input_error(spec)
            batch[spec.name] = _draw(rng, spec, _dims(spec, options), options, hints.get(spec.name))
        batches.append(batch)
    return batches


def plan(specs: tuple[TensorSpec, ...], options: InputOptions,
         hints: dict[str, implied.Implied] | None = None) -> list[dict[str, str]]:
    """Per input, the distribution ``generate`` draws from and why (for the report)."""
    rows = []
    for spec in specs:
        hint = (hints or {}).get(spec.name)
        user = options.ranges.get(spec.name) or (options.float_range if _is_float(spec.dtype) else None)
        if user is not None:
            values, reason = f"uniform[{user[0]:g}, {user[1]:g})", "--range/--float-range"
        elif hint is not None:
            values, reason = hint.describe(), hint.reason
        elif spec.dtype == "bool":
            values, reason = "fair coin", "default"
        elif spec.dtype.startswith(("int", "uint")):
            values, reason = f"integers[{FALLBACK_INT_RANGE[0]}, {FALLBACK_INT_RANGE[1]})", "default"
        else:
            values, reason = "normal(mean 0, std 1)", "default"
        rows.append({"name": spec.name, "values": values, "reason": reason})
    return rows


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "complex"))


def _draw(rng: Any, spec: TensorSpec, shape: tuple[int, ...], options: InputOptions,
          hint: implied.Implied | None) -> Any:
    import numpy as np

    dtype = np.dtype(spec.dtype)
    user = options.ranges.get(spec.name)
    if user is None and hint is not None and hint.kind == "prefix_mask" and len(shape) >= 2:
        lengths = rng.integers(1, shape[1] + 1, shape[0])
        mask = np.arange(shape[1])[None, :] < lengths[:, None]
        return np.broadcast_to(mask.reshape(mask.shape + (1,) * (len(shape) - 2)), shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        if user is None and hint is not None and hint.kind == "integers":
            user = (hint.low, hint.high)
        low, high = user or FALLBACK_INT_RANGE
        return rng.integers(int(low), int(high), shape, dtype=dtype)
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        low_high = user or options.float_range
        if low_high is not None:
            return rng.uniform(*low_high, shape).astype(dtype)
        if hint is not None and hint.kind == "uniform":
            return rng.uniform(hint.low, hint.high, shape).astype(dtype)
        if hint is not None and hint.kind == "integers":  # float token ids or labels: whole numbers in range
            return rng.integers(int(hint.low), int(hint.high), shape).astype(dtype)
        if hint is not None and hint.kind == "normal":
            return (rng.standard_normal(shape) * hint.high + hint.low).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)
    raise InputError(f"input {spec.name!r} has dtype {spec.dtype}, which parity cannot generate; "
                     "pass inputs with --inputs FILE.npz")


def load_npz(path: str | Path, specs: tuple[TensorSpec, ...], layout: str = "tf") -> list[dict[str, Any]]:
    """One batch from a user's .npz (one array per input, ``layout`` "tf" or "torch"), checked and in the TF layout."""
    import numpy as np

    path = Path(path)
    special = not_regular(path)
    if special:
        raise InputError(f"{path}: is {special}, not an .npz file; pass an .npz written by numpy.savez")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read inputs ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                         "pass an .npz written by numpy.savez with one array per input") from exc
    batch = {}
    for spec in specs:
        key = spec.name if spec.name in arrays else spec.tf_name
        if key not in arrays:
            raise InputError(f"{path}: no array for input {spec.name!r} (it has: {', '.join(sorted(arrays)) or 'none'}); "
                             f"save one array per input: {', '.join(s.name for s in specs)}")
        array = arrays[key]
        if _is_string(spec.dtype) or array.dtype.kind in _STRING_KINDS:
            raise string_input_error(spec)
        expected = spec.shape if layout == "torch" else spec.tf_dims()
        named = spec.layout if layout == "torch" else spec.tf_layout
        if expected is not None and (array.ndim != len(expected)
                                     or any(d is not None and d != a for d, a in zip(expected, array.shape))):
            want = "(" + ", ".join("?" if d is None else str(d) for d in expected) + ")"
            raise InputError(f"{path}: input {spec.name!r} has shape {tuple(array.shape)}, expected {want} in the "
                             f"{layout.upper() if layout == 'tf' else layout} layout"
                             + (f" ({named})" if named else "")
                             + ("; pass --inputs-layout torch for channels-first arrays" if spec.perm and layout == "tf"
                                else ""))
        dtype = np.dtype(spec.dtype)
        if array.dtype != dtype:
            if array.dtype.kind != dtype.kind and not (array.dtype.kind in "iu" and dtype.kind in "iu"):
                raise InputError(f"{path}: input {spec.name!r} has dtype {array.dtype}, expected {dtype}")
            array = array.astype(dtype)
        batch[spec.name] = spec.to_tf_layout(array) if layout == "torch" else array
    return [batch]
