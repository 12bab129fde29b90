"""Conversion wall time per zoo model: ``tf2torch convert`` next to the raw tf2onnx + onnx2torch chain.

The raw chain is what a user would run by hand: ``python -m tf2onnx.convert --saved-model SRC
--opset 17``, then a separate Python process doing ``onnx2torch.convert`` and ``torch.export``
with a dynamic batch. Every step is a fresh process and is timed from outside (wall clock, imports
included), the same way for both. Failures of the raw chain are recorded with the stage and the
first line of the error, since that is half of the point.

    python -m benchmarks.convert_bench [MODEL ...] [--repeat N] [--json PATH]

Not a timed test: numbers depend on the machine; run it by hand (``make bench`` may call it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures.models import BUILDERS, model_dir

#: Second step of the raw chain, run as ``python -c``. Where torchvision cannot be imported (as on
#: CPU-only torch builds here) a stand-in module lets onnx2torch import; nothing else is patched.
RAW_TORCH_STEP = r"""
import sys, types
try:
    import torchvision  # noqa: F401
except Exception:
    for n in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
        del sys.modules[n]
    tv = types.ModuleType("torchvision"); tv.ops = types.ModuleType("torchvision.ops")
    tv.ops.nms = tv.ops.roi_align = lambda *a, **k: None
    sys.modules["torchvision"] = tv; sys.modules["torchvision.ops"] = tv.ops
import onnx, onnx2torch, torch
from torch.export import Dim
model = onnx.load(sys.argv[1])
stage = "onnx2torch"
try:
    gm = onnx2torch.convert(model)
    stage = "torch.export"
    init = {i.name for i in model.graph.initializer}
    inputs, shapes, batch = [], [], Dim("batch")
    for vi in [v for v in model.graph.input if v.name not in init]:
        t = vi.type.tensor_type
        dims = [(2 if i == 0 else 8) if not d.HasField("dim_value") else d.dim_value
                for i, d in enumerate(t.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        x = torch.from_numpy(__import__("numpy").zeros(dims, dtype=dtype))
        inputs.append(torch.randn(dims) if x.is_floating_point() else x)
        shapes.append({0: batch} if dims and not t.shape.dim[0].HasField("dim_value") else {})
    torch.export.export(gm, tuple(inputs), dynamic_shapes=tuple(shapes))
except Exception as exc:
    msg = (str(exc).strip().splitlines() or [""])[0]
    print(f"RAW-FAILED {stage}: {type(exc).__name__}: {msg}"[:400], file=sys.stderr)
    sys.exit(1)
"""


def _run(cmd: list[str], timeout: float, env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, exit code, last meaningful stderr line) of one child process."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, 124, f"timed out after {timeout:.0f}s"
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    marked = [ln for ln in lines if ln.startswith(("RAW-FAILED", "error:", "tf2torch:"))]
    return wall, proc.returncode, (marked or lines or [""])[-1][:400]


def _tf2torch(source: Path, work: Path, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("tf2torch")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "migrate.cli"]
    out = work / "tf2torch-out"
    wall, code, err = _run(cmd + ["convert", str(source), "-o", str(out), "--force", "-q"], timeout, env)
    result: dict[str, Any] = {"ok": code == 0, "wall_s": round(wall, 2), "error": None if code == 0 else err}
    manifest = out / "manifest.json"
    if code == 0 and manifest.exists():
        result["stages_s"] = json.loads(manifest.read_text()).get("timings_s")
    return result


def _raw_chain(source: Path, work: Path, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    onnx_path = work / "raw.onnx"
    t1, code, err = _run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(source),
                          "--output", str(onnx_path), "--opset", "17"], timeout, env)
    result: dict[str, Any] = {"tf2onnx_s": round(t1, 2)}
    if code != 0 or not onnx_path.exists():
        return dict(result, ok=False, wall_s=round(t1, 2), failed_stage="tf2onnx", error=err)
    t2, code, err = _run([sys.executable, "-c", RAW_TORCH_STEP, str(onnx_path)], timeout, env)
    result.update(onnx2torch_export_s=round(t2, 2), wall_s=round(t1 + t2, 2), ok=code == 0)
    if code != 0:
        stage = err.split(":")[0].replace("RAW-FAILED ", "") if err.startswith("RAW-FAILED") else "onnx2torch"
        result.update(failed_stage=stage, error=err.split(": ", 1)[-1] if err.startswith("RAW-FAILED") else err)
    return result


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's details with the median wall time over all repeats."""
    summary = dict(runs[0])
    summary["wall_s"] = round(statistics.median(r["wall_s"] for r in runs), 2)
    summary["wall_s_all"] = [r["wall_s"] for r in runs]
    return summary


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "onnx2torch", "torch", "tf2torch"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'model':<24} {'tf2torch s':>10} {'raw s':>8} {'tf2onnx':>8} {'o2t+exp':>8}  raw chain"
    lines = [head, "-" * len(head)]
    for row in rows:
        ours, raw = row["tf2torch"], row["raw"]
        mark = "ok" if raw["ok"] else f"FAILED at {raw['failed_stage']}: {raw['error'][:70]}"
        o2t = f"{raw['onnx2torch_export_s']:.1f}" if "onnx2torch_export_s" in raw else "-"
        ours_s = f"{ours['wall_s']:.1f}" if ours["ok"] else "FAILED"
        lines.append(f"{row['model']:<24} {ours_s:>10} {raw['wall_s']:>8.1f} {raw['tf2onnx_s']:>8.1f} {o2t:>8}  {mark}")
    failed = sum(not r["raw"]["ok"] for r in rows)
    lines.append(f"raw chain failed on {failed}/{len(rows)} models; tf2torch failed on "
                 f"{sum(not r['tf2torch']['ok'] for r in rows)}/{len(rows)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.convert_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help=f"fixture models (default: all {len(BUILDERS)})")
    parser.add_argument("--repeat", type=int, default=1, help="runs per model and chain; the median is reported")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child process")
    parser.add_argument("--json", type=Path, default=ROOT / ".cache" / "benchmarks" / "convert.json",
                        help="where to write the results (default: %(default)s)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    rows = []
    for name in args.models or BUILDERS:
        print(f"[{name}] building fixture (not timed)...", file=sys.stderr, flush=True)
        source = model_dir(name) / "saved_model"
        ours, raw = [], []
        for _ in range(max(1, args.repeat)):
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
                ours.append(_tf2torch(source, Path(tmp), args.timeout, env))
                raw.append(_raw_chain(source, Path(tmp), args.timeout, env))
        rows.append({"model": name, "tf2torch": _summarise(ours), "raw": _summarise(raw)})
        print(f"[{name}] tf2torch {rows[-1]['tf2torch']['wall_s']}s, raw chain {rows[-1]['raw']['wall_s']}s"
              f"{'' if rows[-1]['raw']['ok'] else ' (raw FAILED)'}", file=sys.stderr, flush=True)
    print(_table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "versions": _versions(), "opset": 17, "repeat": args.repeat, "models": rows}, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
