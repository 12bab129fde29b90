"""The ``tf2torch`` command: ``convert``, ``parity`` and ``lint``.

Subcommands are imported only when chosen, so ``tf2torch lint`` needs neither torch nor TensorFlow.
Exit codes (all subcommands): 0 success, 1 findings/mismatch/conversion failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from importlib import import_module

from migrate.core.errors import Terminated, Tf2TorchError, first_line

#: subcommand -> module providing ``add_parser(subparsers)``; convert lives here.
_PLUGINS = {"port": "migrate.porting.cli", "transfer": "migrate.transferring.cli", "parity": "checks.parity.cli",
            "lint": "checks.lint.cli"}


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="convert a SavedModel / .keras / .h5 to PyTorch (model.pt2)",
                              description="Convert a TensorFlow model to a torch.export program. "
                                          "Writes OUT/model.pt2, OUT/model.onnx and OUT/manifest.json atomically.")
    p.add_argument("source", help="SavedModel directory, .keras or .h5 file")
    p.add_argument("-o", "--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--signature", default="serving_default", help="signature to convert (default: %(default)s)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset for the intermediate model, 13..18 "
                                                          "(default: %(default)s)")
    p.add_argument("--keep-layout", action="store_true",
                   help="keep TensorFlow's channels-last layout for image inputs/outputs (default: NCHW)")
    p.add_argument("--static-dims", action="append", default=[], metavar="NAME:DIM=SIZE",
                   help="fix a None dim of an input (e.g. token_ids:1=128) instead of keeping it dynamic; "
                        "repeatable")
    p.add_argument("--custom-objects", action="append", default=[], metavar="MODULE.py|MODULE:NAME",
                   help="Python module defining a Keras file's custom layers/functions (its code runs in the "
                        "TensorFlow child process); repeatable")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--compile", action="store_true",
                   help="also write OUT/model.aoti.pt2, an AOTInductor package that runs without compiling "
                        "at load time (CPU; takes a minute or more)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow/tf2onnx logs")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from migrate.conversion.api import convert

    convert(args.source, args.out, signature=args.signature, opset=args.opset, keep_layout=args.keep_layout,
            force=args.force, quiet=args.quiet, compile=args.compile, custom_objects=args.custom_objects,
            static_dims=args.static_dims, debug=args.debug)
    return 0


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The full parser; only the chosen plugin subcommand is imported (plus all of them for --help)."""
    parser = argparse.ArgumentParser(prog="tf2torch", description="Move TensorFlow/Keras models and training "
                                                                   "code to PyTorch: convert, check parity, lint.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="{convert,port,transfer,parity,lint}", required=True)
    _add_convert(subparsers)
    wanted = [a for a in argv if not a.startswith("-")][:1]
    for name, module in _PLUGINS.items():
        if not wanted or wanted[0] == name:
            import_module(module).add_parser(subparsers)
    return parser


def _version() -> str:
    from migrate.core.requirements import installed_version

    return installed_version("tf2torch") or "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tf2torch`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return args.func(args)
    except Tf2TorchError as exc:
        if debug:
            traceback.print_exc()
        print(f"tf2torch {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"tf2torch {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"tf2torch {args.command}: terminated; partial output and temporary files removed", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if debug:
            traceback.print_exc()
        if exc.filename is None:
            return _internal_error(args.command, exc)
        name = exc.filename2 or exc.filename  # os.replace(tmp, path) fails naming both: path is the user's
        print(f"tf2torch {args.command}: error: {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            traceback.print_exc()
        return _internal_error(args.command, exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: context managers remove staging and temporary directories."""
    raise Terminated(signum)


def _internal_error(command: str, exc: BaseException) -> int:
    print(f"tf2torch {command}: internal error: {type(exc).__name__}: {first_line(exc)} "
          "(rerun with --debug for the traceback)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
