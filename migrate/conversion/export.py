"""torch.fx GraphModule -> ``torch.export`` ExportedProgram with every None dim of the TF signature kept dynamic.

Every None dim is exported as ``Dim.AUTO``: torch.export then derives which dims the graph ties
together (a padding mask broadcast onto attention scores makes its length the token ids' length) and
gives them one symbol; those groups are what the manifest's ``dims`` records. A dim the graph really
fixes is a last resort: it is fixed with a warning naming the input, the dim and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import Dim

from migrate.core.errors import ConversionError, InputError, first_line

#: Example size for dynamic dims; 2+ so torch.export does not specialise them to 0/1.
EXAMPLE_BATCH = 2
EXAMPLE_OTHER = 8

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
           "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


@dataclass
class Exported:
    """The program plus what the manifest says about it."""

    program: torch.export.ExportedProgram
    #: Input specs as the program takes them: a dim it fixed has its size in ``shape`` instead of None.
    inputs: list[dict[str, Any]]
    #: Symbol name -> the [input name, dim] pairs that share it (one entry per dynamic symbol).
    dims: dict[str, list[list[Any]]] = field(default_factory=dict)
    #: Symbol name -> [min, max] the program accepts (max None when unbounded).
    dim_ranges: dict[str, list[int | None]] = field(default_factory=dict)
    #: One line per dim that had to be fixed: input, dim, reason.
    warnings: list[str] = field(default_factory=list)


def torch_dtype(name: str) -> torch.dtype:
    """Map a manifest dtype name to torch, with a clear error for strings and other exotica."""
    if name not in _DTYPES:
        raise ConversionError(f"dtype {name!r} has no torch equivalent")
    return _DTYPES[name]


def example_inputs(specs: list[dict[str, Any]], batch: int = EXAMPLE_BATCH, other: int = EXAMPLE_OTHER,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random tensors matching the manifest ``inputs`` (torch layout), dynamic dims filled in.

    Every non-batch None dim gets the same size: dims the graph ties must be equal for the model to
    run, and torch.export does not merge dims merely because their example sizes agree.
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


def parse_static_dims(items: list[str] | dict[str, int] | None) -> dict[tuple[str, int], int]:
    """``["name:dim=size", ...]`` (the CLI's --static-dims) or ``{"name:dim": size}`` -> {(name, dim): size}."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else [_split_assignment(i) for i in items]
    parsed = {}
    for key, size in pairs:
        match = re.fullmatch(r"(.+):(-?\d+)", str(key).strip())
        if not match:
            raise InputError(f"--static-dims {key}={size}: expected NAME:DIM=SIZE, e.g. token_ids:1=128")
        try:
            value = int(size)
        except (TypeError, ValueError):
            raise InputError(f"--static-dims {key}={size}: SIZE must be a positive integer") from None
        if value < 1:
            raise InputError(f"--static-dims {key}={size}: SIZE must be a positive integer")
        parsed[(match.group(1), int(match.group(2)))] = value
    return parsed


def _split_assignment(item: str) -> tuple[str, str]:
    key, sep, size = item.partition("=")
    if not sep:
        raise InputError(f"--static-dims {item}: expected NAME:DIM=SIZE, e.g. token_ids:1=128")
    return key, size


def apply_static_dims(specs: list[dict[str, Any]], static: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
    """The specs with the user's chosen sizes filled in; unknown inputs or dims are input errors."""
    by_name = {s["name"]: s for s in specs}
    by_tf_name = {s.get("tf_name", s["name"]): s for s in specs}
    shapes = {s["name"]: list(s["shape"]) for s in specs}
    for (name, dim), size in static.items():
        spec = by_name.get(name) or by_tf_name.get(name)
        if spec is None:
            raise InputError(f"--static-dims {name}:{dim}={size}: no input {name!r}; inputs: "
                             f"{', '.join(s['name'] for s in specs)}")
        shape = shapes[spec["name"]]
        axis = dim + len(shape) if dim < 0 else dim
        if not 0 <= axis < len(shape):
            raise InputError(f"--static-dims {name}:{dim}={size}: {spec['name']!r} has {len(shape)} dims")
        if shape[axis] is not None and shape[axis] != size:
            raise InputError(f"--static-dims {name}:{dim}={size}: that dim is already fixed to {shape[axis]}")
        shape[axis] = size
    return [dict(s, shape=shapes[s["name"]]) for s in specs]


def _runnable_example(gm: torch.nn.Module, specs: list[dict[str, Any]], batch: int,
                      other: int | None) -> tuple[torch.Tensor, ...]:
    """Example inputs the model runs on: a length above the model's maximum (a position table of 6 rows,
    say) fails, so non-batch None dims try 8, then 5, 3 and 2 (never 0/1: export would specialise them)."""
    has_other = any(d is None for s in specs for i, d in enumerate(s["shape"]) if i > 0)
    sizes = [other] if other is not None or not has_other else [EXAMPLE_OTHER, 5, 3, 2]
    for size in sizes[:-1]:
        example = example_inputs(specs, batch=batch, other=size or EXAMPLE_OTHER)
        try:
            with torch.no_grad():
                gm(*example)
            return example
        except Exception:  # any failure at this size: try a smaller one
            continue
    return example_inputs(specs, batch=batch, other=sizes[-1] or EXAMPLE_OTHER)


def _dynamic_shapes(specs: list[dict[str, Any]], kind: Any, batch_only: bool = False) -> tuple[dict[int, Any], ...]:
    return tuple({i: kind for i, d in enumerate(s["shape"]) if d is None and (i == 0 or not batch_only)}
                 for s in specs)


def export_program(gm: torch.nn.Module, specs: list[dict[str, Any]],
                   static_dims: dict[tuple[str, int], int] | None = None) -> Exported:
    """Export with every None dim dynamic; dims the graph fixes are fixed with a warning, as a last resort.

    ``Dim.AUTO`` on every None dim keeps it dynamic unless the traced graph needs it constant (then it is
    fixed, and reported); where that export fails (a data-dependent guard), a dynamic batch only, then nothing.
    """
    from migrate.conversion.passes.driver import optimize

    static_dims = static_dims or {}
    specs = apply_static_dims(specs, static_dims)
    # Dims the graph ties to a user-fixed dim must get the same example size (else the model cannot run).
    chosen = {i == 0: size for (_, i), size in static_dims.items()}
    example = _runnable_example(gm, specs, chosen.get(True, EXAMPLE_BATCH), chosen.get(False))
    gm = optimize(gm, example)
    attempts = [_dynamic_shapes(specs, Dim.AUTO), _dynamic_shapes(specs, Dim.AUTO, batch_only=True), None]
    errors: list[Exception] = []
    for shapes in attempts:
        # scan (the recurrent converters) runs its step under torch.compile; Dynamo's cache from an earlier
        # export would re-check its guards against this one's symbolic dims and pin them (``seq != 7``).
        torch._dynamo.reset()
        try:
            program = torch.export.export(gm, example, dynamic_shapes=shapes, strict=False)
        except Exception as exc:  # torch.export raises many types; the first one explains the fallback
            errors.append(exc)
            continue
        # Export tags the example tensors with Python attributes (_specialize_on), which would make the
        # archive's sample inputs pickle more than plain tensors: store untagged copies.
        program.example_inputs = (tuple(t.clone() for t in example), {})
        return _describe(program, specs, first_line(errors[0], 300) if errors else None, set(static_dims.values()))
    raise ConversionError(f"torch.export failed ({type(errors[0]).__name__}: {first_line(errors[0], 300)}); "
                          "rerun with --debug for details") from errors[0]


def _describe(program: torch.export.ExportedProgram, specs: list[dict[str, Any]], reason: str | None,
              user_sizes: set[int]) -> Exported:
    """Read the dims of the program's placeholders: symbols shared across inputs, sizes it fixed.

    A dim fixed to a size the user chose with static dims is taken as tied to that dim: no warning.
    """
    import sympy
    from torch.fx.experimental.symbolic_shapes import is_concrete_int
    from torch.utils._sympy.numbers import int_oo

    user_inputs = program.graph_signature.user_inputs
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    accepted, warnings = [], []
    groups: dict[str, list[list[Any]]] = {}
    symbols: dict[str, Any] = {}
    for spec, node_name in zip(specs, user_inputs):
        sizes = placeholders[node_name].meta["val"].shape
        shape = list(spec["shape"])
        for i, (want, have) in enumerate(zip(spec["shape"], sizes)):
            if want is not None:
                continue
            if is_concrete_int(have):
                shape[i] = int(have)
                if int(have) in user_sizes:
                    continue
                why = reason or f"the converted graph uses it as the constant {int(have)} (torch.export specialised it)"
                warnings.append(f"input {spec['name']!r} dim {i} is fixed to {int(have)}: {why}; "
                                f"choose the size with --static-dims {spec['name']}:{i}=SIZE")
            else:
                expr = have.node.expr
                groups.setdefault(str(expr), []).append([spec["name"], i])
                symbols[str(expr)] = expr
        accepted.append(dict(spec, shape=shape))
    names = _name_groups(groups, specs)
    dims = {names[key]: members for key, members in groups.items()}
    ranges = {}
    for key, expr in symbols.items():
        bounds = program.range_constraints.get(expr)
        if bounds is None:
            continue
        upper = None if bounds.upper in (int_oo, sympy.oo) else int(bounds.upper)
        # torch.export reports 2 as the least size (it traces with 0/1 specialisation off), yet accepts 1.
        ranges[names[key]] = [min(int(bounds.lower), 1), upper]
    return Exported(program=program, inputs=accepted, dims=dims, dim_ranges=ranges, warnings=warnings)


def _name_groups(groups: dict[str, list[list[Any]]], specs: list[dict[str, Any]]) -> dict[str, str]:
    """Readable symbol names: ``batch`` for leading dims, ``seq`` for the time axis of token-like inputs."""
    rank = {s["name"]: len(s["shape"]) for s in specs}
    taken: set[str] = set()
    names = {}
    for key, members in groups.items():
        if any(dim == 0 for _, dim in members):
            base = "batch"
        elif all(dim == 1 and rank[name] in (2, 3) for name, dim in members):
            base = "seq"
        else:
            name, dim = members[0]
            base = f"{re.sub(r'[^0-9A-Za-z_]', '_', name)}_dim{dim}"
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        names[key] = candidate
    return names


class TFSignature(torch.nn.Module):
    """``model.pt2``'s module, callable by position (TF order) and by keyword (the manifest's input names).

    A torch.export program accepts its inputs exactly as it was traced (here: by position); this
    binds keywords to positions first, so ``model(token_ids=..., padding_mask=..., segment_ids=...)`` works.
    """

    def __init__(self, program_module: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.program = program_module
        self.names = list(names)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs:
            return self.program(*args)
        if len(args) > len(self.names):
            raise TypeError(f"takes {len(self.names)} inputs ({', '.join(self.names)}) but {len(args)} were given")
        bound = dict(zip(self.names, args))
        for key, value in kwargs.items():
            if key not in self.names:
                raise TypeError(f"unexpected input {key!r}; inputs: {', '.join(self.names)}")
            if key in bound:
                raise TypeError(f"input {key!r} given by position and by keyword")
            bound[key] = value
        missing = [n for n in self.names if n not in bound]
        if missing:
            raise TypeError(f"missing input(s): {', '.join(missing)}")
        return self.program(*(bound[n] for n in self.names))
