"""Write the output directory atomically and never touch what tf2torch did not write.

OUT is built in a hidden sibling (``.OUT.partial-<pid>-*``) and renamed into place at the end. An
exclusive lock beside OUT makes a second concurrent run into the same OUT fail instead of silently
replacing the first. ``--force`` replaces only a directory a tf2torch command wrote: its manifest
records the files the command wrote (``"files"``), and OUT may hold nothing else.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from migrate.core.errors import InputError

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the rest of the guarantees hold
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
MODEL_PT2 = "model.pt2"
MODEL_ONNX = "model.onnx"
#: What a convert output held before manifests recorded their files (``"files"``).
_LEGACY_CONVERT_FILES = frozenset({MANIFEST, MODEL_PT2, MODEL_ONNX, "model.aoti.pt2"})


def not_regular(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a directory (reading it could block)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_target(out: Path, source: Path | None) -> None:
    """OUT may never be SOURCE, contain it, lie inside it, or be the working directory or one of its parents."""
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{os.fsencode(out).decode('utf-8', 'backslashreplace')}: the path has bytes that are not "
                         "UTF-8, which torch cannot write to; choose another name for OUT") from None
    cwd = Path(os.path.realpath(os.getcwd()))
    if _within(cwd, out):
        raise InputError(f"{out} is the working directory or one of its parents; choose a new directory for OUT")
    if source is not None:
        src = Path(os.path.realpath(source))
        if _within(src, out):
            raise InputError(f"{out} {'is' if src == out else 'contains'} the source {source}; "
                             "choose an OUT outside the source")
        if src.is_dir() and _within(out, src):
            raise InputError(f"{out} lies inside the source {source}; choose an OUT outside the source")


def _written_by_us(out: Path) -> str | None:
    """None if ``out`` is a tf2torch output (or empty), else why it is not."""
    names = {p.name for p in out.iterdir()}
    if not names:
        return None
    if MANIFEST not in names:
        return f"it has no {MANIFEST}"
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"its {MANIFEST} is not one tf2torch wrote"
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        return f"its {MANIFEST} is not one tf2torch wrote"
    files = manifest.get("files")
    if isinstance(files, list):
        ours = {str(f) for f in files} | {MANIFEST}
    elif manifest.get("kind", "convert") == "convert":
        ours = set(_LEGACY_CONVERT_FILES)
    else:
        return f"its {MANIFEST} does not list the files tf2torch wrote"
    foreign = sorted(names - ours)
    if foreign:
        return f"it holds {foreign[0]!r}, which tf2torch did not write"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Remove ``.NAME.partial-<pid>-*`` / ``.NAME.old-<pid>`` left by runs that died (only dead pids)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:partial|old)-(\d+)(?:-.*)?")
    for entry in parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def _exclusive(parent: Path, name: str) -> Iterator[None]:
    """Hold ``.NAME.lock`` in ``parent`` (flock); a second run into the same OUT fails at once."""
    if fcntl is None:
        yield
        return
    lock = parent / f".{name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot write in {parent}: {(exc.strerror or str(exc)).lower()}; "
                             "choose a writable location for OUT") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise InputError(f"another tf2torch run is writing {parent / name} right now; "
                                 "wait for it or choose another OUT") from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # the holder before us may have removed it
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            lock.unlink()
        finally:
            os.close(fd)


def _make_parents(out: Path) -> list[Path]:
    """Create OUT's missing parents; return them (deepest first) so a failed run can remove them."""
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot create {out}: a file stands where a directory is needed on the way") from None
    except OSError as exc:
        raise InputError(f"cannot create {out}: {(exc.strerror or str(exc)).lower()}; "
                         "choose a writable location") from None
    return created


def _record_files(stage: Path) -> None:
    """Add the names the command wrote to its manifest, so a later ``--force`` knows what it may replace."""
    path = stage / MANIFEST
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    manifest["files"] = sorted(p.name for p in stage.iterdir() if p.name != MANIFEST)
    write_json(path, manifest)


def _check_replaceable(out: Path, force: bool) -> None:
    """Raise unless ``out`` is absent, or ``force`` is given and ``out`` is a tf2torch output."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another output path")
    if not force:
        raise InputError(f"{out} already exists; pass --force to replace it")
    why = _written_by_us(out)
    if why:
        raise InputError(f"{out} is not a tf2torch output ({why}); --force only replaces a directory "
                         "tf2torch wrote, so move it away or choose another OUT")


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for a step that must not be cut in half (swapping OUT, starting a worker)."""
    signals = {signal.SIGINT, signal.SIGTERM}
    blocked = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals) if blocked else None
    try:
        yield
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _replace(out: Path, staging: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and put back if that fails."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        why = _written_by_us(old)  # a file added between the last check and the rename is the user's
        if why is not None:
            old.rename(out)
            raise InputError(f"{out} changed while tf2torch ran ({why}); it was left as it is")
    try:
        staging.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_output(out: Path, force: bool, *, source: Path | None = None) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``out`` only if the block succeeds.

    ``source`` is the input the command reads: replacing ``out`` must never touch it. ``--force``
    replaces only an earlier tf2torch output (see module docstring). On failure nothing is left:
    not the staging directory, not the lock, not parents created for it.
    """
    out = Path(os.path.realpath(out))  # a symlinked OUT: write where it points, keep the link
    _check_target(out, source)
    _check_replaceable(out, force)
    created = _make_parents(out)
    try:
        with _exclusive(out.parent, out.name):
            _remove_stale(out.parent, out.name)
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
            try:
                umask = os.umask(0)
                os.umask(umask)
                staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make OUT private
                yield staging
                with deferred_signals():
                    _check_replaceable(out, force)  # again: OUT may have changed while the command ran
                    _record_files(staging)
                    _replace(out, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except BaseException:
        for parent in created:
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
def read_manifest(out: Path) -> dict[str, Any]:
    """Load ``OUT/manifest.json``, with a clear error when OUT is not a tf2torch output."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise InputError(f"{out}: no {MANIFEST}; pass a directory written by 'tf2torch convert'")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc}); re-run 'tf2torch convert'") from exc
    if manifest.get("format") != 1:
        raise InputError(f"{path}: unknown manifest format {manifest.get('format')!r}; re-run 'tf2torch convert'")
    return manifest
