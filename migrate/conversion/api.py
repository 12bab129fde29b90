"""Python API: ``convert`` a TensorFlow model into an output directory, ``load`` it back as a torch module."""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.core.artifacts import MANIFEST, MODEL_ONNX, MODEL_PT2, read_manifest, staged_output, write_json
from migrate.core.errors import ConversionError, InputError
from migrate.core.progress import Progress
from migrate.core.requirements import CONVERT, installed_version, require
from migrate.tf import custom_objects as custom
from migrate.tf.client import run_worker
from migrate.tf.source_kind import source_kind

#: Opsets tf2onnx 1.17 emits that the converters are tested on; 17 is the default.
SUPPORTED_OPSETS = range(13, 19)
DEFAULT_OPSET = 17


@dataclass
class ConversionResult:
    """What :func:`convert` produced: the loaded module, the manifest and the artifact paths."""

    module: Any
    manifest: dict[str, Any]
    out: Path
    paths: dict[str, Path] = field(default_factory=dict)


@contextmanager
def _hush(debug: bool) -> Iterator[None]:
    """Hide library warnings and log chatter from onnx2torch/torch.export unless debugging."""
    if debug:
        yield
        return
    logging.disable(logging.WARNING)  # torch sets levels on its own child loggers; this silences them all
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def convert(source: str | Path, out: str | Path, *, signature: str = "serving_default", opset: int = DEFAULT_OPSET,
            keep_layout: bool = False, force: bool = False, quiet: bool = True, compile: bool = False,
            static_dims: list[str] | dict[str, int] | None = None, custom_objects: custom.CustomObjects = None,
            debug: bool = False) -> ConversionResult:
    """Convert SOURCE (SavedModel dir, .keras or .h5) into OUT: model.pt2, model.onnx, manifest.json.

    TensorFlow runs in a child process; this process only ever imports torch. Image inputs and
    outputs become channels-first unless ``keep_layout``. OUT appears only if everything succeeded.
    ``compile`` also writes model.aoti.pt2, an AOTInductor package (``migrate.conversion.aoti``).
    Every None dim stays dynamic unless the graph fixes it (a warning says so) or ``static_dims``
    (``["name:dim=size"]`` or ``{"name:dim": size}``) fixes it.
    ``custom_objects`` gives a Keras file's custom classes: ``"layers.py"``, ``"package.module:Name"``,
    a list of those, or ``{"Name": Name}`` (imported again in the TF child process from its module).
    """
    require("convert", CONVERT)
    source, out = Path(source), Path(out)
    if opset not in SUPPORTED_OPSETS:
        raise InputError(f"--opset {opset} is not supported; use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    source_kind(source)  # fail fast on a bad path, before any child process starts
    custom_specs = custom.specs(custom_objects)
    fixed = _static_dims(static_dims)
    progress = Progress(total=4 if compile else 3, quiet=quiet)
    started = time.perf_counter()
    with staged_output(out, force, source=source) as stage, tempfile.TemporaryDirectory(prefix="tf2torch-") as scratch:
        signature_json = Path(scratch, "signature.json")
        with progress.stage("tf_export", "exporting the TensorFlow signature to ONNX (tf2onnx, child process)"):
            run_worker("export", {"source": str(source), "signature": signature, "opset": opset,
                                  "keep_layout": keep_layout, "onnx": str(stage / MODEL_ONNX),
                                  "signature_json": str(signature_json), "custom_objects": custom_specs},
                       debug=debug)
        info = json.loads(signature_json.read_text())
        _warn(info.get("warnings", []), progress)  # now: they explain a failure in a later stage too
        with _hush(debug):
            import onnx
            import torch

            from migrate.conversion.export import export_program
            from migrate.conversion.to_torch import onnx_to_torch, prepare

            with progress.stage("to_torch", "converting ONNX to torch.fx (onnx2torch + tf2torch converters)"):
                model = onnx.load(str(stage / MODEL_ONNX))
                _refuse_training_random(model, info)
                outputs = _graph_order(info["outputs"], model.graph.output)
                gm = onnx_to_torch(prepare(model))
                inputs = _signature_order(gm, info["inputs"], model.graph.input)
            with progress.stage("export", "exporting with torch.export (every None dim dynamic)"):
                exported = export_program(gm, inputs, static_dims=fixed)
                program, inputs = exported.program, exported.inputs
                torch.export.save(program, str(stage / MODEL_PT2))
            if compile:
                from migrate.conversion.aoti import MODEL_AOTI, compile_package

                with progress.stage("compile", "compiling model.aoti.pt2 with AOTInductor (a minute or more)"):
                    compile_package(program, stage / MODEL_AOTI)
        timings = dict(progress.timings)
        manifest = {
            "format": 1,
            "source": info["source"],
            "inputs": inputs,
            "outputs": outputs,
            "dims": exported.dims,
            "dim_ranges": exported.dim_ranges,
            "warnings": info.get("warnings", []) + exported.warnings,
            # outputs that depend on a random draw -> its ops (RandomNormal, RandomUniform): new values on every
            # call; parity compares their distribution (docs/convert.md "Random outputs")
            "random_outputs": {o["name"]: o["random"] for o in outputs if o.get("random")},
            "onnx": {"opset": opset},
            "versions": {"tf2torch": installed_version("tf2torch"), **info["versions"], "torch": torch.__version__,
                         "onnx2torch": installed_version("onnx2torch")},
            "timings_s": timings,
        }
        write_json(stage / MANIFEST, manifest)
        with _hush(debug):
            module = _verified(stage, out, program)
    total = time.perf_counter() - started
    progress.say(f"converted {source} -> {out} in {total:.1f}s "
                 f"(TF->ONNX {timings['tf_export']:.1f}s, ONNX->torch {timings['to_torch']:.1f}s, "
                 f"torch.export {timings['export']:.1f}s); inputs: {_shapes(inputs)}; outputs: {_shapes(outputs)}")
    if manifest["random_outputs"]:
        progress.say("random outputs: " + ", ".join(f"{name} ({', '.join(ops)})" for name, ops in
                                                     manifest["random_outputs"].items())
                     + "; they draw new values on every call (torch.manual_seed makes them repeatable), and "
                       "parity compares their distribution")
    _warn(exported.warnings, progress)
    paths = {"out": out, "pt2": out / MODEL_PT2, "onnx": out / MODEL_ONNX, "manifest": out / MANIFEST}
    if compile:
        paths["aoti"] = out / "model.aoti.pt2"
    return ConversionResult(module=module, manifest=read_manifest(out), out=out, paths=paths)


#: ONNX ops that draw random numbers.
ONNX_RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                             "Bernoulli"})


def _refuse_training_random(model: Any, info: dict[str, Any]) -> None:
    """Only draws by design (docs/convert.md "Random outputs") are converted: a dropout, noise or augmentation
    layer's draw baked in training mode is refused with the training-mode line, which says how to re-export."""
    by_design = set(info.get("random_by_design") or [])
    stack, found = [model.graph], []
    while stack:
        graph = stack.pop()
        for node in graph.node:
            if node.op_type in ONNX_RANDOM_OPS and node.name not in by_design:
                found.append(node.name)
            stack.extend(a.g for a in node.attribute if a.HasField("g"))
            stack.extend(g for a in node.attribute for g in a.graphs)
    if found:
        line = next((w for w in info.get("warnings", []) if "draws random numbers" in w),
                    f"the serving function draws random numbers in training mode ({', '.join(sorted(found)[:3])}); "
                    "re-export with inference semantics (an endpoint calling model(x, training=False))")
        raise ConversionError(f"{line}; tf2torch converts only draws a layer makes on purpose at inference, so this "
                              f"is refused ({len(found)} ONNX random op(s), first: {', '.join(sorted(found)[:3])})")


def _verified(stage: Path, out: Path, program: Any) -> Any:
    """The staged model.pt2 loaded as a user loads it (through the safety check), run on the export's example
    inputs and compared with the in-memory program: before OUT is published, so a failure leaves OUT as it was."""
    import torch

    try:
        module = load(stage)
    except InputError as exc:
        detail = str(exc).replace(str(stage / MODEL_PT2) + ": ", "")
        raise ConversionError(f"{out / MODEL_PT2}: the converted program fails tf2torch's own load check ({detail}); "
                              f"{out} is left as it was. This is a tf2torch bug, please report it") from exc
    example = program.example_inputs[0]
    with torch.no_grad(), torch.random.fork_rng():  # random outputs (converters/random.py): the same draws
        torch.manual_seed(0)
        got = module(*example)
        torch.manual_seed(0)
        want = program.module()(*example)
    got, want = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (got, want))
    if len(got) != len(want) or not all(torch.equal(g, w) for g, w in zip(got, want)):
        raise ConversionError("the saved model.pt2, loaded back, computes something other than the exported program; "
                              "this is a tf2torch bug, please report it")
    return module


def _warn(lines: list[str], progress: Progress) -> None:
    """Warnings go to stderr (CLI), or to Python's warnings when quiet (API); the manifest keeps them."""
    for line in lines:
        if progress.quiet:
            warnings.warn(line, stacklevel=3)
        else:
            progress.say(f"warning: {line}")


def _graph_order(specs: list[dict[str, Any]], values: Any) -> list[dict[str, Any]]:
    """Specs in the ONNX graph's order (the order of the converted module's inputs and outputs).

    The graph names its tensors by the signature's keys (``tf_name``).
    """
    by_name = {s.get("tf_name") or s["name"]: s for s in specs}
    names = [v.name for v in values]
    if sorted(names) != sorted(by_name):
        raise ConversionError(f"the ONNX graph's tensors {names} do not match the signature's {sorted(by_name)}; "
                              "this is a tf2torch bug, please report it")
    return [by_name[n] for n in names]


def _static_dims(items: list[str] | dict[str, int] | None) -> dict[tuple[str, int], int]:
    """Parse ``static_dims`` before any child process starts (a typo fails fast, exit 2)."""
    if not items:
        return {}
    require("convert", CONVERT)
    from migrate.conversion.export import parse_static_dims

    return parse_static_dims(items)


def _signature_order(gm: Any, specs: list[dict[str, Any]], values: Any) -> list[dict[str, Any]]:
    """Make ``gm`` take its inputs in the TF signature's order (``specs``' order), named by valid identifiers.

    The ONNX graph's order is tf2onnx's (alphabetical for a signature's keyword arguments); a user calls
    ``model.pt2`` as TF is called. ``name`` becomes the identifier (the keyword), ``tf_name`` keeps TF's key.
    """
    from migrate.conversion.passes.driver import order_inputs

    graph = [id(s) for s in _graph_order(specs, values)]
    names = order_inputs(gm, [graph.index(id(s)) for s in specs], [_identifier(s["name"]) for s in specs])
    return [dict(s, name=name, tf_name=s.get("tf_name") or s["name"]) for s, name in zip(specs, names)]


def _identifier(name: str) -> str:
    """A Python identifier for a TF input name (``input:0`` -> ``input``, ``image-rgb`` -> ``image_rgb``)."""
    import keyword
    import re

    ident = re.sub(r"\W", "_", name.split(":")[0] if name.endswith(":0") else name) or "input"
    ident = f"_{ident}" if ident[0].isdigit() else ident
    return f"{ident}_" if keyword.iskeyword(ident) else ident


def _shapes(specs: list[dict[str, Any]]) -> str:
    def dims(shape: list[int | None]) -> str:
        return ",".join("N" if (i == 0 and d is None) else ("?" if d is None else str(d)) for i, d in enumerate(shape))

    return ", ".join(f"{s['name']}[{dims(s['shape'])}]{' ' + s['layout'] if s.get('layout') else ''}" for s in specs)


def load(out: str | Path) -> Any:
    """Load ``OUT/model.pt2`` as a ``torch.nn.Module`` with ``torch.export.load``.

    The archive is checked first (``migrate.conversion.pt2_check``): one that would unpickle or execute anything
    beyond tensors and a graph of torch operators is refused with InputError, so loading runs no code.
    """
    from migrate.conversion.export import TFSignature
    from migrate.conversion.pt2_check import load_pt2

    out = Path(out)
    manifest = read_manifest(out)
    # By position in TF order, and by keyword with the manifest's input names.
    return TFSignature(load_pt2(out / MODEL_PT2).module(), [s["name"] for s in manifest.get("inputs") or []])
