"""ONNX ``LSTM``, ``GRU`` and ``RNN`` as torch modules (tf2onnx emits LSTM for Keras ``LSTM``).

Where the ONNX semantics equal torch's (default activations, no clip, no peepholes, no
``sequence_lens``, GRU ``linear_before_reset=1``) the module calls the native kernels
``torch.lstm`` / ``torch.gru`` / ``torch.rnn_tanh`` with weights reordered from ONNX's gate order.
It owns the weights itself instead of wrapping ``nn.LSTM``: dynamo refuses to trace ``nn.LSTM``
instances (``allow_rnn`` is off by default). When traced (``torch.export``, ``torch.compile``) the
same equations run as a ``scan`` (``rnn_scan.py``), since export would fix the kernels' sequence length. Everything else runs an explicit
cell loop over the (static) sequence length, which follows the ONNX equations term by term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, get_const_value
from torch import nn

from migrate.conversion.converters.registry import converter
from migrate.conversion.converters.rnn_scan import scan_cell
from migrate.core.errors import ConversionError
from migrate.core.recurrent import GATES

#: The permutation from ONNX's gate blocks to torch's (gate counts: ``migrate.core.recurrent.GATES``).
TORCH_GATE_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}  # iofc -> ifco(=ifgo); zrh -> rzn
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
#: ONNX default alpha/beta of the activations that take them (None: the attribute is required).
ACTIVATION_PARAMS = {
    "affine": (1.0, 0.0), "leakyrelu": (0.01, None), "thresholdedrelu": (1.0, None), "elu": (1.0, None),
    "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5),
}


def _activation(name: str, alpha: float | None, beta: float | None) -> Callable[[torch.Tensor], torch.Tensor]:
    key = name.lower()
    simple = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
              "softsign": F.softsign, "softplus": F.softplus}
    if key in simple:
        return simple[key]
    if key == "affine":
        return lambda x: alpha * x + beta
    if key == "leakyrelu":
        return lambda x: F.leaky_relu(x, alpha)
    if key == "thresholdedrelu":
        return lambda x: torch.where(x > alpha, x, torch.zeros_like(x))
    if key == "elu":
        return lambda x: F.elu(x, alpha)
    if key == "scaledtanh":
        return lambda x: alpha * torch.tanh(beta * x)
    if key == "hardsigmoid":
        return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)
    raise ConversionError(f"unsupported recurrent activation {name!r}; ONNX defines Relu, Tanh, Sigmoid, "
                          "Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus")


def activations(node: OnnxNode, op: str, directions: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The node's activation functions, ``per direction`` in order; alphas/betas are consumed in order
    by the activations that take them (as ONNX Runtime does)."""
    names = list(node.attributes.get("activations", DEFAULT_ACTIVATIONS[op] * directions))
    alphas = list(node.attributes.get("activation_alpha", []))
    betas = list(node.attributes.get("activation_beta", []))
    funcs = []
    for name in names:
        default_alpha, default_beta = ACTIVATION_PARAMS.get(name.lower(), (None, None))
        alpha = alphas.pop(0) if default_alpha is not None and alphas else default_alpha
        beta = betas.pop(0) if default_beta is not None and betas else default_beta
        funcs.append(_activation(name, alpha, beta))
    return funcs


def _const(node: OnnxNode, index: int, graph: OnnxGraph, what: str) -> torch.Tensor | None:
    names = node.input_values
    if index >= len(names) or not names[index]:
        return None
    try:
        return torch.as_tensor(get_const_value(names[index], graph)).float()
    except KeyError as exc:
        raise ConversionError(f"{node.operation_type} node {node.name!r}: {what} ({names[index]!r}) is computed "
                              "at run time; only constant recurrent weights can be converted") from exc


class OnnxRecurrent(nn.Module, OnnxToTorchModule):
    """One ONNX LSTM/GRU/RNN node: ``forward(X, [sequence_lens], [initial_h], [initial_c])`` -> (Y, Y_h[, Y_c]).

    Weights are kept per direction in torch's gate order; ``native`` selects the fused aten kernel,
    otherwise the ONNX cell equations run step by step (any activations, clip, peepholes, lengths).
    """

    def __init__(self, op: str, hidden: int, direction: str, layout: int, present: tuple[bool, bool, bool],
                 n_outputs: int, weights: dict[str, torch.Tensor], native: bool,
                 acts: list[Callable] | None = None, clip: float | None = None,
                 input_forget: bool = False, linear_before_reset: bool = True) -> None:
        super().__init__()
        self.op, self.hidden, self.direction, self.layout = op, hidden, direction, layout
        self.present, self.n_outputs, self.native = present, n_outputs, native
        self.dirs = 2 if direction == "bidirectional" else 1
        self.acts = acts or []
        self.clip, self.input_forget, self.linear_before_reset = clip, input_forget, linear_before_reset
        for name, value in weights.items():
            self.register_parameter(name, nn.Parameter(value, requires_grad=False))

    def _flat_weights(self) -> list[torch.Tensor]:
        suffixes = ["", "_reverse"][: self.dirs]
        return [getattr(self, f"{kind}_l0{s}") for s in suffixes for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def forward(self, x: torch.Tensor, *optional: torch.Tensor) -> Any:
        it = iter(optional)
        lens, h0, c0 = (next(it) if p else None for p in self.present)
        if self.layout == 1:  # [batch, seq, ...] -> [seq, batch, ...]; states [batch, dirs, H] -> [dirs, batch, H]
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
            c0 = None if c0 is None else c0.transpose(0, 1)
        batch = x.shape[1]
        if h0 is None:
            h0 = x.new_zeros(self.dirs, batch, self.hidden)
        if self.op == "LSTM" and c0 is None:
            c0 = torch.zeros_like(h0)
        if self.native:
            y, h_n, c_n = self._native(x, h0, c0)
        else:
            y, h_n, c_n = self._loop(x, lens, h0, c0)
        if self.layout == 1:
            y, h_n = y.permute(2, 0, 1, 3), h_n.transpose(0, 1)
            c_n = None if c_n is None else c_n.transpose(0, 1)
        outputs = (y, h_n, c_n)[: self.n_outputs]
        return outputs[0] if self.n_outputs == 1 else outputs

    def _native(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None) -> tuple:
        bidirectional = self.dirs == 2
        if self.direction == "reverse":
            x = x.flip(0)
        weights = self._flat_weights()
        c_n = None
        if torch.compiler.is_compiling():  # export/compile: the kernels would fix the length (rnn_scan.py)
            y, h_n, c_n = self._scanned(x, h0, c0, weights)
        elif self.op == "LSTM":
            y, h_n, c_n = torch.lstm(x, (h0, c0), weights, True, 1, 0.0, False, bidirectional, False)
        elif self.op == "GRU":
            y, h_n = torch.gru(x, h0, weights, True, 1, 0.0, False, bidirectional, False)
        else:
            y, h_n = torch.rnn_tanh(x, h0, weights, True, 1, 0.0, False, bidirectional, False)
        if self.direction == "reverse":
            y = y.flip(0)
        return y.unflatten(-1, (self.dirs, self.hidden)).transpose(1, 2), h_n, c_n

    def _scanned(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, weights: list[torch.Tensor]) -> tuple:
        """The native kernels' result computed with ``scan_cell``, one direction at a time (the reverse
        direction of a bidirectional node over the flipped sequence)."""
        kind = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "RNN_TANH"}[self.op]
        ys, hs, cs = [], [], []
        for d in range(self.dirs):
            xd = x.flip(0) if d == 1 else x
            y, h, c = scan_cell(kind, xd, h0[d], None if c0 is None else c0[d], *weights[4 * d:4 * d + 4])
            ys.append(y.flip(0) if d == 1 else y)
            hs.append(h)
            cs.append(c)
        c_n = torch.stack(cs) if self.op == "LSTM" else None
        return torch.cat(ys, -1), torch.stack(hs), c_n

    def _loop(self, x: torch.Tensor, lens: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor | None) -> tuple:
        steps = x.shape[0]
        ys, hs, cs = [], [], []
        per_dir = len(self.acts) // self.dirs
        for d in range(self.dirs):
            suffix = "_reverse" if d == 1 else ""
            w_ih, w_hh, b_ih, b_hh = (getattr(self, f"{k}_l0{suffix}")
                                      for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            peep = getattr(self, f"peephole_l0{suffix}", None)
            acts = self.acts[d * per_dir:(d + 1) * per_dir]
            backwards = self.direction == "reverse" or d == 1
            h = h0[d]
            c = None if c0 is None else c0[d]
            x_proj = F.linear(x, w_ih, b_ih)  # all steps at once: [seq, batch, gates*H]
            out: list[torch.Tensor | None] = [None] * steps
            for t in (range(steps - 1, -1, -1) if backwards else range(steps)):
                h_new, c_new = self._cell(x_proj[t], h, c, w_hh, b_hh, peep, acts)
                if lens is not None:
                    alive = (lens > t).unsqueeze(-1)
                    h = torch.where(alive, h_new, h)
                    c = None if c is None else torch.where(alive, c_new, c)
                    out[t] = torch.where(alive, h_new, torch.zeros_like(h_new))
                else:
                    h, c = h_new, c_new
                    out[t] = h_new
            ys.append(torch.stack(out))
            hs.append(h)
            cs.append(c)
        c_n = torch.stack(cs) if self.op == "LSTM" else None
        return torch.stack(ys, 1), torch.stack(hs), c_n

    def _gate(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.clip is None else value.clamp(-self.clip, self.clip)

    def _cell(self, xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w_hh: torch.Tensor,
              b_hh: torch.Tensor, peep: torch.Tensor | None, acts: Sequence[Callable]) -> tuple:
        """One step in torch gate order (LSTM i,f,g,o; GRU r,z,n) with ONNX's activations f, g, h."""
        if self.op == "RNN":
            return acts[0](self._gate(xw + F.linear(h, w_hh, b_hh))), None
        if self.op == "GRU":
            f, g = acts
            x_r, x_z, x_n = xw.chunk(3, -1)
            w_r, w_z, w_n = w_hh.chunk(3, 0)
            b_r, b_z, b_n = b_hh.chunk(3, 0)
            r = f(self._gate(x_r + F.linear(h, w_r, b_r)))
            z = f(self._gate(x_z + F.linear(h, w_z, b_z)))
            if self.linear_before_reset:
                n = g(self._gate(x_n + r * F.linear(h, w_n, b_n)))
            else:
                n = g(self._gate(x_n + F.linear(r * h, w_n, b_n)))
            return (1 - z) * n + z * h, None
        f, g, act_h = acts
        gates = xw + F.linear(h, w_hh, b_hh)
        x_i, x_f, x_c, x_o = gates.chunk(4, -1)
        p_i, p_o, p_f = (None, None, None) if peep is None else peep.chunk(3)
        i = f(self._gate(x_i if p_i is None else x_i + p_i * c))
        forget = 1 - i if self.input_forget else f(self._gate(x_f if p_f is None else x_f + p_f * c))
        c_new = forget * c + i * g(self._gate(x_c))
        o = f(self._gate(x_o if p_o is None else x_o + p_o * c_new))
        return o * act_h(c_new), c_new


def _reorder(blocks: torch.Tensor, op: str) -> torch.Tensor:
    """ONNX gate blocks along dim 0 -> torch's gate order."""
    parts = blocks.chunk(GATES[op], 0)
    return torch.cat([parts[i] for i in TORCH_GATE_ORDER[op]], 0)


def convert_recurrent(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Build an :class:`OnnxRecurrent` from the node's constant W, R, B (and P) and its attributes."""
    op = node.operation_type
    attrs = node.attributes
    hidden = int(attrs["hidden_size"])
    direction = attrs.get("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    w = _const(node, 1, graph, "W")
    r = _const(node, 2, graph, "R")
    b = _const(node, 3, graph, "B")
    peep = _const(node, 7, graph, "P") if op == "LSTM" else None
    gates = GATES[op]
    if b is None:
        b = torch.zeros(dirs, 2 * gates * hidden)
    weights = {}
    for d, suffix in enumerate(["", "_reverse"][:dirs]):
        weights[f"weight_ih_l0{suffix}"] = _reorder(w[d], op)
        weights[f"weight_hh_l0{suffix}"] = _reorder(r[d], op)
        weights[f"bias_ih_l0{suffix}"] = _reorder(b[d, : gates * hidden], op)
        weights[f"bias_hh_l0{suffix}"] = _reorder(b[d, gates * hidden:], op)
        if peep is not None and bool(peep.any()):
            weights[f"peephole_l0{suffix}"] = peep[d]

    names = list(node.input_values) + [""] * (7 - len(node.input_values))
    present = (bool(names[4]), bool(names[5]), op == "LSTM" and bool(names[6]))
    clip = attrs.get("clip")
    input_forget = bool(attrs.get("input_forget", 0))
    lbr = bool(attrs.get("linear_before_reset", 0)) if op == "GRU" else True
    acts_names = [a.lower() for a in attrs.get("activations", DEFAULT_ACTIVATIONS[op] * dirs)]
    default_acts = acts_names == [a.lower() for a in DEFAULT_ACTIVATIONS[op]] * dirs
    native = (default_acts and clip is None and not input_forget and lbr and not present[0]
              and not any(k.startswith("peephole") for k in weights))
    n_outputs = len(node.output_values)
    module = OnnxRecurrent(op, hidden, direction, int(attrs.get("layout", 0)), present, n_outputs, weights,
                           native, acts=None if native else activations(node, op, dirs), clip=clip,
                           input_forget=input_forget, linear_before_reset=lbr)
    inputs = (names[0],) + tuple(names[i] for i, p in zip((4, 5, 6), present) if p)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))


converter("LSTM", versions=range(7, 23))(convert_recurrent)
converter("GRU", versions=range(7, 23))(convert_recurrent)
converter("RNN", versions=range(7, 23))(convert_recurrent)


class OnnxReverseSequence(nn.Module, OnnxToTorchModule):
    """ONNX ``ReverseSequence`` (Keras ``go_backwards``): reverse each batch entry's first ``len`` steps.

    A gather with per-entry indices, so lengths stay tensors (no ``.item()``) and batch stays dynamic.
    """

    def __init__(self, batch_axis: int, time_axis: int) -> None:
        super().__init__()
        self.batch_axis, self.time_axis = batch_axis, time_axis

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(x.shape[self.time_axis], device=x.device)
        lens = lens.to(steps.dtype)
        index = torch.where(steps[None, :] < lens[:, None], lens[:, None] - 1 - steps[None, :], steps[None, :])
        if self.time_axis < self.batch_axis:  # index is [batch, time]; lay it out like x
            index = index.transpose(0, 1)
        index = index.reshape(index.shape + (1,) * (x.dim() - 2)).expand_as(x)
        return torch.gather(x, self.time_axis, index)


def _full_length(node: OnnxNode, graph: OnnxGraph, time_axis: int) -> bool:
    """Whether ``sequence_lens`` is the whole time axis for every entry, as tf2onnx writes ``tf.reverse``
    over time: ``Expand(seq_len, [batch])`` with seq_len equal to the time dimension (static, or the
    same symbolic dim: checked by folding it at assumed sizes)."""
    from migrate.conversion.converters.subgraph import fold, length_probes

    info = graph.value_info.get(node.input_values[0])
    dims = info.type.tensor_type.shape.dim if info is not None else []
    if len(dims) <= time_axis:
        return False
    try:
        producer, _ = graph.value_as_node_output(node.input_values[1])
    except KeyError:
        return False
    if producer.operation_type != "Expand":
        return False
    probes = length_probes(graph, dims[time_axis])
    for sizes, steps in probes:
        length = fold(producer.input_values[0], graph, sizes=sizes)
        if length is None or length.size != 1 or int(length.reshape(-1)[0]) != steps:
            return False
    return bool(probes)


class OnnxFlip(nn.Module, OnnxToTorchModule):
    """``ReverseSequence`` over the full time axis: a plain flip."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(self.axis)


@converter("ReverseSequence", versions=range(10, 23))
def convert_reverse_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    time_axis = int(node.attributes.get("time_axis", 0))
    if _full_length(node, graph, time_axis):
        return OperationConverterResult(torch_module=OnnxFlip(time_axis), onnx_mapping=OnnxMapping(
            inputs=node.input_values[:1], outputs=node.output_values))
    module = OnnxReverseSequence(int(node.attributes.get("batch_axis", 1)), time_axis)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(
        inputs=node.input_values, outputs=node.output_values))
