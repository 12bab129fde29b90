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

from migrate.errors import ConversionError

MODEL_AOTI = "model.aoti.pt2"


def compile_package(program: Any, path: str | Path, device: str = "cpu") -> Path:
    """Compile ``program`` (a torch.export ExportedProgram) into an AOTInductor package at ``path``."""
    import torch
    from torch.export.passes import move_to_device_pass

    if device != "cpu":
        program = move_to_device_pass(program, device)
    _realize_expanded_views(program)
    try:
        written = torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ConversionError(f"AOTInductor could not compile the model ({type(exc).__name__}: {first}); "
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


def load_package(path: str | Path) -> Any:
    """The compiled model as a callable (positional inputs in the manifest's order); nothing is compiled."""
    import torch

    return torch._inductor.aoti_load_package(str(path))
