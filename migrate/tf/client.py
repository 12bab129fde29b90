"""Run the TensorFlow worker (``migrate.tf.export_worker``) in a child process and turn its answer into errors.

TensorFlow never enters this process: everything crosses as files. The worker's chatter (TF, Keras,
tf2onnx) goes to a log file that is shown only with ``--debug`` or when the worker crashes. The worker
dies with this process, and every temporary file it makes lives in a directory removed afterwards,
also when this process is interrupted or terminated (the worker is killed, then the directory removed).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
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


#: Workers that stay up to serve many requests (TensorFlow is imported once): the TF-backed ones.
POOLED = frozenset({"migrate.tf.export_worker", "migrate.tf.keras_worker", "migrate.tf.train_worker"})
#: A pooled worker is replaced after this many requests, so a long session does not grow TF's memory for ever.
MAX_REQUESTS = 40


def run_worker(command: str, request: dict[str, Any], *, debug: bool = False, quiet: bool = True,
               module: str = "migrate.tf.export_worker") -> dict[str, Any]:
    """Run one worker command; return its JSON answer or raise InputError/ConversionError with its message.

    TF-backed workers stay up for the next request of this process (TensorFlow is imported once per process,
    not per call). A request that imports the user's own modules (``custom_objects``), or one under ``debug``
    (whose log goes to the terminal), gets a fresh worker of its own, so nothing of one request leaks into
    another. ``quiet`` is accepted for symmetry with the CLI: the worker's output is never shown unless ``debug``.
    ``module`` names the worker to run (``migrate.tf.keras_worker`` for ``tf2torch port``).
    """
    if module in POOLED and not debug and not request.get("custom_objects"):
        return _answer(_pooled(module).run(dict(request, command=command)))
    with tempfile.TemporaryDirectory(prefix="tf2torch-worker-") as tmp:
        req_path, result_path, log_path = Path(tmp, "request.json"), Path(tmp, "result.json"), Path(tmp, "worker.log")
        req_path.write_text(json.dumps(dict(request, command=command, result=str(result_path))))
        with open(log_path, "wb") as log:
            proc = None
            try:
                proc = _start(module, [str(req_path)], Path(tmp), debug, stdin=subprocess.DEVNULL,
                              stdout=None if debug else log, stderr=None if debug else subprocess.STDOUT)
                proc.wait()
            except BaseException:  # Ctrl-C, SIGTERM (Terminated): the worker goes first, then its files
                if proc is not None:
                    proc.kill()
                    proc.wait()
                raise
        return _answer(json.loads(result_path.read_text()) if result_path.exists() else None,
                       proc.returncode, _last_line(log_path))


def _start(module: str, args: list[str], tmp: Path, debug: bool, **streams: Any) -> subprocess.Popen:
    """Start ``python -m module ARGS`` with its temporary files under ``tmp``; it dies with this process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
    env["TF2TORCH_PARENT_PID"] = str(os.getpid())  # the worker dies with this process (protocol.die_with_parent)
    env["TMPDIR"] = str(tmp / "tmp")  # TF's temp files (autograph, Keras export) go where we clean
    Path(env["TMPDIR"]).mkdir(exist_ok=True)
    if not debug:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with deferred_signals():  # a signal between fork and our first wait would orphan the worker
            return subprocess.Popen([worker_python(module), "-m", module, *args], env=env, **streams)
    except OSError as exc:
        raise InputError(f"cannot start the worker with {worker_python(module)} ({exc}); "
                         "check TF2TORCH_TF_PYTHON") from exc


def _answer(answer: dict[str, Any] | None, returncode: int | None = None, last_line: str = "") -> dict[str, Any]:
    """The worker's answer, or the error it carries; a missing answer means the worker crashed."""
    if answer is None:
        raise Tf2TorchError(f"the TensorFlow worker crashed (exit {returncode})"
                            + (f": {last_line[:300]}" if last_line else "") + "; rerun with --debug to see its log")
    if answer.get("ok"):
        return answer
    error = InputError if answer.get("exit_code") == 2 else ConversionError
    raise error(answer.get("message", "the TensorFlow worker failed"))


def _last_line(log_path: Path, start: int = 0) -> str:
    with open(log_path, "rb") as fh:
        fh.seek(start)
        lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class _Worker:
    """One long-lived worker: requests go as file paths on its stdin, it answers "done" on its own pipe."""

    def __init__(self, module: str, key: str) -> None:
        self.key, self.served = key, 0
        self.tmp = Path(tempfile.mkdtemp(prefix="tf2torch-worker-"))
        self.log_path = self.tmp / "worker.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the worker
        self.proc = _start(module, ["--serve"], self.tmp, False, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=self.log)
        self.lock = threading.Lock()

    def run(self, request: dict[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            self.served += 1
            req_path, result_path = self.tmp / f"request-{self.served}.json", self.tmp / f"result-{self.served}.json"
            req_path.write_text(json.dumps(dict(request, result=str(result_path))))
            start = self.log.tell()
            try:
                self.proc.stdin.write(f"{req_path}\n".encode())
                self.proc.stdin.flush()
                done = self.proc.stdout.readline()
            except BrokenPipeError:
                done = b""
            except BaseException:  # Ctrl-C, SIGTERM: this worker's state is unknown, so it goes
                self.close()
                raise
            if not done:  # the worker died: report it as a one-shot crash would
                self.proc.wait()
                self.log.flush()
                last = _last_line(self.log_path, start)
                self.close()
                return _answer(None, self.proc.returncode, last)
            answer = json.loads(result_path.read_text())
            req_path.unlink()
            result_path.unlink()
            if self.served >= MAX_REQUESTS:
                self.close()
            return answer

    def close(self) -> None:
        """Stop the worker and remove its files (also what a crash or an interrupt leaves)."""
        if _POOL.get(self.key) is self:
            del _POOL[self.key]
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.log):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


_POOL: dict[str, _Worker] = {}


def _pooled(module: str) -> _Worker:
    key = f"{tf_python()}|{module}"
    worker = _POOL.get(key)
    if worker is None or worker.proc.poll() is not None:
        if worker is not None:
            worker.close()
        worker = _POOL[key] = _Worker(module, key)
    return worker


@atexit.register
def close_workers() -> None:
    """Stop every pooled worker (at exit; tests and long sessions may call it to free TensorFlow's memory)."""
    for worker in list(_POOL.values()):
        worker.close()
