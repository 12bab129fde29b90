"""``convert --compile``: ``model.aoti.pt2``, an AOTInductor package compiled ahead of time from model.pt2.

torch.compile pays 20-40 s of compilation on the first call of every process (and again per new shape
when dims are not dynamic); an AOTInductor package carries the compiled shared library, so loading it
with ``torch._inductor.aoti_load_package`` compiles nothing. The package is compiled from the same
ExportedProgram as ``model.pt2``, so its symbolic dims (dynamic batch, sequence length, ...) stay
dynamic. It targets the device the program's tensors live on: CPU here; ``compile_package(...,
device="cuda")`` moves the program to the GPU first (needs a CUDA build of torch and nvcc).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from migrate.core.errors import ConversionError, first_line

MODEL_AOTI = "model.aoti.pt2"


def compile_package(program: Any, path: str | Path, device: str = "cpu") -> Path:
    """Compile ``program`` (a torch.export ExportedProgram) into an AOTInductor package at ``path``."""
    import torch
    from torch.export.passes import move_to_device_pass

    if device != "cpu":
        program = move_to_device_pass(program, device)
    _realize_expanded_views(program)
    _bind_scan_symbols(program)
    try:
        written = torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:
        raise ConversionError(f"AOTInductor could not compile the model ({type(exc).__name__}: {first_line(exc, 300)}); "
                              "convert without --compile (model.pt2 does not need it)") from exc
    return Path(written)


def _realize_expanded_views(program: Any) -> None:
    """Clone an ``expand`` before a view op reshapes it, in place (model.pt2 is already written).

    Inductor (torch 2.13) folds an expanded constant buffer, e.g. an LSTM's zero initial state
    expanded to ``[batch, hidden]``, into a view whose symbolic size it then cannot prove equal
    when ``unsqueeze``/``view`` reshape it (LoweringException). A copy of that small tensor avoids it.
    """
    import torch

    aten = torch.ops.aten
    reshapes = {aten.unsqueeze.default, aten.view.default, aten.reshape.default}
    graph = program.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        source = node.args[0] if node.op == "call_function" and node.target in reshapes and node.args else None
        if isinstance(source, torch.fx.Node) and source.target == aten.expand.default:
            with graph.inserting_before(node):
                copy = graph.call_function(aten.clone.default, (source,))
            copy.meta = dict(source.meta)
            node.replace_input_with(source, copy)
            changed = True
    if changed:
        program.graph_module.recompile()


def _bind_scan_symbols(program: Any) -> None:
    """Pass each ``scan`` the dynamic sizes its outputs depend on, in place.

    Inductor (torch 2.13) lowers ``scan`` to ``while_loop`` and allocates its stacked outputs from
    symbols it finds among the scan's SymInt arguments; a recurrent layer's outputs are
    ``[length, batch, hidden]`` but torch.export passes no ``batch`` SymInt (KeyError: s23). Appending
    ``sym_size`` of an input that carries the symbol (and an unused placeholder to the step function)
    binds it without changing what is computed.
    """
    import torch

    graph = program.graph_module.graph
    sizes: dict[Any, Any] = {}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node in graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.sym_size.int:
            val = node.meta.get("val")
            if isinstance(val, torch.SymInt):
                sizes.setdefault(val.node.expr, node)
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.higher_order.scan:
            continue
        combine, init, xs, extra = node.args
        bound = {a.meta["val"].node.expr for a in extra
                 if isinstance(a, torch.fx.Node) and isinstance(a.meta.get("val"), torch.SymInt)}
        wanted = set()
        for out in node.meta.get("val") or ():
            for dim in getattr(out, "shape", ()):
                if isinstance(dim, torch.SymInt):
                    wanted |= {sym for sym in dim.node.expr.free_symbols if sym not in bound}
        added = []
        for sym in sorted(wanted, key=str):
            if sym not in sizes:
                source = next(((p, i) for p in placeholders
                               for i, d in enumerate(getattr(p.meta.get("val"), "shape", ()))
                               if isinstance(d, torch.SymInt) and d.node.expr == sym), None)
                if source is None:
                    continue
                with graph.inserting_after(placeholders[-1]):
                    size = graph.call_function(torch.ops.aten.sym_size.int, source)
                size.meta["val"] = source[0].meta["val"].shape[source[1]]
                sizes[sym] = size
            added.append(sizes[sym])
        if not added:
            continue
        step = getattr(program.graph_module, combine.target)
        last = [n for n in step.graph.nodes if n.op == "placeholder"][-1]
        for i, size in enumerate(added):
            with step.graph.inserting_after(last):
                last = step.graph.placeholder(f"bound_size_{i}")
            last.meta["val"] = size.meta["val"]
        step.recompile()
        node.args = (combine, init, xs, [*extra, *added])
        changed = True
    if changed:
        program.graph_module.recompile()


def load_package(path: str | Path) -> Any:
    """The compiled model as a callable (positional inputs in the manifest's order); nothing is compiled."""
    import torch

    return torch._inductor.aoti_load_package(str(path))
