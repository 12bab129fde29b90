"""``transfer(source, "FILE.py:CLASS", out)``: load a Keras model's weights into the user's own torch module.

The Keras side is ``tf2torch port``'s (child process, in a scratch directory): its module is a torch twin of
every Keras layer whose weight transforms (kernel permutes, NHWC flatten order, gate reordering, GRU biases,
MultiHeadAttention reshapes) are already known and checked against Keras. Both modules run on the same input
with forward hooks; each reference unit (one Keras layer's submodule) is paired with a unit of the user's
module by call order and kind/shape (``migrate.transferring.rules``), never by name. Where several pairings or
transforms fit, the numbers decide: the user's module is loaded and run, and the first unit whose output
differs from the reference's tries its alternatives. What stays undecided or unmatched is reported.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from migrate.core.errors import InputError
from migrate.porting import transforms
from migrate.transferring import mapfile
from migrate.transferring.report import Pair, TransferReport
from migrate.transferring.rules import Put, candidates
from migrate.transferring.trace import Unit, run_hooked, units

#: A unit matches when its output is within this fraction of the reference's largest |value| (a wrong mapping
#: is off by O(1); float32 noise and small semantic slips are parity's business).
MATCH = 1e-3
#: Upper bound on module runs spent choosing among candidates.
BUDGET = 60


@dataclass
class TransferResult:
    """The user's module with the Keras weights loaded, the report, and the map that loads them."""

    module: Any
    report: TransferReport
    weights_map: dict[str, Any]
    out: Path | None = None


def build_module(target: str, init: str | None = None) -> Any:
    """The user's module: ``FILE.py:CLASS`` called with no arguments, ``FILE.py:factory`` called, or
    ``init='CLASS(k=v, ...)'`` (literal arguments only). The file is imported because the user named it."""
    file, sep, name = str(target).rpartition(":")
    if not sep or not file.endswith(".py") or not Path(file).is_file():
        raise InputError(f"expected FILE.py:CLASS (your module), got {target!r}")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if init:
        bad = InputError(f"--init {init!r}: expected CLASS(key=value, ...) with literal values")
        try:
            call = ast.parse(init, mode="eval").body
        except SyntaxError:
            raise bad from None
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise bad
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except ValueError:
            raise bad from None
        if call.func.id != name:
            raise InputError(f"--init names {call.func.id}, but the module is {target!r}")
    spec = importlib.util.spec_from_file_location(f"tf2torch_user_{uuid.uuid4().hex}", file)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(file).resolve().parent))  # its own sibling imports
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise InputError(f"{file} defines no class or function {name!r}")
    try:
        built = factory(*args, **kwargs)
    except TypeError as exc:
        raise InputError(f"{target}: cannot build it ({exc}); pass --init '{name}(key=value, ...)'") from None
    import torch

    if not isinstance(built, torch.nn.Module):
        raise InputError(f"{target} gave a {type(built).__name__}, not a torch.nn.Module")
    return built


def transfer(source: str | Path, target: str, out: str | Path | None = None, *, init: str | None = None,
             force: bool = False, quiet: bool = True, debug: bool = False) -> TransferResult:
    """Find the mapping from SOURCE's Keras weights to the module ``target`` (FILE.py:CLASS) and load them.

    With ``out``: OUT/weights.safetensors, OUT/weights_map.json, OUT/report.json, OUT/manifest.json
    (written atomically). Raises ConversionError when some weight finds no place (the report is attached).
    """
    import torch

    from migrate.porting.api import port

    user = build_module(target, init)
    with tempfile.TemporaryDirectory(prefix="tf2torch-transfer-") as tmp:
        ported = port(source, Path(tmp, "port"), quiet=True, debug=debug)
        ref = ported.module.eval()
        manifest = ported.manifest
    sources = {w["torch"]: (w["keras"], transforms.parse(w["transform"])) for w in manifest["weights"]}
    ref_state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    zero = {k for k in ref_state if k not in sources and not k.endswith("num_batches_tracked")}
    feeds = _inputs(manifest["inputs"], ref)
    order, outs, ins, ref_outputs = run_hooked(ref, [torch.from_numpy(a) for a in feeds["torch"]])
    ref_units, _ = units(ref, order, outs, ins)
    items = _items(ref, ref_units)
    keep_layout, user_trace = _trace_user(user, feeds)
    user_units, unused = user_trace
    names = {u.path: _keras_layer(item, sources) for item in items for u in item}
    matcher = _Matcher(user, items, user_units, ref_state, zero, feeds["keras" if keep_layout else "torch"],
                       ref_outputs, names)
    matcher.solve()
    report = matcher.report(sources, unused, target, str(source))
    table, zeros = _map(matcher, sources)
    weights_map = mapfile.to_json(table, zeros, keep_layout)
    state = matcher.state(matcher.current)
    user.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    result = TransferResult(module=user.eval(), report=report, weights_map=weights_map)
    if out is not None:
        result.out = _write(Path(out), Path(source), user, weights_map, report, force)
    if not quiet:
        sys.stdout.write(report.to_text())
    return result


def _inputs(specs: list[dict[str, Any]], ref: Any) -> dict[str, list[np.ndarray]]:
    """Seeded inputs in both layouts: floats standard normal, integer ids below every Embedding's rows."""
    import torch

    rng = np.random.default_rng(0)
    rows = [m.num_embeddings for m in ref.modules() if isinstance(m, torch.nn.Embedding)]
    keras, native = [], []
    for spec in specs:
        shape = [3 if i == 0 else (7 if d is None else d) for i, d in enumerate(spec["tf_shape"])]
        if spec["dtype"].startswith("int"):
            array = rng.integers(0, min(rows, default=10), shape).astype(spec["dtype"])
        else:
            array = rng.standard_normal(shape).astype(spec["dtype"])
        keras.append(array)
        moved = spec["layout"] and spec["layout"] != spec["tf_layout"]
        native.append(np.ascontiguousarray(np.moveaxis(array, -1, 1)) if moved else array)
    return {"keras": keras, "torch": native}


def _items(ref: Any, ref_units: list[Unit]) -> list[list[Unit]]:
    """Reference items in call order: one unit each, but a Keras MultiHeadAttention's four projections together."""
    kinds = {path: type(m).__name__ for path, m in ref.named_modules()}
    items: list[list[Unit]] = []
    for unit in ref_units:
        parent = unit.path.rpartition(".")[0]
        if kinds.get(parent) == "KerasMultiHeadAttention" and items and items[-1][0].path.rpartition(".")[0] == parent:
            items[-1].append(unit)
        else:
            items.append([unit])
    return items


def _trace_user(user: Any, feeds: dict[str, list[np.ndarray]]) -> tuple[bool, tuple[list[Unit], list[str]]]:
    """Run the user's module on Keras-layout inputs (the permute inside, as Keras takes them), else channels-first."""
    import torch

    layouts = [True, False] if any(a.shape != b.shape for a, b in zip(feeds["keras"], feeds["torch"])) else [False]
    errors = []
    for keep in layouts:
        arrays = feeds["keras" if keep else "torch"]
        try:
            order, outs, ins, _ = run_hooked(user, [torch.from_numpy(a) for a in arrays])
        except Exception as exc:  # the user's forward rejects this layout: try the other one
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        return keep, units(user, order, outs, ins)
    shapes = " or ".join(str([list(a.shape) for a in feeds["keras" if k else "torch"]]) for k in layouts)
    raise InputError(f"the module cannot run on the Keras model's inputs {shapes}: {errors[-1]}")


def compare(actual: np.ndarray | None, expected: np.ndarray | None) -> float:
    """Largest |difference| over the arrangements a torch module may use (channels-first, sequence-first)."""
    if actual is None or expected is None:
        return float("inf")
    best = float("inf")
    options = [actual]
    if actual.ndim >= 3:
        options += [np.moveaxis(actual, 1, -1), np.moveaxis(actual, -1, 1), np.swapaxes(actual, 0, 1)]
    elif actual.ndim == 2:
        options.append(np.swapaxes(actual, 0, 1))
    for a in options:
        if a.shape == expected.shape:
            best = min(best, float(np.abs(a.astype(np.float64) - expected).max(initial=0.0)))
    return best


def _tolerance(expected: np.ndarray | None) -> float:
    return MATCH * max(1.0, float(np.abs(expected).max(initial=0.0))) if expected is not None else 0.0


class _Matcher:
    """Pairs reference items with user units, then lets the numbers choose among the candidates."""

    def __init__(self, user: Any, items: list[list[Unit]], user_units: list[Unit], ref_state: dict[str, np.ndarray],
                 zero: set[str], args: list[np.ndarray], ref_outputs: list[np.ndarray], names: dict[str, str]) -> None:
        self.user, self.items, self.pool, self.names = user, items, user_units, names
        self.ref_state, self.zero, self.args, self.ref_outputs = ref_state, zero, args, ref_outputs
        self.base = {k: v.detach().numpy().copy() for k, v in user.state_dict().items()}
        self.items = []
        for item in items:  # a Keras MHA that no user unit takes whole: its projections one by one
            packed = len(item) > 1 and self._candidates(item)
            self.items += [item] if packed or len(item) == 1 else [[u] for u in item]
        self.cands = [self._candidates(item) for item in self.items]
        self.current: list[tuple[Unit, str, list[Put]] | None] = []
        self.decided: list[str] = []
        self.ambiguous: list[str] = []
        self.runs = 0
        taken: set[str] = set()
        for options in self.cands:  # greedy: the first compatible unit in the user's call order
            choice = next((c for c in options if c[0].path not in taken), None)
            if choice is not None:
                taken.add(choice[0].path)
            self.current.append(choice)
        self.last: dict[str, Any] = {}

    def _candidates(self, item: list[Unit]) -> list[tuple[Unit, str, list[Put]]]:
        found = []
        for unit in self.pool:
            found += [(unit, name, variant) for name, variant in candidates(item, unit, self.zero)]
        return found

    def state(self, assignment: list[Any]) -> dict[str, np.ndarray]:
        state = dict(self.base)
        packs: dict[str, dict[int, np.ndarray]] = {}
        for choice in assignment:
            if choice is None:
                continue
            for put in choice[2]:
                value = np.zeros(self.base[put.user].shape, np.float32) if put.ref is None else \
                    transforms.apply(put.steps, self.ref_state[put.ref])
                if put.pack is not None:
                    packs.setdefault(put.user, {})[put.pack[0]] = value
                else:
                    state[put.user] = value
        for key, blocks in packs.items():
            state[key] = np.concatenate([blocks[i] for i in sorted(blocks)], axis=0)
        return state

    def evaluate(self, assignment: list[Any]) -> tuple[int, dict[str, Any]]:
        """(score, details): the index of the first item whose output differs, len(items) when only the model's
        outputs differ, len(items) + 1 when everything matches."""
        import torch

        self.runs += 1
        state = self.state(assignment)
        self.user.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                                  strict=False)
        _, outs, _, results = run_hooked(self.user, [torch.from_numpy(a) for a in self.args])
        errors = {}
        first = None
        for i, (item, choice) in enumerate(zip(self.items, assignment)):
            if choice is None:
                continue
            expected = item[-1].output
            err = compare(outs.get(choice[0].path), expected)
            errors[i] = (err, _tolerance(expected))
            if first is None and not err <= _tolerance(expected):
                first = i
        out_err = [compare(a, e) for a, e in zip(results, self.ref_outputs)]
        outputs_ok = all(e <= _tolerance(x) for e, x in zip(out_err, self.ref_outputs))
        score = first if first is not None else (len(self.items) + 1 if outputs_ok else len(self.items))
        return score, {"errors": errors, "outputs": out_err, "outputs_ok": outputs_ok}

    def _neighbours(self, i: int) -> list[tuple[list[Any], str]]:
        """Other variants of item i, its unit swapped with another item's, or an unused compatible unit."""
        out = []
        cur = self.current[i]
        used = {c[0].path: j for j, c in enumerate(self.current) if c is not None}
        for option in self.cands[i]:
            if cur is not None and option[0].path == cur[0].path and option[2] != cur[2]:
                out.append((self._with(i, option), f"transform of {option[0].path or '(model)'}"))
        for option in self.cands[i]:
            j = used.get(option[0].path)
            if cur is not None and option[0].path == cur[0].path:
                continue
            if j is None:
                out.append((self._with(i, option), f"{option[0].path} instead of {cur[0].path if cur else 'none'}"))
            elif cur is not None:
                back = next((c for c in self.cands[j] if c[0].path == cur[0].path), None)
                if back is not None:
                    swapped = self._with(i, option)
                    swapped[j] = back
                    out.append((swapped, f"swap {cur[0].path} <-> {option[0].path}"))
        return out

    def _with(self, i: int, option: Any) -> list[Any]:
        copy = list(self.current)
        copy[i] = option
        return copy

    def solve(self) -> None:
        score, self.last = self.evaluate(self.current)
        n = len(self.items)
        while score <= n and self.runs < BUDGET:
            # the first differing item, then items before it that use order could not place (same input)
            focus = ([score] if score < n else []) + [i for i in range(min(score, n)) if self._same_input_rivals(i)]
            improved = False
            for i in focus:
                for option, why in self._neighbours(i):
                    new, details = self.evaluate(option)
                    if new > score:
                        self.decided.append(f"{self._layer(i)}: {why} (decided by the numbers)")
                        self.current, score, self.last, improved = option, new, details, True
                        break
                    if self.runs >= BUDGET:
                        break
                if improved:
                    break
            if not improved:
                break
        if score == n + 1:
            self._report_ties()
        self.score = score
        self.evaluate(self.current)  # leave the user's module loaded with the chosen state

    def _same_input_rivals(self, i: int) -> list[int]:
        """Other items fed the very same tensor with units that fit both ways: use order cannot tell them apart."""
        mine = self.items[i][0].input
        if mine is None or self.current[i] is None:
            return []
        rivals = []
        for j, item in enumerate(self.items):
            other = item[0].input
            if j != i and self.current[j] is not None and other is not None and other.shape == mine.shape \
                    and np.array_equal(other, mine) and any(c[0].path == self.current[j][0].path for c in self.cands[i]):
                rivals.append(j)
        return rivals

    def _report_ties(self) -> None:
        """Pairs that use order cannot decide: swap them; if the swap matches Keras too, say so (kept use order)."""
        n = len(self.items)
        seen = set()
        for i in range(n):
            for j in self._same_input_rivals(i):
                if (j, i) in seen or self.runs >= BUDGET:
                    continue
                seen.add((i, j))
                option = next((s for s, why in self._neighbours(i) if s[j] is not None and s[i] is not None
                               and s[i][0].path == self.current[j][0].path), None)
                if option is None:
                    continue
                if self.evaluate(option)[0] == n + 1:
                    self.ambiguous.append(f"{self._layer(i)} and {self._layer(j)}: {self.current[i][0].path} and "
                                          f"{self.current[j][0].path} fit either way and both compute Keras' outputs; "
                                          "kept the order of use")
                else:
                    self.decided.append(f"{self._layer(i)} / {self._layer(j)}: {self.current[i][0].path} and "
                                        f"{self.current[j][0].path} take the same input; the swap differs from Keras "
                                        "(decided by the numbers)")

    def _layer(self, i: int) -> str:
        return self.names.get(self.items[i][0].path, self.items[i][0].path)

    def report(self, sources: dict[str, tuple[str, Any]], unused: list[str], target: str, source: str) -> TransferReport:
        report = TransferReport(source=source, module=target)
        assigned = {put.user for c in self.current if c for put in c[2]}
        for i, (item, choice) in enumerate(zip(self.items, self.current)):
            layer = _keras_layer(item, sources)
            keras = [sources[u.key(n)][0] for u in item for n in u.tensors if u.key(n) in sources]
            if choice is None:
                for name in dict.fromkeys(keras):
                    report.keras_left.append({"keras": name, "layer": layer, "nearest": _nearest_user(item, self)})
                continue
            err, tol = self.last["errors"].get(i, (float("inf"), 0.0))
            pair = Pair(layer=layer, keras_kind=item[0].kind if len(item) == 1 else "KerasMultiHeadAttention",
                        torch=choice[0].path, torch_kind=choice[0].kind, rule=choice[1],
                        weights=[_entry(put, sources) for put in choice[2]], max_abs_err=err, atol=tol)
            report.pairs.append(pair)
            if not err <= tol:
                alt = next((c[0].path for c in self.cands[i] if c[0].path != choice[0].path), None)
                report.mismatches.append({"layer": layer, "torch": choice[0].path, "max_abs_err": err, "atol": tol,
                                          "nearest": alt})
        for unit in self.pool:
            for name, shape in unit.tensors.items():
                if unit.key(name) not in assigned:
                    report.torch_left.append({"torch": unit.key(name), "shape": list(shape),
                                              "nearest": _nearest_keras(shape, self, sources)})
        report.torch_left += [{"torch": k, "shape": list(self.base[k].shape), "nearest": None,
                               "note": "forward never uses it"} for k in unused]
        report.decided, report.ambiguous = list(self.decided), list(self.ambiguous)
        report.outputs_max_abs_err = [float(e) for e in self.last["outputs"]]
        report.outputs_match = bool(self.last["outputs_ok"])
        return report


def _keras_layer(item: list[Unit], sources: dict[str, tuple[str, Any]]) -> str:
    for unit in item:
        for name in unit.tensors:
            if unit.key(name) in sources:
                return sources[unit.key(name)][0].split("/")[0]
    return item[0].path


def _entry(put: Put, sources: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    if put.ref is None:
        return {"keras": None, "torch": put.user, "transform": "zeros"}
    keras, steps = sources[put.ref]
    return {"keras": keras, "torch": put.user, "transform": transforms.describe(_compose(steps, put.steps)),
            **({"pack": list(put.pack)} if put.pack else {})}


def _compose(first: tuple, then: tuple) -> tuple:
    """``first`` then ``then``, with a transpose that undoes the previous one dropped."""
    steps = list(first)
    for step in then:
        if steps and step == ("permute", (1, 0)) and steps[-1] == step:
            steps.pop()
        else:
            steps.append(step)
    return tuple(steps)


def _nearest_user(item: list[Unit], matcher: _Matcher) -> str | None:
    """The user unit closest in size to an unmatched reference item (what it might have been meant for)."""
    size = sum(int(np.prod(s)) for u in item for s in u.tensors.values())
    taken = {c[0].path for c in matcher.current if c}
    free = [u for u in matcher.pool if u.path not in taken] or matcher.pool
    best = min(free, key=lambda u: abs(sum(int(np.prod(s)) for s in u.tensors.values()) - size), default=None)
    return None if best is None else f"{best.path} ({best.kind}: " + ", ".join(
        f"{n} {list(s)}" for n, s in best.tensors.items()) + ")"


def _nearest_keras(shape: tuple[int, ...], matcher: _Matcher, sources: dict[str, tuple[str, Any]]) -> str | None:
    size = int(np.prod(shape))
    best = min(sources.items(), key=lambda kv: abs(int(np.prod(matcher.ref_state[kv[0]].shape)) - size),
               default=None)
    return None if best is None else f"{best[1][0]} {list(matcher.ref_state[best[0]].shape)} (torch layout)"


def _map(matcher: _Matcher, sources: dict[str, tuple[str, Any]]) -> tuple[dict[str, list[dict]], list[str]]:
    table: dict[str, list[dict[str, Any]]] = {}
    zeros = []
    for choice in matcher.current:
        if choice is None:
            continue
        for put in choice[2]:
            entry = _entry(put, sources)
            if entry["keras"] is None:
                zeros.append(put.user)
                continue
            table.setdefault(entry.pop("keras"), []).append(entry)
    return table, zeros


def _write(out: Path, source: Path, module: Any, weights_map: dict[str, Any], report: TransferReport,
           force: bool) -> Path:
    from safetensors.torch import save_file

    from migrate.core.artifacts import MANIFEST, staged_output, write_json
    from migrate.core.requirements import installed_version

    with staged_output(out, force, source=source) as stage:
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(stage / "weights.safetensors"))
        write_json(stage / "weights_map.json", weights_map)
        write_json(stage / "report.json", report.to_dict())
        write_json(stage / MANIFEST, {"format": 1, "kind": "transfer", "source": {"path": str(source)},
                                      "module": report.module, "passed": report.passed,
                                      "versions": {"tf2torch": installed_version("tf2torch")}})
    return out


__all__ = ["TransferResult", "build_module", "transfer"]
