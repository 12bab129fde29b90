"""CTC loss inside custom layers: ``keras.ops.ctc_loss`` (and what the Keras worker traces as it:
``tf.nn.ctc_loss``, ``tf.compat.v1.nn.ctc_loss`` on a ``SparseTensor`` made from dense labels,
``keras.losses.ctc``) as ``F.ctc_loss``.

Keras' TensorFlow backend hands ``tf.nn.ctc_loss`` the outputs as logits (TensorFlow takes their
``log_softmax``), blank = ``mask_index``, one loss per sample; ``F.ctc_loss`` on ``log_softmax`` of the same
tensor, time first, ``reduction="none"``, computes the same negative log-likelihood and gradient. Lengths that
Keras built as constants (``keras.losses.ctc``'s ``max_length * ops.ones(batch)``) are written as a
``torch.full`` over the batch, so the traced batch size is never baked in. ``ops.argsort`` and
``ops.take_along_axis`` move a row's labels first when a SparseTensor's mask is not a ``tf.sequence_mask``.
"""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter


def _lengths(value: Any, out: str, ctx: Any) -> str:
    """A per-sample length vector as an int64 tensor over ``out``'s batch."""
    if isinstance(value, Value):
        return f"{ctx.keras(value)}.long()"
    if isinstance(value, dict) and value.get("class_name") == "__tensor__":
        value = value["config"]["value"]
    flat = value if isinstance(value, list) else [value]
    if not flat or any(isinstance(v, list) for v in flat) or len(set(flat)) != 1:
        raise Unsupported("ops.ctc_loss with constant lengths that differ per sample")
    return f"torch.full(({out}.shape[0],), {ctx.literal(flat[0])}, device={out}.device)"


@emitter("ops.CTCLoss")
def ctc_loss(layer: Layer, call: Call, ctx: Any) -> Out:
    """``ops.ctc_loss(target, output, target_length, output_length, mask_index)``: (batch,) losses."""
    target, output, target_length, output_length = call.args[:4]
    if not isinstance(target, Value) or not isinstance(output, Value):
        raise Unsupported("ops.ctc_loss on constant targets or outputs")
    blank = int(layer.config.get("mask_index", 0))
    classes = output.shape[-1]
    if blank < 0 and classes is not None:
        blank += classes
    ctx.need("F")
    out = ctx.keras(output)
    return Out(f"F.ctc_loss(torch.log_softmax({out}.float(), dim=-1).transpose(0, 1), {ctx.keras(target)}.long(), "
               f"{_lengths(output_length, out, ctx)}, {_lengths(target_length, out, ctx)}, blank={blank}, "
               'reduction="none")', dtype="float32", shapes=[(output.shape[0],)])


@emitter("ops.Argsort")
def argsort(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.args[0]
    return Out(f"torch.argsort({ctx.keras(x)}, dim={layer.config.get('axis', -1)}, stable=True)", dtype="int64")


@emitter("ops.TakeAlongAxis")
def take_along_axis(layer: Layer, call: Call, ctx: Any) -> Out:
    x, indices = call.args[:2]
    if layer.config.get("axis") is None:
        raise Unsupported("ops.take_along_axis without an axis")
    return Out(f"torch.take_along_dim({ctx.keras(x)}, {ctx.keras(indices)}.long(), dim={layer.config['axis']})")


@emitter("ops.DivideNoNan")
def divide_no_nan(layer: Layer, call: Call, ctx: Any) -> Out:
    """``a / b``, 0 where ``b == 0`` (a ``keras.losses.CTC()`` object's batch mean divides this way)."""
    a, b = (ctx.keras(v) if isinstance(v, Value) else ctx.literal(v) for v in call.args[:2])
    if not isinstance(call.args[1], Value):  # a number: a size read off a tensor (``x.shape[0]``) or a constant
        return Out(f"{a} / {b}" if b not in ("0", "0.0") else f"torch.zeros_like({a})")
    return Out(f"torch.where({b} == 0, 0.0, {a} / torch.where({b} == 0, 1.0, {b}))")
