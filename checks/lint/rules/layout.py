"""Tensor layouts: channels-last data into channels-first layers, Keras kernels copied as-is.

TensorFlow stores images as N,H,W,C and kernels as (in, out) for Dense and
(kh, kw, in, out) for Conv2D; PyTorch wants N,C,H,W, (out, in) and (out, in, kh, kw).
Shapes that happen to line up (square kernels, 3 channels that look like a width)
run without an error and give wrong numbers.
"""
from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ..context import FileContext
from ..finding import Finding
from ..rule import rule, shared_analysis
from ..syntax import Hit, Unpacked, arg, dotted, method_name, number, receiver, string

# ---------------------------------------------------------------------------------------------
# TTL401: channels-last data
_IMAGE_READERS = {
    "cv2.imread", "imageio.imread", "imageio.v2.imread", "imageio.v3.imread", "matplotlib.pyplot.imread",
    "matplotlib.image.imread", "skimage.io.imread", "PIL.Image.open", "tensorflow.io.decode_image",
    "tensorflow.image.decode_jpeg", "tensorflow.image.decode_png",
}
_FIRST_ARG_KEEPS = {
    "cv2.cvtColor", "cv2.resize", "cv2.GaussianBlur", "numpy.asarray", "numpy.array", "numpy.ascontiguousarray",
    "numpy.float32", "numpy.uint8", "numpy.expand_dims", "torch.from_numpy", "torch.tensor", "torch.as_tensor",
    "torch.Tensor", "torch.FloatTensor",
}
_METHOD_KEEPS = {
    "convert", "resize", "crop", "copy", "astype", "float", "double", "half", "to", "cuda", "cpu", "div", "sub",
    "mul", "add", "div_", "sub_", "mul_", "add_", "contiguous", "clone", "detach", "requires_grad_", "type",
    "pin_memory", "numpy",
}
_CREATORS = {
    "torch.randn", "torch.rand", "torch.zeros", "torch.ones", "torch.empty", "numpy.zeros", "numpy.ones",
    "numpy.empty", "numpy.random.rand", "numpy.random.randn", "numpy.random.random",
}
_CHANNELS_FIRST = {
    "torch.nn.Conv2d", "torch.nn.LazyConv2d", "torch.nn.ConvTranspose2d", "torch.nn.BatchNorm2d",
    "torch.nn.MaxPool2d", "torch.nn.AvgPool2d", "torch.nn.InstanceNorm2d",
}
_CHANNELS_FIRST_FUNCTIONS = {
    "torch.nn.functional.conv2d", "torch.conv2d", "torch.nn.functional.max_pool2d",
    "torch.nn.functional.avg_pool2d", "torch.nn.functional.conv_transpose2d",
}
# A model whose forward rearranges its input may well expect channels-last data.
_REARRANGE = {"permute", "transpose", "movedim", "moveaxis", "swapaxes", "rearrange", "view", "reshape",
              "einsum", "to_channels_first"}


def _channels_last_shape(dims: list[cst.BaseExpression]) -> bool:
    """(N, H, W, C) with literal H, W >= 8 and C in {1, 3}; N may be anything."""
    if len(dims) != 4:
        return False
    h, w, c = (number(d) for d in dims[1:])
    return c in (1, 3) and h is not None and w is not None and h >= 8 and w >= 8


def _shape_args(call: cst.Call, skip: int = 0) -> list[cst.BaseExpression]:
    positional = [a.value for a in call.args if a.keyword is None and not a.star][skip:]
    if len(positional) == 1 and isinstance(positional[0], (cst.Tuple, cst.List)):
        return [e.value for e in positional[0].elements]
    if not positional:
        size = arg(call, None, "size")
        if isinstance(size, (cst.Tuple, cst.List)):
            return [e.value for e in size.elements]
    return positional


def _plain_subscript(node: cst.Subscript) -> bool:
    """``x[None]``, ``x[:, :, ::-1]``, ``x[np.newaxis, ...]``: the channel axis stays last."""
    for element in node.slice:
        index = element.slice
        if isinstance(index, cst.Slice):
            continue
        value = index.value  # type: ignore[union-attr]
        if isinstance(value, cst.Ellipsis) or dotted(value) in ("None", "np.newaxis", "numpy.newaxis"):
            continue
        return False
    return True


def _channels_last_step(ctx: FileContext):
    def step(expr: object) -> Hit | cst.CSTNode | None:
        if isinstance(expr, Unpacked):  # for images, labels in DataLoader(LocalDataset(...))
            if isinstance(expr.value, cst.For) and isinstance(expr.index, tuple):
                return ctx.flow.batch_element(expr.value, expr.index)
            return None
        if isinstance(expr, cst.AugAssign):
            return expr.target
        if isinstance(expr, cst.BinaryOperation):
            return expr.right if number(expr.left) is not None else expr.left
        if isinstance(expr, cst.Subscript):
            return expr.value if _plain_subscript(expr) else None
        if not isinstance(expr, cst.Call):
            return None
        qual = ctx.callee(expr)
        if qual in _IMAGE_READERS:
            return Hit("channels_last", expr)
        if qual in _CREATORS:
            return Hit("channels_last", expr) if _channels_last_shape(_shape_args(expr)) else None
        if qual in ("torch.reshape", "numpy.reshape"):
            return Hit("channels_last", expr) if _channels_last_shape(_shape_args(expr, skip=1)) else None
        if qual in _FIRST_ARG_KEEPS:
            return arg(expr, 0, None)
        name = method_name(expr)
        if name in ("view", "reshape"):
            return Hit("channels_last", expr) if _channels_last_shape(_shape_args(expr)) else None
        if name == "unsqueeze" and number(arg(expr, 0, "dim")) == 0:
            return receiver(expr)
        if name in _METHOD_KEEPS and not (qual or "").startswith(("torch.", "numpy.")):
            return receiver(expr)
        return None
    return step


def _channels_first_layer(ctx: FileContext, call: cst.Call) -> str | None:
    """A short name for the channels-first layer or model ``call`` runs, else None."""
    qual = ctx.callee(call)
    if qual in _CHANNELS_FIRST_FUNCTIONS:
        return qual.replace("torch.nn.functional.", "F.")
    built = ctx.constructor(call.func)
    if built is None:
        return None
    kind = ctx.callee(built) or ""
    if kind in _CHANNELS_FIRST:
        return kind.replace("torch.nn.", "nn.")
    if kind.startswith("torchvision.models."):
        return kind.rsplit(".", 1)[-1]
    if kind == "torch.nn.Sequential":
        layers = [a.value for a in built.args if a.keyword is None and not a.star]
        first = ctx.callee(layers[0]) if layers and isinstance(layers[0], cst.Call) else None
        return "an nn.Sequential starting with " + first.replace("torch.nn.", "nn.") \
            if first in _CHANNELS_FIRST else None
    cls = ctx.classes.get(kind)
    if cls is not None and _conv_model(ctx, cls):
        return f"{kind} (its forward starts with a channels-first layer)"
    return None


def _conv_model(ctx: FileContext, cls: cst.ClassDef) -> bool:
    """A model class whose ``forward`` feeds its input to a channels-first layer first.

    Calls are taken in evaluation order (innermost first); shape-neutral torch functions
    and tensor methods are passed over. Anything else first — a permute or view, a Linear,
    a helper method — means the model may take other layouts, so it does not count.
    """
    known: dict[int, bool] = ctx.memo("conv_models", dict)  # type: ignore[assignment]
    if id(cls) in known:  # also breaks recursion through nested local models
        return known[id(cls)]
    known[id(cls)] = False
    forward = next((f for f in ctx.inside(cls, cst.FunctionDef) if f.name.value == "forward"), None)
    result = False
    if forward is not None:
        for call in sorted(ctx.inside(forward, cst.Call), key=ctx.post):
            name = method_name(call) or (ctx.callee(call) or "").rsplit(".", 1)[-1]
            if name in _REARRANGE:
                break
            if _channels_first_layer(ctx, call) is not None:
                result = True
                break
            qual = ctx.callee(call) or ""
            if qual.startswith("torch.") and not qual.startswith("torch.nn.") or (
                    qual.startswith("torch.nn.functional.") and name not in _REARRANGE) or name in _METHOD_KEEPS:
                continue
            break
    known[id(cls)] = result
    return result


@rule("TTL401", "channels-last-into-conv",
      "Channels-last (N,H,W,C) data reaches a channels-first layer (Conv2d, BatchNorm2d, MaxPool2d, a CNN).",
      triggers=(r"[Cc]onv2d|[Pp]ool2d|BatchNorm2d|torchvision|models\.",
                r"imread|Image\.open|from_numpy|as_tensor|tensor\(|rand|zeros|ones|empty|view\(|reshape"),
      across_files=r"imread|Image\.open|\d\d+\s*,\s*\d\d+\s*,\s*[13]\s*[)\]]")  # images read, or (N, H, W, 3)
def channels_last_into_conv(ctx: FileContext) -> Iterator[Finding]:
    seen: set[tuple[int, int]] = set()
    for call in ctx.nodes(cst.Call):
        data = arg(call, 0, "input")
        if data is None:
            continue
        hit = ctx.trace(data, _channels_last_step)
        if hit is None or (id(ctx.scope(call)), id(hit.origin)) in seen:
            continue
        layer = _channels_first_layer(ctx, call)
        if layer is None:
            continue
        seen.add((id(ctx.scope(call)), id(hit.origin)))
        yield ctx.report(
            "TTL401", data,
            f"`{ctx.code(data)}` is channels-last (..., H, W, C) from line {ctx.line(hit.origin)} but {layer} "
            f"expects channels-first (N, C, H, W); permute it first, e.g. .permute(0, 3, 1, 2)",
        )


# ---------------------------------------------------------------------------------------------
# TTL402 / TTL403: Keras kernels copied without reordering
_KERNEL_KEEPS = {
    "torch.from_numpy", "torch.tensor", "torch.as_tensor", "torch.Tensor", "torch.FloatTensor", "numpy.array",
    "numpy.asarray", "numpy.ascontiguousarray", "torch.nn.Parameter", "torch.nn.parameter.Parameter",
}
_KERNEL_METHOD_KEEPS = {"numpy", "float", "double", "to", "cuda", "copy", "astype", "clone", "detach", "contiguous",
                        "read_value", "value"}


_KERNEL_WORDS = r"get_weights|\.kernel\b|kernel:|/kernel|[\"']kernel[\"']"


def _kernel_step(ctx: FileContext):
    def step(expr: object) -> Hit | cst.CSTNode | None:
        if isinstance(expr, Unpacked):
            if isinstance(expr.value, cst.Call) and method_name(expr.value) == "get_weights" and expr.index == 0:
                return Hit("keras_kernel", expr.value)
            return None
        if isinstance(expr, cst.Attribute) and expr.attr.value == "kernel":
            return Hit("keras_kernel", expr)
        if isinstance(expr, cst.Subscript):
            return _kernel_subscript(expr)
        if not isinstance(expr, cst.Call):
            return None
        qual = ctx.callee(expr)
        if qual in _KERNEL_KEEPS:
            return arg(expr, 0, None)
        if method_name(expr) in _KERNEL_METHOD_KEEPS and not (qual or "").startswith(("torch.", "numpy.")):
            return receiver(expr)
        return None
    return step


def _kernel_subscript(node: cst.Subscript) -> Hit | cst.CSTNode | None:
    """``layer.get_weights()[0]`` and h5 datasets such as ``f["dense/dense/kernel:0"][()]``."""
    value = node.value
    index = node.slice[0].slice if len(node.slice) == 1 else None
    key = index.value if isinstance(index, cst.Index) else None
    if isinstance(value, cst.Call) and method_name(value) == "get_weights":
        return Hit("keras_kernel", node) if number(key) == 0 else None
    if "kernel" in (string(key) or ""):
        return Hit("keras_kernel", node)
    if isinstance(index, cst.Slice) or isinstance(key, cst.Tuple) and not key.elements:
        return value  # [:] and [()] read a whole h5 dataset
    if isinstance(value, cst.Subscript) and isinstance(key, cst.SimpleString):
        return value  # f["model_weights"]["dense"] ... walk towards the key that names the kernel
    return None


def _weight_target(expr: cst.CSTNode) -> cst.BaseExpression | None:
    """The layer in ``layer.weight`` / ``layer.weight.data``, else None."""
    if isinstance(expr, cst.Attribute) and expr.attr.value == "data":
        expr = expr.value
    if isinstance(expr, cst.Attribute) and expr.attr.value == "weight":
        return expr.value
    return None


_KERNEL_RULES = {
    "torch.nn.Linear": ("TTL402", ("Keras Dense kernels are (in, out) but nn.Linear.weight is (out, in); "
                                  "copy the transpose, e.g. kernel.T")),
    "torch.nn.Conv1d": ("TTL403", ("Keras Conv1D kernels are (k, in, out) but nn.Conv1d.weight is (out, in, k); "
                                  "permute with np.transpose(kernel, (2, 1, 0))")),
    "torch.nn.Conv2d": ("TTL403", ("Keras Conv2D kernels are HWIO but nn.Conv2d.weight is OIHW; "
                                  "permute with np.transpose(kernel, (3, 2, 0, 1))")),
    "torch.nn.Conv3d": ("TTL403", ("Keras Conv3D kernels are DHWIO but nn.Conv3d.weight is OIDHW; "
                                  "permute with np.transpose(kernel, (4, 3, 0, 1, 2))")),
}


def _kernel_findings(ctx: FileContext) -> list[Finding]:
    copies: list[tuple[cst.CSTNode, cst.BaseExpression, cst.BaseExpression]] = []  # (report at, layer, value)
    for node in ctx.nodes(cst.Assign):
        for target in node.targets:
            layer = _weight_target(target.target)
            if layer is not None:
                copies.append((node, layer, node.value))
    for call in ctx.nodes(cst.Call):
        if method_name(call) == "copy_" and call.args:
            layer = _weight_target(receiver(call))  # type: ignore[arg-type]
            if layer is not None:
                copies.append((call, layer, call.args[0].value))
    out = []
    for at, layer, value in copies:
        kind = ctx.kind(layer)
        if kind not in _KERNEL_RULES:
            continue
        hit = ctx.trace(value, _kernel_step)
        if hit is not None:
            code, message = _KERNEL_RULES[kind]
            out.append(ctx.report(code, at, message))
        elif kind == "torch.nn.Linear" and ctx.trace(value, _transposed_kernel_step) is not None \
                and _fed_by_spatial_flatten(ctx, layer):
            out.append(ctx.report(
                "TTL404", at,
                "this Linear follows a flatten of conv features: Keras flattened them as (H, W, C), torch as "
                "(C, H, W), so a transposed Dense kernel has its input rows in the wrong order; reorder them, "
                "e.g. kernel.reshape(H, W, C, out).transpose(2, 0, 1, 3).reshape(-1, out).T"))
    return out


def _transposed_kernel_step(ctx: FileContext):
    """Like the kernel step, passing over a plain 2-D transpose (and nothing that reorders rows)."""
    plain = _kernel_step(ctx)

    def step(expr: object) -> Hit | cst.CSTNode | None:
        if isinstance(expr, cst.Attribute) and expr.attr.value == "T":
            return expr.value
        if isinstance(expr, cst.Call):
            name = method_name(expr)
            if name == "t" and not expr.args or name == "transpose" and _swaps_two_axes(expr, 0):
                return receiver(expr)
            if ctx.callee(expr) in ("numpy.transpose", "torch.t") and (
                    len(expr.args) == 1 or _swaps_two_axes(expr, 1)):
                return arg(expr, 0, None)
        return plain(expr)
    return step


def _swaps_two_axes(call: cst.Call, skip: int) -> bool:
    """``x.transpose()``, ``x.transpose(1, 0)``, ``np.transpose(x, (1, 0))``."""
    given = [a.value for a in call.args[skip:]]
    if not given:
        return True
    if len(given) == 1 and isinstance(given[0], (cst.Tuple, cst.List)):
        given = [e.value for e in given[0].elements]
    return [number(g) for g in given] in ([1, 0], [0, 1], [-1, -2], [-2, -1])


_SPATIAL = {"torch.nn.Conv2d", "torch.nn.MaxPool2d", "torch.nn.AvgPool2d", "torch.nn.BatchNorm2d",
            "torch.nn.ConvTranspose2d", "torch.nn.LazyConv2d"}
_SPATIAL_FUNCTIONS = {"torch.nn.functional.conv2d", "torch.nn.functional.max_pool2d",
                      "torch.nn.functional.avg_pool2d", "torch.conv2d", "torch.max_pool2d"}
_PASS_THROUGH = {"relu", "relu_", "leaky_relu", "elu", "gelu", "selu", "silu", "tanh", "sigmoid", "dropout",
                 "dropout2d", "ReLU", "LeakyReLU", "ELU", "GELU", "SELU", "SiLU", "Tanh", "Sigmoid", "Dropout",
                 "Dropout2d", "contiguous", "float"}


def _fed_by_spatial_flatten(ctx: FileContext, layer: cst.BaseExpression) -> bool:
    """``layer`` is ``model.fc`` of a model class of the file whose forward calls ``self.fc``
    on a flatten (``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``, ``nn.Flatten``) of the
    output of a conv, pooling or batch-norm layer, with no permute in between."""
    if not isinstance(layer, cst.Attribute):
        return False
    owner = ctx.constructor(layer.value)
    cls = ctx.classes.get(ctx.callee(owner) or "") if owner is not None else None
    forward = ctx.flow.method(cls, "forward") if cls is not None else None
    if forward is None:
        return False
    attr = layer.attr.value
    uses = [c for c in ctx.inside(forward, cst.Call) if dotted(c.func) == f"self.{attr}" and c.args]
    return bool(uses) and all(ctx.trace(c.args[0].value, _flatten_step) is not None for c in uses)


def _flatten_step(ctx: FileContext):

    def step(expr: object) -> Hit | cst.CSTNode | None:
        if not isinstance(expr, cst.Call):
            return None
        source = _flattened(ctx, expr)
        if source is not None:
            return ctx.trace(source, _spatial_step)
        return _pass_through(ctx, expr)
    return step


def _pass_through(ctx: FileContext, call: cst.Call) -> cst.BaseExpression | None:
    """The input of an activation or dropout (function, tensor method or module), else None."""
    qual = ctx.callee(call) or ""
    if qual.startswith("torch."):
        return arg(call, 0, "input") if qual.rsplit(".", 1)[-1] in _PASS_THROUGH else None
    if method_name(call) in _PASS_THROUGH:
        return receiver(call)
    built = ctx.constructor(call.func)
    if built is not None and (ctx.callee(built) or "").rsplit(".", 1)[-1] in _PASS_THROUGH:
        return arg(call, 0, "input")
    return None


def _flattened(ctx: FileContext, call: cst.Call) -> cst.BaseExpression | None:
    """What ``call`` flattens from dim 1 on, else None."""
    qual = ctx.callee(call) or ""
    name = method_name(call)
    if qual == "torch.flatten" and number(arg(call, 1, "start_dim")) == 1:
        return arg(call, 0, "input")
    if name == "flatten" and not qual.startswith("torch.") and number(arg(call, 0, "start_dim")) == 1:
        return receiver(call)
    if name in ("view", "reshape") and not qual.startswith("torch.") and len(call.args) == 2 \
            and number(call.args[1].value) == -1:
        return receiver(call)
    built = ctx.constructor(call.func)
    if built is not None and ctx.callee(built) == "torch.nn.Flatten" and not built.args:
        return arg(call, 0, "input")
    return None


def _spatial_step(ctx: FileContext):
    def step(expr: object) -> Hit | cst.CSTNode | None:
        if not isinstance(expr, cst.Call):
            return None
        qual = ctx.callee(expr) or ""
        if qual in _SPATIAL_FUNCTIONS:
            return Hit("spatial", expr)
        built = ctx.constructor(expr.func)
        kind = ctx.callee(built) or "" if built is not None else ""
        if kind in _SPATIAL:
            return Hit("spatial", expr)
        if kind == "torch.nn.Sequential":
            layers = [a.value for a in built.args if a.keyword is None and not a.star]  # type: ignore[union-attr]
            for layer in reversed(layers):
                inner = ctx.callee(layer) if isinstance(layer, cst.Call) else None
                if inner in _SPATIAL:
                    return Hit("spatial", expr)
                if (inner or "").rsplit(".", 1)[-1] not in _PASS_THROUGH:
                    return None
            return None
        return _pass_through(ctx, expr)
    return step


_kernels = shared_analysis("kernels", _kernel_findings)


rule("TTL402", "dense-kernel-not-transposed",
     "A Keras Dense kernel is copied into nn.Linear.weight without a transpose.",
     triggers=("weight", _KERNEL_WORDS))(_kernels("TTL402"))
rule("TTL404", "dense-after-flatten-not-reordered",
     "A Keras Dense kernel after a Flatten of conv features is copied without reordering its rows (HWC vs CHW).",
     triggers=("weight", _KERNEL_WORDS, "flatten|Flatten|view|reshape"))(_kernels("TTL404"))
rule("TTL403", "conv-kernel-not-permuted",
     "A Keras Conv kernel (HWIO) is copied into nn.Conv*d.weight without permuting to OIHW.",
     triggers=("weight", _KERNEL_WORDS))(_kernels("TTL403"))


# ---------------------------------------------------------------------------------------------
# TTL405: RNN output indexed on the wrong axis for its batch_first setting
_RNNS = {"torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNN"}


def _full_slice(element: cst.SubscriptElement) -> bool:
    s = element.slice
    return isinstance(s, cst.Slice) and s.lower is None and s.upper is None and s.step is None


def _last_index(element: cst.SubscriptElement) -> bool:
    return isinstance(element.slice, cst.Index) and number(element.slice.value) == -1


def _rnn_output_call(ctx: FileContext, value: cst.BaseExpression, depth: int = 0) -> cst.Call | None:
    """The RNN call whose output sequence (element 0 of its result) ``value`` is; through a
    helper's parameter when every call site in the file passes the output of one RNN layer."""
    if depth > 4:
        return None
    if isinstance(value, cst.Subscript) and isinstance(value.value, cst.Call) and len(value.slice) == 1 \
            and isinstance(value.slice[0].slice, cst.Index) and number(value.slice[0].slice.value) == 0:
        return value.value  # self.lstm(x)[0]
    if isinstance(value, cst.Name):
        found = ctx.bindings(value.value, value)
        if len(found) == 1 and found[0].index == 0 and isinstance(found[0].value, cst.Call):
            return found[0].value  # out, (h, c) = self.lstm(x)
        if len(found) == 1 and isinstance(found[0].value, cst.BaseExpression) and found[0].index is None \
                and not isinstance(found[0].value, cst.Name):
            return _rnn_output_call(ctx, found[0].value, depth + 1)  # out = self.lstm(x)[0]
        if len(found) == 1 and isinstance(found[0].value, cst.Param):  # def last_step(seq): return seq[:, -1]
            given = ctx.flow.arguments(found[0].value) or []
            calls = [_rnn_output_call(ctx, a, depth + 1) if where is ctx else None for where, a in given]
            layers = {id(ctx.constructor(c.func)) if c is not None else None for c in calls}
            if calls and None not in layers and len(layers) == 1:
                return calls[-1]
    return None


def _batch_first(ctx: FileContext, built: cst.Call) -> bool | None:
    if any(a.star for a in built.args):
        return None
    flag = arg(built, 4, "batch_first")
    if flag is None:
        return False
    if isinstance(flag, cst.Name) and flag.value in ("True", "False"):
        return flag.value == "True"
    return None


@rule("TTL405", "rnn-batch-first-mismatch",
      "An LSTM/GRU/RNN output is indexed as batch-major without batch_first=True, or the reverse.",
      triggers=("LSTM|GRU|RNN", r"\[\s*:\s*,\s*-1|\[\s*-1\s*[\],]"))
def rnn_batch_first_mismatch(ctx: FileContext) -> Iterator[Finding]:
    for node in ctx.nodes(cst.Subscript):
        elements = node.slice
        seq_major_use = len(elements) >= 2 and _full_slice(elements[0]) and _last_index(elements[1]) \
            and all(_full_slice(e) for e in elements[2:])
        batch_major_use = _last_index(elements[0]) and all(_full_slice(e) for e in elements[1:])
        if not (seq_major_use or batch_major_use):
            continue
        call = _rnn_output_call(ctx, node.value)
        built = ctx.constructor(call.func) if call is not None else None
        if built is None or ctx.callee(built) not in _RNNS:
            continue
        batch_first = _batch_first(ctx, built)
        layer = (ctx.callee(built) or "").replace("torch.nn.", "nn.")
        if seq_major_use and batch_first is False:
            yield ctx.report(
                "TTL405", node,
                f"`{ctx.code(node)}` takes the last time step of batch-major output (the Keras layout), but this "
                f"{layer} has batch_first=False: its output is (seq, batch, features), so this picks the last "
                f"sample at every step; pass batch_first=True to the {layer}",
            )
        elif batch_major_use and batch_first is True and len(elements) <= 3:
            yield ctx.report(
                "TTL405", node,
                f"`{ctx.code(node)}` takes the last time step of seq-major output, but this {layer} has "
                f"batch_first=True: its output is (batch, seq, features), so this picks the last sample; "
                f"use [:, -1]",
            )


# ---------------------------------------------------------------------------------------------
# TTL406: reshape/view used to move axes
_RESHAPES = ("view", "reshape")


def _axis(ctx: FileContext, expr: cst.BaseExpression, sizes: dict[str, tuple[str, object, int]]
          ) -> tuple[str, object, int] | None:
    """(tensor name, its binding, axis) that a size expression stands for: a name unpacked
    from ``x.shape``/``x.size()``, or ``x.shape[i]``/``x.size(i)``."""
    if isinstance(expr, cst.Name):
        return sizes.get(expr.value)
    if isinstance(expr, cst.Subscript) and isinstance(expr.value, cst.Attribute) and expr.value.attr.value == "shape" \
            and len(expr.slice) == 1 and isinstance(expr.slice[0].slice, cst.Index):
        tensor, index = expr.value.value, number(expr.slice[0].slice.value)
    elif isinstance(expr, cst.Call) and method_name(expr) == "size" and len(expr.args) == 1:
        tensor, index = receiver(expr), number(expr.args[0].value)
    else:
        return None
    name = dotted(tensor)
    if name is None or index is None or index != int(index):
        return None
    return name, _binding(ctx, name, expr), int(index)


def _binding(ctx: FileContext, name: str, at: cst.CSTNode) -> object:
    """Which assignment gives ``name`` its value at ``at`` (identity of the bound value)."""
    found = ctx.bindings(name, at)
    return id(found[-1].value) if len(found) == 1 else None


# Methods that return a tensor of the same shape (dtype, device or memory changes only).
_SAME_SHAPE = {"float", "double", "half", "bfloat16", "long", "int", "to", "cuda", "cpu", "contiguous",
               "clone", "detach", "type", "type_as"}


def _shape_sources(ctx: FileContext, name: str, at: cst.CSTNode, depth: int = 0) -> set[object]:
    """The binding of ``name`` at ``at`` and, while it was bound to a same-shape expression of
    itself (``x = x.float() / 255``), the bindings before it: all share one shape."""
    found = ctx.bindings(name, at)
    if len(found) != 1:
        return set()
    value = found[-1].value
    sources: set[object] = {id(value)}
    inner = value
    while depth < 5:
        if isinstance(inner, cst.BinaryOperation) and number(inner.right) is not None:
            inner = inner.left
        elif isinstance(inner, cst.BinaryOperation) and number(inner.left) is not None:
            inner = inner.right
        elif isinstance(inner, cst.Call) and method_name(inner) in _SAME_SHAPE:
            inner = receiver(inner)
        else:
            break
        depth += 1
    if inner is not value and dotted(inner) == name and isinstance(value, cst.CSTNode):
        sources |= _shape_sources(ctx, name, ctx.statement(value), depth + 1)
    return sources


def _unpacked_sizes(ctx: FileContext, scope: cst.CSTNode) -> dict[str, tuple[str, object, int]]:
    """``n, h, w, c = x.shape`` (or ``x.size()``) in ``scope``: each name's (tensor, binding, axis)."""
    sizes: dict[str, tuple[str, object, int]] = {}
    for assign in ctx.inside(scope, cst.Assign):
        value = assign.value
        if isinstance(value, cst.Call) and method_name(value) == "size" and not value.args:
            tensor = receiver(value)
        elif isinstance(value, cst.Attribute) and value.attr.value == "shape":
            tensor = value.value
        else:
            continue
        name = dotted(tensor)
        for target in assign.targets:
            if name is None or not isinstance(target.target, (cst.Tuple, cst.List)):
                continue
            rank = len(target.target.elements)
            for i, element in enumerate(target.target.elements):
                if isinstance(element.value, cst.Name) and not isinstance(element, cst.StarredElement):
                    sizes[element.value.value] = (name, _binding(ctx, name, assign), i, rank)  # type: ignore[assignment]
    return sizes


@rule("TTL406", "reshape-instead-of-permute",
      "view/reshape to the same sizes in another order (N,H,W,C -> N,C,H,W): relabels axes, moves no data.",
      triggers=(r"\.(view|reshape)\(|torch\.reshape",
                # a, b, c = x.shape (from a word's start, not re-tried inside each word), or two sizes on one line
                (r"(?m)(?<!\w)\w++\s*,\s*\w+\s*(,\s*\w+\s*)+=\s*[\w.]+\.(shape|size\(\))\s*$"
                r"|(\.shape\[\d\]|\.size\(\d\))[^\n]*(\.shape\[\d\]|\.size\(\d\))")))
def reshape_instead_of_permute(ctx: FileContext) -> Iterator[Finding]:
    known: dict[int, dict[str, tuple[str, object, int]]] = {}
    for call in ctx.nodes(cst.Call):
        if method_name(call) in _RESHAPES and ctx.callee(call) not in ("torch.reshape", "numpy.reshape"):
            tensor, dims = receiver(call), _shape_args(call)
        elif ctx.callee(call) == "torch.reshape":
            tensor, dims = arg(call, 0, "input"), _shape_args(call, skip=1)
        else:
            continue
        name = dotted(tensor)
        if name is None or len(dims) < 3:
            continue
        scope = ctx.scope(call)
        if id(scope) not in known:
            known[id(scope)] = _unpacked_sizes(ctx, scope)
        merged = number(dims[0]) == -1  # x.reshape(-1, c, h, w): -1 merges the leading axes
        axes = [_axis(ctx, d, known[id(scope)]) for d in dims[1:] if merged] or [_axis(ctx, d, known[id(scope)]) for d in dims]
        sources = _shape_sources(ctx, name, call)
        if any(a is None or a[0] != name or a[1] not in sources for a in axes):
            continue
        order = [a[2] for a in axes]  # type: ignore[index]
        lead = 0
        if merged:
            rank = {a[3] for a in axes if len(a) > 3}  # type: ignore[misc]
            if len(rank) != 1:
                continue
            lead = rank.pop() - len(order)
            if lead < 1:
                continue
        if sorted(order) != list(range(lead, lead + len(order))) or order == sorted(order):
            continue
        permute = ", ".join(map(str, [*range(lead), *order]))
        then = f".reshape({ctx.code(dims[0])}, ...)" if merged else ""
        yield ctx.report(
            "TTL406", call,
            f"`{ctx.code(call)}` gives `{name}` the same sizes in another order, which relabels the axes without "
            f"moving any data (an N,H,W,C batch read as N,C,H,W is scrambled); use "
            f"{name}.permute({permute}){then}",
        )
