"""A whole lint run: discover, read, use the cache, lint in parallel, filter, fix.

Reading, hashing and cache look-ups happen in this process; only files that miss the
cache and pass the text prefilter's decode go to worker processes, and only when there
are enough of them to pay for starting the pool. A worker that dies (the engine's
guards should make that impossible) costs only the file it was on: the files it had
not finished are linted again one at a time in a fresh process, and the one that
kills it becomes a TTL000 finding.
"""
from __future__ import annotations

import ast
import gc
import hashlib
import multiprocessing
import os
import re
import signal
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from .cache import Cache
from .config import Config, find_pyproject, load_config
from .discovery import discover, read_source
from .engine import BOM, decode, deep_call, lint_source, project_for
from .finding import Finding
from .fixes import NotWritten, apply_fixes, unified_diff, write_fix
from .noqa import is_suppressed, suppressions
from .project import Project, Tree
from .registry import PARSE_ERROR, iter_checks, resolve

PARALLEL_MIN_FILES = 16  # below this a pool costs more than it saves
FULL_GC_EVERY = 64  # parsed files a process lets go between full garbage collections (see _use_tree)
FIX_ROUNDS = 10


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)  # what is left after fixing
    errors: list[str] = field(default_factory=list)  # one line each: unreadable files, crashes
    warnings: list[str] = field(default_factory=list)  # one line each: skipped entries, fixes not written
    fixed: int = 0
    diffs: list[str] = field(default_factory=list)
    files: int = 0


@dataclass(frozen=True)
class _Task:
    filename: str
    text: str
    codes: tuple[str, ...]
    matching: tuple[str, ...] | None = None  # codes whose trigger words the file and its dependencies contain


@dataclass(frozen=True)
class _Result:
    findings: list[Finding] | None
    error: str | None = None  # a rule crashed: one line, then the traceback
    cacheable: bool = True


_project: Project | None = None  # this process's view of the tree (set by _use_tree)
_gc_thresholds: tuple[int, int, int] | None = None  # Python's, while _use_tree has replaced them
_collected_at = 0  # the project's count of files let go at the last full collection


def _use_tree(tree: Tree | None) -> None:
    """Worker initialiser (and the serial path's): the tree this process lints.

    While a tree is in use, Python's automatic full garbage collections are off: each one
    walks every live object, and the parsed files the project keeps made them a quarter of a
    cold run's CPU time (3.3 of 15 s on timm's 315 files). ``_lint_task`` runs one each
    time the project has let FULL_GC_EVERY parsed files go (they hold reference cycles), so
    memory stays bounded as before. ``_use_tree(None)`` lets the parsed files go
    (``Project.close``) and puts Python's thresholds back."""
    global _project, _gc_thresholds, _collected_at
    if _project is not None:
        _project.close()
    _project = project_for(tree) if tree is not None else None
    _collected_at = 0
    if tree is not None and _gc_thresholds is None:
        _gc_thresholds = gc.get_threshold()
        gc.set_threshold(_gc_thresholds[0], _gc_thresholds[1], 1 << 30)  # young generations as before
    elif tree is None and _gc_thresholds is not None:
        gc.set_threshold(*_gc_thresholds)
        _gc_thresholds = None


def _lint_task(task: _Task) -> _Result:
    """Worker entry point: findings, or a one-line error (with traceback) if a rule crashed."""
    global _collected_at
    if _gc_thresholds is not None and _project is not None and _project.evicted - _collected_at >= FULL_GC_EVERY:
        gc.collect()
        _collected_at = _project.evicted
    try:
        return _Result(lint_source(task.text, task.filename, list(task.codes), _project, task.matching))
    except Exception as exc:  # a bug in a rule must not stop the run
        detail = traceback.format_exc()
        return _Result(None, f"{task.filename}: internal error: {type(exc).__name__}: {exc}\n{detail}")


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
    files = discover(paths, config, report.errors, report.warnings)
    report.files = len(files)
    store = Cache(codes) if cache else None

    raw: dict[Path, tuple[bytes, str | None]] = {}
    for path in files:
        try:
            raw[path] = (data := read_source(path), decode(data, str(path))[0])
        except OSError as exc:
            report.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
    tree = Tree.build({str(p): text for p, (_, text) in raw.items()}, paths)
    digests = {str(p): hashlib.sha256(data).hexdigest() for p, (data, _) in raw.items()} if store else {}
    results: dict[Path, list[Finding]] = {}
    pending: list[tuple[Path, str | None, _Task]] = []
    triggers = _Triggers({str(p): text for p, (_, text) in raw.items()})
    for path, (data, text) in raw.items():
        deps = tree.dependencies(str(path))
        key = store.key(data, [digests[d] for d in sorted(deps)]) if store else None
        cached = store.get(key, str(path)) if store and key else None
        if cached is not None:
            results[path] = cached
        elif text is None:
            problem = decode(data, str(path))[1]
            results[path] = [problem] if problem is not None and problem.code in codes else []
            if store and key:
                store.put(key, results[path], str(path))
        else:
            matching = triggers.matching(codes, str(path), deps)
            pending.append((path, key, _Task(str(path), text, tuple(codes), matching)))

    for (path, key, _), result in zip(pending, _run_tasks([t for _, _, t in pending], jobs, tree)):
        if result.error is not None:
            report.errors.append(result.error)
            continue
        results[path] = result.findings  # type: ignore[assignment]
        if store and key and result.cacheable:
            store.put(key, result.findings, str(path))  # type: ignore[arg-type]

    by_file: dict[str, dict[tuple, Finding]] = {}
    for path in files:  # a file's findings can be in another file (a model's softmax that a script trains)
        for finding in results.get(path, ()):
            by_file.setdefault(finding.filename, {}).setdefault(
                (finding.row, finding.column, finding.code), finding)
    fixing: Project | None = None  # the project the fixed texts are linted again in
    for path in files:
        if path not in raw or path not in results:
            continue
        data, text = raw[path]
        kept = _filter(list(by_file.get(str(path), {}).values()), text, config.ignored_codes(path))
        if (fix or diff) and text is not None and any(f.fix for f in kept):
            fixing = fixing or project_for(tree)
            kept = _fix_file(path, data, text, kept, codes, config, fix and not diff, report, fixing)
        report.findings.extend(kept)
    if fixing is not None:
        fixing.close()
    report.findings.sort(key=lambda f: f.sort_key)
    return report


class _Triggers:
    """Which files contain each rule trigger, each pattern searched at most once per file
    (rules share patterns, and a file's own text is asked again for every file importing it)."""

    def __init__(self, texts: dict[str, str | None]) -> None:
        self.texts = texts
        self.hits: dict[tuple[str, str], bool] = {}
        self.files: dict[str, set[str]] = {}

    def matching(self, codes: list[str], path: str, deps: frozenset[str]) -> tuple[str, ...]:
        """Codes whose trigger words each occur in the file or in a file it depends on."""
        out = []
        for rule_ in iter_checks(codes):
            across = rule_.across_pattern()
            if all(self._has(path, p) for p in rule_.patterns()) or across and deps and self._has(path, across) and all(
                    self._has(path, p) or not deps.isdisjoint(self._files(p)) for p in rule_.patterns()):
                out.append(rule_.code)
        return tuple(out)

    def _has(self, path: str, pattern: re.Pattern[str]) -> bool:
        key = (pattern.pattern, path)
        found = self.hits.get(key)
        if found is None:
            found = self.hits[key] = pattern.search(self.texts[path] or "") is not None
        return found

    def _files(self, pattern: re.Pattern[str]) -> set[str]:
        if pattern.pattern not in self.files:
            self.files[pattern.pattern] = {f for f in self.texts if self._has(f, pattern)}
        return self.files[pattern.pattern]


def _run_tasks(tasks: list[_Task], jobs: int | None, tree: Tree | None = None) -> list[_Result]:
    workers = min(jobs or os.cpu_count() or 1, max(1, len(tasks) // 4))
    if workers <= 1 or len(tasks) < PARALLEL_MIN_FILES:
        _use_tree(tree)
        try:
            return [_lint_task(t) for t in tasks]
        finally:
            _use_tree(None)
    order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i].text))  # big files first
    out: list[_Result | None] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=workers, initializer=_use_tree, initargs=(tree,)) as pool:
        futures = [(i, pool.submit(_lint_task, tasks[i])) for i in order]
        for i, future in futures:
            try:
                out[i] = future.result()
            except BrokenProcessPool:  # a worker died: every unfinished file is redone below
                pass
    unfinished = [i for i in order if out[i] is None]
    for i, result in zip(unfinished, _run_isolated([tasks[i] for i in unfinished], tree)):
        out[i] = result
    return out  # type: ignore[return-value]


def _run_isolated(tasks: list[_Task], tree: Tree | None = None) -> list[_Result]:
    """Lint one task at a time in a child process; when the child dies, that task gets a
    TTL000 finding (not cached) and a new child takes the rest."""
    results: list[_Result] = []
    context = multiprocessing.get_context()
    while len(results) < len(tasks):
        ours, theirs = context.Pipe()
        child = context.Process(target=_serve, args=(theirs, tree), daemon=True)
        child.start()
        theirs.close()
        try:
            while len(results) < len(tasks):
                ours.send(tasks[len(results)])
                results.append(ours.recv())
            ours.send(None)
        except (EOFError, OSError):
            child.join()
            results.append(_crashed(tasks[len(results)], child.exitcode))
        finally:
            ours.close()
            child.join()
    return results


def _serve(conn: multiprocessing.connection.Connection, tree: Tree | None) -> None:
    """Child process of ``_run_isolated``: lint tasks until told to stop."""
    _use_tree(tree)
    while (task := conn.recv()) is not None:
        conn.send(_lint_task(task))


def _crashed(task: _Task, exitcode: int | None) -> _Result:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    message = f"the process analysing it died ({how}); this file is skipped, the others are linted"
    if PARSE_ERROR not in task.codes:
        return _Result(None, f"{task.filename}: internal error: {message}", cacheable=False)
    return _Result([Finding(PARSE_ERROR, f"cannot be analysed: {message}", task.filename, 1, 1, 1, 2)],
                   cacheable=False)


def _filter(findings: list[Finding], text: str | None, ignored: set[str]) -> list[Finding]:
    table = suppressions(text) if text else {}
    return [f for f in findings if f.code not in ignored and not is_suppressed(f, table)]


def _fix_file(path: Path, data: bytes, text: str, findings: list[Finding], codes: list[str], config: Config,
              write: bool, report: Report, project: Project | None = None) -> list[Finding]:
    """Apply safe fixes until none are left (later rounds pick up overlapping ones).

    Returns the findings left in the file: after the fixes, or all of them when the
    fixed text is not written (see ``write_fix``; a warning says why)."""
    bom = text.startswith(BOM)
    body = text[1:] if bom else text
    original, before = body, findings
    ignored = config.ignored_codes(path)
    applied_total = 0
    for _ in range(FIX_ROUNDS):
        body, applied = apply_fixes(body, [f.fix for f in findings if f.fix])
        if not applied:
            break
        applied_total += applied
        findings = _filter([f for f in lint_source(body, str(path), codes, project) if f.filename == str(path)],
                           body, ignored)
        if not any(f.fix for f in findings):
            break
    if body == original:
        return findings
    try:  # never write a file that no longer compiles (checked where deep nesting cannot crash)
        deep_call(compile, body, str(path), "exec", ast.PyCF_ONLY_AST, True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        report.errors.append(f"{path}: internal error: fixes would make invalid code ({exc}); file left unchanged")
        return before
    if not write:
        report.fixed += applied_total
        report.diffs.append(unified_diff(original, body, str(path)))
        return findings
    try:
        if write_fix(path, data, ((BOM if bom else "") + body).encode("utf-8")):
            report.fixed += applied_total
    except NotWritten as exc:
        report.warnings.append(f"{path}: {exc}; {applied_total} fix{'es' if applied_total != 1 else ''} "
                               "not written")
        return before
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
