"""Input/output descriptions from ``CONVERTED/manifest.json`` and the TF <-> torch layout mapping.

The manifest says, per tensor, its torch-side shape/layout and TF-side shape/layout; parity feeds
TF in its layout and torch/ONNX in theirs, and compares everything in the torch layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.core.errors import InputError


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output as both sides see it."""

    name: str
    tf_name: str
    dtype: str
    shape: tuple[int | None, ...] | None
    tf_shape: tuple[int | None, ...] | None
    layout: str | None = None
    tf_layout: str | None = None

    @property
    def perm(self) -> tuple[int, ...] | None:
        """Axes permutation taking a TF-layout array to the torch layout (None when they agree)."""
        if not self.layout or not self.tf_layout or self.layout == self.tf_layout:
            return None
        if sorted(self.layout) != sorted(self.tf_layout):
            raise InputError(f"manifest: {self.name!r} has layouts {self.tf_layout!r} (TF) and {self.layout!r} "
                             "(torch) with different axes; re-run 'tf2torch convert'")
        return tuple(self.tf_layout.index(axis) for axis in self.layout)

    def to_torch_layout(self, array: Any) -> Any:
        import numpy as np

        perm = self.perm
        return array if perm is None or array.ndim != len(perm) else np.ascontiguousarray(array.transpose(perm))

    def to_tf_layout(self, array: Any) -> Any:
        import numpy as np

        perm = self.perm
        if perm is None or array.ndim != len(perm):
            return array
        inverse = tuple(perm.index(i) for i in range(len(perm)))
        return np.ascontiguousarray(array.transpose(inverse))

    def tf_dims(self) -> tuple[int | None, ...] | None:
        """TF-side shape; where TF says None but the torch program fixed the size, that size."""
        if self.shape is None:
            return self.tf_shape
        torch_side = list(self.shape)
        perm = self.perm
        if perm is not None and len(perm) == len(torch_side):
            torch_side = [torch_side[perm.index(i)] for i in range(len(perm))]
        if self.tf_shape is None or len(self.tf_shape) != len(torch_side):
            return tuple(torch_side)
        return tuple(t if t is not None else s for t, s in zip(self.tf_shape, torch_side))


@dataclass(frozen=True)
class Manifest:
    """What parity needs from a conversion: where the artifacts are and what goes in and out."""

    directory: Path
    signature: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source_path: str | None = None  # the SOURCE it was converted from, as the manifest records it
    kind: str = "convert"  # "port": model.py + weights.safetensors, no model.pt2 or model.onnx
    versions: dict[str, str] | None = None  # what wrote it (TensorFlow, tf2onnx, torch, ...)
    random_outputs: dict[str, list[str]] = field(default_factory=dict)  # output -> the random ops it depends on

    @property
    def pt2(self) -> Path:
        return self.directory / "model.pt2"

    @property
    def onnx(self) -> Path:
        return self.directory / "model.onnx"


def _spec(entry: dict[str, Any], where: Path) -> TensorSpec:
    try:
        name = entry["name"]
        shape = entry.get("shape")
        return TensorSpec(name=name, tf_name=entry.get("tf_name") or name, dtype=str(entry["dtype"]),
                          shape=None if shape is None else tuple(shape),
                          tf_shape=None if entry.get("tf_shape") is None else tuple(entry["tf_shape"]),
                          layout=entry.get("layout"), tf_layout=entry.get("tf_layout"))
    except (KeyError, TypeError) as exc:
        raise InputError(f"{where}: malformed tensor entry {entry!r} ({exc}); re-run 'tf2torch convert'") from exc


def load_manifest(converted: str | Path) -> Manifest:
    """Read CONVERTED/manifest.json; a directory that is not a tf2torch output is an input error (exit 2)."""
    from migrate.core.artifacts import MANIFEST, read_manifest

    directory = Path(converted)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory; pass the output directory of 'tf2torch convert'")
    data = read_manifest(directory)
    where = directory / MANIFEST
    inputs = tuple(_spec(e, where) for e in data.get("inputs") or [])
    outputs = tuple(_spec(e, where) for e in data.get("outputs") or [])
    if not outputs:
        raise InputError(f"{where}: lists no outputs; re-run 'tf2torch convert'")
    signature = (data.get("source") or {}).get("signature") or "serving_default"
    return Manifest(directory=directory, signature=signature, inputs=inputs, outputs=outputs,
                    source_path=(data.get("source") or {}).get("path"), kind=data.get("kind") or "convert",
                    versions={str(k): str(v) for k, v in (data.get("versions") or {}).items()},
                    random_outputs={str(k): [str(op) for op in v] for k, v in (data.get("random_outputs") or {}).items()
                                    if isinstance(v, list)})
