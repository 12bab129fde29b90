"""The child's side of the worker protocol, shared by every worker module (TF, Keras, Keras-on-torch).

``python -m migrate.tf.<worker> REQUEST.json`` (or ``--serve``, one request path per stdin line): run the
command, write ``{"ok": true, ...}`` or ``{"ok": false, "exit_code": 1|2, "message": "..."}`` to the request's
``result`` path, and leave with ``os._exit``. That skips TensorFlow's slow and sometimes crashing interpreter teardown (and its atexit
cleanup, which is why ``migrate.tf.client`` points TMPDIR at a directory it removes: autograph's files land there).
Imports neither TensorFlow nor torch.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from migrate.core.errors import Tf2TorchError, first_line


def serve(commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> NoReturn:
    """Answer the request named on the command line, or with ``--serve`` every request path read from stdin.

    tf2torch's own errors carry their exit code and message; anything else is exit 1 with its informative line
    (its traceback goes to the worker's log). A serving worker answers each request with a line on its own
    copy of stdout, and points fd 1 at the log, so nothing TF or Keras prints can corrupt that channel.
    """
    die_with_parent()
    if sys.argv[1] != "--serve":
        _answer(commands, Path(sys.argv[1]))
        _leave()
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for line in sys.stdin:
        _answer(commands, Path(line.strip()))
        _between_requests()
        channel.write("done\n")
    _leave()


def _answer(commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]], request_path: Path) -> None:
    request = json.loads(request_path.read_text())
    try:
        answer = dict(commands[request["command"]](request), ok=True)
    except Tf2TorchError as exc:
        answer = {"ok": False, "exit_code": exc.exit_code, "message": str(exc)}
    except Exception as exc:  # anything else is a failure to report, not a crash
        traceback.print_exc()
        answer = {"ok": False, "exit_code": 1, "message": f"{type(exc).__name__}: {first_line(exc, 300)}"}
    Path(request["result"]).write_text(json.dumps(answer))


def _between_requests() -> None:
    """Drop what one request left in Keras's global state (layer-name counters, graphs) before the next."""
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()
    gc.collect()


def _leave() -> NoReturn:
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
