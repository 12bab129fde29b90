"""Graph tidying after the walk: fold constants into buffers, drop no-ops, cancel transposes, DCE."""

from __future__ import annotations

import torch
from torch import fx
from torch.fx.passes.tools_common import legalize_graph

from migrate.conversion.passes.values import Const, Sym, Walker

_FOLDED_PREFIX = "_folded_"


def materialize_constants(w: Walker) -> int:
    """Replace every constant-valued node still used by a run-time node with one buffer read.

    Buffers are plain tensors to ``torch.export``; the onnx2torch ops that computed them (and read
    constant tensors' values with ``.tolist()``) disappear.
    """
    gm, graph = w.gm, w.graph
    count = 0
    for node in list(graph.nodes):
        value = w.value.get(node)
        if node.op in ("placeholder", "get_attr", "output") or not isinstance(value, Const) \
                or not isinstance(value.value, torch.Tensor):
            continue
        if all(isinstance(w.value.get(u), Const) or u.op == "output" for u in node.users):
            continue
        name = f"{_FOLDED_PREFIX}{count}"
        while hasattr(gm, name):
            count += 1
            name = f"{_FOLDED_PREFIX}{count}"
        gm.register_buffer(name, value.value.detach().clone(memory_format=torch.contiguous_format))
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        w.value[attr] = value
        w.real[attr] = value.value
        node.replace_all_uses_with(attr, delete_user_cb=lambda user: user.op != "output")
        count += 1
    return count


def materialize_shapes(w: Walker) -> int:
    """Rebuild each shape vector still read as a tensor from its SymInt items.

    A run-time shape value consumed by ordinary tensor math (a mask built from ``Range`` and a
    length, a position divided by a width) would otherwise keep onnx2torch's Slice/Gather chain,
    which reads tensor values. ``torch.tensor([s0, 4])`` traces fine with SymInts.
    """
    live = _live(w.graph)
    count = 0
    for node in list(w.graph.nodes):
        value = w.value.get(node)
        if not isinstance(value, Sym) or value.literal or not any(user in live for user in node.users):
            continue
        items = value.items[0] if value.scalar else list(value.items)
        with w.graph.inserting_after(node):
            tensor = w.graph.call_function(torch.tensor, (items,), {"dtype": value.dtype})
        w.real[tensor] = w.real[node]
        w.value[tensor] = None
        node.replace_all_uses_with(tensor, delete_user_cb=lambda user, new=tensor: user is not new)
        count += 1
    if count:
        # An item's x.size(i) may have been emitted after the node it describes (next to the consumer
        # that first needed it); restore a topological order rather than guess a place per item.
        legalize_graph(w.gm)
    # Only now: the items' size nodes had no users of their own until a tensor was built from them.
    w.graph.eliminate_dead_code()
    return count


def _live(graph: fx.Graph) -> set[fx.Node]:
    """Nodes the output depends on (eliminate_dead_code's notion of live, without erasing anything)."""
    live: set[fx.Node] = set()
    stack = [n for n in graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack.extend(node.all_input_nodes)
    return live


def _bypass(node: fx.Node, source: fx.Node) -> None:
    """Point the node's users at ``source``, except a graph output (which must not alias an input)."""
    if source.op == "placeholder":
        node.replace_all_uses_with(source, delete_user_cb=lambda user: user.op != "output")
    else:
        node.replace_all_uses_with(source)


def remove_noops(w: Walker) -> int:
    """Drop Identity, eval-mode Dropout, Casts to the dtype already held, and transposes that cancel."""
    gm = w.gm
    removed = 0
    for node in list(w.graph.nodes):
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        module = gm.get_submodule(node.target)
        name = type(module).__name__
        source = node.args[0]
        if name == "OnnxCopyIdentity" or (name in ("Dropout", "OnnxDropoutDynamic") and not module.training) or name == "OnnxCast" and isinstance(w.real.get(source), torch.Tensor) \
                and w.real[source].dtype == module.torch_dtype:
            _bypass(node, source)
            removed += 1
        elif name == "OnnxTranspose" and module.perm is not None and _perm(gm, source) is not None:
            composed = [_perm(gm, source)[i] for i in module.perm]
            if composed == list(range(len(composed))):
                _bypass(node, source.args[0])
            else:
                with w.graph.inserting_before(node):
                    merged = w.graph.call_function(torch.permute, (source.args[0], composed))
                w.real[merged] = w.real[node]
                node.replace_all_uses_with(merged)
            removed += 1
    return removed


def _perm(gm: fx.GraphModule, node: fx.Node) -> list[int] | None:
    """The permutation a transpose node applies (onnx2torch module or a merged torch.permute)."""
    if node.op == "call_module" and type(gm.get_submodule(node.target)).__name__ == "OnnxTranspose":
        perm = gm.get_submodule(node.target).perm
        return list(perm) if perm is not None else None
    if node.op == "call_function" and node.target is torch.permute:
        return list(node.args[1])
    return None


def drop_dead(gm: fx.GraphModule) -> None:
    """Remove unused nodes, submodules and the initializer/folded buffers nothing reads any more."""
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_buffers()):
        if name in used or not (name.startswith(("initializers.", _FOLDED_PREFIX))):
            continue
        owner_path, _, leaf = name.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        del owner._buffers[leaf]
    gm.recompile()
