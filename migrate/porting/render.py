"""Render the worker's layer graph as PyTorch source: one ``nn.Module`` class (plus one per nested model).

Each Keras layer becomes a submodule named after it, declared once in ``__init__`` and called once per
Keras call in a straight-line ``forward`` whose variables are named after the layers. The rendering also
yields the weight map: every Keras variable's torch key and the transform that takes it there.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from migrate.core.errors import ConversionError
from migrate.porting import runtime
from migrate.porting.emitters import (
    EMITTERS,
    Call,
    Layer,
    Out,
    Unsupported,
    Value,
    Weight,
    emitter_key,
)
from migrate.porting.transforms import Step

MODEL_CLASSES = {"Functional", "Sequential", "Model"}
#: call keywords through which Keras hands a layer the mask of its inputs
MASK_KWARGS = ("mask", "query_mask", "value_mask", "key_mask")
#: layers that read the mask off their input tensors (not through a call keyword)
MASK_READERS = {"MultiHeadAttention", "Attention", "AdditiveAttention"}
#: names a generated variable must not shadow
RESERVED = {"self", "torch", "nn", "F", *dir(builtins)}
_IMPORTS = {"F": "import torch.nn.functional as F", "nn": "from torch import nn"}


def pyname(name: str, taken: set[str] | None = None) -> str:
    """A Python identifier for a Keras name (``conv1/conv`` -> ``conv1_conv``), unique within ``taken``."""
    ident = re.sub(r"\W", "_", name).strip("_").lower() or "x"
    if ident[0].isdigit() or keyword.iskeyword(ident) or ident in RESERVED:
        ident = f"{ident}_"
    if taken is not None:
        base, n = ident, 2
        while ident in taken:
            ident, n = f"{base}_{n}", n + 1
        taken.add(ident)
    return ident


def class_name_for(name: str) -> str:
    """``resnet50`` -> ``Resnet50``, ``my_model`` -> ``MyModel``."""
    parts = [p for p in re.split(r"\W|_", name) if p]
    ident = "".join(p[:1].upper() + p[1:] for p in parts) or "PortedModel"
    return f"Model{ident}" if ident[0].isdigit() else ident


@dataclass
class WeightMapping:
    keras: str
    torch: str
    key: str
    steps: tuple[Step, ...]
    trainable: bool


@dataclass
class Submodule:
    attr: str
    expr: str
    frozen: bool = False
    eval_only: bool = False


@dataclass
class ClassSource:
    name: str
    inits: list[str] = field(default_factory=list)
    forward_args: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    eval_only: list[str] = field(default_factory=list)
    returns: list[str] = field(default_factory=list)
    activity: bool = False  # forward sets self.activity_loss (Keras activity regularisers)
    added_loss: bool = False  # forward sets self.added_loss (add_loss in a custom layer's call)
    dims: dict[int, str] = field(default_factory=dict)  # traced sentinel size -> ``x.shape[i]``
    keras_class: str | None = None  # the custom Keras class this class ports
    output_mask: bool = False  # forward sets self.output_mask (Keras' mask of its one output)


class Context:
    """What an emitter may do: declare its submodule (once), add forward lines, convert layouts."""

    def __init__(self, renderer: Renderer, cls: ClassSource, prefix: str) -> None:
        self.renderer = renderer
        self.cls = cls
        self.prefix = prefix
        self.declared: dict[str, str] = {}
        self.shapes: dict[str, tuple[int | None, ...]] = {}
        self.dtypes: dict[str, str] = {}  # tensor id -> the dtype Keras gives it (where a call reads it)
        self.variables: set[str] = set()
        self.fresh_names: set[str] = set()
        self.nested_masked: dict[str, str] = {}  # nested model layer name -> attr, where it sets output_mask
        self.layer: Layer | None = None
        self.var = ""
        self.top = False

    def submodule(self, layer: Layer, expr: str, weights: dict[str, tuple[str, tuple[Step, ...]]] | None = None,
                  *, eval_only: bool = False) -> str:
        """Declare ``self.<layer attr> = expr`` (first call only) and map ``weights``: keras name -> (suffix, steps)."""
        if layer.name in self.declared:
            return self.declared[layer.name]
        self.renderer.imports.add("nn" if "nn." in expr else "torch")
        self.cls.inits.append(f"self.{layer.attr} = {expr}")
        if not layer.trainable and layer.weights:
            self.cls.inits.append(f"self.{layer.attr}.requires_grad_(False)  # frozen in Keras (trainable=False)")
        if eval_only:
            self.cls.eval_only.append(layer.attr)
        self.map_weights(layer, {k: (f"{layer.attr}.{suffix}", steps) for k, (suffix, steps) in (weights or {}).items()})
        self.declared[layer.name] = f"self.{layer.attr}"
        return self.declared[layer.name]

    def tensor(self, layer: Layer, name: str, init: str, *, keras_name: str | None = None,
               steps: tuple[Step, ...] = (), parameter: bool = False) -> str:
        """Declare ``self.<layer>_<name>``: a buffer (or an ``nn.Parameter``) created by the torch expression
        ``init`` and, with ``keras_name``, loaded from that Keras weight (Normalization's mean, LayerScale's gamma)."""
        attr = f"{layer.attr}_{pyname(name)}"
        if attr not in self.declared:
            if parameter:
                self.renderer.imports.add("nn")
                self.cls.inits.append(f"self.{attr} = nn.Parameter({init})")
                if not layer.trainable:
                    self.cls.inits.append(f"self.{attr}.requires_grad_(False)  # frozen in Keras (trainable=False)")
            else:
                self.cls.inits.append(f'self.register_buffer("{attr}", {init})')
            if keras_name is not None:
                self.map_weights(layer, {keras_name: (attr, steps)})
            self.declared[attr] = f"self.{attr}"
        return self.declared[attr]

    def map_weights(self, layer: Layer, mapping: dict[str, tuple[str, tuple[Step, ...]]]) -> None:
        for keras_name, (torch_key, steps) in mapping.items():
            weight: Weight = layer.weights[keras_name]
            self.renderer.weights.append(WeightMapping(weight.path, self.prefix + torch_key, weight.key, steps,
                                                       weight.trainable and layer.trainable))

    def helper(self, helper: Any, code: str | None = None) -> str:
        """Put a module-level class or function into model.py once; returns its name.

        ``helper`` is one of ``migrate.porting.runtime``'s helpers (copied with the helpers it calls), or,
        for an emitter of your own, the name of a class or function whose source is ``code``.
        """
        name = helper if isinstance(helper, str) else helper.__name__
        found = {name: code.strip("\n")} if code is not None else runtime.sources(name)
        for key, text in found.items():
            self.renderer.helpers.setdefault(key, text)
            self.renderer.imports.update({"nn", "F"} & set(re.findall(r"\b(nn|F)\.", text)))
        return name

    def fresh(self, name: str) -> str:
        """A new forward variable name based on ``name`` (for emitters that unpack several results)."""
        var = pyname(name, self.variables)
        self.fresh_names.add(var)
        return var

    def need(self, name: str) -> str:
        """Ask for an import (``"F"`` for torch.nn.functional); returns the name to use."""
        self.renderer.imports.add(name)
        return name

    def line(self, code: str) -> None:
        self.cls.body.append(code)

    def literal(self, value: Any) -> str:
        """A constant argument of a keras.ops call as source: numbers, tuples, scalar tensors; a size that
        ``call`` read off a tensor (``ops.shape(x)[1]``) as ``x.shape[1]``, so it follows the input."""
        if isinstance(value, Value):
            return self.keras(value)
        if isinstance(value, dict) and value.get("class_name") == "__tensor__":
            v = value["config"]["value"]
            return f"torch.tensor({v!r})" if isinstance(v, list) else self.literal(v)
        if isinstance(value, bool) or value is None:
            return repr(value)
        if isinstance(value, int) and value in self.cls.dims:
            return self.cls.dims[value]
        if isinstance(value, float) and value.is_integer() and int(value) in self.cls.dims:
            return f"float({self.cls.dims[int(value)]})"  # a size Keras cast to float (a loss's batch mean)
        if isinstance(value, (list, tuple)):
            inner = ", ".join(self.literal(v) for v in value)
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        if isinstance(value, (int, float, str)):
            return repr(value)
        raise Unsupported(f"a constant argument of type {type(value).__name__}")

    def keras(self, value: Value) -> str:
        """``value`` as an expression in Keras' layout (channels last)."""
        if value.layout == "cf":
            rank = value.rank
            return f"{value.var}.permute(0, {', '.join(str(i) for i in range(2, rank))}, 1)"
        if value.flat_from is not None:
            raise Unsupported("a Flatten in channels-first order reached a layer that needs Keras' order")
        return value.var

    def cf(self, value: Value) -> str:
        """``value`` (rank >= 3) as an expression in channels-first layout."""
        if value.layout == "cf":
            return value.var
        rank = value.rank
        return f"{value.var}.permute(0, {rank - 1}, {', '.join(str(i) for i in range(1, rank - 1))})"


class Renderer:
    """Turns graph.json into source text and a weight map."""

    def __init__(self, graph: dict[str, Any], *, class_name: str | None, keep_layout: bool) -> None:
        self.graph = graph
        self.keep_layout = keep_layout
        self.imports: set[str] = {"torch"}
        self.weights: list[WeightMapping] = []
        self.classes: list[ClassSource] = []
        self.class_names: set[str] = set()
        self.unsupported: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self.train_semantics: list[dict[str, Any]] = []
        self.semantics_done: set[str] = set()
        self.helpers: dict[str, str] = {}
        self.added_losses: list[str] = []  # submodules whose forward sets added_loss (Keras add_loss)
        self.local = 0  # > 0 while rendering inside a custom layer: names lose Keras' global _N suffixes
        self.notes: list[str] = []  # one-line warnings for the user (augmentation layers left to the data)
        self.output_mask = False  # the top class's forward sets self.output_mask (Keras' mask of its output)
        graph = _unwrapped(graph)
        default = graph["custom"]["class"] if "custom" in graph else class_name_for(graph["name"])
        self.top = self.render_class(graph, class_name or default, prefix="", top=True)

    def render_class(self, graph: dict[str, Any], name: str, prefix: str, top: bool) -> ClassSource:
        name = pyname(name) if not name.isidentifier() else name
        base, n = name, 2
        while name in self.class_names:
            name, n = (f"{name}Block", n) if "custom" not in graph else (f"{base}{n}", n + 1)
        self.class_names.add(name)
        cls = ClassSource(name)
        custom = graph.get("custom") or {}
        cls.keras_class = custom.get("class")
        ctx = Context(self, cls, prefix)
        ctx.top = top
        ctx.shapes = _collect_shapes(graph)
        ctx.dtypes = {ref["tensor"]: ref["dtype"] for entry in graph["layers"] for call in entry["calls"]
                      for part in (call["args"], call["kwargs"]) for ref in _tensor_refs(part) if ref.get("dtype")}
        layers = {entry["name"]: entry for entry in graph["layers"]}
        attrs: set[str] = {pyname(w["name"]) for w in [*custom.get("params", {}).values(),
                                                        *custom.get("consts", {}).values()]}
        objs: dict[str, Layer] = {}
        for entry in graph["layers"]:
            if entry["class_name"] == "InputLayer":
                continue
            weights = {w["name"]: Weight(w["name"], w["path"], w["key"], tuple(w["shape"]), w["trainable"])
                       for w in entry.get("weights", [])}
            objs[entry["name"]] = Layer(entry["name"], _key(entry),
                                        entry["config"], entry["trainable"], weights,
                                        attr=pyname(entry.get("attr") or self._local(entry["name"]), attrs),
                                        calls=len(entry["calls"]))
        self._check_supported(objs.values(), graph)
        variables: set[str] = set()
        ctx.variables = variables
        values: dict[str, Value] = {}
        for tensor in graph["inputs"]:
            layer_name = tensor.split(":")[0]
            cfg = layers[layer_name]["config"]
            shape = tuple(cfg.get("batch_shape") or cfg.get("batch_input_shape"))
            if layer_name in custom.get("params", {}):
                values[tensor] = self._parameter(ctx, custom["params"][layer_name], prefix)
                continue
            if layer_name in custom.get("consts", {}):
                values[tensor] = self._constant(ctx, custom["consts"][layer_name])
                continue
            var = pyname(layer_name if custom else self._local(layer_name), variables)
            cls.forward_args.append(var)
            value = Value(var, shape, cfg.get("dtype", "float32"))
            if self._channels_first(value) and not custom:
                if self.keep_layout and top:
                    ctx.line(f"{var} = {ctx.cf(value)}  # channels-last in, channels-first inside")
                value.layout = "cf"
            values[tensor] = value
        for size, (input_name, axis) in custom.get("dims", {}).items():
            cls.dims[int(size)] = f"{values[f'{input_name}:0:0'].var}.shape[{axis}]"
        pending = [(objs[name], i) for name in objs for i in range(objs[name].calls)]
        consumers = self._consumers(graph)
        order: dict[str, int] = {t: 0 for t in values}
        while pending:
            ready = [(layer, i) for layer, i in pending
                     if all(t in values for t in _tensors(layers[layer.name]["calls"][i]))]
            if not ready and (self.problems or self.unsupported):
                return cls  # a layer could not be emitted: the caller reports self.problems/unsupported
            if not ready:
                missing = sorted({t for layer, i in pending for t in _tensors(layers[layer.name]["calls"][i])
                                  if t not in values})
                raise ConversionError(f"missing {missing[:5]} for {[l.name for l, _ in pending[:5]]}; "f"model {graph['name']!r}: the layer graph has a cycle or a missing tensor; "
                                      "this is a tf2torch bug, please report it")
            order.update({t: len(order) for t in values if t not in order})
            # follow the chain just written (the ready call reading the newest value), else Keras' order
            layer, i = max(ready, key=lambda node: max((order.get(t, -1) for t in
                                                        _tensors(layers[node[0].name]["calls"][node[1]])), default=-1))
            pending.remove((layer, i))
            self._emit(ctx, layer, i, layers[layer.name], values, variables, consumers)
        if self.problems or self.unsupported:
            return cls  # the caller reports them (an unsupported op may feed only an add_loss term)
        outputs = graph["outputs"]
        if custom.get("losses"):
            terms = [ctx.keras(values[t]) for t in outputs[custom["outputs"]:]]
            ctx.line(f"self.added_loss = {' + '.join(terms)}  # add_loss in {custom['class']}.call")
            cls.added_loss = True
            outputs = outputs[:custom["outputs"]]
        masks = graph.get("output_masks") or []
        nested = outputs[0].rsplit(":", 2)[0] if len(outputs) == 1 else ""
        if not custom and len(outputs) == 1 and masks and masks[0] is not None and masks[0]["tensor"] in values:
            ctx.line(f"self.output_mask = {values[masks[0]['tensor']].var}  # Keras' mask of the output: "
                     "the loss averages over the steps it keeps")
            cls.output_mask = True
        elif not custom and nested in ctx.nested_masked:  # Keras keeps the mask a nested model's output carries
            ctx.line(f"self.output_mask = self.{ctx.nested_masked[nested]}.output_mask  # Keras' mask of the output")
            cls.output_mask = True
        self.output_mask = self.output_mask or (top and cls.output_mask)
        if top and self.added_losses:  # Keras adds each add_loss term to the loss summed (_aggregate_additional_loss)
            terms = [f"self.{path}.added_loss.sum()" for path in self.added_losses]
            ctx.line(f"self.added_loss = {' + '.join(terms)}  # add_loss terms, summed as Keras adds them")
            cls.added_loss = True
        for tensor in outputs:
            value = values[tensor]
            channels_first = self._channels_first(value) and not (self.keep_layout and top) and not custom
            try:
                cls.returns.append(ctx.cf(value) if channels_first else ctx.keras(value))
            except Unsupported as exc:
                self.problems.append(f"output {tensor.split(':')[0]}: {exc}")
        self.classes.append(cls)
        return cls

    @staticmethod
    def _channels_first(value: Value) -> bool:
        """Images and volumes (rank 4 and 5, float) are channels-first in torch; sequences keep (N, T, C)."""
        return value.rank in (4, 5) and value.dtype.startswith("float")

    def output_activations(self) -> list[str | None]:
        """Per top-level output, ``softmax``/``sigmoid`` when its last operation is one (the line that binds it),
        so train.py computes a probability cross-entropy from the logits, as Keras' TensorFlow backend does."""
        found = []
        for expr in self.top.returns:
            line = next((ln for ln in self.top.body if ln.startswith(f"{expr} = ")), "")
            match = re.match(r"\w+ = torch\.(softmax|sigmoid)\(", line)
            found.append(match.group(1) if match else None)
        return found

    def _check_supported(self, layers: Any, graph: dict[str, Any]) -> None:
        opened = {entry["name"] for entry in graph["layers"] if "open" in entry}
        for layer in layers:
            if layer.class_name not in EMITTERS and layer.class_name not in MODEL_CLASSES and layer.name not in opened:
                self.unsupported.setdefault(layer.class_name, []).append(layer.name)

    def _parameter(self, ctx: Context, weight: dict[str, Any], prefix: str) -> Value:
        """A variable the custom layer made with add_weight: ``self.<attribute>``, a parameter (a buffer if
        not trainable) loaded from the Keras variable as it is."""
        attr = pyname(weight["name"])
        shape = tuple(weight["shape"])
        init = f"torch.zeros({', '.join(str(d) for d in shape) or '()'})"
        if weight["trainable"]:
            self.imports.add("nn")
            ctx.cls.inits.append(f"self.{attr} = nn.Parameter({init})")
        else:
            ctx.cls.inits.append(f'self.register_buffer("{attr}", {init})')
        self.weights.append(WeightMapping(weight["path"], prefix + attr, weight["key"], (), weight["trainable"]))
        return Value(f"self.{attr}", shape, weight["dtype"])

    @staticmethod
    def _constant(ctx: Context, const: dict[str, Any]) -> Value:
        """A tensor the custom layer holds as an attribute (not a variable): a non-persistent buffer with the
        attribute's name (``torch.arange(17).reshape(1, 17)`` where it is a range), not in the state dict."""
        attr = pyname(const["name"])
        ctx.cls.inits.append(f'self.register_buffer("{attr}", {_tensor_literal(const)}, persistent=False)')
        return Value(f"self.{attr}", tuple(const["shape"]), const["dtype"])

    @staticmethod
    def _consumers(graph: dict[str, Any]) -> dict[str, list[str]]:
        """tensor id -> class names of the layers that read it (one entry per call)."""
        out: dict[str, list[str]] = {}
        for entry in graph["layers"]:
            for call in entry["calls"]:
                for tensor in _tensors(call):
                    key = _key(entry)
                    out.setdefault(tensor, []).append(key if len(entry["calls"]) == 1 else "shared")
        for tensor in graph["outputs"]:
            out.setdefault(tensor, []).append("output")
        return out

    def _emit(self, ctx: Context, layer: Layer, index: int, entry: dict[str, Any], values: dict[str, Value],
              variables: set[str], consumers: dict[str, list[str]]) -> None:
        call_spec = entry["calls"][index]
        inputs = [values[t] for t in _tensors(call_spec)]
        kwargs = _substitute(call_spec["kwargs"], values)
        outputs = sorted({t for t in consumers if t.startswith(f"{layer.name}:{index}:")},
                         key=lambda t: int(t.rsplit(":", 1)[1]))
        call = Call(inputs, kwargs, index, args=_substitute(call_spec["args"], values),
                    output_consumers=[consumers[t] for t in outputs],
                    used={int(t.rsplit(":", 1)[1]) for t in outputs})
        ctx.layer = layer
        try:
            if layer.class_name in MODEL_CLASSES:
                out = self._nested(ctx, layer, entry, call)
            elif "open" in entry and not _user_emitter(layer.class_name):  # the user's own emitter wins
                out = self._custom(ctx, layer, entry, call)
            elif layer.class_name in EMITTERS:
                out = EMITTERS[layer.class_name](layer, call, ctx)
            else:
                return  # no emitter: listed in self.unsupported, which the caller reports
        except Unsupported as exc:
            self.problems.append(f"{layer.name} ({layer.class_name}): {exc}")
            return
        masked = any(v.masked for v in inputs) or any(_has_tensor(call_spec["kwargs"].get(k)) for k in MASK_KWARGS)
        if masked and not call.mask_read and (layer.class_name in MASK_READERS or call_spec["kwargs"].get("mask")):
            self.problems.append(f"{layer.name} ({layer.class_name}): Keras hands this call a mask (from "
                                 "Embedding(mask_zero=True), Masking or a layer's compute_mask), which its port "
                                 "does not apply")
            return
        out = out if isinstance(out, Out) else Out(out)
        exprs = out.expr if isinstance(out.expr, tuple) else (out.expr,)
        used = [f"{layer.name}:{index}:{k}" in consumers or len(exprs) == 1 for k in range(len(exprs))]
        base = layer.attr if layer.calls == 1 else f"{layer.attr}_call{index + 1}" if index else layer.attr
        base = out.name or base
        if isinstance(out.expr, tuple) and len(exprs) > 1 and all(e == exprs[0] for e in exprs):
            names = [pyname(base if k == 0 else f"{base}_{k}", variables) if used[k] else "_"
                     for k in range(len(exprs))]
            ctx.line(f"{', '.join(names)} = {exprs[0]}")
        else:
            names = []
            inputs_vars = {v.var for v in inputs}
            for k, expr in enumerate(exprs):
                if expr in ctx.fresh_names or (len(exprs) == 1 and expr in inputs_vars):
                    names.append(expr)  # already bound (``lstm, _ = self.lstm(x)``) or an identity: no alias
                elif used[k]:
                    names.append(pyname(base if k == 0 else f"{base}_{k}", variables))
                    ctx.line(f"{names[-1]} = {expr}")
                else:
                    names.append("_")
        ctx.fresh_names.clear()
        self._activity_penalty(ctx, layer, [n for n in names if n != "_"][:1])
        starts_mask = layer.class_name == "Masking" or (layer.class_name == "Embedding" and layer.config.get("mask_zero"))
        shapes = out.shapes or [None] * len(names)
        for k, name in enumerate(names):
            shape = shapes[k] if shapes[k] is not None else self._shape_of(ctx, f"{layer.name}:{index}:{k}", call)
            dtype = out.dtype or ctx.dtypes.get(f"{layer.name}:{index}:{k}") or (inputs[0].dtype if inputs else "float32")
            values[f"{layer.name}:{index}:{k}"] = Value(name, shape, dtype,
                                                        out.layout, out.flat_from,
                                                        masked=(masked or starts_mask) and len(shape) > 2)

    def _activity_penalty(self, ctx: Context, layer: Layer, outputs: list[str]) -> None:
        """Keras' activity regulariser on this layer's output: ``self.activity_loss`` (added to the loss by
        train.py), summed over the layers that have one and divided by the batch size as Keras 3 does."""
        try:
            reg = activity_regularizer(layer.class_name, layer.config)
        except Unsupported as exc:
            self.problems.append(f"{layer.name} ({layer.class_name}): {exc}")
            return
        if reg is None:
            return
        if not ctx.top or not outputs:
            self.problems.append(f"{layer.name} ({layer.class_name}): activity_regularizer inside a nested model")
            return
        y = outputs[0]
        terms = [f"{reg[k]!r} * {y}.{op}().sum()" for k, op in (("l1", "abs"), ("l2", "square")) if reg[k]]
        penalty = f"({' + '.join(terms)}) / {y}.shape[0]" if len(terms) > 1 else f"{terms[0]} / {y}.shape[0]"
        if ctx.cls.activity:
            penalty = f"self.activity_loss + {penalty}"
        ctx.line(f"self.activity_loss = {penalty}  # Keras activity_regularizer of {layer.name!r}")
        ctx.cls.activity = True

    @staticmethod
    def _shape_of(ctx: Context, tensor: str, call: Call) -> tuple[int | None, ...]:
        return ctx.shapes.get(tensor) or call.inputs[0].shape

    def _nested(self, ctx: Context, layer: Layer, entry: dict[str, Any], call: Call) -> Out:
        if layer.name not in ctx.declared:
            nested = self._dedupe(self.render_class(entry["graph"], class_name_for(layer.attr if self.local else
                                                                                   layer.name),
                                                    prefix=f"{ctx.prefix}{layer.attr}.", top=False))
            ctx.submodule(layer, f"{nested.name}()")
            if nested.output_mask:
                ctx.nested_masked[layer.name] = layer.attr
        if layer.name in ctx.nested_masked and any(c != ["output"] for c in call.output_consumers):
            raise Unsupported("its output carries the Keras mask of the nested model's output on into the layers "
                              "that read it (Keras keeps it at run time), which the port hands only to the loss")
        # nested classes take and return images channels-first, like the top-level class
        args = [ctx.cf(v) if self._channels_first(v) else ctx.keras(v) for v in call.inputs]
        shapes = [tuple(s) for s in entry["graph"]["output_shapes"]]
        layouts = {"cf" if self._channels_first(Value("", s, call.input.dtype)) else "keras" for s in shapes}
        if len(layouts) > 1:
            raise Unsupported("a nested model returning images and other tensors together")
        if entry["graph"].get("mask_inputs"):
            call.mask_read = True  # the masks Keras hands the nested model are the last arguments of its forward
        expr = f"self.{layer.attr}({', '.join(args)})"
        return Out(tuple([expr] * len(shapes)) if len(shapes) > 1 else expr, layouts.pop(), shapes=shapes)

    def _custom(self, ctx: Context, layer: Layer, entry: dict[str, Any], call: Call) -> Out:
        """A custom Keras layer: one class per Keras class (rendered once; an instance whose rendering
        differs gets ``Class2``), called with and returning Keras-layout tensors."""
        graph = entry["open"]
        if layer.name not in ctx.declared:
            self.local += 1
            try:
                cls = self.render_class(graph, graph["custom"]["class"], prefix=f"{ctx.prefix}{layer.attr}.",
                                        top=False)
                if "train_graph" in graph["custom"]:
                    self._training_branch(cls, graph["custom"]["train_graph"], f"{ctx.prefix}{layer.attr}.")
                cls = self._dedupe(cls)
            finally:
                self.local -= 1
            ctx.submodule(layer, f"{cls.name}()")
            if cls.added_loss:
                self.added_losses.append(f"{ctx.prefix}{layer.attr}")
        call.mask_read = True  # the masks Keras hands the layer are arguments of its forward, like its tensors
        args = [ctx.keras(v) for v in call.inputs]
        n = graph["custom"]["outputs"]
        shapes = [tuple(s) for s in graph["output_shapes"][:n]]
        expr = f"self.{layer.attr}({', '.join(args)})"
        return Out(tuple([expr] * n) if graph["custom"]["structure"] == "tuple" else expr, "keras", shapes=shapes)

    def _training_branch(self, cls: ClassSource, graph: dict[str, Any], prefix: str) -> None:
        """``call`` computes something else with ``training=True``: forward starts with ``if self.training:``
        and that graph's code; submodules, parameters and weights are the ones both graphs share."""
        train = self.render_class(graph, f"{cls.name}Training", prefix=prefix, top=False)
        self.classes.remove(train)
        self.class_names.discard(train.name)
        cls.inits += [ln for ln in train.inits if ln not in cls.inits]
        cls.body = [f"if self.training:  # {graph['custom']['class']}.call branches on training",
                    *[f"    {ln}" for ln in train.body], f"    return {', '.join(train.returns)}", *cls.body]
        seen: set[tuple[str, str]] = set()
        self.weights = [w for w in self.weights if (w.keras, w.torch) not in seen and not seen.add((w.keras, w.torch))]

    def _local(self, name: str) -> str:
        """Inside a custom class, ``add_3`` and ``dense_7`` read ``add`` and ``dense`` (made unique per class),
        so that every instance of the Keras class renders the same class text."""
        return re.sub(r"_\d+$", "", name) if self.local else name

    def _dedupe(self, cls: ClassSource) -> ClassSource:
        """The class already rendered with the same text (another instance of the same Keras class), else cls."""
        same = next((c for c in self.classes if c is not cls and c.keras_class == cls.keras_class and _same(c, cls)),
                    None)
        if same is None or cls not in self.classes:
            return cls
        self.classes.remove(cls)
        self.class_names.discard(cls.name)
        return same

    def source(self) -> str:
        """The text of model.py."""
        imports = ["import torch"]
        if "nn" in self.imports or self.classes:
            imports.append("import torch.nn.functional as F" if "F" in self.imports else "")
            imports.append("from torch import nn")
        header = f'"""{self.top.name}: ported from Keras by tf2torch port (channels-first unless --keep-layout)."""'
        parts = [header, "", "\n".join(i for i in imports if i), ""]
        parts += ["\n" + code + "\n" for code in self.helpers.values()]
        for cls in self.classes:
            parts.append(_class_text(cls))
        return "\n".join(parts).rstrip() + "\n"


def activity_regularizer(class_name: str, config: dict[str, Any]) -> dict[str, float] | None:
    """``{"l1", "l2"}`` of a layer's Keras activity regulariser (ActivityRegularization's own l1/l2), or None."""
    if class_name == "ActivityRegularization":
        l1, l2 = float(config.get("l1") or 0.0), float(config.get("l2") or 0.0)
        return {"l1": l1, "l2": l2} if l1 or l2 else None
    reg = config.get("activity_regularizer")
    if not isinstance(reg, dict):
        return None
    if reg.get("class_name") not in ("L1", "L2", "L1L2"):
        raise Unsupported(f"activity_regularizer {reg.get('class_name')} (L1, L2 and L1L2 are mapped)")
    cfg = reg.get("config") or {}
    return {"l1": float(cfg.get("l1") or 0.0), "l2": float(cfg.get("l2") or 0.0)}


def _key(entry: dict[str, Any]) -> str:
    """The emitter registry key of a graph entry: a library class registered with Keras under a package
    (``keras_hub>CachedMultiHeadAttention``) by that name where an emitter has it, else :func:`emitter_key`."""
    registered = entry.get("registered_name")
    if isinstance(registered, str) and ">" in registered and registered in EMITTERS:
        return registered
    return emitter_key(entry["class_name"], entry.get("module"))


def _user_emitter(class_name: str) -> bool:
    """An emitter registered from outside tf2torch (a user's class that shares a Keras name, such as
    ``StochasticDepth``, is opened up rather than given Keras' emitter)."""
    fn = EMITTERS.get(class_name)
    return fn is not None and not fn.__module__.startswith("migrate.porting.emitters")


def _tensor_literal(const: dict[str, Any]) -> str:
    """Torch source for a constant tensor: ``torch.arange(n)`` (reshaped) for a range, else ``torch.tensor``."""
    shape, dtype, values = tuple(const["shape"]), const["dtype"], const["values"]
    flat = values
    while isinstance(flat, list) and flat and isinstance(flat[0], list):
        flat = [v for row in flat for v in row]
    flat = flat if isinstance(flat, list) else [flat]
    kind = "" if dtype in ("int64", "float32", "bool") else f", dtype=torch.{dtype}"  # torch's defaults
    if flat and dtype.startswith("int") and flat == list(range(len(flat))):
        expr = f"torch.arange({len(flat)}{kind})"
        return expr if len(shape) == 1 else f"{expr}.reshape({', '.join(str(d) for d in shape)})"
    return f"torch.tensor({values!r}{kind})"


def _same(a: ClassSource, b: ClassSource) -> bool:
    return (a.inits, a.body, a.returns, a.forward_args) == (b.inits, b.body, b.returns, b.forward_args)


def _unwrapped(graph: dict[str, Any]) -> dict[str, Any]:
    """A subclassed Model arrives wrapped (a Functional whose only layer is the model): port the model's own
    graph as the top-level class, so it becomes one class whose ``__init__`` builds its sublayers."""
    inner = [e for e in graph["layers"] if e["class_name"] != "InputLayer"]
    if len(inner) == 1 and "open" in inner[0] and len(graph["inputs"]) == len(inner[0]["open"]["inputs"]):
        return inner[0]["open"]
    return graph


def _class_text(cls: ClassSource) -> str:
    lines = ["", f"class {cls.name}(nn.Module):", "    def __init__(self) -> None:", "        super().__init__()"]
    lines += [f"        {ln}" for ln in cls.inits]
    args = ", ".join(f"{a}: torch.Tensor" for a in cls.forward_args)
    lines += ["", f"    def forward(self, {args}):"]
    lines += [f"        {ln}" for ln in cls.body]
    lines.append(f"        return {', '.join(cls.returns)}")
    if cls.eval_only:
        lines += ["", f'    def train(self, mode: bool = True) -> "{cls.name}":', "        super().train(mode)"]
        lines += [f"        self.{attr}.eval()  # Keras runs this layer in inference mode (trainable=False)"
                  for attr in cls.eval_only]
        lines.append("        return self")
    return "\n".join(lines) + "\n"


def _substitute(args: Any, values: dict[str, Value]) -> Any:
    """A call's args with each tensor reference replaced by its Value."""
    if _is_tensor(args):
        return values[args["tensor"]]
    if isinstance(args, list):
        return [_substitute(a, values) for a in args]
    if isinstance(args, dict):
        return {k: _substitute(v, values) for k, v in args.items()}
    return args


def _has_tensor(value: Any) -> bool:
    return _is_tensor(value) or (isinstance(value, (list, dict)) and any(
        _has_tensor(v) for v in (value.values() if isinstance(value, dict) else value)))


def _is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and "tensor" in value


def _tensor_refs(value: Any) -> Iterator[dict[str, Any]]:
    """The tensor references inside a call's (nested) arguments, in order."""
    if _is_tensor(value):
        yield value
    elif isinstance(value, (list, dict)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _tensor_refs(v)


def _tensors(call: dict[str, Any]) -> list[str]:
    """Tensor ids of a call's positional args, then its keyword args (``initial_state``), flattened in order."""
    return [ref["tensor"] for part in (call["args"], call["kwargs"]) for ref in _tensor_refs(part)]


def _collect_shapes(graph: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
    """Keras shapes of every tensor of one graph that a call reads, and of its outputs."""
    shapes: dict[str, tuple[int | None, ...]] = {ref["tensor"]: tuple(ref["shape"]) for entry in graph["layers"] for call in entry["calls"]
              for part in (call["args"], call["kwargs"]) for ref in _tensor_refs(part)
              if ref.get("shape") is not None}
    shapes.update({t: tuple(s) for t, s in zip(graph["outputs"], graph.get("output_shapes", []))})
    return shapes
