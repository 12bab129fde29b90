"""The first load and forward of an untrusted ``model.pt2``, in a child process that cannot write files.

``migrate.conversion.pt2_check`` is the guarantee; this is defence in depth for ``tf2torch parity`` and the pytest
plugin, which load files someone else may have written. The child applies a Linux Landlock rule set
before it imports torch: it may read anything, but create, write, truncate, rename or delete only below
its own scratch directory. Inputs and outputs cross as ``.npz`` (``allow_pickle=False``). Where the kernel
has no Landlock (not Linux, or older than 5.13) the child still runs, unconfined, and a failure there
still cannot reach the parent's memory or open files. The child dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from migrate.core.errors import ConversionError, InputError

#: Landlock filesystem rights (linux/landlock.h) this rule set takes away outside the scratch directory;
#: the ABI version that introduced each. Reading and executing stay allowed everywhere.
_WRITE_RIGHTS = {1 << 1: 1, 1 << 4: 1, 1 << 5: 1, 1 << 6: 1, 1 << 7: 1, 1 << 8: 1, 1 << 9: 1, 1 << 10: 1,
                 1 << 11: 1, 1 << 12: 1, 1 << 13: 2, 1 << 14: 3}
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_PR_SET_NO_NEW_PRIVS, _PR_SET_PDEATHSIG = 38, 1
_RULE_PATH_BENEATH = 1


def confine(scratch: Path) -> bool:
    """Allow writes only below ``scratch`` for the rest of this process; False where Landlock is missing."""
    machine = os.uname().machine if hasattr(os, "uname") else ""
    if sys.platform != "linux" or machine not in _SYSCALLS:
        return False
    create, add_rule, restrict = _SYSCALLS[machine]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return False
    handled = sum(bit for bit, since in _WRITE_RIGHTS.items() if abi >= since)
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        for path in (scratch, Path(os.devnull)):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                allowed = handled if path == scratch else 1 << 1  # /dev/null: write only
                rule = struct_path_beneath(allowed, fd)
                if libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), "landlock_add_rule failed")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.syscall(
                restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return True


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def struct_path_beneath(allowed: int, fd: int) -> _PathBeneath:
    return _PathBeneath(allowed, fd)


def run_program(pt2: Path, batches: list[list[Any]]) -> list[Any]:
    """Load ``pt2`` and call it on each batch (a list of numpy arrays, torch layout) in a confined child.

    Returns one result per batch: a list of arrays, or a dict when the program returns a dict.
    InputError (exit 2) when the archive is refused or cannot load, ConversionError when the forward fails.
    """
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="tf2torch-load-") as tmp:
        for i, batch in enumerate(batches):
            np.savez(Path(tmp, f"in{i}.npz"), *batch)
        env = dict(os.environ, TMPDIR=tmp)
        proc = subprocess.run([sys.executable, "-m", "migrate.conversion.pt2_sandbox", str(Path(pt2).resolve()), tmp,
                               str(len(batches))], capture_output=True, text=True, env=env, check=False)
        message = (proc.stderr.strip().splitlines() or [""])[-1]
        if proc.returncode == InputError.exit_code:
            raise InputError(message)
        if proc.returncode != 0:
            reason = (message if proc.returncode == 1 else
                      f"the process loading it died ({_exit_reason(proc.returncode)}): {message}".rstrip(": "))
            raise ConversionError(f"{pt2} failed on inputs TensorFlow accepted ({reason})")
        results = []
        for i in range(len(batches)):
            with np.load(Path(tmp, f"out{i}.npz"), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            if all(k.startswith("arr_") for k in arrays):
                results.append([arrays[f"arr_{j}"] for j in range(len(arrays))])
            else:
                results.append({k[len("key_"):]: v for k, v in arrays.items()})
        return results


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


def _child(pt2: str, scratch: str, count: int) -> int:
    """Confine, load through the check, call the program on every ``inN.npz``, write ``outN.npz``."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    confine(Path(scratch))
    import numpy as np
    import torch

    from migrate.conversion.pt2_check import load_pt2

    try:
        module = load_pt2(pt2).module()
    except InputError as exc:
        print(exc, file=sys.stderr)
        return InputError.exit_code
    for i in range(count):
        with np.load(Path(scratch, f"in{i}.npz"), allow_pickle=False) as data:
            args = [torch.from_numpy(data[f"arr_{j}"].copy()) for j in range(len(data.files))]
        try:
            with torch.no_grad():
                out = module(*args)
        except Exception as exc:
            print(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
                  file=sys.stderr)
            return 1
        if isinstance(out, dict):
            np.savez(Path(scratch, f"out{i}.npz"), **{f"key_{k}": v.detach().cpu().numpy() for k, v in out.items()})
        else:
            values = list(out) if isinstance(out, (list, tuple)) else [out]
            np.savez(Path(scratch, f"out{i}.npz"), *[v.detach().cpu().numpy() for v in values])
    return 0


if __name__ == "__main__":
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    sys.exit(_child(sys.argv[1], sys.argv[2], int(sys.argv[3])))
