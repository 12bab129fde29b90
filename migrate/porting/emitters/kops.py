"""``keras.ops`` calls inside custom layers (``call`` opened up by the Keras worker): one small entry per op.

Every op works on Keras' layout (channels last): a custom class takes and returns tensors as Keras holds
them, and these emitters read their tensor arguments through ``ctx.keras``. Sizes that ``call`` took from
``ops.shape`` at trace time are written as ``x.shape[i]`` (``ctx.literal``), never as the traced number.

Register another op the same way (``@emitter("ops.Erfc")``); the key is ``ops.`` + the Keras op class name.
"""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter

TORCH_DTYPES = {"float16": "torch.float16", "bfloat16": "torch.bfloat16", "float32": "torch.float32",
                "float64": "torch.float64", "int8": "torch.int8", "int16": "torch.int16", "int32": "torch.int32",
                "int64": "torch.int64", "uint8": "torch.uint8", "bool": "torch.bool"}
#: one-argument ops: the torch expression with ``{x}`` for the argument
UNARY = {"ops.Sqrt": "torch.sqrt({x})", "ops.Exp": "torch.exp({x})", "ops.Log": "torch.log({x})",
         "ops.Square": "torch.square({x})", "ops.Absolute": "torch.abs({x})", "ops.Abs": "torch.abs({x})",
         "ops.Negative": "-{x}", "ops.Tanh": "torch.tanh({x})", "ops.Sigmoid": "torch.sigmoid({x})",
         "ops.Relu": "torch.relu({x})", "ops.Relu6": "F.relu6({x})", "ops.Silu": "F.silu({x})",
         "ops.Swish": "F.silu({x})", "ops.Softplus": "F.softplus({x})", "ops.Selu": "F.selu({x})", "ops.Erf": "torch.erf({x})",
         "ops.Rsqrt": "torch.rsqrt({x})", "ops.Sin": "torch.sin({x})", "ops.Cos": "torch.cos({x})",
         "ops.Expm1": "torch.expm1({x})", "ops.Log1p": "torch.log1p({x})", "ops.Reciprocal": "torch.reciprocal({x})",
         "ops.Sign": "torch.sign({x})", "ops.Floor": "torch.floor({x})", "ops.Ceil": "torch.ceil({x})",
         "ops.LogicalNot": "torch.logical_not({x})", "ops.OnesLike": "torch.ones_like({x})",
         "ops.ZerosLike": "torch.zeros_like({x})", "ops.StopGradient": "{x}.detach()",
         "ops.ConvertToTensor": "{x}"}
#: two-argument ops (either may be a Python number)
BINARY = {"ops.Matmul": "torch.matmul({a}, {b})", "ops.Power": "{a} ** {b}", "ops.Mod": "{a} % {b}",
          "ops.FloorDivide": "{a} // {b}", "ops.Equal": "{a} == {b}", "ops.Less": "{a} < {b}",
          "ops.LessEqual": "{a} <= {b}", "ops.Greater": "{a} > {b}", "ops.GreaterEqual": "{a} >= {b}",
          "ops.LogicalAnd": "torch.logical_and({a}, {b})", "ops.LogicalOr": "torch.logical_or({a}, {b})"}
#: reductions over ``axis`` with ``keepdims``: the torch method
REDUCE = {"ops.Sum": "sum", "ops.Mean": "mean", "ops.Max": "amax", "ops.Min": "amin", "ops.Prod": "prod",
          "ops.Argmax": "argmax", "ops.Argmin": "argmin", "ops.All": "all"}


def args(call: Call, ctx: Any) -> list[str]:
    """Every positional argument as an expression: tensors in Keras layout, constants as literals."""
    return [ctx.keras(a) if isinstance(a, Value) else ctx.literal(a) for a in call.args]


def _unary(template: str) -> Any:
    def emit(layer: Layer, call: Call, ctx: Any) -> Out:
        if "F." in template:
            ctx.need("F")
        return Out(template.format(x=args(call, ctx)[0]))
    return emit


def _binary(template: str) -> Any:
    def emit(layer: Layer, call: Call, ctx: Any) -> Out:
        a, b = args(call, ctx)[:2]
        return Out(template.format(a=a, b=b))
    return emit


def _reduce(method: str) -> Any:
    def emit(layer: Layer, call: Call, ctx: Any) -> Out:
        axis, keep = layer.config.get("axis"), bool(layer.config.get("keepdims"))
        x = args(call, ctx)[0]
        if axis is None:
            return Out(f"{x}.{method}()" if not keep else f"{x}.{method}(dim=tuple(range({x}.dim())), keepdim=True)")
        if isinstance(axis, list) and method in ("argmax", "argmin", "prod", "all"):
            raise Unsupported(f"ops.{method} over several axes")
        dim = tuple(axis) if isinstance(axis, list) else axis
        return Out(f"{x}.{method}(dim={dim!r}{', keepdim=True' if keep else ''})")
    return emit


for _key, _template in UNARY.items():
    emitter(_key)(_unary(_template))
for _key, _template in BINARY.items():
    emitter(_key)(_binary(_template))
for _key, _method in REDUCE.items():
    emitter(_key)(_reduce(_method))


@emitter("ops.Maximum", "ops.Minimum")
def maximum(layer: Layer, call: Call, ctx: Any) -> Out:
    a, b = args(call, ctx)[:2]
    fn = "maximum" if layer.class_name == "ops.Maximum" else "minimum"
    if not isinstance(call.args[1], Value):
        return Out(f"torch.clamp({a}, {'min' if fn == 'maximum' else 'max'}={b})")
    if not isinstance(call.args[0], Value):
        return Out(f"torch.clamp({b}, {'min' if fn == 'maximum' else 'max'}={a})")
    return Out(f"torch.{fn}({a}, {b})")


@emitter("ops.Std", "ops.Var")
def std(layer: Layer, call: Call, ctx: Any) -> Out:
    axis, keep = layer.config.get("axis"), bool(layer.config.get("keepdims"))
    dim = tuple(axis) if isinstance(axis, list) else axis
    method = "std" if layer.class_name == "ops.Std" else "var"
    return Out(f"{args(call, ctx)[0]}.{method}(dim={dim!r}, correction=0{', keepdim=True' if keep else ''})")


@emitter("ops.Softmax", "ops.LogSoftmax")
def softmax(layer: Layer, call: Call, ctx: Any) -> Out:
    axis = layer.config.get("axis", -1)
    if isinstance(axis, list):
        raise Unsupported("softmax over several axes")
    fn = "softmax" if layer.class_name == "ops.Softmax" else "log_softmax"
    return Out(f"torch.{fn}({args(call, ctx)[0]}, dim={axis})")


@emitter("ops.Elu")
def elu(layer: Layer, call: Call, ctx: Any) -> Out:
    ctx.need("F")
    alpha = float(layer.config.get("alpha", 1.0))
    return Out(f"F.elu({args(call, ctx)[0]}{'' if alpha == 1.0 else f', alpha={alpha!r}'})")


@emitter("ops.Gelu")
def gelu(layer: Layer, call: Call, ctx: Any) -> Out:
    tanh = ", approximate='tanh'" if layer.config.get("approximate", True) else ""
    ctx.need("F")
    return Out(f"F.gelu({args(call, ctx)[0]}{tanh})")


@emitter("ops.Reshape")
def reshape(layer: Layer, call: Call, ctx: Any) -> Out:
    """A size the trace could not know (``ops.shape`` of a sublayer output whose Keras shape says None, as
    EinsumDense's ``output_shape=(None, heads, dim)``) is the one ``-1`` that reshape infers."""
    shape = layer.config["newshape"]
    if None in shape:
        if shape.count(None) > 1 or -1 in shape:
            raise Unsupported(f"ops.reshape to {shape}: more than one size unknown at trace time")
        shape = [-1 if d is None else d for d in shape]
    return Out(f"{args(call, ctx)[0]}.reshape({ctx.literal(tuple(shape))})")


@emitter("ops.Transpose")
def transpose(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.args[0]
    axes = layer.config.get("axes")
    axes = list(range(x.rank))[::-1] if axes is None else axes
    return Out(f"{ctx.keras(x)}.permute({', '.join(str(a) for a in axes)})")


@emitter("ops.Moveaxis")
def moveaxis(layer: Layer, call: Call, ctx: Any) -> Out:
    cfg = layer.config
    return Out(f"torch.movedim({args(call, ctx)[0]}, {cfg['source']!r}, {cfg['destination']!r})")


@emitter("ops.Swapaxes")
def swapaxes(layer: Layer, call: Call, ctx: Any) -> Out:
    return Out(f"{args(call, ctx)[0]}.transpose({layer.config['axis1']}, {layer.config['axis2']})")


@emitter("ops.ExpandDims")
def expand_dims(layer: Layer, call: Call, ctx: Any) -> Out:
    axis = layer.config["axis"]
    x = args(call, ctx)[0]
    for a in axis if isinstance(axis, list) else [axis]:
        x = f"{x}.unsqueeze({a})"
    return Out(x)


@emitter("ops.Squeeze")
def squeeze(layer: Layer, call: Call, ctx: Any) -> Out:
    axis = layer.config.get("axis")
    dims = "" if axis is None else repr(tuple(axis) if isinstance(axis, list) else axis)
    return Out(f"{args(call, ctx)[0]}.squeeze({dims})")


@emitter("ops.Concatenate", "ops.Stack")
def concatenate(layer: Layer, call: Call, ctx: Any) -> Out:
    parts = ", ".join(ctx.keras(v) if isinstance(v, Value) else ctx.literal(v) for v in call.args[0])
    fn = "cat" if layer.class_name == "ops.Concatenate" else "stack"
    return Out(f"torch.{fn}([{parts}], dim={layer.config.get('axis', 0)})")


@emitter("ops.Split")
def split(layer: Layer, call: Call, ctx: Any) -> Out:
    sections, axis = layer.config["indices_or_sections"], layer.config.get("axis", 0)
    n = sections if isinstance(sections, int) else len(sections) + 1
    expr = f"torch.tensor_split({args(call, ctx)[0]}, {ctx.literal(sections)}, dim={axis})"
    return Out(tuple([expr] * n))


@emitter("ops.Tile")
def tile(layer: Layer, call: Call, ctx: Any) -> Out:
    return Out(f"{args(call, ctx)[0]}.repeat({ctx.literal(tuple(layer.config['repeats']))})")


@emitter("ops.Repeat")
def repeat(layer: Layer, call: Call, ctx: Any) -> Out:
    axis = layer.config.get("axis")
    dim = "" if axis is None else f", dim={axis}"
    return Out(f"torch.repeat_interleave({args(call, ctx)[0]}, {ctx.literal(layer.config['repeats'])}{dim})")


@emitter("ops.Flip")
def flip(layer: Layer, call: Call, ctx: Any) -> Out:
    axis = layer.config.get("axis")
    x = args(call, ctx)[0]
    dims = f"tuple(range({x}.dim()))" if axis is None else repr(list(axis) if isinstance(axis, list) else [axis])
    return Out(f"torch.flip({x}, {dims})")


@emitter("ops.Roll")
def roll(layer: Layer, call: Call, ctx: Any) -> Out:
    return Out(f"torch.roll({args(call, ctx)[0]}, {ctx.literal(layer.config['shift'])}, "
               f"{ctx.literal(layer.config.get('axis'))})")


@emitter("ops.BroadcastTo")
def broadcast_to(layer: Layer, call: Call, ctx: Any) -> Out:
    return Out(f"{args(call, ctx)[0]}.expand({ctx.literal(tuple(layer.config['shape']))})")


@emitter("ops.Triu", "ops.Tril")
def triangle(layer: Layer, call: Call, ctx: Any) -> Out:
    fn = "triu" if layer.class_name == "ops.Triu" else "tril"
    return Out(f"torch.{fn}({args(call, ctx)[0]}, diagonal={layer.config.get('k', 0)})")


@emitter("ops.Cumsum")
def cumsum(layer: Layer, call: Call, ctx: Any) -> Out:
    axis = layer.config.get("axis")
    x = args(call, ctx)[0]
    return Out(f"torch.cumsum({x if axis is not None else x + '.flatten()'}, dim={axis or 0})")


@emitter("ops.Clip")
def clip(layer: Layer, call: Call, ctx: Any) -> Out:
    cfg = layer.config
    return Out(f"{args(call, ctx)[0]}.clamp({ctx.literal(cfg['x_min'])}, {ctx.literal(cfg['x_max'])})")


@emitter("ops.Where")
def where(layer: Layer, call: Call, ctx: Any) -> Out:
    parts = args(call, ctx)
    if len(parts) != 3:
        raise Unsupported("ops.where with one argument (nonzero indices)")
    return Out(f"torch.where({', '.join(parts)})")


@emitter("ops.Cast")
def cast(layer: Layer, call: Call, ctx: Any) -> Out:
    dtype = str(layer.config["dtype"])
    if dtype not in TORCH_DTYPES:
        raise Unsupported(f"ops.cast to {dtype}")
    x = call.args[0]
    if isinstance(x, Value) and x.dtype == dtype and dtype.startswith("float"):
        # a no-op in Keras (keras-hub's ``ops.cast(x, "float32")`` around a norm): left out, so the module
        # follows ``.double()`` / ``.half()`` as the layers around it do
        return Out(ctx.keras(x), dtype=dtype)
    return Out(f"{args(call, ctx)[0]}.to({TORCH_DTYPES[dtype]})", dtype=dtype)


@emitter("ops.Einsum")
def einsum(layer: Layer, call: Call, ctx: Any) -> Out:
    return Out(f"torch.einsum({layer.config['subscripts']!r}, {', '.join(args(call, ctx))})")


@emitter("ops.Tensordot")
def tensordot(layer: Layer, call: Call, ctx: Any) -> Out:
    a, b = args(call, ctx)[:2]
    return Out(f"torch.tensordot({a}, {b}, dims={ctx.literal(layer.config.get('axes', 2))})")


@emitter("ops.Dot")
def dot(layer: Layer, call: Call, ctx: Any) -> Out:
    if any(isinstance(v, Value) and v.rank > 2 for v in call.args):
        raise Unsupported("ops.dot of tensors of rank > 2 (use ops.matmul or ops.tensordot)")
    a, b = args(call, ctx)[:2]
    return Out(f"torch.matmul({a}, {b})")


@emitter("ops.Norm")
def norm(layer: Layer, call: Call, ctx: Any) -> Out:
    cfg = layer.config
    if cfg.get("ord") not in (None, 2, "fro", "euclidean") or isinstance(cfg.get("axis"), list):
        raise Unsupported(f"ops.norm with ord={cfg.get('ord')!r} axis={cfg.get('axis')!r}")
    keep = ", keepdim=True" if cfg.get("keepdims") else ""
    dim = "" if cfg.get("axis") is None else f", dim={cfg['axis']}"
    return Out(f"torch.linalg.vector_norm({args(call, ctx)[0]}{dim}{keep})")


@emitter("ops.OneHot")
def one_hot(layer: Layer, call: Call, ctx: Any) -> Out:
    cfg = layer.config
    if cfg.get("axis", -1) != -1:
        raise Unsupported("ops.one_hot on an axis other than the last")
    ctx.need("F")
    dtype = TORCH_DTYPES.get(str(cfg.get("dtype") or "float32"), "torch.float32")
    return Out(f"F.one_hot({args(call, ctx)[0]}.long(), {cfg['num_classes']}).to({dtype})")


@emitter("ops.Pad")
def pad(layer: Layer, call: Call, ctx: Any) -> Out:
    cfg = layer.config
    if cfg.get("mode", "constant") != "constant":
        raise Unsupported(f"ops.pad mode {cfg.get('mode')!r}")
    widths = [int(v) for pair in reversed(cfg["pad_width"]) for v in pair]
    value = call.kwargs.get("constant_values") or 0
    ctx.need("F")
    return Out(f"F.pad({args(call, ctx)[0]}, {tuple(widths)!r}, value={value!r})")


@emitter("ops.GetItem")
def get_item(layer: Layer, call: Call, ctx: Any) -> Out:
    """``x[:, 1:, None]``: slices, integers, None and Ellipsis; bounds from ``ops.shape`` stay shape reads."""
    x, key = call.args[0], call.args[1]
    items = key if isinstance(key, list) else [key]

    def one(item: Any) -> str:
        if isinstance(item, dict) and item.get("class_name") == "__slice__":
            c = item["config"]
            bounds = ["" if c[k] is None else ctx.literal(c[k]) for k in ("start", "stop", "step")]
            return ":".join(bounds[:2]) + (f":{bounds[2]}" if bounds[2] else "")
        if item is None:
            return "None"
        if item == "__ellipsis__" or (isinstance(item, dict) and item.get("class_name") == "__ellipsis__"):
            return "..."
        if isinstance(item, Value):
            return ctx.keras(item)
        return ctx.literal(item)

    return Out(f"{ctx.keras(x)}[{', '.join(one(i) for i in items)}]")


@emitter("ops.ExtractPatches")
def extract_patches(layer: Layer, call: Call, ctx: Any) -> Out:
    """``ops.image.extract_patches`` (valid padding, channels last): each patch flattened as (row, col, channel)."""
    cfg = layer.config
    size = cfg["size"] if isinstance(cfg["size"], list) else [cfg["size"]] * 2
    strides = cfg.get("strides") or size
    strides = strides if isinstance(strides, list) else [strides] * 2
    if cfg.get("padding", "valid") != "valid" or cfg.get("dilation_rate", 1) not in (1, [1, 1]) or \
            cfg.get("data_format") not in (None, "channels_last"):
        raise Unsupported("extract_patches with 'same' padding, dilation or channels_first")
    x = args(call, ctx)[0]
    return Out(f"{x}.unfold(1, {size[0]}, {strides[0]}).unfold(2, {size[1]}, {strides[1]})"
               ".permute(0, 1, 2, 4, 5, 3).flatten(3)")


def _device(call: Call) -> str:
    return f"device={call.args[0].var}.device" if call.args and isinstance(call.args[0], Value) else ""


def _dtype(value: Any, default: str | None = None) -> str:
    dtype = str(value) if value else default
    return f", dtype={TORCH_DTYPES[dtype]}" if dtype in TORCH_DTYPES else ""


@emitter("ops.ops.arange")
def arange(layer: Layer, call: Call, ctx: Any) -> Out:
    a = layer.config["arguments"]
    start, stop, step = a.get("start", 0), a.get("stop"), a.get("step", 1)
    if stop is None:
        start, stop = 0, start
    parts = [ctx.literal(start), ctx.literal(stop)] + ([ctx.literal(step)] if step not in (1, None) else [])
    floats = any(isinstance(v, float) for v in (start, stop, step)) or "float" in str(a.get("dtype") or "")
    return Out(f"torch.arange({', '.join(parts)}{_dtype(a.get('dtype'), 'float32' if floats else None)}, "
               f"{_device(call)})", dtype="float32" if floats else "int64")


@emitter("ops.ops.ones", "ops.ops.zeros")
def ones(layer: Layer, call: Call, ctx: Any) -> Out:
    a = layer.config["arguments"]
    fn = layer.class_name.rsplit(".", 1)[1]
    return Out(f"torch.{fn}({ctx.literal(a['shape'])}{_dtype(a.get('dtype'), 'float32')}, {_device(call)})")


@emitter("ops.ops.full")
def full(layer: Layer, call: Call, ctx: Any) -> Out:
    a = layer.config["arguments"]
    return Out(f"torch.full({ctx.literal(a['shape'])}, {ctx.literal(a['fill_value'])}"
               f"{_dtype(a.get('dtype'), 'float32')}, {_device(call)})")


@emitter("ops.ops.eye", "ops.ops.tri")
def eye(layer: Layer, call: Call, ctx: Any) -> Out:
    a = layer.config["arguments"]
    n, m, k = ctx.literal(a["N"]), ctx.literal(a.get("M") if a.get("M") is not None else a["N"]), a.get("k", 0)
    dtype, device = _dtype(a.get("dtype"), "float32"), _device(call)
    if layer.class_name.endswith("tri"):
        return Out(f"torch.ones({n}, {m}{dtype}, {device}).tril({k})")
    if k:
        raise Unsupported("ops.eye with k != 0")
    return Out(f"torch.eye({n}, {m}{dtype}, {device})")


#: Emitted once into model.py for ``keras.random.*`` in a custom layer.
RANDOM_DRAW = '''
class RandomDraw(nn.Dropout):
    """A fresh keras.random draw on every call, in train() and eval() alike as in Keras. An nn.Dropout so that
    what switches dropout off for a comparison (p = 0, as tf2torch parity --train does) makes it draw its mean."""

    def __init__(self, kind: str, a: float, b: float) -> None:
        super().__init__(0.5)
        self.kind, self.a, self.b = kind, a, b

    def forward(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        mean = self.a if self.kind != "uniform" else (self.a + self.b) / 2
        if self.p == 0.0:
            return torch.full(shape, mean, dtype=like.dtype, device=like.device)
        if self.kind == "uniform":
            return torch.empty(shape, dtype=like.dtype, device=like.device).uniform_(self.a, self.b)
        draw = torch.randn(shape, dtype=like.dtype, device=like.device)
        if self.kind == "truncated_normal":  # Keras redraws beyond two standard deviations
            draw = torch.nn.init.trunc_normal_(draw, 0.0, 1.0, -2.0, 2.0)
        return draw * self.b + self.a
'''


@emitter("ops.random.normal", "ops.random.uniform", "ops.random.truncated_normal")
def random(layer: Layer, call: Call, ctx: Any) -> Out:
    a = layer.config["arguments"]
    kind = layer.class_name.rsplit(".", 1)[1]
    lo, hi = (a.get("minval", 0.0), a.get("maxval", 1.0)) if kind == "uniform" else (a.get("mean", 0.0),
                                                                                       a.get("stddev", 1.0))
    ctx.helper("RandomDraw", RANDOM_DRAW)
    mod = ctx.submodule(layer, f"RandomDraw({kind!r}, {float(lo)!r}, {float(hi)!r})")
    return Out(f"{mod}({ctx.literal(tuple(a['shape']))}, {call.args[0].var})")


@emitter("ops.Slice")
def slice_(layer: Layer, call: Call, ctx: Any) -> Out:
    """``ops.slice(x, start_indices, shape)``: ``x[s0:s0 + n0, ...]`` (sizes from ops.shape stay shape reads)."""
    x = call.args[0]
    starts = call.args[1] if len(call.args) > 1 else layer.config.get("start_indices")
    sizes = call.args[2] if len(call.args) > 2 else layer.config.get("shape")
    parts = []
    for start, size in zip(starts, sizes):
        begin = ctx.literal(start)
        parts.append(f"{begin}:{begin} + {ctx.literal(size)}" if begin != "0" else f":{ctx.literal(size)}")
    return Out(f"{ctx.keras(x)}[{', '.join(parts)}]")
