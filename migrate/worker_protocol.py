"""The child's side of the worker protocol, shared by every worker module (TF, Keras, Keras-on-torch).

``python -m migrate.<worker> REQUEST.json``: run the request's command, write ``{"ok": true, ...}`` or
``{"ok": false, "exit_code": 1|2, "message": "..."}`` to the request's ``result`` path, and leave with
``os._exit``. That skips TensorFlow's slow and sometimes crashing interpreter teardown (and its atexit
cleanup, which is why ``worker_client`` points TMPDIR at a directory it removes: autograph's files land there).
Imports neither TensorFlow nor torch.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from migrate.worker_client import die_with_parent


def serve(commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]], *,
          expected: tuple[type[Exception], ...], describe: Callable[[BaseException], str]) -> NoReturn:
    """Answer the one request named on the command line; ``expected`` errors carry their own exit code and
    message, anything else is exit 1 with ``describe(exc)`` (its traceback goes to the worker's log)."""
    die_with_parent()
    request = json.loads(Path(sys.argv[1]).read_text())
    try:
        answer = dict(commands[request["command"]](request), ok=True)
    except expected as exc:
        answer = {"ok": False, "exit_code": getattr(exc, "exit_code", 1), "message": str(exc)}
    except Exception as exc:  # anything else is a failure to report, not a crash
        traceback.print_exc()
        answer = {"ok": False, "exit_code": 1, "message": f"{type(exc).__name__}: {describe(exc)}"}
    Path(request["result"]).write_text(json.dumps(answer))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
