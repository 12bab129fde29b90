"""``tf2torch parity SOURCE CONVERTED``: exit 0 when every output matches, 1 on a mismatch, 2 on bad input."""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from migrate.core.errors import InputError, Tf2TorchError


def _tolerance(text: str) -> tuple[str, str]:
    """``1e-4`` (every output) or ``NAME=1e-4``; validated as numbers later, with the output names known."""
    name, sep, value = text.rpartition("=")
    return (name if sep else "*"), value


def _span(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        low_v, high_v = float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH, got {text!r}") from None
    if not low_v < high_v:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH in {text!r}")
    return low_v, high_v


def _named_span(text: str) -> tuple[str, tuple[float, float]]:
    name, sep, span = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=LOW:HIGH, got {text!r}")
    return name, _span(span)


def _pairs(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


#: argparse takes "-1:1" for an option unless it looks like a negative number; spans and exponents do here.
_NEGATIVE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(:[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)?$")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``parity`` on the ``tf2torch`` command's subparsers."""
    p = subparsers.add_parser(
        "parity", help="check that the converted model computes what the TensorFlow model computes",
        description="Run the TensorFlow model (child process), model.pt2 (torch) and model.onnx (ONNX Runtime) "
                    "on the same inputs and compare every output. An element passes when "
                    "|actual - expected| <= atol + rtol*|expected|. Exit 0 pass, 1 mismatch, 2 error.")
    p._negative_number_matcher = _NEGATIVE  # so "--float-range -1:1" needs no "="
    p.add_argument("source", help="the TensorFlow model: SavedModel directory, .keras or .h5 file")
    p.add_argument("converted", nargs="?", help="directory written by 'tf2torch convert' or 'tf2torch port' (its "
                                                "module; tf~torch only); omitted with --keras-backend")
    p.add_argument("--trust-model-py", action="store_true",
                   help="CONVERTED is a 'tf2torch port' output you trust: import its model.py (it is code; "
                        "same as writing port:CONVERTED)")
    p.add_argument("--signature", help="signature to run (default: the one recorded in the manifest)")
    p.add_argument("--custom-objects", action="append", default=[], metavar="MODULE.py|MODULE:NAME",
                   help="Python module defining a Keras SOURCE's custom layers (as for convert); repeatable")
    tol = p.add_argument_group("tolerances")
    tol.add_argument("--atol", action="append", type=_tolerance, default=[], metavar="[OUTPUT=]VALUE",
                     help="absolute tolerance, for all outputs or one (repeatable; default for float32: "
                          "max(1e-6, 1e-3 * the output's largest |value|))")
    tol.add_argument("--rtol", action="append", type=_tolerance, default=[], metavar="[OUTPUT=]VALUE",
                     help="relative tolerance, for all outputs or one (repeatable; default 1e-4 for float32)")
    tol.add_argument("--pairs", type=_pairs, metavar="PAIR[,PAIR]",
                     help="pairs that decide the verdict, from tf~torch, tf~onnx, onnx~torch (default: tf~torch; "
                          "the others are reported, not failing)")
    gen = p.add_argument_group("inputs")
    gen.add_argument("--seed", type=int, default=0, help="random seed for generated inputs (default: %(default)s)")
    gen.add_argument("--iterations", type=int, default=1, help="number of random batches (default: %(default)s)")
    gen.add_argument("--batch-size", type=int,
                     help="size of the batch dimension (default: 2; 4 with --train, --keras-backend or a module, "
                          "where BatchNorm trains on the batch's statistics)")
    gen.add_argument("--dim-size", type=int, default=8,
                     help="size for other dynamic dimensions, e.g. sequence length (default: %(default)s)")
    gen.add_argument("--float-range", type=_span, metavar="LOW:HIGH",
                     help="draw float inputs uniformly from [LOW, HIGH) instead of what the graph implies "
                          "(pixel range for rescaled images, normalization statistics, else a standard normal)")
    gen.add_argument("--range", dest="ranges", action="append", type=_named_span, default=[],
                     metavar="NAME=LOW:HIGH", help="value range [LOW, HIGH) for one input (repeatable); integer "
                                                   "inputs that index an embedding get [0, rows) by default")
    gen.add_argument("--inputs", metavar="FILE.npz", help="use these arrays (one per input name) instead")
    gen.add_argument("--inputs-layout", choices=("tf", "torch"), default="tf",
                     help="layout of the arrays in --inputs (default: %(default)s, e.g. NHWC images)")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime (compare TF~torch only)")
    p.add_argument("--per-layer", action="store_true",
                   help="on a mismatch, name the first ONNX/torch node and TF op whose output differs")
    train = p.add_argument_group("training parity (port outputs)")
    train.add_argument("--train", action="store_true",
                       help="compare a training step: training-mode forward, loss, every gradient and, after "
                            "--steps optimizer steps, every weight and BatchNorm statistic (CONVERTED: a port "
                            "output, or FILE.py:CLASS with --weights-map)")
    train.add_argument("--loss", metavar="NAME[:KEY=VALUE,...]",
                       help="Keras loss when SOURCE was saved without one (or to replace it), e.g. "
                            "sparse_categorical_crossentropy:from_logits=true")
    train.add_argument("--optimizer", metavar="NAME[:KEY=VALUE,...]",
                       help="Keras optimizer when SOURCE was saved without one (or to replace it), e.g. "
                            "sgd:learning_rate=0.1,momentum=0.9")
    train.add_argument("--steps", type=int, default=1, help="optimizer steps on the batch (default: %(default)s)")
    train.add_argument("--targets", metavar="FILE.npz",
                       help="targets, one array per Keras output name (default: generated to fit the loss)")
    train.add_argument("--keras-backend", choices=("torch",),
                       help="instead of CONVERTED: load SOURCE (.keras) under KERAS_BACKEND=torch and compare it with "
                            "the TensorFlow backend, forward (and one train_on_batch step with --train)")
    train.add_argument("--weights-map", metavar="MAP.json",
                       help="with CONVERTED=FILE.py:CLASS (your own module, forward or --train): Keras weight path -> "
                            "torch key, or {\"torch\": KEY, \"transform\": \"permute(1,0)\"} (docs/transfer.md); "
                            "without it, the map 'tf2torch transfer' finds")
    train.add_argument("--init", metavar="'CLASS(k=v, ...)'", help="arguments that build FILE.py:CLASS")
    p.add_argument("--format", choices=("text", "json", "junit"), default="text", help="report format")
    p.add_argument("--report", metavar="FILE.html",
                   help="also write a self-contained HTML page (verdict, inputs, versions, per-output errors, every "
                        "layer's error along the graph with its tolerance and the first divergence; with --train "
                        "every parameter's gradient and weight error)")
    p.add_argument("--node-data", metavar="FILE.json",
                   help="also write per-node error for Model Explorer, keyed on model.pt2's node names "
                        "(model-explorer model.pt2 --node_data_paths=FILE.json)")
    p.add_argument("--output", metavar="FILE", help="write the report to FILE (atomically) instead of stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's log")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the check and print or write the report; 0 pass, 1 mismatch, 2 error (one line on stderr)."""
    debug = bool(getattr(args, "debug", False))
    try:
        from checks.parity.api import compare
        from checks.parity.report import write_atomic

        module = args.converted is not None and args.converted.rpartition(":")[0].endswith(".py")
        only = [f for f, v in (("--loss", args.loss), ("--optimizer", args.optimizer), ("--targets", args.targets),
                               ("--weights-map", args.weights_map and not module), ("--steps", args.steps != 1)) if v]
        if only and not args.train:
            raise InputError(f"{', '.join(only)} only apply with --train")
        _check_outputs(args)
        if args.batch_size is None:  # the API's defaults: Keras' batch statistics on 2 samples are too noisy to compare
            args.batch_size = 4 if args.train or args.keras_backend or module else 2
        if args.node_data and (args.train or args.keras_backend):
            raise InputError("--node-data colours model.pt2's graph: it applies to the forward check of a "
                             "'tf2torch convert' output, not to --train or --keras-backend")
        if args.node_data and args.converted is not None:
            _node_data_applies(args.converted, module)
        if args.keras_backend:
            report = _keras_backend(args, debug)
        elif args.converted is None:
            raise InputError("CONVERTED is required (the directory 'tf2torch convert' or 'tf2torch port' wrote), "
                             "unless --keras-backend torch")
        elif module and not args.train:
            from checks.parity.train.forward import compare_module

            report = compare_module(args.source, args.converted, weights_map=args.weights_map, init=args.init,
                                    inputs=args.inputs, seed=args.seed, batch_size=args.batch_size, debug=debug)
        else:
            report = _train(args, debug) if args.train else compare(
                args.source, args.converted, signature=args.signature, atol=dict(args.atol) or None,
                rtol=dict(args.rtol) or None, seed=args.seed, iterations=args.iterations,
                batch_size=args.batch_size, dim_size=args.dim_size, float_range=args.float_range,
                ranges=dict(args.ranges), inputs=args.inputs, inputs_layout=args.inputs_layout, onnx=not args.no_onnx,
                per_layer=args.per_layer, pairs=args.pairs, custom_objects=args.custom_objects,
                trust_model_py=args.trust_model_py, debug=debug, trace=bool(args.report or args.node_data))
        text = report.render(args.format)
        if args.output:
            write_atomic(args.output, text)
        if args.report:
            write_atomic(args.report, report.to_html(), "--report")
        if args.node_data:
            _node_data(args, report)
        sys.stdout.write(report.to_text() if args.output else text)
        return 0 if report.passed else 1
    except Tf2TorchError as exc:
        return _fail(str(exc), exc.exit_code, debug)
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), InputError.exit_code, debug)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", 2, debug)


def _check_outputs(args: argparse.Namespace) -> None:
    """Before anything runs: no report (--output, --report, --node-data) lands on a directory, inside
    SOURCE/CONVERTED, or on another report's path."""
    inputs = [Path(p.rpartition(":")[0] if p.rpartition(":")[0].endswith(".py") else p)
              for p in (args.source, args.converted) if p]
    seen: dict[Path, str] = {}
    for flag, value in (("--output", args.output), ("--report", args.report), ("--node-data", args.node_data)):
        if not value:
            continue
        output = Path(value)
        if output.is_dir():
            raise InputError(f"{flag} {output}: is a directory; name a file for the report")
        target = output.resolve()
        for given in inputs:
            where = given.resolve()
            if target == where or where in target.parents:
                raise InputError(f"{flag} {output}: is {given} or inside it, which parity reads; write the report "
                                 "elsewhere")
        if target in seen:
            raise InputError(f"{flag} {output}: is also {seen[target]}'s file; give each report its own path")
        seen[target] = flag


def _node_data_applies(converted: str, module: bool) -> None:
    """Before anything runs: ``--node-data`` needs a model.pt2, which a port output or a module does not have."""
    from checks.parity.specs import load_manifest

    if module:
        raise InputError(f"--node-data colours model.pt2's graph; {converted} is your module: use --report")
    if load_manifest(converted).kind == "port":
        raise InputError(f"--node-data colours model.pt2's graph; {converted} is a port output (model.py) "
                         "without one: use --report, or 'tf2torch convert' for a model.pt2")


def _node_data(args: argparse.Namespace, report: Any) -> None:
    """Write ``--node-data`` for the nodes of the program parity loaded (``checks.parity.node_data``)."""
    import json

    from checks.parity.node_data import node_data
    from checks.parity.report import write_atomic
    from checks.parity.runners import load_program
    from checks.parity.specs import load_manifest

    manifest = load_manifest(args.converted)
    names = {n.name for n in load_program(manifest).graph.nodes}
    write_atomic(args.node_data, json.dumps(node_data(report.trace, names), indent=1) + "\n", "--node-data")


def _keras_backend(args: argparse.Namespace, debug: bool) -> Any:
    """``--keras-backend torch``: SOURCE under Keras' torch backend against its TensorFlow backend."""
    from checks.parity.train.backend import compare_backends

    if args.converted is not None:
        raise InputError("--keras-backend compares SOURCE with itself under another Keras backend; drop CONVERTED")
    return compare_backends(args.source, backend=args.keras_backend, train=args.train, optimizer=args.optimizer,
                            loss=args.loss, inputs=args.inputs, targets=args.targets, seed=args.seed,
                            batch_size=args.batch_size, custom_objects=args.custom_objects or None, debug=debug)


def _train(args: argparse.Namespace, debug: bool) -> Any:
    """``--train``: the training-step comparison (``checks.parity.train``)."""
    from checks.parity.api import compare_train

    return compare_train(args.source, args.converted, optimizer=args.optimizer, loss=args.loss, steps=args.steps,
                         inputs=args.inputs, targets=args.targets, weights_map=args.weights_map, seed=args.seed,
                         batch_size=args.batch_size, debug=debug, init=args.init,
                         trust_model_py=args.trust_model_py)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"tf2torch parity: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m checks.parity.cli``: the same command without the ``tf2torch`` front end."""
    parser = argparse.ArgumentParser(prog="tf2torch")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["parity", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
