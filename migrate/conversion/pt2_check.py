"""Read a ``model.pt2`` without running anything in it, and build the fresh archive that torch loads.

``torch.export.load`` is not safe on an untrusted file: it unpickles (sample inputs, pickled weights),
``exec``s guard code, ``sympify``s shape expressions, resolves operators by attribute walks, imports
modules named by a treespec's context, and loads AOTInductor libraries. Filtering that is a losing game,
so this module builds instead: it reads the zip with the standard library, parses the program JSON into
the subset tf2torch writes (every field checked, unknown ones refused), and writes a NEW archive from
what it parsed: a program re-serialised field by field (of node metadata only the module path strings),
guard and shape expressions re-rendered from their checked syntax trees (``migrate.conversion.pt2_grammar``),
operators from one exact allow-list (``migrate.conversion.pt2_ops``), treespecs rebuilt from tuple/list/dict/leaf,
weights copied as raw bytes, and an empty sample-inputs member (no pickle at all). Only that copy
reaches torch. Members are read with size caps; nothing is decompressed (torch writes stored members).
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

from migrate.conversion import pt2_ops
from migrate.conversion.pt2_grammar import IDENTIFIER, MAX_INT, SYMBOL, GrammarError, guard, sym_expr
from migrate.core.errors import InputError, first_line

#: Largest archive read (the fresh copy lives in memory), program JSON and config JSON.
MAX_ARCHIVE = 8 * 2**30
MAX_PROGRAM = 256 * 2**20
MAX_CONFIG = 64 * 2**20
#: The one program tf2torch writes, its members below the archive's root folder.
MODEL = "model"
PROGRAM = f"models/{MODEL}.json"
WEIGHTS_CONFIG = f"data/weights/{MODEL}_weights_config.json"
CONSTANTS_CONFIG = f"data/constants/{MODEL}_constants_config.json"
SAMPLE_INPUTS = f"data/sample_inputs/{MODEL}.pt"
#: Small records torch's archive writer adds, with the values it writes.
RECORDS = {"archive_format": re.compile(rb"pt2"), "archive_version": re.compile(rb"0"),
           "byteorder": re.compile(rb"little"), ".data/version": re.compile(rb"[0-9]{1,3}\n?"),
           ".data/serialization_id": re.compile(rb"[0-9]{1,64}")}
_PAYLOAD = {"data/weights/": re.compile(r"weight_[0-9]{1,9}"), "data/constants/": re.compile(r"tensor_[0-9]{1,9}")}
#: Parameter/buffer names and module paths: TF names like ``StatefulPartitionedCall/dense_1/MatMul.weight``.
_FQN = re.compile(r"[A-Za-z0-9_./:\-]{0,500}")
_VERSION = re.compile(r"[0-9A-Za-z.+_\-]{1,64}")
_SCALAR_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 28, 34, 35})
_ITEM_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2, 28: 2, 34: 4, 35: 8}
_STRIDED = 7
_DEVICES = frozenset({"cpu", "cuda"})
_TREESPEC_TYPES = {None: "leaf", "builtins.tuple": "seq", "builtins.list": "seq",
                   "torch.fx.immutable_collections.immutable_list": "seq", "builtins.dict": "dict",
                   "torch.fx.immutable_collections.immutable_dict": "dict"}
_TREESPEC_NODES = 10_000
_MAX_LIST = 1_000_000
_NON_FINITE = ("Infinity", "-Infinity", "NaN")
#: ``key,path,class;...`` as torch writes a node's module stack: kept as a string, never evaluated or imported.
_MODULE_STACK = re.compile(r"[^\x00-\x1f\x7f]*")


#: Globals the sample-inputs pickle (``torch.save``) may name. The member is checked, then dropped: the fresh
#: archive's sample inputs are empty, so torch unpickles nothing.
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


class Refusal(Exception):
    """A construct outside the accepted subset: ``where`` (member or field), ``what``, and whether tf2torch
    could have written it with another torch version (``ours``) or never writes it at all."""

    def __init__(self, where: str, what: str, ours: bool = False) -> None:
        super().__init__(f"{where}: {what}")
        self.where, self.what, self.ours = where, what, ours


def check_pt2(path: str | Path) -> None:
    """Raise InputError (one line) unless ``path`` parses into the program subset tf2torch writes."""
    checked_copy(path)


def checked_copy(path: str | Path) -> io.BytesIO:
    """The fresh archive built from what was parsed out of ``path``: the only bytes torch should read."""
    path = Path(path)
    try:
        return _build(path)
    except Refusal as refusal:
        if refusal.ours:
            tail = ("tf2torch could have written that only with another torch version (this check accepts what "
                    "it writes with the installed one): re-run 'tf2torch convert' here, and report it if that "
                    "output is refused too")
        else:
            tail = "tf2torch never writes that, so the file was not produced by 'tf2torch convert' (re-run it)"
        raise InputError(f"{path}: refused to load, {refusal.where}: {refusal.what}; {tail}") from None
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path}: not a torch.export archive (a .pt2 file is a zip written by torch.export.save: "
                         f"{exc}); it may be truncated, re-run 'tf2torch convert'") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None


# ---- the zip ----------------------------------------------------------------------------------------------------

def _build(path: Path) -> io.BytesIO:
    size = path.stat().st_size
    if size > MAX_ARCHIVE:
        raise Refusal("the archive", f"{size} bytes, more than the {MAX_ARCHIVE} this check reads", ours=True)
    with path.open("rb") as handle, zipfile.ZipFile(handle) as archive:
        handle.seek(0)
        if handle.read(4) != b"PK\x03\x04":
            raise Refusal("the archive", "it does not start with a zip member at offset 0 (data before the zip)")
        records = _members(archive, handle, size)
        return _fresh(archive, records)


def _members(archive: zipfile.ZipFile, handle: Any, size: int) -> dict[str, zipfile.ZipInfo]:
    """Member name below the root folder -> info; refuses collisions, escapes, compression and overlaps."""
    infos = archive.infolist()
    if not infos:
        raise Refusal("the archive", "it is empty")
    names = [i.filename for i in infos]
    if len({n.lower() for n in names}) != len(names):
        raise Refusal(f"members {_collision(names)}", "collide (compared case-insensitively, as torch's reader does)")
    root = infos[0].filename.split("/", 1)[0]
    if not IDENTIFIER.fullmatch(root):
        raise Refusal(f"member {infos[0].filename[:80]!r}", "root folder is not a plain name")
    records: dict[str, zipfile.ZipInfo] = {}
    end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        name = info.filename
        if not name.startswith(root + "/") or ".." in name.split("/") or "\\" in name:
            raise Refusal(f"member {name[:80]!r}", f"not below the root folder {root!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise Refusal(f"member {name[:80]!r}", "compressed or encrypted (torch.export.save stores members)")
        if info.header_offset < end:
            raise Refusal(f"member {name[:80]!r}", "overlaps the member before it")
        if end == 0 and info.header_offset != 0:
            raise Refusal("the archive", f"its first member starts at offset {info.header_offset}, not 0 "
                          "(data before the zip)")
        handle.seek(info.header_offset)
        header = handle.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise Refusal(f"member {name[:80]!r}", "its local header is missing")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        end = info.header_offset + 30 + name_len + extra_len + info.compress_size
        if end > size:
            raise Refusal(f"member {name[:80]!r}", "extends past the end of the file")
        records[name[len(root) + 1:]] = info
    return records


def _collision(names: list[str]) -> str:
    """The first two names that are equal ignoring case, quoted."""
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            return f"{seen[name.lower()][:80]!r} and {name[:80]!r}"
        seen[name.lower()] = name
    return ""


def _read(archive: zipfile.ZipFile, records: dict[str, zipfile.ZipInfo], record: str, cap: int) -> bytes:
    """A member's bytes, never more than ``cap`` (checked before reading, and while reading)."""
    info = records.get(record)
    if info is None:
        raise Refusal(f"member {record!r}", "missing", ours=True)
    if info.file_size > cap:
        raise Refusal(f"member {record!r}", f"{info.file_size} bytes, more than the {cap} tf2torch writes there")
    with archive.open(info) as stream:
        data = stream.read(cap + 1)
    if len(data) > cap:
        raise Refusal(f"member {record!r}", "longer than its header says")
    return data


def _json(archive: zipfile.ZipFile, records: dict[str, zipfile.ZipInfo], record: str, cap: int) -> dict[str, Any]:
    try:
        data = json.loads(_read(archive, records, record, cap))
    except (ValueError, RecursionError) as exc:
        raise Refusal(f"member {record!r}", f"not JSON ({type(exc).__name__})") from None
    return _dict(data, f"member {record!r}")


def _fresh(archive: zipfile.ZipFile, records: dict[str, zipfile.ZipInfo]) -> io.BytesIO:
    """Parse every member tf2torch writes, refuse any other, and write the new archive."""
    expected = set(RECORDS) | {PROGRAM, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS}
    small = {}
    for record, pattern in RECORDS.items():
        value = _read(archive, records, record, 64)
        if not pattern.fullmatch(value):
            raise Refusal(f"member {record!r}", f"holds {value[:20]!r}, not what torch.export.save writes")
        small[record] = value
    program = Program(_json(archive, records, PROGRAM, MAX_PROGRAM)).build()
    payloads: dict[str, bytes] = {}
    configs = {}
    for config, folder in ((WEIGHTS_CONFIG, "data/weights/"), (CONSTANTS_CONFIG, "data/constants/")):
        configs[config] = _payload_config(_json(archive, records, config, MAX_CONFIG), config, folder)
        for meta in configs[config]["config"].values():
            record = folder + meta["path_name"]
            if record not in payloads:
                expected.add(record)
                payloads[record] = _read(archive, records, record, MAX_ARCHIVE)
    extra = sorted(set(records) - expected)
    if extra:
        raise Refusal(f"member {extra[0][:80]!r}", "not a member tf2torch writes (only the program, its configs, "
                      "raw weights and constants, and the archive's version records)")
    _sample_inputs(_read(archive, records, SAMPLE_INPUTS, MAX_CONFIG))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for record, value in small.items():
            out.writestr(f"{MODEL}/{record}", value)
        out.writestr(f"{MODEL}/{PROGRAM}", json.dumps(program))
        for config, value in configs.items():
            out.writestr(f"{MODEL}/{config}", json.dumps(value))
        for record, value in payloads.items():
            out.writestr(f"{MODEL}/{record}", value)
        out.writestr(f"{MODEL}/{SAMPLE_INPUTS}", b"")  # no example inputs: torch then unpickles nothing
    buffer.seek(0)
    return buffer


def _sample_inputs(data: bytes) -> None:
    """Refuse a sample-inputs member that is not a plain ``torch.save`` zip of tensors (its names unique even
    case-insensitively, one ``data.pkl`` naming only tensor rebuilds). It is never passed on."""
    where = f"member {SAMPLE_INPUTS!r}"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            names = inner.namelist()
            lowered = [n.lower() for n in names]
            if len(set(lowered)) != len(lowered):
                raise Refusal(where, f"its inner members {_collision(names)} collide (case-insensitively, as "
                              "torch's reader compares them)")
            pickles = [n for n in names if n.lower().endswith(".pkl")]
            if [n.split("/")[-1] for n in pickles] != ["data.pkl"]:
                raise Refusal(where, f"holds pickles {[p[:40] for p in pickles][:3]}, not one data.pkl")
            info = inner.getinfo(pickles[0])
            if info.file_size > MAX_CONFIG or info.compress_type != zipfile.ZIP_STORED:
                raise Refusal(where, "its data.pkl is compressed or larger than tf2torch writes")
            unsafe = _unsafe_global(inner.read(info))
    except zipfile.BadZipFile:
        raise Refusal(where, "a plain pickle, not a tensor file") from None
    if unsafe:
        raise Refusal(where, f"would unpickle {unsafe}")


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



def _payload_config(data: dict[str, Any], where: str, folder: str) -> dict[str, Any]:
    where = f"member {where!r}"
    _keys(data, where, {"config"})
    config = {}
    for fqn, meta in _dict(data.get("config", {}), where).items():
        here = f"{where} entry {fqn[:80]!r}"
        _fqn(fqn, here)
        meta = _dict(meta, here)
        _keys(meta, here, {"path_name", "is_param", "use_pickle", "tensor_meta"}, required=True)
        if meta["use_pickle"] is not False:
            raise Refusal(here, "stored as a pickle")
        name = meta["path_name"]
        if not isinstance(name, str) or not _PAYLOAD[folder].fullmatch(name):
            raise Refusal(here, f"stored in {str(name)[:80]!r}, not a raw tensor file")
        config[fqn] = {"path_name": name, "is_param": _bool(meta["is_param"], here), "use_pickle": False,
                       "tensor_meta": _tensor_meta(meta["tensor_meta"], here, static=True)}
    return {"config": config}


# ---- the program ------------------------------------------------------------------------------------------------

class Program:
    """The program JSON parsed into the subset tf2torch writes; :meth:`build` returns the fresh JSON."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.depth = 0

    def build(self) -> dict[str, Any]:
        where = "the program"
        data = self.data
        _keys(data, where, {"graph_module", "opset_version", "range_constraints", "schema_version", "verifiers",
                            "torch_version", "guards_code"}, required=True)
        opset = _dict(data["opset_version"], "the program's opset_version")
        if set(opset) - {"aten"}:
            raise Refusal("the program's opset_version", f"names {sorted(opset)}")
        verifiers = _list(data["verifiers"], "the program's verifiers")
        if not set(verifiers) <= {"TRAINING"}:
            raise Refusal("the program's verifiers", f"{verifiers[:3]}, not TRAINING", ours=True)
        if not isinstance(data["torch_version"], str) or not _VERSION.fullmatch(data["torch_version"]):
            raise Refusal("the program's torch_version", "not a version string")
        schema = _dict(data["schema_version"], "the program's schema_version")
        _keys(schema, "the program's schema_version", {"major", "minor"}, required=True)
        ranges = {}
        for symbol, bounds in _dict(data["range_constraints"], "the program's range_constraints").items():
            here = f"range constraint {symbol[:40]!r}"
            if not SYMBOL.fullmatch(symbol):
                raise Refusal(here, "not a shape symbol")
            bounds = _dict(bounds, here)
            _keys(bounds, here, {"min_val", "max_val"}, required=True)
            ranges[symbol] = {k: None if bounds[k] is None else _int(bounds[k], here) for k in ("min_val", "max_val")}
        guards = []
        for text in _list(data["guards_code"], "the program's guards_code"):
            try:
                guards.append(guard(text))
            except GrammarError as exc:
                raise Refusal(f"guard {str(text)[:60]!r}", f"{exc} is outside the guard grammar "
                              "(docs/guarantees.md)", ours=True) from None
        return {"graph_module": self._graph_module(_dict(data["graph_module"], "the graph module")),
                "opset_version": {k: _int(v, "the program's opset_version") for k, v in opset.items()},
                "range_constraints": ranges,
                "schema_version": {k: _int(schema[k], "the program's schema_version") for k in ("major", "minor")},
                "verifiers": list(verifiers), "torch_version": data["torch_version"], "guards_code": guards}

    def _graph_module(self, gm: dict[str, Any]) -> dict[str, Any]:
        where = "the graph module"
        _keys(gm, where, {"graph", "signature", "module_call_graph", "metadata", "treespec_namedtuple_fields"})
        if gm.get("treespec_namedtuple_fields"):
            raise Refusal(where, "declares namedtuple types for treespecs")
        return {"graph": self._graph(_dict(gm.get("graph"), f"{where}'s graph"), "the graph"),
                "signature": self._signature(_dict(gm.get("signature"), f"{where}'s signature")),
                "module_call_graph": [self._call_entry(_dict(e, "a module call entry"))
                                      for e in _list(gm.get("module_call_graph", []), f"{where}'s module_call_graph")],
                "metadata": {}, "treespec_namedtuple_fields": {}}

    def _graph(self, graph: dict[str, Any], where: str) -> dict[str, Any]:
        _keys(graph, where, {"inputs", "outputs", "nodes", "tensor_values", "sym_int_values", "sym_bool_values",
                             "is_single_tensor_return", "custom_obj_values", "sym_float_values"})
        if graph.get("custom_obj_values"):
            raise Refusal(where, "holds custom objects")
        values = {
            "tensor_values": {_name(k, where): _tensor_meta(v, f"tensor {k}", static=False)
                              for k, v in _dict(graph.get("tensor_values", {}), where).items()},
            "sym_int_values": {_name(k, where): _sym(v, f"value {k}", "as_int", _int)
                               for k, v in _dict(graph.get("sym_int_values", {}), where).items()},
            "sym_bool_values": {_name(k, where): _sym(v, f"value {k}", "as_bool", _bool)
                                for k, v in _dict(graph.get("sym_bool_values", {}), where).items()},
            "sym_float_values": {_name(k, where): _sym(v, f"value {k}", "as_float", _float)
                                 for k, v in _dict(graph.get("sym_float_values", {}), where).items()},
        }
        return {"inputs": [_argument(a, f"{where}'s inputs") for a in _list(graph.get("inputs", []), where)],
                "outputs": [_argument(a, f"{where}'s outputs") for a in _list(graph.get("outputs", []), where)],
                "nodes": [self._node(_dict(n, f"a node of {where}")) for n in _list(graph.get("nodes", []), where)],
                **values, "is_single_tensor_return": _bool(graph.get("is_single_tensor_return", False), where),
                "custom_obj_values": {}}

    def _node(self, node: dict[str, Any]) -> dict[str, Any]:
        _keys(node, "a node", {"target", "inputs", "outputs", "metadata", "is_hop_single_tensor_return", "name"})
        target = node.get("target")
        where = f"node {str(node.get('name'))[:60]!r}"
        if not isinstance(target, str):
            raise Refusal(where, "has no target")
        if target not in pt2_ops.OPERATORS and target not in pt2_ops.SYMBOLIC:
            known = target.startswith(("torch.ops.aten.", "torch.ops.prims.", "_operator.", "math.", "torch.sym_"))
            raise Refusal(where, f"its graph calls {target[:80]!r}, which is not on tf2torch's operator allow-list "
                          "(migrate/conversion/pt2_ops.py)", ours=known and not pt2_ops.never_allowed(target))
        higher_order = target in pt2_ops.HIGHER_ORDER
        inputs = []
        for item in _list(node.get("inputs", []), where):
            item = _dict(item, where)
            _keys(item, where, {"name", "arg", "kind"})
            name = "" if higher_order and item.get("name") == "" else _name(item.get("name"), where)
            strings = pt2_ops.STRING_ARGUMENTS.get(target, {}).get(name)
            arg = _argument(item.get("arg"), f"{where} ({target}) argument {name!r}", strings=strings,
                            graph=self._subgraph if higher_order else None)
            kind = item.get("kind")
            if kind is not None and kind not in (0, 1, 2):
                raise Refusal(where, f"argument kind {str(kind)[:20]!r}")
            inputs.append({"name": name, "arg": arg, "kind": kind})
        hop = node.get("is_hop_single_tensor_return")
        return {"target": target, "inputs": inputs,
                "outputs": [_argument(a, f"{where}'s outputs") for a in _list(node.get("outputs", []), where)],
                "metadata": _node_metadata(node.get("metadata", {}), where),
                "is_hop_single_tensor_return": None if hop is None else _bool(hop, where),
                "name": None if node.get("name") is None else _name(node["name"], where)}

    def _subgraph(self, value: Any, where: str) -> dict[str, Any]:
        """A higher-order operator's body (``cond`` branches, ``scan``'s step): a graph like the program's own."""
        self.depth += 1
        if self.depth > 8:
            raise Refusal(where, "higher-order operators nested deeper than 8")
        value = _dict(value, where)
        _keys(value, where, {"name", "graph"}, required=True)
        try:
            return {"name": _name(value["name"], where), "graph": self._graph(_dict(value["graph"], where), where)}
        finally:
            self.depth -= 1

    def _signature(self, signature: dict[str, Any]) -> dict[str, Any]:
        where = "the graph signature"
        _keys(signature, where, {"input_specs", "output_specs"}, required=True)
        inputs = []
        for spec in _list(signature["input_specs"], where):
            kind, body = _union(spec, where, {"user_input", "parameter", "buffer", "tensor_constant"})
            here = f"{where} {kind} input"
            if kind == "user_input":
                _keys(body, here, {"arg"}, required=True)
                inputs.append({kind: {"arg": _argument(body["arg"], here)}})
                continue
            field = {"parameter": "parameter_name", "buffer": "buffer_name",
                     "tensor_constant": "tensor_constant_name"}[kind]
            _keys(body, here, {"arg", field} | ({"persistent"} if kind == "buffer" else set()), required=True)
            entry = {"arg": _tensor_argument(body["arg"], here), field: _fqn(body[field], here)}
            if kind == "buffer":
                entry["persistent"] = _bool(body["persistent"], here)
            inputs.append({kind: entry})
        outputs = []
        for spec in _list(signature["output_specs"], where):
            kind, body = _union(spec, where, {"user_output"})
            _keys(body, f"{where} output", {"arg"}, required=True)
            outputs.append({kind: {"arg": _argument(body["arg"], f"{where} output")}})
        return {"input_specs": inputs, "output_specs": outputs}

    def _call_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        where = "a module call entry"
        _keys(entry, where, {"fqn", "signature"})
        fqn = _fqn(entry.get("fqn"), where)
        signature = entry.get("signature")
        if signature is None:
            return {"fqn": fqn, "signature": None}
        signature = _dict(signature, where)
        _keys(signature, where, {"inputs", "outputs", "in_spec", "out_spec", "forward_arg_names"})
        names = signature.get("forward_arg_names")
        return {"fqn": fqn, "signature": {
            "inputs": [_argument(a, where) for a in _list(signature.get("inputs", []), where)],
            "outputs": [_argument(a, where) for a in _list(signature.get("outputs", []), where)],
            "in_spec": treespec(signature.get("in_spec"), f"{where}'s in_spec"),
            "out_spec": treespec(signature.get("out_spec"), f"{where}'s out_spec"),
            "forward_arg_names": None if names is None else [_name(n, where) for n in _list(names, where)]}}


def _node_metadata(value: Any, where: str) -> dict[str, str]:
    """Only ``nn_module_stack`` survives (parity's ``--per-layer`` maps ONNX nodes through it; torch keeps it as
    plain strings). Stack traces, ``source_fn_stack`` (resolved as targets), ``torch_fn`` and ``custom`` go."""
    stack = _dict(value, where).get("nn_module_stack")
    if stack is None:
        return {}
    if not isinstance(stack, str) or len(stack) > 65_536 or not _MODULE_STACK.fullmatch(stack):
        raise Refusal(where, f"nn_module_stack {str(stack)[:60]!r} is not one line of module paths")
    return {"nn_module_stack": stack}


# ---- schema pieces ----------------------------------------------------------------------------------------------

def treespec(text: Any, where: str) -> str:
    """A pytree spec (torch's JSON protocol 1) rebuilt from tuple, list, dict and leaf nodes with plain contexts.

    torch's treespec loader imports a module for an ``__enum__`` context, a ``defaultdict``'s default factory
    and a namedtuple's type; none of those parse here.
    """
    if not isinstance(text, str) or len(text) > 10 * 2**20:
        raise Refusal(where, "not a treespec string")
    try:
        protocol, root = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise Refusal(where, "not a treespec (JSON [1, {...}])") from None
    if protocol != 1:
        raise Refusal(where, f"treespec protocol {str(protocol)[:20]}")
    count = [0]

    def node(spec: Any, depth: int) -> dict[str, Any]:
        count[0] += 1
        if depth > 32 or count[0] > _TREESPEC_NODES:
            raise Refusal(where, "treespec nested deeper than 32 or larger than 10000 nodes")
        spec = _dict(spec, where)
        _keys(spec, where, {"type", "context", "children_spec"}, required=True)
        kind = _TREESPEC_TYPES.get(spec["type"]) if isinstance(spec["type"], (str, type(None))) else None
        if kind is None:
            raise Refusal(where, f"treespec node of type {str(spec['type'])[:80]!r} (only tuple, list, dict, leaf)")
        children = _list(spec["children_spec"], where)
        if kind == "leaf":
            if spec["context"] is not None or children:
                raise Refusal(where, "treespec leaf with a context or children")
            return {"type": None, "context": None, "children_spec": []}
        if kind == "seq":
            if spec["context"] != "null":
                raise Refusal(where, f"treespec {spec['type']} with context {str(spec['context'])[:80]!r}")
            context = "null"
        else:
            try:
                keys = json.loads(spec["context"]) if isinstance(spec["context"], str) else None
            except (ValueError, RecursionError):
                keys = None
            if not isinstance(keys, list) or len(keys) != len(children) or not all(
                    isinstance(k, str) and IDENTIFIER.fullmatch(k) for k in keys):
                raise Refusal(where, f"treespec dict context {str(spec['context'])[:80]!r} (only a list of names)")
            context = json.dumps(keys)
        return {"type": spec["type"], "context": context, "children_spec": [node(c, depth + 1) for c in children]}

    return json.dumps([1, node(root, 0)])


def _argument(value: Any, where: str, strings: Any = None, graph: Any = None) -> dict[str, Any]:
    """One ``Argument`` union value; ``strings`` is the pattern a string argument of this operator must match,
    ``graph`` parses a subgraph argument (higher-order operators only)."""
    kind, body = _union(value, where, {*_ARGUMENTS, "as_graph"} if graph else _ARGUMENTS)
    if kind == "as_graph":
        return {kind: graph(body, where)}
    if kind == "as_string":
        if strings is None or not isinstance(body, str) or not strings.fullmatch(body):
            raise Refusal(where, f"a string argument {str(body)[:60]!r} (strings are accepted only where "
                          "migrate/conversion/pt2_ops.py lists them)")
        return {kind: body}
    return {kind: _ARGUMENTS[kind](body, where)}


def _tensor_argument(value: Any, where: str) -> dict[str, str]:
    value = _dict(value, where)
    _keys(value, where, {"name"}, required=True)
    return {"name": _name(value["name"], where)}


def _optional_tensor(value: Any, where: str) -> dict[str, Any]:
    kind, body = _union(value, where, {"as_tensor", "as_none"})
    return {kind: _tensor_argument(body, where) if kind == "as_tensor" else _bool(body, where)}


def _named(value_kind: str, check: Any) -> Any:
    """``SymIntArgument``-style unions: a graph value's name or a literal."""
    def parse(value: Any, where: str) -> dict[str, Any]:
        kind, body = _union(value, where, {"as_name", value_kind})
        return {kind: _name(body, where) if kind == "as_name" else check(body, where)}
    return parse


def _sym(value: Any, where: str, literal: str, check: Any) -> dict[str, Any]:
    """``SymInt``/``SymBool``/``SymFloat``: a literal, or a sympy expression re-rendered from its grammar."""
    kind, body = _union(value, where, {"as_expr", literal})
    if kind == literal:
        return {kind: check(body, where)}
    body = _dict(body, where)
    _keys(body, where, {"expr_str", "hint"})
    try:
        text = sym_expr(body.get("expr_str"))
    except GrammarError as exc:
        raise Refusal(f"{where} expression {str(body.get('expr_str'))[:60]!r}", f"{exc} is outside the sympy "
                      "grammar (docs/guarantees.md)", ours=True) from None
    hint = body.get("hint")
    if hint is not None:
        hint_kind, hint_value = _union(hint, where, {"as_int", "as_bool", "as_float"})
        hint = {hint_kind: {"as_int": _int, "as_bool": _bool, "as_float": _float}[hint_kind](hint_value, where)}
    return {"as_expr": {"expr_str": text, "hint": hint}}


def _sym_int(value: Any, where: str) -> dict[str, Any]:
    return _sym(value, where, "as_int", _int)


def _tensor_meta(value: Any, where: str, static: bool) -> dict[str, Any]:
    """``TensorMeta``; ``static`` (weights, constants): every size, stride and offset is a literal."""
    meta = _dict(value, where)
    _keys(meta, where, {"dtype", "sizes", "requires_grad", "device", "strides", "storage_offset", "layout"},
          required=True)
    if meta["dtype"] not in _SCALAR_TYPES or meta["layout"] != _STRIDED:
        raise Refusal(where, f"dtype {str(meta['dtype'])[:10]} / layout {str(meta['layout'])[:10]} (dense tensors "
                      "of a plain dtype only)")
    sizes = [_sym_int(s, where) for s in _list(meta["sizes"], where)]
    strides = [_sym_int(s, where) for s in _list(meta["strides"], where)]
    offset = _sym_int(meta["storage_offset"], where)
    if len(sizes) != len(strides) or len(sizes) > 16:
        raise Refusal(where, "sizes and strides of different or more than 16 dims")
    if static and any("as_int" not in s for s in (*sizes, *strides, offset)):
        raise Refusal(where, "a stored tensor with a symbolic size")
    return {"dtype": meta["dtype"], "sizes": sizes, "requires_grad": _bool(meta["requires_grad"], where),
            "device": _device(meta["device"], where), "strides": strides, "storage_offset": offset,
            "layout": _STRIDED}


def _device(value: Any, where: str) -> dict[str, Any]:
    device = _dict(value, where)
    _keys(device, where, {"type", "index"})
    if device.get("type") not in _DEVICES:
        raise Refusal(where, f"device {str(device.get('type'))[:20]!r}")
    index = device.get("index")
    return {"type": device["type"], "index": None if index is None else _int(index, where)}


def _ints(value: Any, where: str) -> list[int]:
    return [_int(v, where) for v in _list(value, where)]


def _floats(value: Any, where: str) -> list[float]:
    return [_float(v, where) for v in _list(value, where)]


def _bools(value: Any, where: str) -> list[bool]:
    return [_bool(v, where) for v in _list(value, where)]


def _enum(*allowed: int) -> Any:
    def check(value: Any, where: str) -> int:
        if type(value) is not int or value not in allowed:
            raise Refusal(where, f"enum value {str(value)[:20]!r}")
        return value
    return check


def _none(value: Any, where: str) -> bool:
    return _bool(value, where)


_sym_int_argument = _named("as_int", lambda v, w: _int(v, w))
_sym_bool_argument = _named("as_bool", lambda v, w: _bool(v, w))
_sym_float_argument = _named("as_float", lambda v, w: _float(v, w))
#: The ``Argument`` variants tf2torch programs use, with their parsers; graphs only as arguments of the
#: higher-order operators ``migrate.conversion.pt2_ops`` lists. Absent on purpose: operators as values, custom objects,
#: string-keyed argument maps.
_ARGUMENTS: dict[str, Any] = {
    "as_none": _none, "as_tensor": _tensor_argument,
    "as_tensors": lambda v, w: [_tensor_argument(t, w) for t in _list(v, w)],
    "as_int": lambda v, w: _int(v, w), "as_ints": _ints, "as_float": lambda v, w: _float(v, w), "as_floats": _floats,
    "as_bool": lambda v, w: _bool(v, w), "as_bools": _bools,
    "as_sym_int": _sym_int_argument, "as_sym_ints": lambda v, w: [_sym_int_argument(x, w) for x in _list(v, w)],
    "as_sym_bool": _sym_bool_argument, "as_sym_bools": lambda v, w: [_sym_bool_argument(x, w) for x in _list(v, w)],
    "as_sym_float": _sym_float_argument,
    "as_sym_floats": lambda v, w: [_sym_float_argument(x, w) for x in _list(v, w)],
    "as_scalar_type": _enum(*_SCALAR_TYPES), "as_memory_format": _enum(0, 1, 2, 3, 4), "as_layout": _enum(_STRIDED),
    "as_device": _device, "as_optional_tensor": _optional_tensor,
    "as_optional_tensors": lambda v, w: [_optional_tensor(x, w) for x in _list(v, w)],
    "as_int_lists": lambda v, w: [_ints(x, w) for x in _list(v, w)],
    "as_string": None,
}


def _union(value: Any, where: str, allowed: Any) -> tuple[str, Any]:
    value = _dict(value, where)
    if len(value) != 1:
        raise Refusal(where, f"a union value with {len(value)} fields")
    ((kind, body),) = value.items()
    if kind not in allowed:
        raise Refusal(where, f"a {kind[:40]!r} value")
    return kind, body


def _keys(value: dict[str, Any], where: str, known: set[str], required: bool = False) -> None:
    unknown = sorted(set(value) - known)
    if unknown:
        raise Refusal(where, f"field {unknown[0][:40]!r}", ours=True)
    if required and set(known) - set(value):
        raise Refusal(where, f"no field {min(set(known) - set(value))!r}", ours=True)


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refusal(where, f"a {type(value).__name__} where an object belongs")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > _MAX_LIST:
        raise Refusal(where, f"a {type(value).__name__} where a list belongs")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int or abs(value) > MAX_INT:
        raise Refusal(where, f"{str(value)[:40]!r} where an integer within 2**64 belongs")
    return value


def _float(value: Any, where: str) -> float | str:
    """A JSON number, or the strings torch writes for non-finite floats."""
    if value in _NON_FINITE and isinstance(value, str):
        return value
    if type(value) not in (int, float) or (type(value) is int and abs(value) > MAX_INT):
        raise Refusal(where, f"{str(value)[:40]!r} where a number belongs")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise Refusal(where, f"{str(value)[:40]!r} where true/false belongs")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise Refusal(where, f"name {str(value)[:60]!r} is not a plain identifier")
    return value


def _fqn(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _FQN.fullmatch(value):
        raise Refusal(where, f"name {str(value)[:60]!r} has characters other than letters, digits and _./:-")
    return value


# ---- loading ----------------------------------------------------------------------------------------------------

def load_pt2(path: str | Path) -> Any:
    """``torch.export.load`` of the fresh archive built from ``path``; any failure is one InputError line."""
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
