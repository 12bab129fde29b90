"""``tf2torch lint``: find silent TF/Keras-to-PyTorch porting bugs in training code.

Python API::

    from checks.lint import lint_paths, lint_source
    findings = lint_paths(["src/"], select=["TTL1", "TTL201"])
    for f in findings:
        print(f.filename, f.row, f.code, f.message)

``check()`` returns a full report (findings, errors, fixes applied). The linter parses
with libcst and never imports or runs the code it reads.
"""
from __future__ import annotations

from .engine import lint_source
from .finding import Edit, Finding, Fix
from .registry import all_rules
from .runner import LintError, Report, check, lint_paths
from .version import __version__

__all__ = [
    "Edit",
    "Finding",
    "Fix",
    "LintError",
    "Report",
    "__version__",
    "all_rules",
    "check",
    "lint_paths",
    "lint_source",
]
