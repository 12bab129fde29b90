"""The ``Loop`` that tf2onnx writes for a Keras recurrent layer, as one native recurrent module.

Keras runs LSTM/GRU/SimpleRNN cells in a ``tf.while_loop`` over the time steps (tf2onnx turns only
unmasked LSTMs into ONNX ``LSTM``); with masking (``Embedding(mask_zero=True)``, ``Masking``) the
body also selects, per batch entry, the new or the previous state and output. Unrolling that loop
needs a length known at conversion time and grows the graph with it. Instead, a loop is recognised
here as a recurrent layer:

1. Structure: the body reads step ``t`` of one float sequence (and optionally a bool mask) with a
   ``Gather`` at a counter that starts at 0, multiplies it by a constant kernel, and the carried
   state by a constant recurrent kernel; biases are constant vectors added to those products.
2. Trip count: the loop runs exactly ``len(sequence)`` steps, checked by evaluating its exit
   condition at two assumed lengths of the sequence's (possibly symbolic) time dim.
3. Semantics: candidate cells (LSTM, GRU with reset after or before the recurrent product, tanh or
   relu RNN; every gate order; every assignment of carried values to state/output roles; held or
   zeroed outputs at masked steps) run on random data and must reproduce the body, run step by
   step by ONNX's reference evaluator, to 1e-5. Only a candidate that does is used.

The module (:class:`RecurrentLoop`) calls ``torch.lstm``/``torch.gru``/``torch.rnn_*`` over the whole
sequence when run eagerly, and the same cell as a ``scan`` when traced (``rnn_scan.py``: the kernels
would fix the length under ``torch.export``), so the time dim stays dynamic and nothing is unrolled. Masks are
handled exactly, for masked steps anywhere: each entry's valid steps are moved to the front (a
stable argsort), the kernel runs over them, and outputs are gathered back (masked steps repeat the
previous output, or give zeros, as the body does); final states are read at each entry's last valid
step. LSTM's cell state is not an output of the kernel per step, so the padded steps after the
valid ones get an extra input feature that saturates the forget gate to exactly 1 and the input
gate to exactly 0, which carries the cell state through them unchanged. GRU with
``reset_after=False`` has no torch kernel; it runs as a ``scan`` (a loop torch.export keeps whole).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import NodeProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from migrate.conversion.converters import subgraph as cf
from migrate.conversion.converters.rnn_scan import scan_cell
from migrate.core.compare import Tolerance, compare
from migrate.core.errors import ConversionError
from migrate.core.recurrent import gates, pack_valid_steps, unpack_valid_steps

#: Verification data: batch, steps, and the tolerance the candidate must reach against the body.
CHECK_BATCH, CHECK_STEPS, CHECK_ATOL = 3, 5, 1e-5
#: How far past the gate pre-activations' bound the LSTM hold feature goes: sigmoid(-200) is 0 and
#: sigmoid(200) is 1 exactly in float32, so the cell state passes padded steps bit for bit.
HOLD_MARGIN = 200.0


@dataclass
class Cell:
    """What the structural match found: kernels (x @ kernel layout, Keras gate blocks) and biases."""

    kernel: np.ndarray
    recurrent: np.ndarray
    recurrent_n: np.ndarray | None = None  # GRU reset_after=False: recurrent kernel of the candidate h~
    bias_x: np.ndarray | None = None
    bias_h: np.ndarray | None = None


@dataclass
class Match:
    """One Loop node read as a recurrent layer: where its inputs come from and what its outputs are."""

    seq: str  # outer name of the float sequence [T, B, F]
    mask: str | None  # outer name of the bool mask [T, B, 1]
    counters: list[int]  # carried indices that count steps from their initial value
    floats: list[int]  # carried indices of the float state/output values
    passed: list[int]  # carried indices the body returns unchanged
    n_scan: int
    cell: Cell


def _consts(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every value of the (small) body model computable from its initializers."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    opsets = list(model.opset_import)
    for node in model.graph.node:
        if any(True for _ in cf.subgraphs(node)) or not all(i in values for i in node.input if i):
            continue
        one = helper.make_model(helper.make_graph(
            [node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output if o],
            [numpy_helper.from_array(np.asarray(values[i]), i) for i in dict.fromkeys(node.input) if i]),
            opset_imports=opsets)
        try:
            results = ReferenceEvaluator(one).run(None, {})
        except Exception:  # an op the reference runtime cannot evaluate: not constant
            continue
        values.update(zip([o for o in node.output if o], (np.asarray(r) for r in results)))
    return values


def _through_identity(name: str, producers: dict[str, NodeProto]) -> str:
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    return name


def _ancestors(name: str, producers: dict[str, NodeProto], consts: dict[str, np.ndarray]) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current in consts:
            continue
        seen.add(current)
        if current in producers:
            todo.extend(i for i in producers[current].input if i)
    return seen


def _vector(value: np.ndarray) -> np.ndarray | None:
    flat = np.asarray(value)
    return flat.reshape(-1) if flat.ndim >= 1 and flat.size == max(flat.shape) else None


def match(node: OnnxNode, graph: OnnxGraph) -> tuple[Match, onnx.ModelProto, list[str], list[str]] | None:
    """The structural reading of ``node`` (see the module docstring, step 1), or None: the match, the
    body as a model computing only the carried values and scan outputs, the outer names that model
    captures (the sequence and mask), and its input names."""
    body = cf.attr_graph(node, "body")
    names = list(node.input_values) + [""] * (2 - len(node.input_values))
    n_carried = len(body.input) - 2
    n_scan = len(body.output) - 1 - n_carried
    formal = [v.name for v in body.input]
    counters, floats, passed = [], [], []
    producers = {o: n for n in body.node for o in n.output}
    for j in range(n_carried):
        out = body.output[1 + j].name
        if out == formal[2 + j]:
            passed.append(j)
            continue
        source = _through_identity(out, producers)
        step = producers.get(source)
        if step is not None and step.op_type == "Add" and formal[2 + j] in step.input:
            other = [i for i in step.input if i != formal[2 + j]]
            init = cf.fold(names[2 + j], graph)
            local = {t.name: t for t in body.initializer}
            inc = (numpy_helper.to_array(local[other[0]]) if other and other[0] in local
                   else cf.fold(other[0], graph) if other and other[0] not in producers else None)
            if inc is not None and np.asarray(inc).size == 1 and float(np.asarray(inc).reshape(-1)[0]) == 1:
                if init is None or np.asarray(init).size != 1:
                    return None
                counters.append(j)
                continue
        floats.append(j)
    if not floats:
        return None
    bound = {}
    check_sizes = dict.fromkeys(cf.symbolic_dims(graph), CHECK_BATCH)
    for j in passed:
        value = cf.fold(names[2 + j], graph)
        if value is None:  # Keras's zeros for masked outputs (zero_output_for_mask) depend on the batch
            zeros = cf.fold(names[2 + j], graph, sizes=check_sizes)
            value = zeros if zeros is not None and zeros.dtype.kind == "f" and not zeros.any() else None
        if value is not None:
            bound[formal[2 + j]] = value
    run_time_passed = [j for j in passed if formal[2 + j] not in bound]
    inputs = [body.input[0], body.input[1]] + [body.input[2 + j] for j in counters + floats + run_time_passed]
    outputs = [body.output[1 + j].name for j in counters + floats] + [o.name for o in body.output[1 + n_carried:]]
    model, captures = cf.subgraph_model(body, graph, inputs, outputs, bound)
    consts = _consts(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    index_names = {formal[0]} | {formal[2 + j] for j in counters
                                 if int(np.asarray(cf.fold(names[2 + j], graph)).reshape(-1)[0]) == 0}
    gathers = {}
    for n in model.graph.node:
        axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
        if n.op_type == "Gather" and n.input[1] in index_names and n.input[0] in captures and axis == 0:
            gathers[n.output[0]] = n.input[0]
    consumed = set(cf.free_names(model.graph.node, []))
    if set(captures) - set(gathers.values()) or any(formal[2 + j] in consumed for j in run_time_passed):
        return None  # the state computation reads something other than the step's inputs
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in consts
               and consts[n.input[1]].ndim == 2]
    kernel = [n for n in matmuls if n.input[0] in gathers]
    float_formal = {formal[2 + j] for j in floats}
    recurrent = [n for n in matmuls if n.input[0] in float_formal]
    others = [n for n in matmuls if n not in kernel and n not in recurrent]
    if len(kernel) != 1 or len(recurrent) != 1 or len(others) > 1:
        return None
    seq = gathers[kernel[0].input[0]]
    masks = [c for c in set(gathers.values()) if c != seq]
    if len(masks) > 1:
        return None
    cell = Cell(consts[kernel[0].input[1]], consts[recurrent[0].input[1]],
                consts[others[0].input[1]] if others else None)
    x_out, h_outs = kernel[0].output[0], {m.output[0] for m in recurrent + others}
    for n in model.graph.node:
        if n.op_type != "Add":
            continue
        operands = [i for i in n.input if i not in consts]
        biases = [consts[i] for i in n.input if i in consts]
        if len(operands) != 1 or len(biases) != 1 or _vector(biases[0]) is None:
            continue
        upstream = _ancestors(operands[0], producers, consts)
        from_x, from_h = x_out in upstream, bool(h_outs & upstream)
        if from_x and cell.bias_x is None:
            cell.bias_x = _vector(biases[0])
        elif from_h and not from_x and cell.bias_h is None:
            cell.bias_h = _vector(biases[0])
    found = Match(seq, masks[0] if masks else None, counters, floats, passed, n_scan, cell)
    return found, model, captures, [v.name for v in inputs]


def _torch_weights(kind: str, cell: Cell, perm: tuple[int, ...], hidden: int) -> dict[str, torch.Tensor]:
    """``weight_ih``/``weight_hh``/``bias_*`` in torch layout, gate blocks taken in ``perm`` order."""
    n_gates = gates(kind)

    def blocks(matrix: np.ndarray) -> torch.Tensor:  # [in, G*H] (x @ m) -> [G*H, in] in torch order
        parts = np.split(np.asarray(matrix, np.float32), n_gates, axis=-1)
        return torch.from_numpy(np.concatenate([parts[p] for p in perm], -1).T.copy())

    recurrent = cell.recurrent if cell.recurrent_n is None else np.concatenate([cell.recurrent, cell.recurrent_n], 1)
    zero = np.zeros(n_gates * hidden, np.float32)
    return {"weight_ih": blocks(cell.kernel), "weight_hh": blocks(recurrent),
            "bias_ih": blocks((cell.bias_x if cell.bias_x is not None else zero)[None])[:, 0],
            "bias_hh": blocks((cell.bias_h if cell.bias_h is not None else zero)[None])[:, 0]}


def _kinds(cell: Cell, hidden: int) -> list[str]:
    """The cell kinds whose weight shapes the match has (gate counts: ``migrate.core.recurrent.GATES``)."""
    blocks = cell.kernel.shape[1] // hidden if cell.kernel.shape[1] % hidden == 0 else 0
    rec = cell.recurrent.shape
    if cell.recurrent_n is not None:  # the reset-before GRU's candidate has its own recurrent kernel
        reset_before = blocks == gates("GRU") and rec == (hidden, 2 * hidden) and cell.bias_h is None
        return ["GRU_RESET_BEFORE"] if reset_before else []
    if rec != (hidden, blocks * hidden):
        return []
    return {gates("LSTM"): ["LSTM"], gates("GRU"): ["GRU"], gates("RNN"): ["RNN_TANH", "RNN_RELU"]}.get(blocks, [])


class RecurrentLoop(nn.Module, OnnxToTorchModule):
    """A Keras recurrent ``Loop``: ``forward(seq, [mask], *carried_initial)`` -> the Loop's outputs.

    ``roles[j]`` is what carried value j is: ``"count"`` (counts steps), ``"pass"`` (unchanged),
    ``"h"``, ``"c"`` (LSTM cell state) or ``"out"`` (the previous output Keras carries when masking).
    Scan outputs are the per-step outputs. ``zero_masked`` says whether masked steps output zeros
    (Keras ``zero_output_for_mask``) or repeat the previous output.
    """

    def __init__(self, kind: str, hidden: int, weights: dict[str, torch.Tensor], roles: list[str], n_scan: int,
                 n_outputs: int, masked: bool, zero_masked: bool) -> None:
        super().__init__()
        weights = dict(weights)
        self.kind, self.hidden, self.roles, self.n_scan, self.n_outputs = kind, hidden, roles, n_scan, n_outputs
        self.masked, self.zero_masked = masked, zero_masked
        if kind == "LSTM" and masked:  # the hold feature: +1 on the forget gate, -1 on the input gate
            column = torch.zeros(4 * hidden, 1)
            column[hidden:2 * hidden] = 1.0
            column[:hidden] = -1.0
            weights = dict(weights, weight_ih=torch.cat([weights["weight_ih"], column], 1))
            bound = (weights["bias_ih"].abs() + weights["bias_hh"].abs()).max()
            self.register_buffer("hold_base", bound + HOLD_MARGIN)
            self.register_buffer("hold_scale", weights["weight_hh"].abs().sum(1).max())
        if kind == "GRU_RESET_BEFORE":  # separate tensors: scan refuses closures over views of one tensor
            hh, bh = weights.pop("weight_hh"), weights.pop("bias_hh")
            weights.update(weight_hh_rz=hh[:2 * hidden].clone(), weight_hh_n=hh[2 * hidden:].clone(),
                           bias_hh_rz=bh[:2 * hidden].clone(), bias_hh_n=bh[2 * hidden:].clone())
        for name, value in weights.items():
            self.register_parameter(name, nn.Parameter(value, requires_grad=False))

    def _flat(self) -> list[torch.Tensor]:
        return [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]

    def _run(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None) -> tuple:
        """The cell over all of ``x`` [T, B, F]: (outputs [T, B, H], h_n [B, H], c_n [B, H] | None)."""
        if self.kind == "GRU_RESET_BEFORE":
            return self._scan_reset_before(x, h0)
        if torch.compiler.is_compiling():  # export/compile: the kernels would fix the length (rnn_scan.py)
            return scan_cell(self.kind, x, h0, c0, *self._flat())
        if self.kind == "LSTM":
            y, h_n, c_n = torch.lstm(x, (h0[None], c0[None]), self._flat(), True, 1, 0.0, False, False, False)
            return y, h_n[0], c_n[0]
        kernel = {"GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}[self.kind]
        y, h_n = kernel(x, h0[None], self._flat(), True, 1, 0.0, False, False, False)
        return y, h_n[0], None

    def _scan_reset_before(self, x: torch.Tensor, h0: torch.Tensor) -> tuple:
        """GRU with the reset gate applied before the recurrent product (Keras ``reset_after=False``):
        a ``scan`` when traced (export, compile), a plain loop when run eagerly (scan would compile)."""
        x_proj = F.linear(x, self.weight_ih, self.bias_ih)
        if not torch.compiler.is_compiling():
            h, ys = h0, []
            for t in range(x_proj.shape[0]):
                h, _ = self._reset_before_step(h, x_proj[t])
                ys.append(h)
            return torch.stack(ys), h, None
        from torch._higher_order_ops.scan import scan

        h_n, y = scan(self._reset_before_step, h0.clone(memory_format=torch.contiguous_format), x_proj)
        return y, h_n, None

    def _reset_before_step(self, h: torch.Tensor, xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_r, x_z, x_n = xp.chunk(3, -1)
        h_r, h_z = F.linear(h, self.weight_hh_rz, self.bias_hh_rz).chunk(2, -1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        h_new = (1 - z) * torch.tanh(x_n + F.linear(r * h, self.weight_hh_n, self.bias_hh_n)) + z * h
        return h_new + 0, h_new * 1  # fresh tensors: see rnn_scan.py

    def forward(self, seq: torch.Tensor, *args: torch.Tensor) -> Any:
        mask = args[0] if self.masked else None
        carried = list(args[1:] if self.masked else args)
        initial = {role: value for role, value in zip(self.roles, carried) if role in ("h", "c", "out")}
        h0 = initial["h"]
        c0 = initial.get("c")
        steps = seq.shape[0]
        if mask is None:
            y, h_n, c_n = self._run(seq, h0, c0)
            last = y[-1]
        else:
            y, h_n, c_n, last = self._masked(seq, mask.reshape(steps, -1).to(torch.bool), h0, c0, initial.get("out"))
        finals = {"h": h_n, "c": c_n, "out": last}
        results = []
        for role, value in zip(self.roles, carried):
            if role == "count":
                results.append(value + steps)
            elif role == "pass":
                results.append(value)
            else:
                results.append(finals[role])
        results += [y] * self.n_scan
        results = results[: self.n_outputs]
        return results[0] if self.n_outputs == 1 else tuple(results)

    def _masked(self, seq: torch.Tensor, mask: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
                out0: torch.Tensor | None) -> tuple:
        """Keras' masked steps (``migrate.core.recurrent``, the algorithm model.py runs too): the kernel over
        the valid steps moved to the front; an LSTM's hold feature keeps its cell state through the rest."""
        packed, valid = pack_valid_steps(seq, mask, time_dim=0)
        if self.kind == "LSTM":
            hold = self.hold_base + self.hold_scale * h0.abs().amax().clamp(min=1.0)
            packed = torch.cat([packed, (~valid)[..., None].to(packed.dtype) * hold], -1)
        y_packed, _, c_n = self._run(packed, h0, c0)
        y, h_n = unpack_valid_steps(y_packed, mask, self.zero_masked, h0=h0, out0=out0, time_dim=0)
        return y, h_n, c_n, y[-1]


def _reference(model: onnx.ModelProto, formal: list[str], captures: list[str], match_: Match, roles_init: dict,
               seq: np.ndarray, mask: np.ndarray | None) -> list[np.ndarray]:
    """Run the body step by step (ONNX reference evaluator): carried finals then stacked scan outputs."""
    evaluator = ReferenceEvaluator(model)
    carried = dict(roles_init)
    order = match_.counters + match_.floats
    scans: list[list[np.ndarray]] = [[] for _ in range(match_.n_scan)]
    feeds_seq = {match_.seq: seq} | ({match_.mask: mask} if match_.mask else {})
    for t in range(seq.shape[0]):
        feeds = {formal[0]: np.array(t, np.int64), formal[1]: np.array(True)}
        feeds.update({formal[2 + k]: carried[j] for k, j in enumerate(order)})
        feeds.update({name: np.zeros((), np.int64) for name in formal[2 + len(order):]})
        feeds.update({name: feeds_seq[name] for name in captures})
        outputs = evaluator.run(None, feeds)
        carried.update({j: outputs[k] for k, j in enumerate(order)})
        for k in range(match_.n_scan):
            scans[k].append(outputs[len(order) + k])
    return [carried[j] for j in order] + [np.stack(s) for s in scans]


def _candidates(found: Match, hidden: int, masked: bool):
    kinds = _kinds(found.cell, hidden)
    for kind in kinds:
        state_roles = ["h", "c"] if kind == "LSTM" else ["h"]
        roles_pool = state_roles + (["out"] if masked else [])
        if len(roles_pool) != len(found.floats):
            continue
        for perm in itertools.permutations(range(gates(kind))):
            weights = _torch_weights(kind, found.cell, perm, hidden)
            for roles in itertools.permutations(roles_pool):
                for zero_masked in ([False, True] if masked else [False]):
                    yield kind, weights, list(roles), zero_masked


def _verified(found: Match, model: onnx.ModelProto, formal: list[str], captures: list[str], node: OnnxNode,
              graph: OnnxGraph) -> RecurrentLoop | None:
    """The first candidate module that reproduces the body on random data (module docstring, step 3)."""
    hidden = found.cell.recurrent.shape[0]
    features = found.cell.kernel.shape[0]
    rng = np.random.default_rng(0)
    seq = rng.normal(size=(CHECK_STEPS, CHECK_BATCH, features)).astype(np.float32)
    mask = None
    if found.mask:
        mask = rng.random((CHECK_STEPS, CHECK_BATCH, 1)) < 0.6
        mask[:, 0] = True
        mask[:, 1, 0] = [True, False, True, True, False][:CHECK_STEPS]
        mask[:, 2] = False
    names = list(node.input_values)
    inits: dict[int, np.ndarray] = {}
    for j in found.counters:
        inits[j] = np.asarray(cf.fold(names[2 + j], graph))
    for j in found.floats:
        inits[j] = rng.uniform(-1, 1, (CHECK_BATCH, hidden)).astype(np.float32)
    try:
        expected = _reference(model, formal, captures, found, inits, seq, mask)
    except Exception:  # the body does not run on these shapes: not the layer we think it is
        return None
    carried_roles = {j: "count" for j in found.counters} | {j: "pass" for j in found.passed}
    n_carried = len(names) - 2
    args = [torch.from_numpy(seq)] + ([torch.from_numpy(mask)] if mask is not None else [])
    carried_values = [torch.from_numpy(np.asarray(inits.get(j, np.zeros(())))) for j in range(n_carried)]
    wanted = [j for j in range(n_carried) if j in found.counters or j in found.floats]
    for kind, weights, roles, zero_masked in _candidates(found, hidden, mask is not None):
        role_of = dict(carried_roles) | dict(zip(found.floats, roles))
        module = RecurrentLoop(kind, hidden, weights, [role_of[j] for j in range(n_carried)], found.n_scan,
                               n_carried + found.n_scan, mask is not None, zero_masked)
        with torch.no_grad():
            got = module(*args, *carried_values)
        got = [got[j] for j in sorted(wanted, key=(found.counters + found.floats).index)] + list(got[n_carried:])
        if all(compare(g.numpy(), e, Tolerance(CHECK_ATOL), strict_dtype=False).passed for g, e in zip(got, expected)):
            return module
    return None


def _runs_once_per_step(node: OnnxNode, graph: OnnxGraph, seq: str) -> bool:
    """Whether the loop's trip count is the time dim of ``seq`` (module docstring, step 2)."""
    info = graph.value_info.get(seq)
    dims = info.type.tensor_type.shape.dim if info is not None else []
    if not dims:
        return False
    body = cf.attr_graph(node, "body")
    probes = cf.length_probes(graph, dims[0])
    if not probes:
        return False
    try:
        return all(cf.trip_count(node, graph, body, sizes) == steps for sizes, steps in probes)
    except ConversionError:
        return False


def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult | None:
    """A :class:`RecurrentLoop` for a Keras recurrent ``Loop``, or None when ``node`` is not one."""
    try:
        matched = match(node, graph)
    except ConversionError:
        return None
    if matched is None:
        return None
    found, model, captures, formal = matched
    if not _runs_once_per_step(node, graph, found.seq):
        return None
    module = _verified(found, model, formal, captures, node, graph)
    if module is None:
        return None
    module.n_outputs = len(node.output_values)
    names = list(node.input_values)
    inputs = (found.seq,) + ((found.mask,) if found.mask else ()) + tuple(names[2:])
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))
