"""Converted-model latency next to the TensorFlow original: TF SavedModel, ONNX Runtime, model.pt2 eager,
``torch.compile`` and ``model.aoti.pt2``, at batch 1 and 32, 2 threads, as ratios to TF.

Every runtime is measured warm in a long-lived process: first calls (tracing, compilation, allocator
growth) are run and reported apart, then the median of timed calls on the same inputs is kept.
TensorFlow runs in a child process (``--tf-child``; TF and torch never share a process), the torch
runtimes and ONNX Runtime in this one. Inputs are what ``tf2torch parity`` draws by default.

    python -m benchmarks.latency_bench [MODEL ...] [--batches 1 32] [--threads 2] [--converted DIR]
                                       [--seconds S] [--json PATH]

Models are converted with ``--compile`` into ``.cache/benchmarks/latency/<model>`` (reused when
present, or taken from ``--converted DIR/<model>``). Not a timed test: run by hand or ``make bench``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from migrate.core.errors import first_line

#: A CNN, a keras.applications model, an LSTM over embeddings, a transformer encoder.
DEFAULT_MODELS = ("cnn", "app_mobilenetv3small", "rnn_embedding_lstm", "attn_encoder")
RUNTIMES = ("tf", "onnxruntime", "eager", "torch.compile", "aoti")
CACHE = ROOT / ".cache" / "benchmarks" / "latency"


def timed(call: Callable[[], Any], seconds: float, warmup: int = 3) -> dict[str, float]:
    """``first_s`` (the first call, compilation included), then the median over ``seconds`` of warm calls."""
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    for _ in range(warmup - 1):
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 5 or (time.perf_counter() < deadline and len(samples) < 500):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return {"first_s": first, "median_ms": 1e3 * statistics.median(samples), "calls": len(samples)}


def attempt(call: Callable[[], Any], seconds: float) -> dict[str, Any]:
    """``timed``, or ``{"error": ...}`` when the runtime cannot run the model (the table says so)."""
    try:
        return timed(call, seconds)
    except Exception as exc:  # any runtime failure is a result to report, not a crash
        return {"error": f"{type(exc).__name__}: {first_line(exc, 160)}"}


def tf_child(request_path: str) -> int:
    """``--tf-child REQUEST.json``: time the SavedModel signature on each .npz; TensorFlow only."""
    import numpy as np

    request = json.loads(Path(request_path).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(request["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    func = tf.saved_model.load(request["source"]).signatures[request["signature"]]
    results = {}
    for key, path in request["inputs"].items():
        with np.load(path) as data:
            feeds = {k: tf.constant(data[k]) for k in data.files}
        results[key] = timed(lambda feeds=feeds: func(**feeds), request["seconds"])
    Path(request["out"]).write_text(json.dumps(results))
    return 0


def _converted(name: str, base: Path | None) -> tuple[Path, Path]:
    import migrate
    from fixtures.models import model_dir

    source = model_dir(name) / "saved_model"
    out = (base or CACHE) / name
    if not (out / "model.aoti.pt2").is_file():
        print(f"converting {name} with --compile (a minute or more)...", file=sys.stderr, flush=True)
        migrate.convert(source, out, compile=True, force=out.exists())
    return source, out


def _inputs(out: Path, batch: int, seed: int) -> tuple[dict[str, Any], list[Any]]:
    """One batch as parity draws it: ``({tf_name: TF-layout array}, [torch-layout arrays in model order])``."""
    from checks.parity.implied import infer
    from checks.parity.inputs import InputOptions, generate
    from checks.parity.specs import load_manifest

    manifest = load_manifest(out)
    batch_arrays = generate(manifest.inputs, InputOptions(seed=seed, batch_size=batch),
                            infer(manifest.onnx, manifest.inputs))[0]
    tf_feeds = {s.tf_name: batch_arrays[s.name] for s in manifest.inputs}
    return tf_feeds, [s.to_torch_layout(batch_arrays[s.name]) for s in manifest.inputs]


def measure(name: str, batches: list[int], threads: int, seconds: float, base: Path | None) -> dict[str, Any]:
    """All runtimes on one model; returns ``{batch: {runtime: timing}}`` (as strings for JSON)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    source, out = _converted(name, base)
    manifest = json.loads((out / "manifest.json").read_text())
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tf2torch-latency-") as tmp:
        inputs = {b: _inputs(out, b, seed=b) for b in batches}
        request = {"source": str(source), "signature": manifest["source"].get("signature") or "serving_default",
                   "threads": threads, "seconds": seconds, "out": str(Path(tmp, "tf.json")), "inputs": {}}
        for b, (tf_feeds, _) in inputs.items():
            request["inputs"][str(b)] = str(Path(tmp, f"in{b}.npz"))
            np.savez(request["inputs"][str(b)], **tf_feeds)
        Path(tmp, "request.json").write_text(json.dumps(request))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.latency_bench", "--tf-child",
                               str(Path(tmp, "request.json"))], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"TF child failed on {name}:\n{proc.stderr[-2000:]}")
        tf_results = json.loads(Path(tmp, "tf.json").read_text())

    torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle spinners would slow torch
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    eager = torch.export.load(str(out / "model.pt2")).module()
    compiled = torch.compile(eager)
    aoti = torch._inductor.aoti_load_package(str(out / "model.aoti.pt2"))
    for b in batches:
        arrays = inputs[b][1]
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        onnx_names = {i.name for i in session.get_inputs()}  # model.onnx keeps TF's names where model.pt2 renames
        feeds = {s["name"] if s["name"] in onnx_names else s["tf_name"]: a
                 for s, a in zip(manifest["inputs"], arrays)}
        row = {"tf": tf_results[str(b)],
               "onnxruntime": attempt(lambda feeds=feeds: session.run(None, feeds), seconds)}
        with torch.inference_mode():
            row["eager"] = attempt(lambda t=tensors: eager(*t), seconds)
            row["torch.compile"] = attempt(lambda t=tensors: compiled(*t), seconds)
            row["aoti"] = attempt(lambda t=tensors: aoti(*t), seconds)
        results[str(b)] = row
        print(f"{name} batch {b}: " + ", ".join(f"{k} {_cell(v)}" for k, v in row.items()),
              file=sys.stderr, flush=True)
    return results


def _cell(timing: dict[str, Any], tf_ms: float | None = None) -> str:
    if "error" in timing:
        return f"fails ({timing['error'][:60]})"
    ms = timing["median_ms"]
    return f"{ms:.2f} ms" if tf_ms is None else f"{ms / tf_ms:.2f}× ({ms:.2f} ms)"


def table(results: dict[str, Any]) -> str:
    """Markdown: TF's median in ms, every other runtime as a ratio to it (lower is faster)."""
    lines = ["| model | batch | TF (ms) | ONNX Runtime | model.pt2 eager | torch.compile | model.aoti.pt2 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, by_batch in results.items():
        for batch, row in by_batch.items():
            tf_ms = row["tf"]["median_ms"]
            cells = [_cell(row[r], tf_ms) for r in RUNTIMES[1:]]
            lines.append(f"| {name} | {batch} | {tf_ms:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="latency_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per runtime and batch")
    parser.add_argument("--converted", type=Path, help="directory holding <model>/ conversions made with --compile")
    parser.add_argument("--json", type=Path, default=ROOT / ".cache" / "benchmarks" / "latency.json")
    parser.add_argument("--tf-child", metavar="REQUEST", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tf_child:
        return tf_child(args.tf_child)
    load_before = os.getloadavg()[0]
    results = {name: measure(name, args.batches, args.threads, args.seconds, args.converted)
               for name in args.models}
    load = [load_before, os.getloadavg()[0]]
    import torch

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": results, "threads": args.threads, "torch": torch.__version__,
                                     "machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_1min": load},
                                    indent=2))
    print(table(results))
    busy = max(load) > (os.cpu_count() or 1)
    print(f"\n{args.threads} threads; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after "
          f"on {os.cpu_count()} CPUs" + (": above the CPU count, other processes were competing" if busy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
