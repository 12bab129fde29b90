"""The ``lint`` subcommand: argument parsing, output and exit codes (0 clean, 1 findings, 2 error)."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import TextIO

from .config import ConfigError
from .discovery import PathError
from .formats import FORMATS, render
from .registry import UnknownCode

HELP = "find silent TF/Keras-to-PyTorch porting bugs in training code"


def _codes(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lint`` to the ``tf2torch`` parser; it sets ``func=run``."""
    parser = subparsers.add_parser("lint", help=HELP, description=HELP.capitalize() + ".")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: .)")
    parser.add_argument("--select", type=_codes, action="extend", metavar="CODES",
                        help="comma-separated codes or prefixes to enable (replaces the config's select)")
    parser.add_argument("--ignore", type=_codes, action="extend", metavar="CODES",
                        help="comma-separated codes or prefixes to disable (adds to the config's ignore)")
    parser.add_argument("--fix", action="store_true", help="apply safe fixes in place")
    parser.add_argument("--diff", action="store_true",
                        help="print the safe fixes as a unified diff instead of writing them (exit 1 if any)")
    parser.add_argument("--output-format", choices=sorted(FORMATS), default="text",
                        help="how to print findings (default: text)")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    parser.add_argument("--config", metavar="PYPROJECT",
                        help="use this pyproject.toml instead of searching for one")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the result cache")
    parser.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: CPU count)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def run(args: argparse.Namespace) -> int:
    from .runner import check, configure

    debug = getattr(args, "debug", False)
    try:
        paths = args.paths or ["."]
        report = check(
            paths,
            select=args.select,
            ignore=args.ignore,
            config=configure(paths, args.config),
            fix=args.fix,
            diff=args.diff,
            cache=not args.no_cache,
            jobs=args.jobs,
        )
    except (ConfigError, PathError, UnknownCode) as exc:
        _write(sys.stderr, f"tf2torch lint: error: {exc}\n")
        return 2
    except Exception as exc:  # internal error
        if debug:
            traceback.print_exc()
        _write(sys.stderr, f"tf2torch lint: internal error: {type(exc).__name__}: {exc}"
               + ("" if debug else " (run with --debug for the traceback)") + "\n")
        return 2

    if args.diff:
        _write(sys.stdout, "".join(report.diffs))
    else:
        _write(sys.stdout, render(report.findings, args.output_format))
    for warning in report.warnings:
        _write(sys.stderr, f"tf2torch lint: warning: {warning}\n")
    for error in report.errors:
        _write(sys.stderr, f"tf2torch lint: error: {error if debug else error.splitlines()[0]}\n")
    if args.output_format == "text" and not args.diff:
        _summary(report, args.fix)
    if report.errors:
        return 2
    if args.diff:
        return 1 if report.diffs else 0
    if args.exit_zero:
        return 0
    return 1 if report.findings else 0


def _write(stream: TextIO, text: str) -> None:
    """Write ``text``; file names with bytes that are not valid in the stream's encoding
    (undecodable names arrive as surrogate escapes) are written as their original bytes,
    or backslash-escaped where the stream has no byte layer."""
    try:
        stream.write(text)
        return
    except UnicodeEncodeError:
        pass
    encoding = getattr(stream, "encoding", None) or "utf-8"
    buffer = getattr(stream, "buffer", None)
    try:
        raw = text.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:
        buffer = None
    if buffer is None:
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        return
    stream.flush()
    buffer.write(raw)
    buffer.flush()


def _summary(report, fixed_mode: bool) -> None:
    parts = []
    if fixed_mode:
        parts.append(f"fixed {report.fixed}")
    count = len(report.findings)
    fixable = sum(1 for f in report.findings if f.fix)
    if count:
        parts.append(f"found {count} finding{'s' if count != 1 else ''}"
                     + (f" ({fixable} fixable with --fix)" if fixable else ""))
    else:
        parts.append("no findings")
    print(f"{'; '.join(parts).capitalize()} in {report.files} file{'s' if report.files != 1 else ''}.",
          file=sys.stderr)
