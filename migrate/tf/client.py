"""Run the TensorFlow worker (``migrate.tf.export_worker``) in a child process and turn its answer into errors.

TensorFlow never enters this process: everything crosses as files. The worker's chatter (TF, Keras,
tf2onnx) goes to a log file that is shown only with ``--debug`` or when the worker crashes. The worker
dies with this process, and every temporary file it makes lives in a directory removed afterwards,
also when this process is interrupted or terminated (the worker is killed, then the directory removed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from migrate.core.artifacts import deferred_signals
from migrate.core.errors import ConversionError, InputError, Tf2TorchError

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def tf_python() -> str:
    """Interpreter for the worker: ``TF2TORCH_TF_PYTHON`` (TF in another environment) or this one."""
    return os.environ.get("TF2TORCH_TF_PYTHON") or sys.executable


def worker_python(module: str) -> str:
    """Keras on the torch backend needs torch, so it runs in this environment; TF workers in ``tf_python()``."""
    return sys.executable if module == "migrate.tf.keras_torch_worker" else tf_python()


def run_worker(command: str, request: dict[str, Any], *, debug: bool = False, quiet: bool = True,
               module: str = "migrate.tf.export_worker") -> dict[str, Any]:
    """Run one worker command; return its JSON answer or raise InputError/ConversionError with its message.

    ``quiet`` is accepted for symmetry with the CLI: the worker's own output is never shown unless ``debug``.
    ``module`` names the worker to run (``migrate.tf.keras_worker`` for ``tf2torch port``).
    """
    with tempfile.TemporaryDirectory(prefix="tf2torch-worker-") as tmp:
        req_path, result_path, log_path = Path(tmp, "request.json"), Path(tmp, "result.json"), Path(tmp, "worker.log")
        req_path.write_text(json.dumps(dict(request, command=command, result=str(result_path))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        env["TF2TORCH_PARENT_PID"] = str(os.getpid())  # the worker dies with this process (tf_worker)
        env["TMPDIR"] = str(Path(tmp, "tmp"))  # TF's temp files (autograph, Keras export) go where we clean
        Path(env["TMPDIR"]).mkdir()
        if not debug:
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with open(log_path, "wb") as log:
            proc = None
            try:
                with deferred_signals():  # a signal between fork and our first wait would orphan the worker
                    proc = subprocess.Popen([worker_python(module), "-m", module, str(req_path)], env=env,
                                            stdin=subprocess.DEVNULL, stdout=None if debug else log,
                                            stderr=None if debug else subprocess.STDOUT)
                proc.wait()
            except OSError as exc:
                raise InputError(f"cannot start the worker with {worker_python(module)} ({exc}); "
                                 "check TF2TORCH_TF_PYTHON") from exc
            except BaseException:  # Ctrl-C, SIGTERM (Terminated): the worker goes first, then its files
                if proc is not None:
                    proc.kill()
                    proc.wait()
                raise
        if result_path.exists():
            answer = json.loads(result_path.read_text())
            if answer.get("ok"):
                return answer
            error = InputError if answer.get("exit_code") == 2 else ConversionError
            raise error(answer.get("message", "the TensorFlow worker failed"))
        tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        raise Tf2TorchError(f"the TensorFlow worker crashed (exit {proc.returncode})"
                            + (f": {tail[0][:300]}" if tail else "") + "; rerun with --debug to see its log")
