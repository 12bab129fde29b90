"""Guarantee: loading a model.pt2 never runs code (docs/guarantees.md, "What is never loaded").

Every hostile archive here is built by the test from a real conversion (or a real ``torch.export``).
A control run of plain ``torch.export.load`` proves each payload is live: it creates or writes a marker
file. tf2torch's loaders must refuse the same file with one line, before torch reads anything, and the
marker must not exist afterwards.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from fixtures.models import model_dir
from migrate.conversion.pt2_check import check_pt2, load_pt2
from migrate.core.errors import InputError
from tests.safety_helpers import ROOT, env_with_tmpdir, nodes_with, one_line, program_of, rewrite_pt2, tf2torch

PLAIN_LOAD = ("import sys, torch\ntry:\n    torch.export.load(sys.argv[1]).module()(*[torch.zeros(2, 16)])\n"
              "except Exception:\n    pass\n")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> tuple[Path, Path]:
    """(SavedModel, converted OUT) of the mlp fixture (``features[N, 16]``)."""
    root = tmp_path_factory.mktemp("pt2")
    source = model_dir("mlp") / "saved_model"
    proc = tf2torch("convert", source, "-o", root / "out", "-q", tmpdir=root / "tmp")
    assert proc.returncode == 0, proc.stderr
    return source, root / "out"


def _plain_load(pt2: Path, tmp: Path, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(pt2)], capture_output=True, check=False, cwd=cwd or tmp,
                   env=env_with_tmpdir(tmp / "tmp"))


def _refused(pt2: Path, *needles: str) -> str:
    """load_pt2 (this process: a payload that got through would run here) refuses ``pt2`` with one line."""
    with pytest.raises(InputError) as info:
        load_pt2(pt2)
    message = str(info.value)
    assert "\n" not in message and "refused to load" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def _with_program(out: Path, dst: Path, edit) -> Path:
    program = program_of(out / "model.pt2")
    edit(program)
    rewrite_pt2(out / "model.pt2", dst, replace={"models/model.json": json.dumps(program).encode()})
    return dst


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- the five bypass classes ---------------------------------------------------------------------------------

def test_a_case_colliding_pickle_inside_the_sample_inputs_never_runs(mlp, tmp_path):
    _, out = mlp
    marker = tmp_path / "marker"
    with zipfile.ZipFile(out / "model.pt2") as archive:
        sample = archive.read(next(n for n in archive.namelist() if n.endswith("sample_inputs/model.pt")))
    payload = io.BytesIO()
    torch.save(_Payload(marker), payload)
    with zipfile.ZipFile(payload) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    nested = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(sample)) as zin, zipfile.ZipFile(nested, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        zout.writestr(zin.namelist()[0].split("/")[0] + "/DATA.PKL", pickled)
    bad = tmp_path / "model.pt2"
    rewrite_pt2(out / "model.pt2", bad, replace={"data/sample_inputs/model.pt": nested.getvalue()})
    _plain_load(bad, tmp_path)
    assert marker.exists(), "control: torch's case-insensitive lookup reads DATA.PKL and unpickles it"
    marker.unlink()
    _refused(bad, "data/sample_inputs/model.pt", "DATA.PKL", "case-insensitively", "tf2torch never writes that")
    assert not marker.exists()


def test_a_case_colliding_member_of_the_archive_is_refused(mlp, tmp_path):
    _, out = mlp
    bad = tmp_path / "model.pt2"
    rewrite_pt2(out / "model.pt2", bad, add={"models/MODEL.json": b"{}"})
    _refused(bad, "models/model.json", "case-insensitively")


def _from_file_program(tmp: Path, marker: Path) -> Path:
    """A real exported program, edited so that its first forward writes ``AAA`` into ``marker`` (aten.from_file
    with shared=True mapped onto the file, then copy_ into it)."""

    class Module(torch.nn.Module):
        def forward(self, x):
            buffer = torch.empty(3, dtype=torch.uint8)
            buffer.copy_((x[:3] * 0 + 65).to(torch.uint8))
            return x + 1

    base = tmp / "base.pt2"
    torch.export.save(torch.export.export(Module(), (torch.zeros(4),), strict=False), base)
    program = program_of(base)
    node = next(n for n in program["graph_module"]["graph"]["nodes"] if "empty" in n["target"])
    node["target"] = "torch.ops.aten.from_file.default"
    node["inputs"] = [{"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
                      {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                      {"name": "size", "arg": {"as_int": 3}, "kind": 1},
                      {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2}]
    bad = tmp / "model.pt2"
    rewrite_pt2(base, bad, replace={"models/model.json": json.dumps(program).encode()})
    return bad


def test_operators_that_write_files_are_refused_naming_the_operator(tmp_path):
    marker = tmp_path / "written"
    bad = _from_file_program(tmp_path, marker)
    subprocess.run([sys.executable, "-c", "import sys, torch\ntorch.export.load(sys.argv[1]).module()(torch.zeros(4))",
                    str(bad)], capture_output=True, check=False)
    assert marker.read_bytes() == b"AAA", "control: from_file(shared=True) + copy_ writes the file"
    marker.unlink()
    _refused(bad, "its graph calls 'torch.ops.aten.from_file.default'", "allow-list", "tf2torch never writes that")
    assert not marker.exists()


@pytest.mark.parametrize("target", ["torch.ops.aten.save.default", "torch.ops.aten._print.default",
                                    "torch.ops.aten.add.out", "torch.ops.aten.add_.Tensor",
                                    "torch.ops.aten.copy_.default", "torch.os.system"])
def test_unlisted_operators_are_refused_by_name(mlp, tmp_path, target):
    def edit(program):
        next(nodes_with(program, "target"))["target"] = target
    _refused(_with_program(mlp[1], tmp_path / "model.pt2", edit), f"its graph calls {target!r}")


def _enum_gadget(fqn: str, name: str):
    """An in_spec whose dict context makes torch's treespec loader import ``fqn`` and index it with ``name``."""
    def edit(program):
        entry = next(e for e in program["graph_module"]["module_call_graph"] if e["signature"])
        spec = json.loads(entry["signature"]["in_spec"])
        kwargs = spec[1]["children_spec"][1]
        kwargs["context"] = json.dumps([{"__enum__": True, "fqn": fqn, "name": name}])
        kwargs["children_spec"] = [{"type": None, "context": None, "children_spec": []}]
        entry["signature"]["in_spec"] = json.dumps(spec)
    return edit


def test_a_treespec_that_imports_a_module_is_refused(mlp, tmp_path):
    _, out = mlp
    marker = tmp_path / "marker"
    (tmp_path / "t2t_payload.py").write_text(
        f"import enum\nopen({str(marker)!r}, 'w').close()\nclass E(enum.Enum):\n    A = 1\n")
    bad = _with_program(out, tmp_path / "model.pt2", _enum_gadget("t2t_payload:E", "A"))
    _plain_load(bad, tmp_path, cwd=tmp_path)
    assert marker.exists(), "control: torch's treespec loader imports t2t_payload from the working directory"
    marker.unlink()
    sys.path.insert(0, str(tmp_path))
    try:
        _refused(bad, "in_spec", "treespec dict context", "tf2torch never writes that")
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists() and "t2t_payload" not in sys.modules


def test_a_shared_library_glued_before_the_zip_is_refused(mlp, tmp_path):
    """A model.pt2 that is an ELF shared library and a zip; its treespec asks ctypes to dlopen the file itself."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the shared library")
    _, out = mlp
    marker = tmp_path / "marker"
    source = tmp_path / "lib.c"
    source.write_text('#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void run(void)'
                      f' {{ close(creat("{marker}", 0644)); }}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "lib.so"), str(source)], check=True)
    bad = tmp_path / "model.pt2"
    program = program_of(out / "model.pt2")
    _enum_gadget("ctypes:cdll", str(bad))(program)
    rewrite_pt2(out / "model.pt2", bad, replace={"models/model.json": json.dumps(program).encode()},
                prefix=(tmp_path / "lib.so").read_bytes())
    # Control: torch reads a copy rewritten by Python's zip reader (what the earlier check handed it).
    clean = tmp_path / "clean.pt2"
    with zipfile.ZipFile(bad) as zin, zipfile.ZipFile(clean, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
    _plain_load(clean, tmp_path)
    assert marker.exists(), "control: the treespec gadget dlopens the polyglot and runs its constructor"
    marker.unlink()
    _refused(bad, "offset 0", "tf2torch never writes that")
    assert not marker.exists()


def test_a_forged_port_manifest_never_imports_model_py(mlp, tmp_path):
    source, out = mlp
    marker = tmp_path / "marker"
    forged = tmp_path / "forged"
    shutil.copytree(out, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["kind"] = "port"
    manifest["files"] = [*manifest.get("files", []), "model.py"]
    (forged / "manifest.json").write_text(json.dumps(manifest))
    (forged / "model.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc = tf2torch("parity", source, forged, "--no-onnx", tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "tf2torch parity: error: ", "'tf2torch port' output", "--trust-model-py")
    assert not marker.exists()
    # The plugin goes through the same call.
    from checks.parity import compare

    with pytest.raises(InputError, match="--trust-model-py"):
        compare(source, forged, onnx=False)
    assert not marker.exists()


# ---- denial of service -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression", ["Integer(10)**Integer(10)**Integer(7)",
                                        "Pow(Integer(10), Pow(Integer(10), Integer(7)))",
                                        "PowByNatural(Integer(10), Integer(10000000))",
                                        "LShift(Integer(1), Integer(10000000000))"])
def test_a_sympy_power_bomb_is_refused_in_milliseconds(mlp, tmp_path, expression):
    def edit(program):
        next(nodes_with(program, "expr_str"))["expr_str"] = expression
    bad = _with_program(mlp[1], tmp_path / "model.pt2", edit)
    started = time.perf_counter()
    _refused(bad, "sympy grammar")
    assert time.perf_counter() - started < 1.0


CHECK_UNDER_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
from migrate.core.errors import InputError
from migrate.conversion.pt2_check import check_pt2
try:
    check_pt2(sys.argv[1])
except InputError as exc:
    print(exc)
    sys.exit(2)
"""


def test_a_zip_bomb_member_is_refused_without_reading_it(mlp, tmp_path):
    """A 1 GiB member deflated to about 5 MB; the check runs under a 300 MiB address-space limit."""
    _, out = mlp
    bomb = tmp_path / "model.pt2"
    with zipfile.ZipFile(out / "model.pt2") as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED,
                                                                     compresslevel=1) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        root = zin.namelist()[0].split("/")[0]
        with zout.open(f"{root}/extra/bomb", "w", force_zip64=True) as member:
            chunk = bytes(2**24)
            for _ in range(64):
                member.write(chunk)
    with zipfile.ZipFile(bomb) as archive:
        assert archive.getinfo(f"{root}/extra/bomb").compress_size < 8 * 2**20
    limit = 300 * 2**20
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHECK_UNDER_LIMIT, str(bomb), str(limit)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "extra/bomb" in proc.stdout and "compressed" in proc.stdout
    assert time.perf_counter() - started < 10


def test_a_member_larger_than_its_cap_is_never_read(mlp, tmp_path):
    _, out = mlp
    bad = tmp_path / "model.pt2"
    big = b"[" + b"0," * (40 * 2**20) + b"0]"  # 80 MB of JSON where a config belongs (cap 64 MiB)
    rewrite_pt2(out / "model.pt2", bad, replace={"data/constants/model_constants_config.json": big})
    _refused(bad, "model_constants_config.json", "more than the")


# ---- the guard and sympy grammars -----------------------------------------------------------------------------

M = "MARKER"
#: Guard code that would run something, reach an object, or cost unbounded time; each outside the grammar.
HOSTILE_GUARDS = [
    f"__import__('os').system('touch {M}') or True",
    f"L['x'].size()[0] > 0 or __import__('os').system('touch {M}')",
    f"exec('import os; os.system(\"touch {M}\")') is None",
    "eval('1') == 1",
    f"open('{M}', 'w') is not None",
    "L['x'].size()[0].__class__.__bases__[0].__subclasses__() != []",
    "L['x'].__class__ is not None",
    "L['x'].size()[0] == len([c for c in 'abc'])",
    "(lambda: 1)() == 1",
    f"torch.ops.aten.from_file('{M}', True, 3) is None",
    "math.__dict__['floor'](1.5) == 1",
    "math.floor.__self__ is not None",
    "globals()['torch'] is None",
    "L['x'].size()[0] == (yield)",
    "L['x'].size()[0] == (x := 3)",
    "[L['x'].size()[0]][0] == 1",
    "{'a': 1}['a'] == 1",
    "L['x'].size()[0] in (1, 2)",
    "L['x'].size()[0] is 1",
    "f'{L}' == ''",
    "max(*[1, 2]) == 2",
    "max(1, 2, key=abs) == 2",
    "L['x;import os'].size()[0] == 1",
    "L[0].size()[0] == 1",
    "L['x'].numpy() is None",
    "L['x'].size(0) == 1",
    "L['x'].size()[100] == 1",
    "L['x'].size()[0] ** 2 ** 2 ** 64 > 0",
    "L['x'].size()[0] ** 1000000 > 0",
    "9 ** 9 ** 9 > 0",
    "L['x'].size()[0] << 100000 > 0",
    f"{'(' * 200}1{')' * 200} == 1",
    "1 + " * 5000 + "1 == 1",
    f"L['x'].size()[0] == 1\n__import__('os').system('touch {M}')",
]
#: Symbolic expressions outside the srepr grammar.
HOSTILE_SYMPY = [
    f"__import__('os').system('touch {M}')",
    "Symbol('s0', integer=True).__class__",
    f"Symbol(__import__('os').system('touch {M}'))",
    "Symbol('s0; import os')",
    "Symbol('s0', evaluate=__import__('os'))",
    "Symbol('s0', integer=1)",
    "Integer(10)**Integer(10)**Integer(7)",
    "Pow(Integer(10), Pow(Integer(10), Integer(7)))",
    "Pow(Integer(10), Integer(100000))",
    "FloatPow(Float('10.0'), Integer(10000000))",
    f"Integer({10 ** 100})",
    "Integer('1' * 10)",
    "Float('1.5', precision=100000)",
    "Float('nan' + 'x')",
    f"Float('1e5', dps=__import__('os').system('touch {M}'))",
    "Rational(1, 0)",
    "Function('f')(Symbol('s0'))",
    "Lambda(Symbol('x'), Symbol('x'))",
    "sympify('1')",
    "parse_expr('1')",
    "Add(*[Integer(1)])",
    "Add(Integer(1))",
    "Max(" + ", ".join(["Integer(1)"] * 100) + ")",
    "Mul(Integer(2), Symbol('s0'))[0]",
    "Matrix([[1]])",
    "OpaqueUnaryFn_exec(Integer(1))",
    "Add(" * 80 + "Integer(1)" + ", Integer(1))" * 80,
    "lambda: 1",
    "[Integer(1)]",
]
#: Forms torch 2.13's printers write, which must parse.
VALID_GUARDS = [
    "L['x'].size()[2] + max(0, 1 + ((-1)*L['x'].size()[2]) + (-2)*(((-1)*L['x'].size()[2]) // 2)) >= 3",
    "max(1, (-2) + L['x'].size()[1]) > 1",
    "(max(1, L['x'].size()[3] // 2)*max(1, L['x'].size()[2] // 2)) != 1",
    "math.floor(L['x'].size()[1] / 2) >= 1 and math.ceil(L['x'].size()[1] / 3) <= 100",
    "math.trunc(sym_float(L['x'].size()[1]) / 2.0) == 2 or not L['x'].size()[0] == 1",
    "abs(L['x'].size()[1] - 3) < math.inf",
    "round(L['x'].size()[1] / 2) == L['x'].stride()[0] % 7",
    "L['x'].size()[1] ** 2 <= 4096 and L['x'].storage_offset() == 0 and L['x'].dim() == 3",
    "min(L['x'].size()[1], L['y'].size()[1]) == 2 <= L['x'].size()[0]",
]
VALID_SYMPY = [
    ("Add(Integer(1), Mul(Integer(-1), Integer(2), FloorDiv(Mul(Integer(-1), Symbol('s6', positive=True, "
     "integer=True)), Integer(2))))"),
    "Max(Integer(1), Add(Integer(-2), Symbol('s0', positive=True, integer=True)))",
    "Min(Symbol('s1', integer=True), Integer(16))",
    "Pow(Symbol('s0', integer=True, positive=True), Integer(2))",
    "Float('1.5', precision=53)",
    "StrictLessThan(Symbol('s0', integer=True), Integer(3))",
    "Piecewise((Integer(1), GreaterThan(Symbol('s0'), Integer(2))), (Integer(0), true))",
    "OpaqueUnaryFn_sqrt(Symbol('s0', positive=True))",
    "And(Equality(Mod(Symbol('s0'), Integer(2)), Integer(0)), Unequality(Symbol('u1'), Integer(1)))",
    "CeilToInt(IntTrueDiv(Symbol('s0'), Integer(3)))",
    "Mul(Rational(1, 2), Symbol('s0'))",
    "Add(Symbol('s0'), -oo)",
]


def test_the_corpus_has_forty_hostile_strings():
    assert len(HOSTILE_GUARDS) + len(HOSTILE_SYMPY) >= 40


@pytest.mark.parametrize("text", HOSTILE_GUARDS, ids=range(len(HOSTILE_GUARDS)))
def test_guard_code_outside_the_grammar_is_refused_and_nothing_runs(mlp, tmp_path, text):
    marker = tmp_path / "marker"
    text = text.replace(M, str(marker))

    def edit(program):
        program["guards_code"] = [text]
    started = time.perf_counter()
    _refused(_with_program(mlp[1], tmp_path / "model.pt2", edit), "guard", "outside the guard grammar")
    assert time.perf_counter() - started < 1.0
    assert not marker.exists()


@pytest.mark.parametrize("text", HOSTILE_SYMPY, ids=range(len(HOSTILE_SYMPY)))
def test_sympy_text_outside_the_grammar_is_refused_and_nothing_runs(mlp, tmp_path, text):
    marker = tmp_path / "marker"
    text = text.replace(M, str(marker))

    def edit(program):
        next(nodes_with(program, "expr_str"))["expr_str"] = text
    started = time.perf_counter()
    _refused(_with_program(mlp[1], tmp_path / "model.pt2", edit), "expression", "outside the sympy grammar")
    assert time.perf_counter() - started < 1.0
    assert not marker.exists()


@pytest.mark.parametrize("text", VALID_GUARDS)
def test_guard_forms_torch_writes_parse_and_are_rewritten_equivalently(text):
    from migrate.conversion.pt2_grammar import guard

    rewritten = guard(text)
    sizes = {"x": (3, 8, 12, 5), "y": (3, 4)}

    class Tensor:
        def __init__(self, shape):
            self.shape = shape

        def size(self):
            return self.shape

        def stride(self):
            return (96, 12, 1, 1)

        def storage_offset(self):
            return 0

        def dim(self):
            return 3

    import math

    scope = {"L": {k: Tensor(v) for k, v in sizes.items()}, "math": math, "sym_float": float}
    assert eval(compile(rewritten, "guard", "eval"), scope) == eval(compile(text, "guard", "eval"), scope)


@pytest.mark.parametrize("text", VALID_SYMPY)
def test_sympy_forms_torch_writes_parse_into_the_same_expression(text):
    import sympy
    from torch.utils._sympy.functions import CeilToInt, FloorDiv, IntTrueDiv, Mod

    from migrate.conversion.pt2_grammar import sym_expr

    local = {"FloorDiv": FloorDiv, "Mod": Mod, "CeilToInt": CeilToInt, "IntTrueDiv": IntTrueDiv}
    assert sympy.sympify(sym_expr(text), locals=local) == sympy.sympify(text, locals=local)


# ---- tf2torch's own output ---------------------------------------------------------------------------------------

def test_the_fresh_archive_drops_metadata_and_sample_inputs(mlp):
    from migrate.conversion.pt2_check import checked_copy

    with zipfile.ZipFile(checked_copy(mlp[1] / "model.pt2")) as archive:
        program = json.loads(archive.read("model/models/model.json"))
        assert archive.read("model/data/sample_inputs/model.pt") == b""
    assert all(set(node["metadata"]) <= {"nn_module_stack"} for node in program["graph_module"]["graph"]["nodes"])
    assert "stack_trace" not in json.dumps(program)
    check_pt2(mlp[1] / "model.pt2")


# ---- the output contract ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("before", ["absent", "earlier output"])
def test_a_conversion_whose_final_check_fails_leaves_out_as_it_was(mlp, tmp_path, monkeypatch, capsys, before):
    """The final load of the staged model.pt2 is forced to refuse (an empty operator allow-list)."""
    import migrate
    from migrate.conversion import pt2_ops
    from tests.safety_helpers import fingerprint

    source, converted = mlp
    out = tmp_path / "out"
    if before == "earlier output":
        shutil.copytree(converted, out)
    was = fingerprint(out) if out.exists() else None
    monkeypatch.setattr(pt2_ops, "OPERATORS", frozenset())
    from migrate.core.errors import ConversionError

    with pytest.raises(ConversionError, match="fails tf2torch's own load check .*allow-list.*left as it was"):
        migrate.convert(source, out, quiet=False, force=True)
    assert "converted" not in capsys.readouterr().err
    assert (fingerprint(out) if out.exists() else None) == was
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if was is not None else [])
