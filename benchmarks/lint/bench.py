"""Whole-process timing of ``tf2torch lint`` against TorchFix on the same corpus.

Not a test: run it by hand and copy the table into benchmarks/lint/README.md.

    python benchmarks/lint/bench.py --torchfix /tmp/torchfix-venv/bin/torchfix

TorchFix must live in its own throwaway virtual environment (it pins libcst<1.6):

    python -m venv /tmp/torchfix-venv && /tmp/torchfix-venv/bin/pip install torchfix

The default corpus is the Python sources of the installed torchvision plus torch.nn and
torch.optim (found without importing torch). Both tools get the same paths and all
CPU cores; tf2torch is timed cold (empty cache), warm (cache filled) and with --no-cache.
Wall time is noisy on a shared machine, so CPU time (user + sys of the child) is shown too.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def default_corpus() -> list[Path]:
    paths = []
    for package, parts in (("torchvision", ()), ("torch", ("nn",)), ("torch", ("optim",))):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"{package} is not installed; pass --corpus PATH ...")
        paths.append(Path(next(iter(spec.submodule_search_locations))).joinpath(*parts))
    return paths


def corpus_size(paths: list[Path]) -> tuple[int, int]:
    files = [f for p in paths for f in p.rglob("*.py") if "__pycache__" not in f.parts]
    return len(files), sum(f.read_bytes().count(b"\n") for f in files)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + sys of the child and its workers), exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def measure(label: str, command: list[str], env: dict[str, str], repeat: int, prepare=None) -> dict:
    walls, cpus, codes = [], [], set()
    for _ in range(repeat):
        if prepare:
            prepare()
        wall, cpu, code = timed(command, env)
        walls.append(wall)
        cpus.append(cpu)
        codes.add(code)
    row = {"tool": label, "wall_s": statistics.median(walls), "wall_min_s": min(walls),
           "cpu_s": statistics.median(cpus), "exit_codes": sorted(codes)}
    print(f"  {label:<28} wall {row['wall_s']:7.2f}s (min {row['wall_min_s']:.2f})  cpu {row['cpu_s']:7.2f}s",
          file=sys.stderr)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", nargs="+", type=Path, help="folders to lint (default: torchvision, torch.nn, "
                                                               "torch.optim sources)")
    parser.add_argument("--torchfix", default=shutil.which("torchfix"), help="path of the torchfix executable")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    corpus = args.corpus or default_corpus()
    files, lines = corpus_size(corpus)
    print(f"corpus: {files} files, {lines} lines, {os.cpu_count()} CPUs", file=sys.stderr)
    cache_dir = Path(tempfile.mkdtemp(prefix="tf2torch-bench-cache-"))
    env = {**os.environ, "TF2TORCH_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    lint = [sys.executable, "-m", "checks.lint", "--exit-zero", *map(str, corpus)]
    rows = [
        measure("tf2torch lint (cold cache)", lint, env, args.repeat,
                prepare=lambda: shutil.rmtree(cache_dir, ignore_errors=True)),
        measure("tf2torch lint (warm cache)", lint, env, args.repeat),
        measure("tf2torch lint --no-cache", [*lint, "--no-cache"], env, args.repeat),
    ]
    if args.torchfix:
        rows.append(measure("torchfix", [args.torchfix, *map(str, corpus)], env, args.repeat))
        base = rows[-1]["wall_s"]
        for row in rows:
            row["torchfix_over_this"] = round(base / row["wall_s"], 1)
    shutil.rmtree(cache_dir, ignore_errors=True)

    print(f"\nCorpus: {files} files, {lines:,} lines; {os.cpu_count()} CPUs; median of {args.repeat} runs.\n")
    print("| tool | wall (s) | CPU (s) | TorchFix wall / this |")
    print("|---|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['torchfix_over_this']}x" if "torchfix_over_this" in row else "-"
        print(f"| {row['tool']} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"files": files, "lines": lines, "cpus": os.cpu_count(), "rows": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
