"""Ported models train under ``torch.compile``: no graph break, no recompilation between steps; ``train.py --compile``.

Regression tests, not timings (benchmarks/ measures speed). Dynamo's graph capture and AOT autograd are what a
graph break or a recompilation comes from, so the steps run with ``backend="aot_eager"``; ``train.py --compile``
runs Inductor itself.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F


@pytest.mark.slow
@pytest.mark.parametrize("app", ["mobilenetv2", "resnet50"])
def test_ported_application_train_step_compiles_once_without_graph_breaks(app, fixture_model, tmp_path):
    import migrate

    module = migrate.port(fixture_model(f"port_app_{app}") / "model.keras", tmp_path / "out").module.train()
    torch.manual_seed(0)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    explained = torch._dynamo.explain(module)(images)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    torch._dynamo.reset()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
    module.compile(backend="aot_eager")
    losses = []
    with torch._dynamo.config.patch(error_on_recompile=True):  # a second compilation raises
        for _ in range(5):
            optimizer.zero_grad()
            loss = F.cross_entropy(module(images), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
def test_train_py_compile_and_channels_last_run(fixture_model, tmp_path):
    source = fixture_model("train_cnn") / "model.keras"
    out = tmp_path / "out"
    port = subprocess.run([sys.executable, "-m", "migrate.cli", "port", str(source), "-o", str(out), "-q"],
                          capture_output=True, text=True, check=False)
    assert port.returncode == 0, port.stderr
    script = subprocess.run([sys.executable, "train.py", "--steps", "3", "--batch-size", "4", "--compile",
                             "--channels-last"], capture_output=True, text=True, cwd=out, check=False)
    assert script.returncode == 0, script.stderr[-3000:]
    assert "step 3: loss" in script.stdout and "eval accuracy" in script.stdout
