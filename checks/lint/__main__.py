"""``python -m checks.lint``: the lint subcommand without the rest of the tf2torch CLI."""
from __future__ import annotations

import argparse
import sys

from .cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tf2torch lint", description="Find silent TF-to-PyTorch porting bugs.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
