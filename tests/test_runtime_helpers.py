"""The helpers model.py contains (``migrate.porting.runtime``, ``migrate.core.padding``/``recurrent``), as code.

Each helper against an independent reference written out here (a hand computation or a step-by-step loop),
the source rules that let them be copied into model.py (torch-only, ruff-clean), and torch.compile: no
graph break and no recompilation between training steps.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from migrate.core.padding import pad_same, same_pads, static_same_pads
from migrate.core.recurrent import GATES, gates
from migrate.porting.runtime import (
    HELPERS,
    KerasBatchNorm,
    KerasGRUResetBefore,
    KerasMultiHeadAttention,
    MaskDropout,
    keras_avg_pool_same,
    keras_masked_cell_state,
    keras_masked_rnn,
    sources,
)


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- KerasBatchNorm -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 2)])
def test_batch_norm_trains_with_keras_biased_variance_and_momentum(shape):
    """moving = moving * keras_momentum + batch * (1 - keras_momentum), with the biased batch variance."""
    g = _seeded()
    x = torch.randn(shape, generator=g) * 3 + 1
    bn = KerasBatchNorm(3, eps=1e-3, momentum=0.01)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_var.copy_(torch.tensor([1.5, 0.5, 3.0]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, -0.2]))
    old_mean, old_var = bn.running_mean.clone(), bn.running_var.clone()
    y = bn.train()(x)
    dims = [0, *range(2, x.dim())]
    n = x.numel() // 3
    mean = x.sum(dims) / n
    centred = x - mean.reshape(1, 3, *[1] * (x.dim() - 2))
    biased = (centred**2).sum(dims) / n
    torch.testing.assert_close(bn.running_mean, 0.99 * old_mean + 0.01 * mean)
    torch.testing.assert_close(bn.running_var, 0.99 * old_var + 0.01 * biased)
    assert not torch.allclose(bn.running_var, 0.99 * old_var + 0.01 * biased * n / (n - 1))  # not torch's update
    per_channel = [1, 3, *[1] * (x.dim() - 2)]
    expected = centred / torch.sqrt(biased + 1e-3).reshape(per_channel) * bn.weight.reshape(per_channel)
    torch.testing.assert_close(y, expected + bn.bias.reshape(per_channel), atol=1e-5, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 0


def test_batch_norm_gradients_and_eval_are_torchs():
    g = _seeded(1)
    x = torch.randn(4, 3, 5, 5, generator=g)
    ours, reference = KerasBatchNorm(3, momentum=0.1), nn.BatchNorm2d(3, momentum=0.1)
    reference.load_state_dict(ours.state_dict())
    for module in (ours, reference):
        nn.init.normal_(module.weight, generator=_seeded(2))
        module.train()(x).square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    with torch.no_grad():
        ours.running_var.copy_(reference.running_var)
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x))


# --- MaskDropout ---------------------------------------------------------------------------------------------


def test_mask_dropout_drops_whole_broadcast_slices_scaled_by_keep():
    drop = MaskDropout(0.5)
    x = torch.ones(64, 3, 4)
    torch.manual_seed(0)
    y = drop.train()(x, (64, 1, 1))
    per_sample = y.reshape(64, -1)
    assert ((per_sample == 0).all(1) | (per_sample == 2.0).all(1)).all()  # one decision per sample, 1/keep
    assert 10 < int((per_sample[:, 0] == 0).sum()) < 54
    assert torch.equal(drop.eval()(x, (64, 1, 1)), x)


# --- masked recurrent layers ----------------------------------------------------------------------------------


def _masks(batch: int, steps: int) -> torch.Tensor:
    """Padding at the start, inside, at the end, none, and everywhere."""
    mask = torch.ones(batch, steps, dtype=torch.bool)
    mask[1, :2] = False
    mask[2, 3:5] = False
    mask[3, -3:] = False
    mask[4] = False
    return mask


def _step_by_step(rnn: nn.RNNBase, x: torch.Tensor, mask: torch.Tensor, zero_masked: bool):
    """Keras' masked loop: the cell runs at valid steps only; elsewhere state and output are carried."""
    batch, hidden = x.shape[0], rnn.hidden_size
    h = torch.zeros(1, batch, hidden)
    c = torch.zeros(1, batch, hidden)
    out = torch.zeros(batch, hidden)
    outputs = []
    for t in range(x.shape[1]):
        state = (h, c) if isinstance(rnn, nn.LSTM) else h
        y, new = rnn(x[:, t : t + 1], state)
        valid = mask[:, t, None]
        if isinstance(rnn, nn.LSTM):
            h = torch.where(valid, new[0], h)
            c = torch.where(valid, new[1], c)
        else:
            h = torch.where(valid, new, h)
        out = torch.where(valid, y[:, 0], out)
        outputs.append(torch.where(valid, out, 0.0) if zero_masked else out)
    return torch.stack(outputs, 1), h[0], c[0]


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("zero_masked", [False, True])
def test_masked_rnn_matches_a_step_by_step_loop(cls, zero_masked):
    torch.manual_seed(0)
    rnn = cls(4, 6, batch_first=True)
    x = torch.randn(5, 8, 4)
    mask = _masks(5, 8)
    with torch.no_grad():
        outputs, final = keras_masked_rnn(rnn, x, mask, zero_masked=zero_masked)
        want, want_h, want_c = _step_by_step(rnn, x, mask, zero_masked)
        torch.testing.assert_close(outputs, want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(final, want_h, atol=1e-6, rtol=1e-5)
        if cls is nn.LSTM:
            torch.testing.assert_close(keras_masked_cell_state(rnn, x, mask), want_c, atol=1e-6, rtol=1e-5)
    assert torch.equal(final[4], torch.zeros(6))  # nothing valid: the zero initial state


def test_gru_reset_before_matches_keras_equations():
    """h~ = tanh(W_h x + b_h + U_h (r * h)), gates in Keras' order z, r, h; h = z * h + (1 - z) * h~."""
    torch.manual_seed(0)
    gru = KerasGRUResetBefore(3, 4)
    for p in gru.parameters():
        nn.init.normal_(p)
    x, h0 = torch.randn(2, 5, 3), torch.randn(1, 2, 4)
    with torch.no_grad():
        outputs, final = gru(x, h0)
        w_z, w_r, w_h = gru.weight_ih.split(4)
        u_z, u_r, u_h = gru.weight_hh.split(4)
        b_z, b_r, b_h = gru.bias.split(4)
        h = h0[0]
        for t in range(5):
            z = torch.sigmoid(x[:, t] @ w_z.T + b_z + h @ u_z.T)
            r = torch.sigmoid(x[:, t] @ w_r.T + b_r + h @ u_r.T)
            h = z * h + (1 - z) * torch.tanh(x[:, t] @ w_h.T + b_h + (r * h) @ u_h.T)
            torch.testing.assert_close(outputs[:, t], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final[0], h, atol=1e-5, rtol=1e-5)


def test_one_gate_table():
    assert GATES == {"LSTM": 4, "GRU": 3, "RNN": 1}
    assert [gates(k) for k in ("LSTM", "GRU_RESET_BEFORE", "RNN_TANH", "SimpleRNN", "GRU")] == [4, 3, 1, 1, 3]


# --- 'same' padding -------------------------------------------------------------------------------------------


def _tf_same_total(size: int, kernel: int, stride: int, dilation: int) -> int:
    """The least padding after which a VALID window walk gives TF's ceil(size / stride) outputs."""
    effective = (kernel - 1) * dilation + 1
    return next(p for p in range(2 * effective + stride) if
                (size + p - effective) // stride + 1 >= math.ceil(size / stride))


@pytest.mark.parametrize("size", range(1, 12))
@pytest.mark.parametrize("kernel, stride, dilation", [(3, 2, 1), (4, 2, 1), (2, 3, 1), (3, 1, 2), (5, 3, 2), (1, 2, 1)])
def test_same_pads_match_tf(size, kernel, stride, dilation):
    total = _tf_same_total(size, kernel, stride, dilation)
    assert same_pads(size, kernel, stride, dilation) == (total // 2, total - total // 2)


def test_static_same_pads_need_a_size_only_where_strided():
    assert static_same_pads((None, 9), (3, 3), (1, 2), (1, 1)) == [(1, 1), (1, 1)]
    assert static_same_pads((9, None), (3, 3), (1, 2), (1, 1)) is None


class _StridedSame(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, (3, 4), stride=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad_same(x, (3, 4), (2, 3), (1, 1)))


def test_pad_same_follows_dynamic_sizes_under_export_and_compile():
    torch.manual_seed(0)
    module = _StridedSame().eval()
    time = torch.export.Dim("time", min=3, max=64)
    program = torch.export.export(module, (torch.randn(1, 2, 9, 10),), dynamic_shapes=({2: time},))
    compiled = torch.compile(module, backend="eager", fullgraph=True, dynamic=True)
    for length in (9, 16, 5):
        x = torch.randn(1, 2, length, 10)
        expected = module(x)
        assert expected.shape[2:] == (math.ceil(length / 2), math.ceil(10 / 3))
        rows, cols = _tf_same_total(length, 3, 2, 1), _tf_same_total(10, 4, 3, 1)
        manual = module.conv(F.pad(x, (cols // 2, cols - cols // 2, rows // 2, rows - rows // 2)))
        torch.testing.assert_close(expected, manual)
        torch.testing.assert_close(program.module()(x), expected)
        torch.testing.assert_close(compiled(x), expected)


@pytest.mark.parametrize("size", [7, 8])
def test_avg_pool_same_averages_real_elements_only(size):
    x = torch.randn(2, 3, size, 5)
    got = keras_avg_pool_same(x, (3, 2), (2, 2))
    rows = [(max(i * 2 - same_pads(size, 3, 2)[0], 0), min(i * 2 - same_pads(size, 3, 2)[0] + 3, size))
            for i in range(math.ceil(size / 2))]
    cols = [(max(j * 2 - same_pads(5, 2, 2)[0], 0), min(j * 2 - same_pads(5, 2, 2)[0] + 2, 5)) for j in range(3)]
    expected = torch.stack([torch.stack([x[:, :, r0:r1, c0:c1].mean((2, 3)) for c0, c1 in cols], -1)
                            for r0, r1 in rows], -2)
    torch.testing.assert_close(got, expected)


# --- KerasMultiHeadAttention ----------------------------------------------------------------------------------


def test_multi_head_attention_matches_written_out_heads():
    torch.manual_seed(0)
    mha = KerasMultiHeadAttention(6, 5, 5, num_heads=2, key_dim=3, value_dim=4, output_dim=7).eval()
    q, v = torch.randn(2, 4, 6), torch.randn(2, 3, 5)
    mask = torch.tensor([[True, True, False]]).expand(4, 3)
    with torch.no_grad():
        got = mha(q, v, mask=mask.expand(2, 4, 3))
        heads = []
        for head in range(2):
            qh = mha.query(q)[..., head * 3 : head * 3 + 3]
            kh = mha.key(v)[..., head * 3 : head * 3 + 3]
            vh = mha.value(v)[..., head * 4 : head * 4 + 4]
            scores = (qh @ kh.transpose(1, 2) / math.sqrt(3)).masked_fill(~mask, float("-inf"))
            heads.append(torch.softmax(scores, -1) @ vh)
        torch.testing.assert_close(got, mha.attention_output(torch.cat(heads, -1)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_multi_head_attention_query_allowed_no_key_is_what_keras_computes(dropout):
    """A query row masked everywhere (a padding-only sequence, or padding at a causal decoder's first step):
    Keras 3 without dropout (ops.dot_product_attention, masked logits at -0.7 * float32 max) weights every key
    equally; with dropout (masked softmax, then masked weights set to 0) gives it zero weights. Never NaN, also
    when dropout.p is later set to 0 (as parity --train does) and in the gradients."""
    torch.manual_seed(0)
    mha = KerasMultiHeadAttention(6, 6, 6, num_heads=2, key_dim=3, value_dim=3, output_dim=6, dropout=dropout).eval()
    mha.dropout.p = 0.0
    x = torch.randn(2, 4, 6, requires_grad=True)
    mask = torch.ones(2, 4, 4, dtype=torch.int32)
    mask[1] = 0  # the second sequence is padding only
    got = mha(x, x, mask=mask, causal=True)
    with torch.no_grad():
        rows = mha.value(x[1]).mean(dim=0, keepdim=True).expand(4, 6) if dropout == 0.0 else torch.zeros(4, 6)
        expected = mha.attention_output(rows)
    torch.testing.assert_close(got[1].detach(), expected, atol=1e-5, rtol=1e-5)
    got.sum().backward()
    assert torch.isfinite(x.grad).all()


# --- copied into model.py -------------------------------------------------------------------------------------


def test_helper_sources_use_only_model_py_imports_and_pass_ruff(tmp_path):
    """Every helper with the helpers it calls, under model.py's imports: it defines itself and ruff passes."""
    text = "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
    seen: dict[str, str] = {}
    for name in HELPERS:
        seen.update(sources(name))
    text += "".join(f"\n\n{code}\n" for code in seen.values())
    assert list(sources("keras_masked_rnn")) == ["pack_valid_steps", "unpack_valid_steps", "keras_masked_rnn"]
    assert list(sources("keras_avg_pool_same")) == ["same_pads", "pad_same", "keras_avg_pool_same"]
    namespace: dict = {}
    exec(compile(text, "model.py", "exec"), namespace)  # noqa: S102  (our own helper sources)
    assert set(HELPERS) <= set(namespace)
    path = tmp_path / "model.py"
    path.write_text(text)
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", str(path)],
                          check=False, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


# --- torch.compile --------------------------------------------------------------------------------------------


class _Block(nn.Module):
    """Every CNN helper in one train step's forward: strided 'same' conv on any size, BatchNorm, drop connect."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.bn = KerasBatchNorm(4, eps=1e-3, momentum=0.01)
        self.drop = MaskDropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(pad_same(x, (3, 3), (2, 2), (1, 1))))
        y = self.drop(torch.relu(y), (y.shape[0], 1, 1, 1))
        return keras_avg_pool_same(y, (3, 3), (2, 2)).mean((2, 3))


def test_helpers_compile_without_graph_breaks_or_recompiles():
    torch.manual_seed(0)
    model = _Block()
    x = torch.randn(2, 3, 11, 9)
    explained = torch._dynamo.explain(model.train())(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.compile(backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(5):
            optimizer.zero_grad()
            model(x + step).square().mean().backward()
            optimizer.step()
    assert torch.isfinite(model.bn.running_var).all() and not torch.equal(model.bn.running_var, torch.ones(4))


def test_masked_rnn_compiles_without_graph_breaks():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, batch_first=True)
    x, mask = torch.randn(5, 8, 4), _masks(5, 8)
    with torch._dynamo.config.patch(allow_rnn=True):
        explained = torch._dynamo.explain(keras_masked_rnn)(lstm, x, mask, True)
    assert explained.graph_break_count == 0, explained.break_reasons
