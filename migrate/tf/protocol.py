"""The child's side of the worker protocol, shared by every worker module (TF, Keras, Keras-on-torch).

``python -m migrate.<worker> REQUEST.json``: run the request's command, write ``{"ok": true, ...}`` or
``{"ok": false, "exit_code": 1|2, "message": "..."}`` to the request's ``result`` path, and leave with
``os._exit``. That skips TensorFlow's slow and sometimes crashing interpreter teardown (and its atexit
cleanup, which is why ``migrate.tf.client`` points TMPDIR at a directory it removes: autograph's files land there).
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

from migrate.core.errors import Tf2TorchError, first_line


def serve(commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> NoReturn:
    """Answer the one request named on the command line; tf2torch's own errors carry their exit code and
    message, anything else is exit 1 with its informative line (its traceback goes to the worker's log)."""
    die_with_parent()
    request = json.loads(Path(sys.argv[1]).read_text())
    try:
        answer = dict(commands[request["command"]](request), ok=True)
    except Tf2TorchError as exc:
        answer = {"ok": False, "exit_code": exc.exit_code, "message": str(exc)}
    except Exception as exc:  # anything else is a failure to report, not a crash
        traceback.print_exc()
        answer = {"ok": False, "exit_code": 1, "message": f"{type(exc).__name__}: {first_line(exc, 300)}"}
    Path(request["result"]).write_text(json.dumps(answer))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def die_with_parent() -> None:
    """Called first in a worker process: die when the tf2torch process dies, even by SIGKILL (Linux).

    Also unblocks SIGINT/SIGTERM, which :func:`run_worker` holds while starting the worker.
    """
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    parent = os.environ.get("TF2TORCH_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)
