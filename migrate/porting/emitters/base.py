"""The emitter registry and the types emitters work with.

An emitter turns one Keras layer class into PyTorch source: it declares the layer's submodule once
(``ctx.submodule``: the ``torch.nn`` constructor, and where each Keras weight goes with which transform)
and returns, for each call of the layer, the ``forward`` expression. ``@emitter("Conv2D")`` registers it;
a user registers an emitter for their own layer class the same way (see docs/port.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Keras layer class name -> emitter function.
EMITTERS: dict[str, Callable[..., Any]] = {}


def emitter(*class_names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated ``fn(layer, call, ctx) -> Out | str`` for Keras layer classes ``class_names``."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in class_names:
            EMITTERS[name] = fn
        return fn

    return register


def emitter_key(class_name: str, module: str | None) -> str:
    """Registry key of a graph node: the class name, ``ops.<Name>`` for keras.ops calls (``x + 3.0``)."""
    return f"ops.{class_name}" if (module or "").startswith(("keras.src.ops", "keras.ops")) else class_name


@dataclass
class Weight:
    """One Keras variable of a layer: its name relative to the layer (``kernel``), full path and npz key."""

    name: str
    path: str
    key: str
    shape: tuple[int, ...]
    trainable: bool


@dataclass
class Layer:
    """A Keras layer as the worker described it."""

    name: str
    class_name: str
    config: dict[str, Any]
    trainable: bool
    weights: dict[str, Weight]
    attr: str = ""  # its attribute name on the generated module
    calls: int = 1

    def weight(self, name: str) -> Weight:
        return self.weights[name]


@dataclass
class Value:
    """A tensor in ``forward``: its variable, Keras shape (batch first) and torch layout.

    ``layout`` is ``"keras"`` (same axes as Keras) or ``"cf"`` (Keras' channels-last tensor held
    channels-first, N,C,*spatial). ``flat_from`` is set on a Flatten of a ``cf`` tensor whose elements
    are in channels-first order; its only consumers permute their weights to match.
    """

    var: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    layout: str = "keras"
    flat_from: tuple[int, ...] | None = None
    masked: bool = False  # Keras carries a mask with it (from Embedding(mask_zero=True) or Masking)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def dim(self, keras_axis: int) -> int:
        """The torch dimension of Keras axis ``keras_axis`` for this value's layout."""
        axis = keras_axis % self.rank
        if self.layout != "cf":
            return axis
        return 1 if axis == self.rank - 1 else (0 if axis == 0 else axis + 1)


@dataclass
class Call:
    """One call of a layer: its input values (flattened, in order), kwargs, and output Keras shapes."""

    inputs: list[Value]
    kwargs: dict[str, Any]
    index: int
    args: list[Any] = field(default_factory=list)  # positional args, tensors as Values, constants as-is
    output_consumers: list[list[str]] = field(default_factory=list)  # per output: consumer class names
    used: set[int] = field(default_factory=set)  # indices of the outputs something reads
    mask_read: bool = False

    def uses(self, index: int) -> bool:
        return index in self.used

    @property
    def mask(self) -> Value | None:
        """The Keras mask this call receives (bool (N, T), from ``Embedding(mask_zero=True)`` or ``Masking``).

        Reading it tells the renderer the emitter applies the mask; a call whose mask no emitter read is
        refused, since Keras would compute something else than the unmasked layer.
        """
        self.mask_read = True
        mask = self.kwargs.get("mask")
        return mask if isinstance(mask, Value) else None

    @property
    def input(self) -> Value:
        return self.inputs[0]


@dataclass
class Out:
    """An emitter's result: ``expr`` (a tuple for several outputs) and the layout of the output(s)."""

    expr: str | tuple[str, ...]
    layout: str = "keras"
    flat_from: tuple[int, ...] | None = None
    shapes: list[tuple[int | None, ...]] | None = None
    name: str | None = None  # the forward variable's name when the layer's name says less (``tokens_mask``)
    dtype: str | None = None  # the output's dtype when it is not the first input's (ops.cast, ops.arange)


class Unsupported(Exception):
    """A layer configuration an emitter cannot port exactly; the message says what and why."""
