"""Helpers for the tests/test_safety_*.py files: run the CLI with a private TMPDIR, fingerprint trees."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from tests import cli_helpers
from tests.cli_helpers import ROOT, env_with_root

#: Not leftovers of a run: torch's persistent compile cache and ONNX Runtime's session-id file.
LIBRARY_FILES = ("torchinductor_", ".ses")
#: Names ``tempfile`` gives without a prefix.
_TEMPFILE = re.compile(r"tmp[a-z0-9_]{8}")


def env_with_tmpdir(tmpdir: Path) -> dict[str, str]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    return env_with_root(TMPDIR=str(tmpdir))


def tf2torch(*args: str | Path, tmpdir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m migrate.cli ARGS`` with TMPDIR set to ``tmpdir``."""
    return cli_helpers.tf2torch(*args, cwd=cwd, env=env_with_tmpdir(tmpdir))


def spawn(*args: str | Path, tmpdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "migrate.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env_with_tmpdir(tmpdir))


def one_line(proc: subprocess.CompletedProcess | tuple[int, str], code: int, *needles: str) -> str:
    """Assert exit ``code`` and exactly one stderr line containing every needle; return the line."""
    returncode, stderr = (proc.returncode, proc.stderr) if hasattr(proc, "returncode") else proc
    lines = stderr.strip().splitlines()
    assert returncode == code, stderr
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def fingerprint(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (or link target / 'dir') of everything under ``root``."""
    prints = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                prints[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                prints[rel] = "dir"
            else:
                prints[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return prints


def leftovers(*dirs: Path) -> list[str]:
    """Hidden partials, locks, ``tf2torch-*`` and autograph files left in ``dirs`` (library caches excepted)."""
    found = []
    for folder in dirs:
        for entry in folder.iterdir() if folder.is_dir() else []:
            if entry.name.startswith(LIBRARY_FILES):
                continue
            ours = entry.name.startswith((".", "tf2torch", "__autograph_generated_file"))
            if ours or _TEMPFILE.fullmatch(entry.name):
                found.append(str(entry))
    return found


def rewrite_pt2(src: Path, dst: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
                prefix: bytes = b"", compress: set[str] | None = None) -> None:
    """Copy the zip ``src`` to ``dst``: members (paths below the archive root) replaced or added, some deflated,
    and ``prefix`` bytes written before the zip (its offsets shifted the way ``cat prefix zip`` would)."""
    import io
    import zipfile

    replace, add, compress = replace or {}, add or {}, compress or set()
    buffer = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            method = zipfile.ZIP_DEFLATED if rel in compress else zipfile.ZIP_STORED
            zout.writestr(info.filename, replace.get(rel, zin.read(info.filename)), compress_type=method)
        for rel, data in add.items():
            method = zipfile.ZIP_DEFLATED if rel in compress else zipfile.ZIP_STORED
            zout.writestr(f"{root}/{rel}", data, compress_type=method)
    data = buffer.getvalue()
    if prefix:  # shift every offset in the central directory and the end record, as zip -A does
        data = _shift_zip(data, len(prefix))
    dst.write_bytes(prefix + data)


def _shift_zip(data: bytes, shift: int) -> bytes:
    import struct

    end = data.rindex(b"PK\x05\x06")
    count, _, start = struct.unpack("<HII", data[end + 10:end + 20])
    out = bytearray(data)
    pos = start
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28:pos + 34])
        (offset,) = struct.unpack("<I", data[pos + 42:pos + 46])
        out[pos + 42:pos + 46] = struct.pack("<I", offset + shift)
        pos += 46 + name_len + extra_len + comment_len
    out[end + 16:end + 20] = struct.pack("<I", start + shift)
    return bytes(out)


def program_of(pt2: Path) -> dict:
    """The program JSON (``models/model.json``) of a ``model.pt2``."""
    import json
    import zipfile

    with zipfile.ZipFile(pt2) as archive:
        return json.loads(archive.read(next(n for n in archive.namelist() if n.endswith("models/model.json"))))


def nodes_with(tree: object, key: str):
    """Every dict in ``tree`` (JSON) that has ``key``."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
