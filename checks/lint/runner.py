"""A whole lint run: discover, read, use the cache, lint in parallel, filter, fix.

Reading, hashing and cache look-ups happen in this process; only files that miss the
cache and pass the text prefilter's decode go to worker processes, and only when there
are enough of them to pay for starting the pool.
"""
from __future__ import annotations

import ast
import os
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .cache import Cache
from .config import Config, find_pyproject, load_config
from .discovery import discover
from .engine import BOM, decode, lint_source
from .finding import Finding
from .fixes import apply_fixes, unified_diff, write_atomic
from .noqa import is_suppressed, suppressions
from .registry import resolve

PARALLEL_MIN_FILES = 16  # below this a pool costs more than it saves
FIX_ROUNDS = 10


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)  # what is left after fixing
    errors: list[str] = field(default_factory=list)  # one line each: unreadable files, crashes
    fixed: int = 0
    diffs: list[str] = field(default_factory=list)
    files: int = 0


@dataclass(frozen=True)
class _Task:
    filename: str
    text: str
    codes: tuple[str, ...]


def _lint_task(task: _Task) -> tuple[list[Finding] | None, str | None]:
    """Worker entry point: findings, or a one-line error (with traceback) if a rule crashed."""
    try:
        return lint_source(task.text, task.filename, list(task.codes)), None
    except Exception as exc:  # a bug in a rule must not stop the run
        detail = traceback.format_exc()
        return None, f"{task.filename}: internal error: {type(exc).__name__}: {exc}\n{detail}"


def configure(paths: Sequence[str], config_path: str | None = None) -> Config:
    """The run's configuration: an explicit pyproject, else the nearest one above the
    first path, else the nearest one above the working directory, else defaults."""
    if config_path is not None:
        return load_config(Path(config_path))
    start = Path(paths[0]) if paths else Path(".")
    found = find_pyproject(start) if start.exists() else None
    return load_config(found or find_pyproject(Path(".")))


def check(
    paths: Sequence[str] = (".",),
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    config: Config | None = None,
    fix: bool = False,
    diff: bool = False,
    cache: bool = True,
    jobs: int | None = None,
) -> Report:
    """Lint ``paths``. ``select``/``ignore`` replace/extend the config's. Raises ConfigError,
    PathError and UnknownCode for problems that stop the run before it starts."""
    paths = list(paths) or ["."]
    config = config or configure(paths)
    codes = resolve(list(select) if select else config.select, [*config.ignore, *(ignore or [])])
    report = Report()
    files = discover(paths, config, report.errors)
    report.files = len(files)
    store = Cache(codes) if cache else None

    raw: dict[Path, tuple[bytes, str | None]] = {}
    results: dict[Path, list[Finding]] = {}
    pending: list[tuple[Path, str | None, _Task]] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        key = store.key(data) if store else None
        text, problem = decode(data, str(path))
        raw[path] = (data, text)
        cached = store.get(key, str(path)) if store and key else None
        if cached is not None:
            results[path] = cached
        elif problem is not None:
            results[path] = [problem] if problem.code in codes else []
            if store and key:
                store.put(key, results[path])
        else:
            pending.append((path, key, _Task(str(path), text, tuple(codes))))  # type: ignore[arg-type]

    for (path, key, _), (found, error) in zip(pending, _run_tasks([t for _, _, t in pending], jobs)):
        if error is not None:
            report.errors.append(error)
            continue
        results[path] = found  # type: ignore[assignment]
        if store and key:
            store.put(key, found)  # type: ignore[arg-type]

    for path in files:
        if path not in results:
            continue
        data, text = raw[path]
        kept = _filter(results[path], text, config.ignored_codes(path))
        if (fix or diff) and text is not None and any(f.fix for f in kept):
            kept = _fix_file(path, data, text, kept, codes, config, fix and not diff, report)
        report.findings.extend(kept)
    report.findings.sort(key=lambda f: f.sort_key)
    return report


def _run_tasks(tasks: list[_Task], jobs: int | None) -> list[tuple[list[Finding] | None, str | None]]:
    workers = min(jobs or os.cpu_count() or 1, max(1, len(tasks) // 4))
    if workers <= 1 or len(tasks) < PARALLEL_MIN_FILES:
        return [_lint_task(t) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i].text))  # big files first
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(_lint_task, [tasks[i] for i in order], chunksize=1))
    out: list[tuple[list[Finding] | None, str | None]] = [(None, None)] * len(tasks)
    for i, result in zip(order, done):
        out[i] = result
    return out


def _filter(findings: list[Finding], text: str | None, ignored: set[str]) -> list[Finding]:
    table = suppressions(text) if text else {}
    return [f for f in findings if f.code not in ignored and not is_suppressed(f, table)]


def _fix_file(path: Path, data: bytes, text: str, findings: list[Finding], codes: list[str], config: Config,
              write: bool, report: Report) -> list[Finding]:
    """Apply safe fixes until none are left (later rounds pick up overlapping ones)."""
    bom = text.startswith(BOM)
    body = text[1:] if bom else text
    original = body
    ignored = config.ignored_codes(path)
    applied_total = 0
    for _ in range(FIX_ROUNDS):
        body, applied = apply_fixes(body, [f.fix for f in findings if f.fix])
        if not applied:
            break
        applied_total += applied
        findings = _filter(lint_source(body, str(path), codes), body, ignored)
        if not any(f.fix for f in findings):
            break
    if body == original:
        return findings
    try:  # never write a file that no longer compiles
        compile(body, str(path), "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        report.errors.append(f"{path}: internal error: fixes would make invalid code ({exc}); file left unchanged")
        return findings
    report.fixed += applied_total
    if write:
        write_atomic(path, ((BOM if bom else "") + body).encode("utf-8"))
    else:
        report.diffs.append(unified_diff(original, body, str(path)))
    return findings


def lint_paths(paths: Sequence[str] = (".",), select: Iterable[str] | None = None,
               ignore: Iterable[str] | None = None, **options: object) -> list[Finding]:
    """Findings for ``paths`` (what ``tf2torch lint`` prints). Options as for ``check``.

    Files that cannot be read or crash a rule raise ``LintError`` after the run.
    """
    report = check(paths, select=select, ignore=ignore, **options)  # type: ignore[arg-type]
    if report.errors:
        raise LintError(report.errors[0].splitlines()[0])
    return report.findings


class LintError(Exception):
    pass
