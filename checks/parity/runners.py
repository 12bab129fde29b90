"""Run the three witnesses on the same inputs: TensorFlow (child process), torch (model.pt2, or a port's
model.py), ONNX Runtime.

Inputs arrive in the TF layout; torch and ONNX Runtime get them transposed to the torch layout.
Every runner returns one ``{output name: numpy array}`` per batch, TF's in the TF layout.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from checks.parity.specs import Manifest
from migrate.core.errors import ConversionError, InputError, first_line


def run_tf(source: str | Path, manifest: Manifest, batches: list[dict[str, Any]], *, signature: str | None = None,
           custom_objects: Any = None, debug: bool = False) -> list[dict[str, Any]]:
    """Reference outputs from the TensorFlow worker's ``predict`` (TensorFlow never enters this process).

    A Keras file runs as the Keras model itself with ``training=False`` (``custom_objects`` as for
    ``migrate.convert``), independent of the export the converted model was made from.
    """
    import numpy as np

    from migrate.tf.client import run_worker
    from migrate.tf.custom_objects import specs

    with tempfile.TemporaryDirectory(prefix="tf2torch-parity-") as tmp:
        ins, outs = [], []
        for i, batch in enumerate(batches):
            ins.append(str(Path(tmp, f"in{i}.npz")))
            outs.append(str(Path(tmp, f"out{i}.npz")))
            np.savez(ins[-1], **{spec.tf_name: batch[spec.name] for spec in manifest.inputs})
        run_worker("predict", {"source": str(source), "signature": signature or manifest.signature,
                               "inputs": ins, "outputs": outs, "custom_objects": specs(custom_objects)},
                   debug=debug)
        results = []
        for path in outs:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            keys = [_output_key(manifest, i, s.tf_name, arrays) for i, s in enumerate(manifest.outputs)]
            missing = [k for k in keys if k not in arrays]
            if missing:
                raise InputError(f"TensorFlow's signature has no output(s) {', '.join(missing)} (it has: "
                                 f"{', '.join(sorted(arrays))}); SOURCE and CONVERTED do not match, re-run convert")
            results.append({s.name: arrays[k] for s, k in zip(manifest.outputs, keys)})
    return results


def _output_key(manifest: Manifest, index: int, tf_name: str, arrays: dict[str, Any]) -> str:
    """A port's manifest names Keras' outputs by layer; the Keras call returns them in that order as ``output_i``."""
    if manifest.kind == "port" and tf_name not in arrays and len(arrays) == len(manifest.outputs):
        return f"output_{index}"
    return tf_name


def _torch_inputs(manifest: Manifest, batch: dict[str, Any]) -> list[Any]:
    import torch

    return [torch.from_numpy(spec.to_torch_layout(batch[spec.name]).copy()) for spec in manifest.inputs]


def load_program(manifest: Manifest) -> Any:
    """``model.pt2`` as an ExportedProgram, refused before loading if it would run code (``migrate.conversion.pt2_check``)."""
    from migrate.conversion.pt2_check import load_pt2

    if not manifest.pt2.is_file():
        raise InputError(f"{manifest.directory}: no model.pt2; pass a directory written by 'tf2torch convert'")
    return load_pt2(manifest.pt2)


def name_outputs(manifest: Manifest, result: Any) -> dict[str, Any]:
    """Map torch's return value (tensor, sequence or dict) onto the manifest's output names."""
    if isinstance(result, dict):
        return {s.name: result[s.name if s.name in result else s.tf_name] for s in manifest.outputs}
    values = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(values) != len(manifest.outputs):
        raise InputError(f"{manifest.pt2}: returns {len(values)} output(s) but the manifest lists "
                         f"{len(manifest.outputs)}; re-run 'tf2torch convert'")
    return {s.name: v for s, v in zip(manifest.outputs, values)}


def torch_module(manifest: Manifest, trust_model_py: bool = False) -> tuple[Any, Path]:
    """The module under test and the file it comes from: a port's model.py (eval mode) when the caller asked for
    a port load (``trust_model_py``), else model.pt2. The manifest's "kind" never decides to import code."""
    if trust_model_py:
        import migrate

        return migrate.load_port(manifest.directory), manifest.directory / "model.py"
    refuse_untrusted_port(manifest)
    return load_program(manifest).module(), manifest.pt2


def refuse_untrusted_port(manifest: Manifest) -> None:
    """A port output is code: without an explicit port load its model.py is never imported."""
    if manifest.kind == "port":
        raise InputError(f"{manifest.directory}: its manifest says it is a 'tf2torch port' output, whose model.py is "
                         "Python code; parity imports it only when asked: pass --trust-model-py (or port:DIR), "
                         "and only for a directory you or your CI wrote")


def run_torch(manifest: Manifest, batches: list[dict[str, Any]], trust_model_py: bool = False) -> list[dict[str, Any]]:
    """Outputs of ``model.pt2`` (first loaded and run in a confined child, ``migrate.conversion.pt2_sandbox``) or of a
    port's module in eval mode (``trust_model_py``), in the torch layout."""
    if not trust_model_py:
        from migrate.conversion.pt2_sandbox import run_program

        refuse_untrusted_port(manifest)
        if not manifest.pt2.is_file():
            raise InputError(f"{manifest.directory}: no model.pt2; pass a directory written by 'tf2torch convert'")
        inputs = [[spec.to_torch_layout(batch[spec.name]) for spec in manifest.inputs] for batch in batches]
        return [name_outputs(manifest, out) for out in run_program(manifest.pt2, inputs)]
    import torch

    module, label = torch_module(manifest, trust_model_py)
    results = []
    with torch.no_grad():
        for batch in batches:
            try:
                out = module(*_torch_inputs(manifest, batch))
            except Exception as exc:
                raise ConversionError(f"{label} failed on inputs TensorFlow accepted ({type(exc).__name__}: "
                                 f"{first_line(exc, 300)})") from exc
            results.append({k: v.detach().cpu().numpy() for k, v in name_outputs(manifest, out).items()})
    return results


def onnx_session(path: Path, model: Any = None) -> Any:
    """An ONNX Runtime CPU session with graph optimisations off, so values are the graph's own."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    source = model.SerializeToString() if model is not None else str(path)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); re-run 'tf2torch convert' "
                         "or pass --no-onnx") from exc


def onnx_feeds(manifest: Manifest, batch: dict[str, Any]) -> dict[str, Any]:
    """model.onnx names its inputs by the TF signature's keys (``tf_name``); ``name`` is model.pt2's keyword."""
    return {spec.tf_name: spec.to_torch_layout(batch[spec.name]) for spec in manifest.inputs}


def run_onnx(manifest: Manifest, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs of ``model.onnx`` under ONNX Runtime (same layout as model.pt2)."""
    if not manifest.onnx.is_file():
        raise InputError(f"{manifest.directory}: no model.onnx; re-run 'tf2torch convert' or pass --no-onnx")
    session = onnx_session(manifest.onnx)
    names = [o.name for o in session.get_outputs()]
    wanted = [s.name for s in manifest.outputs]
    if not set(wanted) <= set(names):
        raise InputError(f"{manifest.onnx}: outputs {names} do not match the manifest's {wanted}; "
                         "re-run 'tf2torch convert'")
    results = []
    for batch in batches:
        try:
            values = session.run(wanted, onnx_feeds(manifest, batch))
        except Exception as exc:
            raise ConversionError(f"{manifest.onnx} failed under ONNX Runtime on inputs TensorFlow accepted ({type(exc).__name__}: "
                             f"{first_line(exc, 300)})") from exc
        results.append(dict(zip(wanted, values)))
    return results
