"""Refuse a ``model.pt2`` that would run code when loaded, before ``torch.export.load`` ever sees it.

``torch.export.load`` is not safe on untrusted files: it unpickles pickled weights and constants with
``weights_only=False``, falls back to a full unpickle for sample inputs, loads AOTInductor shared
libraries, passes the graph's symbolic expressions to ``sympy.sympify`` (``eval``), ``exec``s the
program's guard code and resolves node targets by walking attributes from ``torch`` (``torch.os.system``).
This module reads the zip with the standard library only and accepts exactly what ``torch.export.save``
writes for a tf2torch program: raw tensor bytes, JSON, and pickles whose every global is a tensor rebuild.
:func:`load_pt2` hands torch a rewritten copy of exactly the members that were checked.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import struct
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrate.core.errors import InputError, first_line

#: Globals a tensor pickle written by ``torch.save`` may name; anything else could be any callable.
SAFE_GLOBALS = frozenset({
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
    *(("torch", f"{kind}Storage") for kind in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
        "ComplexFloat", "ComplexDouble", "Untyped")),
})
#: Opcodes that name a callable other than through GLOBAL/STACK_GLOBAL: never in a tensor pickle.
_FORBIDDEN_OPS = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4"})
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})

#: Node targets: registered operators (``torch.ops.<ns>.<op>.<overload>``), higher-order operators,
#: and the SymInt arithmetic torch.export records (``_operator.mul``, ``math.ceil``, ``torch.sym_max``).
_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.[a-z_][a-z0-9_]*\.[a-zA-Z0-9_]+"
                     r"|torch\.ops\.higher_order\.[a-z][a-z0-9_]*"
                     r"|_operator\.(add|sub|mul|floordiv|truediv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|"
                     r"and_|or_|not_|getitem)"
                     r"|math\.(ceil|floor|trunc|sqrt)"
                     r"|torch\.(sym_max|sym_min|sym_float|sym_int|sym_not|sym_ite|sym_sqrt|_sym_sqrt)")
#: Names a symbolic expression may use: sympy/torch.utils._sympy functions, keywords, symbols (s0, u3).
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "positive", "integer", "nonnegative", "real", "True", "False",
    "oo", "Max", "Min", "Mod", "Abs", "floor", "ceiling", "sqrt", "Pow", "Mul", "Add", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "FloorDiv", "CeilDiv", "CleanDiv", "ModularIndexing", "CeilToInt",
    "FloorToInt", "TruncToInt", "RoundToInt", "PythonMod", "IntTrueDiv", "FloatTrueDiv", "ToFloat",
    "PowByNatural", "FloatPow", "Identity", "TruncToFloat", "RoundDecimal", "IsNonOverlappingAndDenseIndicator",
})
#: Names guard code may use: the inputs dict ``L`` and tensor size queries.
_GUARD_NAMES = frozenset({"L", "size", "stride", "storage_offset", "dim", "and", "or", "not", "True", "False"})
_SYMBOL = re.compile(r"[a-z]{1,3}[0-9]+")
_SIMPLE_STRING = re.compile(r"'[A-Za-z0-9_]*'|\"[A-Za-z0-9_]*\"")
_EXPR_OPS = frozenset(["(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "**", "<", ">", "<=", ">=", "==", "!=",
                       "&", "|", "~"])
_GUARD_OPS = frozenset(["(", ")", "[", "]", ".", ",", "+", "-", "*", "//", "%", "<", ">", "<=", ">=", "==", "!="])
_RAW_PAYLOAD = re.compile(r"(weight|tensor)_[0-9]+")


def check_pt2(path: str | Path) -> None:
    """Raise InputError (one line) unless ``path`` is a torch.export archive that loads without running code."""
    checked_copy(path)


def checked_copy(path: str | Path) -> io.BytesIO:
    """The checked archive, rewritten member by member into memory: what torch reads is what was checked.

    Rewriting closes the gap between two zip readers (Python's here, torch's C++ one): a crafted zip that
    they would read differently cannot smuggle unchecked bytes past the check.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            checked = _check_archive(path, archive)
            return _rewrite(archive, checked)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path}: not a torch.export archive (a .pt2 file is a zip written by torch.export.save: "
                         f"{exc}); it may be truncated, re-run 'tf2torch convert'") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _refuse(path: Path, what: str) -> InputError:
    return InputError(f"{path}: refused to load, {what}; tf2torch never writes that, so the file was not "
                      "produced by 'tf2torch convert' (re-run it)")


def _rewrite(archive: zipfile.ZipFile, replace: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for name in archive.namelist():
            out.writestr(name, replace[name] if name in replace else archive.read(name))
    buffer.seek(0)
    return buffer


def _check_archive(path: Path, archive: zipfile.ZipFile) -> dict[str, bytes]:
    """Raise unless the archive is safe; return the rewritten nested tensor files by member name."""
    names = archive.namelist()
    if not names or len(set(names)) != len(names):
        raise _refuse(path, "the archive is empty or names a member twice")
    root = names[0].split("/", 1)[0]
    if any(not n.startswith(root + "/") or ".." in n.split("/") for n in names):
        raise _refuse(path, "its members do not share one root folder")
    records = {n[len(root) + 1:]: n for n in names}
    models = [r for r in records if r.startswith("models/")]
    if not models:
        raise _refuse(path, "it holds no models/*.json")
    allowed = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
    nested: dict[str, bytes] = {}
    for model in models:
        name = model[len("models/"):-len(".json")] if model.endswith(".json") else ""
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise _refuse(path, f"it holds {model!r}")
        weights = f"data/weights/{name}_weights_config.json"
        constants = f"data/constants/{name}_constants_config.json"
        inputs = f"data/sample_inputs/{name}.pt"
        allowed |= {model, weights, constants, inputs}
        program = _read_json(path, archive, records, model)
        _check_program(path, program)
        for config_name, folder in ((weights, "data/weights/"), (constants, "data/constants/")):
            if config_name not in records:
                raise _refuse(path, f"it has no {config_name}")
            for fqn, meta in _read_json(path, archive, records, config_name).get("config", {}).items():
                meta = meta if isinstance(meta, dict) else {}
                payload = str(meta.get("path_name", ""))
                if meta.get("use_pickle") is not False:
                    raise _refuse(path, f"{config_name} stores {fqn!r} as a pickle")
                if not _RAW_PAYLOAD.fullmatch(payload):
                    raise _refuse(path, f"{config_name} stores {fqn!r} in {payload[:80]!r}")
                allowed.add(folder + payload)
        if inputs in records:
            nested[records[inputs]] = _check_torch_pickle(path, inputs, archive.read(records[inputs]))
    extra = sorted(r for r in records if r not in allowed and not r.startswith("extra/"))
    if extra:
        raise _refuse(path, f"it holds {extra[0]!r}")
    return nested


def _read_json(path: Path, archive: zipfile.ZipFile, records: dict[str, str], record: str) -> dict[str, Any]:
    try:
        data = json.loads(archive.read(records[record]))
    except (KeyError, ValueError, RecursionError) as exc:
        raise _refuse(path, f"{record} is missing or not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise _refuse(path, f"{record} is not a JSON object")
    return data


def _check_program(path: Path, program: dict[str, Any]) -> None:
    """Targets, symbolic expressions and guards: the strings torch resolves, ``sympify``s or ``exec``s."""
    for guard in program.get("guards_code") or []:
        if not _tokens_allowed(str(guard), _GUARD_NAMES, _GUARD_OPS, symbols=False):
            raise _refuse(path, f"its guard code {str(guard)[:80]!r} is not a plain shape check")
    for key in program.get("range_constraints") or {}:
        if not _SYMBOL.fullmatch(str(key)):
            raise _refuse(path, f"its range constraints name {str(key)[:80]!r}")
    for key, value in _walk(program.get("graph_module", {})):
        if key in ("target", "as_operator") and isinstance(value, str) and not _TARGET.fullmatch(value):
            raise _refuse(path, f"its graph calls {value[:80]!r}")
        if key == "expr_str" and not _tokens_allowed(str(value), _EXPR_NAMES, _EXPR_OPS, symbols=True):
            raise _refuse(path, f"its symbolic expression {str(value)[:80]!r} is not arithmetic on shapes")


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _tokens_allowed(text: str, names: frozenset[str], ops: frozenset[str], *, symbols: bool) -> bool:
    """True when ``text`` is made only of the allowed names, simple quoted words, numbers and operators."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type == tokenize.NAME:
            if tok.string not in names and not (symbols and _SYMBOL.fullmatch(tok.string)):
                return False
        elif tok.type == tokenize.STRING:
            if not _SIMPLE_STRING.fullmatch(tok.string):
                return False
        elif tok.type == tokenize.OP:
            if tok.string not in ops:
                return False
        elif tok.type not in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            return False
    return True


def _check_torch_pickle(path: Path, record: str, data: bytes) -> bytes:
    """Check a ``torch.save`` zip (``data.pkl`` names only :data:`SAFE_GLOBALS`); return it rewritten."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            names = inner.namelist()
            pickles = [n for n in names if n.endswith(".pkl")]
            if len(set(names)) != len(names) or [n.split("/")[-1] for n in pickles] != ["data.pkl"]:
                raise _refuse(path, f"{record} is not a tensor file")
            unsafe = _unsafe_global(inner.read(pickles[0]))
            if unsafe:
                raise _refuse(path, f"{record} would unpickle {unsafe}")
            return _rewrite(inner, {}).getvalue()
    except zipfile.BadZipFile:
        raise _refuse(path, f"{record} is a plain pickle, not a tensor file") from None


def _unsafe_global(stream: bytes) -> str | None:
    """The first callable the pickle would load that is not a tensor rebuild, or None."""
    memo: dict[int, str | None] = {}
    recent: list[str | None] = []  # values of the last stack-pushing opcodes (None: not a known string)
    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name in _FORBIDDEN_OPS:
                return f"an object through {op.name}"
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                if (module, name) not in SAFE_GLOBALS:
                    return f"{module}.{name}"
                recent.append(None)
            elif op.name == "STACK_GLOBAL":
                if len(recent) < 2 or None in recent[-2:] or (recent[-2], recent[-1]) not in SAFE_GLOBALS:
                    return f"{recent[-2] if len(recent) > 1 else '?'}.{recent[-1] if recent else '?'}"
                recent[-2:] = [None]
            elif op.name in _STRING_OPS:
                recent.append(arg if isinstance(arg, str) else None)
            elif op.name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif op.name in _MEMO_PUT:
                memo[int(arg)] = recent[-1] if recent else None
            elif op.name in _MEMO_GET:
                recent.append(memo.get(int(arg)))
            elif op.name not in ("PROTO", "FRAME"):
                recent.append(None)
    except (ValueError, struct.error) as exc:  # a damaged stream
        return f"a malformed pickle ({type(exc).__name__})"
    return None


def load_pt2(path: str | Path) -> Any:
    """``torch.export.load`` of a checked archive; any failure is one InputError line (torch's log is hushed)."""
    import logging

    import torch

    path = Path(path)
    archive = checked_copy(path)
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))  # torch logs a traceback before it re-raises on a damaged archive
    try:
        return torch.export.load(archive)
    except Exception as exc:
        raise InputError(f"{path}: cannot load the exported program ({type(exc).__name__}: {first_line(exc, 200)}); "
                         "re-run 'tf2torch convert'") from exc
    finally:
        logging.disable(previous)
