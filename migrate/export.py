"""torch.fx GraphModule -> ``torch.export`` ExportedProgram with the TF signature's dynamic dims kept."""

from __future__ import annotations

from typing import Any

import torch
from torch.export import Dim

from migrate.errors import ConversionError

#: Example size for dynamic dims; 2+ so torch.export does not specialise them to 0/1.
EXAMPLE_BATCH = 2
EXAMPLE_OTHER = 8

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
           "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


def torch_dtype(name: str) -> torch.dtype:
    """Map a manifest dtype name to torch, with a clear error for strings and other exotica."""
    if name not in _DTYPES:
        raise ConversionError(f"dtype {name!r} has no torch equivalent")
    return _DTYPES[name]


def example_inputs(specs: list[dict[str, Any]], batch: int = EXAMPLE_BATCH, other: int = EXAMPLE_OTHER,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random tensors matching the manifest ``inputs`` (torch layout), dynamic dims filled in.

    Integer inputs are drawn from {0, 1}: they often index embeddings of unknown size.
    """
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        shape = [(batch if i == 0 else other) if d is None else d for i, d in enumerate(spec["shape"])]
        dtype = torch_dtype(spec["dtype"])
        if dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=gen).to(dtype))
        else:
            tensors.append(torch.randint(0, 2, shape, generator=gen).to(dtype))
    return tuple(tensors)


def dynamic_shapes(specs: list[dict[str, Any]], batch_only: bool) -> tuple[dict[int, Any], ...]:
    """One shared ``batch`` Dim for every leading None; other None dims get their own Dim unless batch_only."""
    batch = Dim("batch")
    shapes = []
    for spec in specs:
        dims: dict[int, Any] = {}
        for i, d in enumerate(spec["shape"]):
            if d is None and i == 0:
                dims[i] = batch
            elif d is None and not batch_only:
                dims[i] = Dim(f"{_ident(spec['name'])}_dim{i}")
        shapes.append(dims)
    return tuple(shapes)


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def fix_other_dims(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The specs with every non-batch None dim fixed to the export example's size."""
    return [dict(s, shape=[EXAMPLE_OTHER if d is None and i > 0 else d for i, d in enumerate(s["shape"])])
            for s in specs]


def export_program(gm: torch.nn.Module, specs: list[dict[str, Any]]
                   ) -> tuple[torch.export.ExportedProgram, list[dict[str, Any]]]:
    """Export with every None dim dynamic, else with a dynamic batch only.

    Returns the program and the input specs it accepts: where the fallback fixed other dims,
    their ``shape`` says so (the manifest then tells the truth about what ``model.pt2`` takes).
    """
    from migrate.fx_passes import optimize

    example = example_inputs(specs)
    gm = optimize(gm, example)
    has_other = any(d is None for s in specs for i, d in enumerate(s["shape"]) if i > 0)
    attempts = [False, True] if has_other else [True]
    error: Exception | None = None
    for batch_only in attempts:
        try:
            program = torch.export.export(gm, example, dynamic_shapes=dynamic_shapes(specs, batch_only), strict=False)
            return program, fix_other_dims(specs) if batch_only else specs
        except Exception as exc:  # torch.export raises many types; the last one is reported
            error = exc
    raise ConversionError(f"torch.export failed ({type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0][:300] if str(error).strip() else ''}); "
                          "rerun with --debug for details") from error
