"""Training step time of a ported ``model.py`` next to Keras: Keras ``train_on_batch`` on TF, the ported module's
train step in eager mode and under ``torch.compile``, batch 32, as ratios to Keras.

One process per runtime, model and thread count, each warm: its first steps (tf.function tracing,
``torch.compile``'s compilation, allocator growth) run first and are reported apart, then the median of
``--steps`` timed steps is kept. A step is the whole update on one fixed batch: forward, loss (sparse
cross-entropy from logits), backward, SGD (lr 0.01) and ``zero_grad``, and reading the loss back as a
float, which ``train_on_batch`` does too. TensorFlow/Keras run only in their child processes
(``--build-child``, ``--keras-child``); the torch children never import TF.

    python -m benchmarks.train_bench [--models mobilenetv2 ...] [--size 224] [--seq 128] [--length 256]
                                     [--batch 32] [--threads 2 0] [--steps 10] [--warmup 3]
                                     [--channels-last] [--json PATH]

Each model is built with random weights (``keras.applications`` ones calibrated like the fixtures), saved
compiled as ``.keras`` and ported with the public ``migrate.port`` into
``.cache/benchmarks/train/<model>-<size>/`` (reused when present). Not a timed test: run by hand.
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

#: The issue-21 set: two ImageNet CNNs, EfficientNetB0, a BERT-base-sized encoder, a BiLSTM text classifier.
MODELS = ("resnet50", "mobilenetv2", "efficientnetb0", "bert", "bilstm")
IMAGE_MODELS = {"resnet50": "ResNet50", "mobilenetv2": "MobileNetV2", "efficientnetb0": "EfficientNetB0"}
#: BERT-base: vocabulary, width, layers, heads, feed-forward width; the BiLSTM: vocabulary, embedding, units.
BERT = {"vocab": 30522, "width": 768, "layers": 12, "heads": 12, "ffn": 3072}
BILSTM = {"vocab": 20000, "embed": 128, "units": 64}
CLASSES = {"image": 1000, "text": 2}
CACHE = ROOT / ".cache" / "benchmarks" / "train"


def timed(step: Callable[[], Any], steps: int, warmup: int) -> dict[str, Any]:
    """``first_s`` (the first step: tracing or compilation included), then the median of ``steps`` warm steps."""
    started = time.perf_counter()
    step()
    first = time.perf_counter() - started
    for _ in range(warmup - 1):
        step()
    samples = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    return {"first_s": first, "median_ms": 1e3 * statistics.median(samples),
            "min_ms": 1e3 * min(samples), "max_ms": 1e3 * max(samples), "steps": steps}


def _length(name: str, request: dict[str, Any]) -> int:
    return request["seq"] if name == "bert" else request["length"]


def build_child(request_path: str) -> int:
    """``--build-child REQUEST.json``: build the Keras model, compile it (SGD, sparse CE from logits), save .keras."""
    request = json.loads(Path(request_path).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from fixtures.models._calibrate import calibrate
    from fixtures.models._common import seed

    seed()
    name, size = request["model"], request["size"]
    if name in IMAGE_MODELS:
        model = getattr(keras.applications, IMAGE_MODELS[name])(
            weights=None, input_shape=(size, size, 3), classes=CLASSES["image"], classifier_activation=None)
        calibrate(model, (size, size, 3))  # BN statistics that match the activations, as the port fixtures do
    elif name == "bert":
        model = _bert(keras, request["seq"])
    else:
        model = _bilstm(keras, request["length"])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(request["save"])
    Path(request["out"]).write_text(json.dumps({"parameters": model.count_params()}))
    return 0


def _bert(keras: Any, seq: int) -> Any:
    """A BERT-base-sized encoder (12 post-norm blocks, width 768, 12 heads, GELU FFN 3072, dropout 0.1) classifying
    its first token. No position or segment embedding: one add each, left out so the model stays plain layers."""
    cfg = BERT
    tokens = keras.Input((seq,), dtype="int32", name="tokens")
    x = keras.layers.LayerNormalization(epsilon=1e-12)(keras.layers.Embedding(cfg["vocab"], cfg["width"])(tokens))
    for _ in range(cfg["layers"]):
        att = keras.layers.MultiHeadAttention(cfg["heads"], cfg["width"] // cfg["heads"], dropout=0.1)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + keras.layers.Dropout(0.1)(att))
        ff = keras.layers.Dense(cfg["width"])(keras.layers.Dense(cfg["ffn"], activation="gelu")(x))
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + keras.layers.Dropout(0.1)(ff))
    return keras.Model(tokens, keras.layers.Dense(CLASSES["text"], name="logits")(x[:, 0]))


def _bilstm(keras: Any, length: int) -> Any:
    """Keras' IMDB example: Embedding -> BiLSTM (sequences) -> BiLSTM -> logits."""
    cfg = BILSTM
    tokens = keras.Input((length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(cfg["vocab"], cfg["embed"])(tokens)
    x = keras.layers.Bidirectional(keras.layers.LSTM(cfg["units"], return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(cfg["units"]))(x)
    return keras.Model(tokens, keras.layers.Dense(CLASSES["text"], name="logits")(x))


def keras_child(request_path: str) -> int:
    """``--keras-child REQUEST.json``: time ``train_on_batch`` on the batch; TensorFlow only."""
    import numpy as np

    request = json.loads(Path(request_path).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(request["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    model = keras.models.load_model(request["source"])
    with np.load(request["batch"]) as data:
        x, y = data["x"], data["y"]
    result = timed(lambda: model.train_on_batch(x, y), request["steps"], request["warmup"])
    result["jit_compile"] = bool(model.jit_compile)
    Path(request["out"]).write_text(json.dumps(result))
    return 0


def torch_child(request_path: str) -> int:
    """``--torch-child REQUEST.json``: time the ported module's train step, eager or compiled; torch only."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    import migrate

    request = json.loads(Path(request_path).read_text())
    torch.set_num_threads(request["threads"])
    manifest = json.loads(Path(request["port"], "manifest.json").read_text())
    spec = manifest["inputs"][0]
    with np.load(request["batch"]) as data:
        x, labels = torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long()
    if spec["layout"] and spec["layout"] != spec["tf_layout"]:
        x = x.permute(0, 3, 1, 2).contiguous()  # Keras NHWC -> the port's NCHW
    module = migrate.load_port(request["port"]).train()
    if request["channels_last"]:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
    if request["compile"]:
        module.compile()  # what train.py --compile does

    def step() -> float:
        loss = F.cross_entropy(module(x), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    result = timed(step, request["steps"], request["warmup"])
    Path(request["out"]).write_text(json.dumps(result))
    return 0


def _child(flag: str, request: dict[str, Any], tmp: str) -> dict[str, Any]:
    """Run ``python -m benchmarks.train_bench FLAG REQUEST.json`` in a fresh process; its JSON or an error."""
    path = Path(tmp, "request.json")
    request = dict(request, out=str(Path(tmp, "result.json")))
    path.write_text(json.dumps(request))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_bench", flag, str(path)], capture_output=True,
                          text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1][:200] if lines else f"exit {proc.returncode}", "stderr": proc.stderr[-3000:]}
    return json.loads(Path(request["out"]).read_text())


def prepare(name: str, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """Build, port (migrate.port) and draw one batch for ``name``: (model.keras, port dir, batch.npz), cached."""
    import numpy as np

    import migrate

    tag = f"{name}-{args.size}" if name in IMAGE_MODELS else f"{name}-{_length(name, vars(args))}"
    base = CACHE / tag
    source, out, batch = base / "model.keras", base / "port", base / f"batch{args.batch}.npz"
    if not source.is_file():
        print(f"building {tag} (Keras, child process)...", file=sys.stderr, flush=True)
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tf2torch-train-") as tmp:
            done = _child("--build-child", {"model": name, "size": args.size, "seq": args.seq, "length": args.length,
                                            "save": str(source)}, tmp)
        if "error" in done:
                raise RuntimeError(f"building {tag} failed: {done['error']}\n{done['stderr']}")
    if not (out / "manifest.json").is_file():
        print(f"porting {tag} with migrate.port...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        migrate.port(source, out, force=out.exists())
        print(f"  ported in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if not batch.is_file():
        rng = np.random.default_rng(0)
        if name in IMAGE_MODELS:
            x = rng.uniform(0.0, 255.0, (args.batch, args.size, args.size, 3)).astype("float32")
            y = rng.integers(0, CLASSES["image"], args.batch)
        else:
            vocab = BERT["vocab"] if name == "bert" else BILSTM["vocab"]
            x = rng.integers(1, vocab, (args.batch, _length(name, vars(args)))).astype("int32")
            y = rng.integers(0, CLASSES["text"], args.batch)
        np.savez(batch, x=x, y=y.astype("int64"))
    return source, out, batch


def runtimes(name: str, channels_last: bool) -> list[str]:
    names = ["keras", "eager", "compile"]
    if channels_last and name in IMAGE_MODELS:
        names += ["eager_cl", "compile_cl"]
    return names


def measure(name: str, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every runtime on one model at one thread count, each in its own fresh process."""
    source, out, batch = prepare(name, args)
    row: dict[str, Any] = {}
    common = {"batch": str(batch), "threads": threads, "steps": args.steps, "warmup": args.warmup}
    for runtime in runtimes(name, args.channels_last):
        with tempfile.TemporaryDirectory(prefix="tf2torch-train-") as tmp:
            if runtime == "keras":
                row[runtime] = _child("--keras-child", dict(common, source=str(source)), tmp)
            else:
                row[runtime] = _child("--torch-child", dict(common, port=str(out), compile="compile" in runtime,
                                                            channels_last=runtime.endswith("_cl")), tmp)
        print(f"{name} threads {threads} {runtime}: {_cell(row[runtime])}", file=sys.stderr, flush=True)
    return row


def _cell(timing: dict[str, Any], keras_ms: float | None = None) -> str:
    if "error" in timing:
        return f"fails ({timing['error'][:60]})"
    ms = timing["median_ms"]
    return f"{ms:.0f} ms" if keras_ms is None else f"{ms / keras_ms:.2f}× ({ms:.0f} ms)"


HEADERS = {"eager": "eager", "compile": "torch.compile", "eager_cl": "eager, channels_last",
           "compile_cl": "torch.compile, channels_last"}


def table(results: dict[str, Any]) -> str:
    """Markdown: Keras' median step in ms, every torch runtime as a ratio to it (lower is faster), compile time."""
    columns = [r for r in HEADERS if any(r in row for rows in results.values() for row in rows.values())]
    lines = ["| model | threads | Keras `train_on_batch` (ms) | " + " | ".join(HEADERS[c] for c in columns)
             + " | compile (s) |", "|---|---:|---:|" + "---:|" * (len(columns) + 1)]
    for name, by_threads in results.items():
        for threads, row in by_threads.items():
            keras = row["keras"]
            keras_ms = keras.get("median_ms")
            cells = [_cell(row[c], keras_ms) if c in row else "" for c in columns]
            compiled = row.get("compile", {})
            first = f"{compiled['first_s']:.0f}" if "first_s" in compiled else ""
            lines.append(f"| {name} | {threads} | {_cell(keras)} | " + " | ".join(cells) + f" | {first} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--seq", type=int, default=128, help="the BERT-sized encoder's sequence length")
    parser.add_argument("--length", type=int, default=256, help="the BiLSTM's sequence length")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 0], help="thread counts; 0 = all cores")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per runtime (the median is kept)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one is reported)")
    parser.add_argument("--channels-last", action="store_true", help="also time the image models channels_last")
    parser.add_argument("--json", type=Path, default=ROOT / ".cache" / "benchmarks" / "train.json")
    parser.add_argument("--build-child", metavar="REQUEST", help=argparse.SUPPRESS)
    parser.add_argument("--keras-child", metavar="REQUEST", help=argparse.SUPPRESS)
    parser.add_argument("--torch-child", metavar="REQUEST", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for flag, child in (("build_child", build_child), ("keras_child", keras_child), ("torch_child", torch_child)):
        if getattr(args, flag):
            return child(getattr(args, flag))
    threads = list(dict.fromkeys(t or os.cpu_count() or 1 for t in args.threads))
    load_before = os.getloadavg()[0]
    results = {name: {str(t): measure(name, t, args) for t in threads} for name in args.models}
    load = [load_before, os.getloadavg()[0]]
    import torch

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": results, "args": {k: str(v) for k, v in vars(args).items()},
                                     "torch": torch.__version__, "machine": platform.machine(),
                                     "cpus": os.cpu_count(), "loadavg_1min": load}, indent=2))
    print(table(results))
    busy = max(load) > (os.cpu_count() or 1)
    print(f"\nbatch {args.batch}; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after on "
          f"{os.cpu_count()} CPUs" + (": above the CPU count, other processes were competing" if busy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
