"""Derive the operator allow-list (``migrate/conversion/pt2_ops.py``) from converted programs.

    python -m tests.derive_pt2_ops OUT [OUT ...]     # read converted outputs
    python -m tests.derive_pt2_ops --zoo DIR         # convert every SavedModel fixture into DIR first

Prints the sorted union of the ``torch.ops`` targets, the shape-arithmetic targets and the string
arguments (operator, argument, value) the programs use, and which of them ``migrate.conversion.pt2_ops`` lacks.
Reads the program JSON with the standard library only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any


def program_targets(pt2: Path) -> tuple[set[str], set[tuple[str, str, str]]]:
    """(node targets, {(target, argument name, string value)}) of the program in ``pt2``."""
    with zipfile.ZipFile(pt2) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/models/model.json"))
        program = json.loads(archive.read(name))
    targets, strings = set(), set()
    graphs = [program["graph_module"]["graph"]]
    while graphs:  # higher-order operators carry their bodies as graph arguments
        for node in graphs.pop()["nodes"]:
            targets.add(node["target"])
            for item in node["inputs"]:
                if "as_string" in item["arg"]:
                    strings.add((node["target"], item["name"], item["arg"]["as_string"]))
                if "as_graph" in item["arg"]:
                    graphs.append(item["arg"]["as_graph"]["graph"])
    return targets, strings


def _convert_zoo(folder: Path) -> list[Path]:
    from fixtures.models import SAVED_MODELS, model_dir

    outs = []
    for name in SAVED_MODELS:
        out = folder / name
        if not (out / "model.pt2").is_file():
            subprocess.run([sys.executable, "-m", "migrate.cli", "convert", str(model_dir(name) / "saved_model"), "-o",
                            str(out), "-q", "--force"], check=False)
        if (out / "model.pt2").is_file():
            outs.append(out)
    return outs


def main(argv: list[str]) -> int:
    from migrate.conversion import pt2_ops

    outs = _convert_zoo(Path(argv[1])) if argv[:1] == ["--zoo"] else [Path(a) for a in argv]
    targets: set[str] = set()
    strings: set[tuple[str, str, str]] = set()
    for out in outs:
        found, used = program_targets(out / "model.pt2" if out.is_dir() else out)
        targets |= found
        strings |= used
    operators = sorted(t for t in targets if t.startswith("torch.ops."))
    report: dict[str, Any] = {
        "programs": len(outs), "operators": operators,
        "symbolic": sorted(targets - set(operators)), "strings": sorted(strings),
        "missing": sorted(t for t in targets if t not in pt2_ops.OPERATORS and t not in pt2_ops.SYMBOLIC),
    }
    print(json.dumps(report, indent=1))
    return 1 if report["missing"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
