"""Train-time semantics of ported modules equal Keras ``training=True``.

With dropout-family layers the identity on both sides, one forward pass in training mode (BatchNorm
batch statistics), the MSE loss and one SGD step give the same outputs, loss, weights and BatchNorm moving
statistics as Keras (the Keras side runs in the Keras worker). Frozen layers stay frozen.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from migrate.porting import transforms
from migrate.tf.client import run_worker
from tests import test_port
from tests.conftest import assert_close
from tests.test_port import from_module, keras_inputs, to_module

ported = test_port.ported  # the module-scoped fixture: each model is ported once per module

LR = 0.1


def keras_train_step(source: Path, feeds: dict, targets: dict) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp, "in.npz"), **feeds, **{f"target/{k}": v for k, v in targets.items()})
        run_worker("train_step", {"source": str(source), "inputs": str(Path(tmp, "in.npz")), "lr": LR,
                                  "result_npz": str(Path(tmp, "out.npz"))}, module="migrate.tf.keras_worker")
        with np.load(Path(tmp, "out.npz")) as data:
            return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", ["cnn", "port_mlp_dropout", "port_frozen", "port_rnn", "port_shared_nested",
                                  "port_transformer", "port_attention", "port_text_masked"])
def test_one_sgd_step_matches_keras(ported, name):
    import migrate

    source, out = ported(name)
    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out).train()
    for m in module.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    feeds = keras_inputs(manifest, 4, seed=21)
    rng = np.random.default_rng(22)
    outs = manifest["outputs"]
    targets = {s["tf_name"]: rng.standard_normal([4, *(7 if d is None else d for d in s["tf_shape"][1:])])
               .astype("float32") for s in outs}  # None: the sequence length keras_inputs uses
    want = keras_train_step(source, feeds, targets)

    got = module(*[to_module(feeds[s["tf_name"]], s) for s in manifest["inputs"]])
    got = got if isinstance(got, tuple) else (got,)
    loss = sum(((g - to_module(targets[s["tf_name"]], s)) ** 2).mean() for s, g in zip(outs, got))
    loss.backward()
    with torch.no_grad():
        for param in module.parameters():
            if param.requires_grad:
                param -= LR * param.grad
    for spec, tensor in zip(outs, got):
        assert_close(from_module(tensor, spec), want[f"out/{spec['tf_name']}"], what=f"train-mode {spec['name']}")
    assert abs(loss.detach().item() - float(want["loss"])) <= 1e-5 + 1e-4 * abs(float(want["loss"]))
    state = module.state_dict()
    for entry in manifest["weights"]:
        expected = transforms.apply(transforms.parse(entry["transform"]), want[f"weight/{entry['keras']}"])
        assert_close(state[entry["torch"]].numpy(), expected, what=f"{entry['keras']} -> {entry['torch']}")
    frozen = [w["torch"] for w in manifest["weights"] if not w["trainable"] and w["torch"].endswith("weight")]
    assert all(not dict(module.named_parameters())[k].requires_grad for k in frozen)
    if name == "port_frozen":
        assert "frozen_dense.weight" in frozen and not module.frozen_bn.training and module.embed_bn.training


def test_fine_tuning_lowers_the_loss(ported):
    import migrate

    _, out = ported("cnn")
    module = migrate.load_port(out).train()
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses
