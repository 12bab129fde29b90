"""The ``tf2torch transfer`` subcommand (registered in ``migrate.cli._PLUGINS``): exit 0 when every weight found
its place, 1 when something is left over or ambiguous (the report says what), 2 on bad input."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transfer", help="load a Keras model's weights into your own PyTorch module",
                              description="Pair the Keras layers with the submodules of your module (FILE.py:CLASS) by "
                                          "use order, kind and shape (names only as hints), let the numbers decide "
                                          "ties, and write OUT/weights.safetensors, OUT/weights_map.json and "
                                          "OUT/report.json atomically. Then run 'tf2torch parity SOURCE "
                                          "FILE.py:CLASS --weights-map OUT/weights_map.json' (and --train).")
    p.add_argument("source", help=".keras or .h5 file, or a Keras-2 SavedModel directory")
    p.add_argument("module", metavar="FILE.py:CLASS", help="your module: a class built with no arguments, or a "
                                                           "function returning the module")
    p.add_argument("-o", "--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--init", metavar="'CLASS(k=v, ...)'", help="arguments for the class (literal values)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="report format on stdout")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--debug", action="store_true", help="show tracebacks and the Keras/TensorFlow log")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from migrate.transferring.api import transfer

    result = transfer(args.source, args.module, args.out, init=args.init, force=args.force, debug=args.debug)
    sys.stdout.write(result.report.to_json() if args.format == "json" else result.report.to_text())
    return 0 if result.report.complete and not result.report.ambiguous else 1
