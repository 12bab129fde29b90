"""tf2torch transfer: hand-written modules (fixtures/transfer) get the Keras weights with no person-written map,
pass forward and training parity; planted mistakes are blamed on their layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checks.parity.train.api import compare_train
from checks.parity.train.forward import compare_module

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "transfer"

#: (Keras fixture, module FILE:CLASS)
CORRECT = [("transfer_mlp", "mlp.py:Classifier"), ("transfer_cnn", "cnn.py:SmallCNN"),
           ("transfer_bilstm", "bilstm.py:TextClassifier"), ("transfer_gru", "gru.py:Tagger"),
           ("transfer_transformer", "transformer.py:EncoderBlock"),
           ("transfer_transformer", "transformer.py:EncoderBlockSplit"), ("transfer_rescnn", "rescnn.py:ResNetTiny"),
           ("transfer_branches", "branches.py:TwoBranches"), ("transfer_lstm", "lstm_cell.py:Reader"),
           ("transfer_mobilenetv2", "mobilenetv2.py:MobileNetV2")]

#: vocabulary sizes of the fixtures that take token ids
TOKENS = {"transfer_bilstm": 40, "transfer_gru": 30, "transfer_lstm": 30}


def _transfer(fixture_model, name: str, target: str, out: Path):
    import migrate

    source = fixture_model(name) / "model.keras"
    return source, migrate.transfer(source, str(target), out)


@pytest.mark.slow
@pytest.mark.parametrize("name,target", CORRECT, ids=[t for _, t in CORRECT])
def test_correct_module_transfers_and_passes_parity(fixture_model, tmp_path, name, target):
    """No leftovers, outputs equal; forward parity and 3 steps of SGD and Adam pass through the written map."""
    source, result = _transfer(fixture_model, name, HERE / target, tmp_path / "out")
    report = result.report
    assert report.complete and not report.mismatches and report.outputs_match, report.to_text()
    assert max(report.outputs_max_abs_err) < 1e-5
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"weights.safetensors", "weights_map.json", "report.json",
                                                              "manifest.json"}
    weights_map = tmp_path / "out" / "weights_map.json"
    forward = compare_module(source, str(HERE / target), weights_map=weights_map)
    assert forward.passed and not forward.notes[:-1], forward.to_text()
    inputs = None
    if name in TOKENS:  # distinct ids: Keras applies Adam to a repeated id's sparse gradient occurrence by occurrence
        import numpy as np

        inputs = tmp_path / "ids.npz"
        ids = np.random.default_rng(0).permutation(np.arange(1, TOKENS[name]))[:14].reshape(2, 7)
        np.savez(inputs, tokens=ids.astype("int32"))
    deep = name == "transfer_mobilenetv2"  # a stable step for a deep net, as for port's app fixtures (docs/parity.md)
    optimizers = ("sgd:learning_rate=0.001,momentum=0.9", "adam:learning_rate=0.001") if deep else \
        ("sgd:learning_rate=0.05", "adam:learning_rate=0.01")
    for optimizer in optimizers:
        train = compare_train(source, str(HERE / target), optimizer=optimizer, steps=3, weights_map=weights_map,
                              inputs=inputs)
        assert train.passed, train.to_text()


def test_packed_split_and_zero_entries(fixture_model, tmp_path):
    """nn.MultiheadAttention's in_proj_weight packs q/k/v; nn.GRU's two biases split Keras' (2, 3H) bias."""
    _, attention = _transfer(fixture_model, "transfer_transformer", HERE / "transformer.py:EncoderBlock", None)
    weights = attention.weights_map["weights"]
    assert [weights[f"mha/{p}/kernel"]["pack"] for p in ("query", "key", "value")] == [[0, 3], [1, 3], [2, 3]]
    assert weights["mha/query/kernel"]["torch"] == "attention.in_proj_weight"
    _, gru = _transfer(fixture_model, "transfer_gru", HERE / "gru.py:Tagger", None)
    bias = gru.weights_map["weights"]["gru/gru_cell/bias"]
    assert [b["torch"] for b in bias] == ["rnn.bias_ih_l0", "rnn.bias_hh_l0"]
    _, lstm = _transfer(fixture_model, "transfer_bilstm", HERE / "bilstm.py:TextClassifier", None)
    assert lstm.weights_map["zeros"] == ["encoder.bias_hh_l0", "encoder.bias_hh_l0_reverse"]


def test_same_input_branches_resolved_by_the_numbers(fixture_model):
    """Two same-shaped Dense layers on one input, called in the other order: the swap is decided by the outputs."""
    _, result = _transfer(fixture_model, "transfer_branches", HERE / "branches.py:TwoBranches", None)
    pairs = {p.layer: p.torch for p in result.report.pairs}
    assert pairs == {"branch_relu": "left", "branch_tanh": "right", "head": "head"}
    assert any("decided by the numbers" in d for d in result.report.decided)


def _planted(tmp_path: Path, file: str, old: str, new: str) -> Path:
    text = (HERE / file).read_text()
    assert old in text
    path = tmp_path / file
    path.write_text(text.replace(old, new))
    return path


def _blamed(report) -> str | None:
    return (report.first_divergence or {}).get("layer")


def test_planted_mistakes_blamed_forward(fixture_model, tmp_path):
    """Forward parity names the layer: symmetric stride-2 padding, NCHW rows without the NHWC order, a softmax
    left in forward, LayerNorm eps 1e-5, tanh-GELU (a warning under the coarse tolerance)."""
    source, _ = _transfer(fixture_model, "transfer_cnn", HERE / "cnn.py:SmallCNN", tmp_path / "cnn")
    wrong = dict(json.loads((tmp_path / "cnn" / "weights_map.json").read_text()))
    kernel = wrong["weights"]["logits/kernel"]
    assert kernel["transform"].startswith("flatten_order(8,8,8)")
    kernel["transform"] = "permute(1,0)"  # a person's map without the NHWC row order
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    assert _blamed(compare_module(source, str(HERE / "cnn.py:SmallCNN"), weights_map=tmp_path / "wrong.json")) \
        == "logits"
    symmetric = _planted(tmp_path, "cnn.py", "self.stem(F.pad(x, (0, 1, 0, 1)))", "self.stem(F.pad(x, (1, 1, 1, 1)))")
    bad = compare_module(source, f"{symmetric}:SmallCNN")
    assert _blamed(bad) == "stem", bad.to_text()

    mlp = fixture_model("transfer_mlp") / "model.keras"
    softmax = _planted(tmp_path, "mlp.py", "return self.head(self.trunk(x))",
                       "return torch.softmax(self.head(self.trunk(x)), dim=-1)")
    bad = compare_module(mlp, f"{softmax}:Classifier")
    assert not bad.passed and bad.first_divergence["stage"] == "forward" and bad.first_divergence["name"] == "logits"
    assert all(c.passed for c in bad.checks if c.kind == "layer"), bad.to_text()

    tx = fixture_model("transfer_transformer") / "model.keras"
    eps = _planted(tmp_path, "transformer.py", "self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-3), ",
                   "self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-5), ")
    bad = compare_module(tx, f"{eps}:EncoderBlock")
    flagged = [c.name for c in bad.checks if c.kind == "layer" and (not c.passed or c.message)]
    assert flagged[:1] == ["ln1"], bad.to_text()
    (tmp_path / "transformer.py").unlink()
    gelu = _planted(tmp_path, "transformer.py", "nn.GELU()", "nn.GELU(approximate='tanh')")
    bad = compare_module(tx, f"{gelu}:EncoderBlock")
    warned = [c for c in bad.checks if c.kind == "layer" and c.message and c.message.startswith("warning")]
    assert [c.name for c in warned][:1] == ["ffn_out"], bad.to_text()
    assert any("ffn_out" in n for n in bad.notes)


def test_planted_batchnorm_eps_flagged_forward(fixture_model, tmp_path):
    """BatchNorm eps 1e-5 against Keras' 1e-3: the bn layer is the first flagged (failure or rounding warning)."""
    source = fixture_model("transfer_mlp") / "model.keras"
    eps = _planted(tmp_path, "mlp.py", "eps=1e-3", "eps=1e-5")
    bad = compare_module(source, f"{eps}:Classifier")
    flagged = [c.name for c in bad.checks if c.kind == "layer" and (not c.passed or c.message)]
    assert flagged[:1] == ["bn"], bad.to_text()


def test_planted_lstm_gate_order_blamed(fixture_model, tmp_path):
    """A hand-written LSTM cell that splits its gates in TF's LSTMBlockCell order (i, c, f, o): the pairing holds
    by shape, transfer reports the layer's output mismatch, parity blames the LSTM layer."""
    source = fixture_model("transfer_lstm") / "model.keras"
    planted = _planted(tmp_path, "lstm_cell.py", "i, f, g, o = gates.chunk(4, dim=-1)", "i, g, f, o = gates.chunk(4, dim=-1)")
    import migrate

    result = migrate.transfer(source, f"{planted}:Reader")
    assert result.report.complete and [m["layer"] for m in result.report.mismatches][:1] == ["lstm"]
    bad = compare_module(source, f"{planted}:Reader")
    assert _blamed(bad) == "lstm", bad.to_text()


MATMUL = '''
import torch
from torch import nn

from fixtures.transfer.common import BiasedBatchNorm


class Matmul(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.empty(n, n)), nn.Parameter(torch.zeros(n))  # declared (out, in)

    def forward(self, x):
        return x @ self.w + self.b  # used as (in, out): Keras' layout


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.mid, self.out = nn.Linear(10, 16), BiasedBatchNorm(16, eps=1e-3, momentum=0.01), \\
            Matmul(16), nn.Linear(16, 3)

    def forward(self, x):
        return self.out(nn.functional.gelu(self.mid(torch.relu(self.bn(self.a(x))))))
'''


def test_square_kernel_layout_decided_by_the_numbers(fixture_model, tmp_path):
    """x @ W with a square W: copy and transpose both fit; the numbers pick Keras' layout (no transform). A
    person's map with the torch layout (permute) is blamed on that layer."""
    import migrate

    source = fixture_model("transfer_mlp") / "model.keras"
    (tmp_path / "net.py").write_text(MATMUL)
    result = migrate.transfer(source, f"{tmp_path / 'net.py'}:Net", tmp_path / "out")
    assert result.report.passed, result.report.to_text()
    assert result.weights_map["weights"]["dense_mid/kernel"] == {"torch": "mid.w"}
    assert any(d.startswith("dense_mid: transform of mid") for d in result.report.decided), result.report.decided
    wrong = json.loads((tmp_path / "out" / "weights_map.json").read_text())
    wrong["weights"]["dense_mid/kernel"]["transform"] = "permute(1,0)"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    bad = compare_module(source, f"{tmp_path / 'net.py'}:Net", weights_map=tmp_path / "wrong.json")
    assert _blamed(bad) == "dense_mid", bad.to_text()


def test_planted_batchnorm_blamed_in_training(fixture_model, tmp_path):
    """BN momentum 0.1 is named as momentum; a plain nn.BatchNorm1d as the unbiased variance update."""
    source = fixture_model("transfer_mlp") / "model.keras"
    momentum = _planted(tmp_path, "mlp.py", "momentum=0.01", "momentum=0.1")
    bad = compare_train(source, f"{momentum}:Classifier", optimizer="sgd", steps=3)
    assert bad.first_divergence["layer"] == "bn" and "momentum" in bad.first_divergence["explanation"], bad.to_text()
    (tmp_path / "mlp.py").unlink()
    plain = _planted(tmp_path, "mlp.py", "BiasedBatchNorm(hidden, eps=1e-3, momentum=0.01)",
                     "nn.BatchNorm1d(hidden, eps=1e-3, momentum=0.01)")
    bad = compare_train(source, f"{plain}:Classifier", optimizer="sgd", steps=3)
    first = bad.first_divergence
    assert first["name"] == "trunk.1.running_var" and "unbiased" in first["explanation"], bad.to_text()
