"""The ``tf2torch port`` subcommand (registered in ``migrate.cli._PLUGINS``)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("port", help="port a Keras model to readable, trainable PyTorch source (model.py)",
                              description="Port a Keras model (.keras, .h5, Keras-2 SavedModel) to PyTorch source "
                                          "with its weights. Writes OUT/model.py, OUT/weights.safetensors and "
                                          "OUT/manifest.json atomically, after checking the module against Keras.")
    p.add_argument("source", help=".keras or .h5 file, or a Keras-2 SavedModel directory (keras_metadata.pb)")
    p.add_argument("-o", "--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--keep-layout", action="store_true",
                   help="take and return images channels-last like Keras (default: channels-first, NCHW)")
    p.add_argument("--class-name", help="name of the generated nn.Module class (default: from the Keras model name)")
    p.add_argument("--custom-objects", action="append", default=[], metavar="MODULE.py|MODULE:NAME",
                   help="Python module defining a Keras file's custom layers/functions (its code runs in the "
                        "Keras child process); repeatable. A custom layer class also needs an emitter")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks and the Keras/TensorFlow log")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from migrate.porting.api import port

    port(args.source, args.out, keep_layout=args.keep_layout, class_name=args.class_name, force=args.force,
         quiet=args.quiet, debug=args.debug, custom_objects=args.custom_objects)
    return 0
