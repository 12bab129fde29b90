"""Issue 18: models written like public Keras example code get non-flat default inputs and a pass, no false
failure, messages with the cause and the fix, and no false warning (fixtures/models/case_*.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import migrate
from fixtures.models import model_dir
from migrate.cli import main
from migrate.core.errors import ConversionError, InputError

CTC_OBJECTS = "fixtures/models/case_ctc_ocr.py"
TEXT_OBJECTS = "fixtures/models/case_text_float_ids.py"


def parity(capsys, *args: str | Path) -> tuple[int, str, str]:
    code = main(["parity", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def passes_with_default_inputs(capsys, source: Path, out: Path, *extra: str) -> dict:
    """A pass with default inputs and no warning; the JSON report."""
    code, stdout, stderr = parity(capsys, source, out, "--format", "json", *extra)
    report = json.loads(stdout)
    assert code == 0, stdout + stderr
    assert report["passed"] and report["warnings"] == [], report["warnings"]
    return report


@pytest.mark.parametrize(("name", "table"), [("case_text_float_ids", 200), ("case_recommender", 50)])
def test_float_token_ids_get_the_table_range_and_pass(converted, capsys, name, table):
    # float32 Input(shape=(maxlen,)) -> Embedding: Keras casts, so the ids reach the Gather through a Cast
    source, out = converted(name)
    report = passes_with_default_inputs(capsys, source, out)
    assert report["inputs"] == [{"name": "input_layer", "values": f"integers[0, {table})",
                                 "reason": f"indexes a table of {table} rows"}]
    for entry in report["outputs"]:
        assert entry["max_abs_err"] < 1e-5


def test_ctc_label_input_gets_valid_labels_and_invalid_ones_name_the_cause(capsys, tmp_path):
    source = model_dir("case_ctc_ocr") / "model.keras"
    migrate.convert(source, tmp_path / "out", custom_objects=CTC_OBJECTS)
    report = passes_with_default_inputs(capsys, source, tmp_path / "out", "--custom-objects", CTC_OBJECTS)
    drawn = {i["name"]: i for i in report["inputs"]}
    assert drawn["label"]["values"] == "integers[0, 5)"  # 6 classes, the last one the CTC blank
    assert "CTC loss" in drawn["label"]["reason"] and drawn["image"]["values"] == "uniform[0, 255)"
    code, stdout, stderr = parity(capsys, source, tmp_path / "out", "--custom-objects", CTC_OBJECTS,
                                  "--range", "label=-3:3")
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "All labels must be nonnegative integers" in stderr  # TensorFlow's own text, not Keras' wrapper
    assert "label was drawn as uniform[-3, 3)" in stderr and "--range label=LOW:HIGH" in stderr
    assert "--inputs FILE.npz" in stderr


def test_port_parity_draws_pixels_for_a_rescaled_image(capsys, tmp_path):
    source = model_dir("port_image_rescaling") / "model.keras"
    migrate.port(source, tmp_path / "out")
    report = passes_with_default_inputs(capsys, source, tmp_path / "out", "--trust-model-py")
    assert report["inputs"] == [{"name": "image", "values": "uniform[0, 255)",
                                 "reason": "rescaled by 0.003922 (offset 0) in 'rescale'"}]


def test_port_parity_uses_the_keras_embedding_size(capsys, tmp_path):
    source = model_dir("port_text_masked") / "model.keras"
    migrate.port(source, tmp_path / "out")
    report = passes_with_default_inputs(capsys, source, tmp_path / "out", "--trust-model-py")
    tokens = next(i for i in report["inputs"] if i["name"] == "tokens")
    assert tokens["values"] == "integers[0, 30)"  # Embedding(30, 8), not the old [0, 10)


def test_layernorm_over_one_channel_is_not_a_training_divergence(capsys, tmp_path):
    source = model_dir("train_layernorm_channel") / "model.keras"
    migrate.port(source, tmp_path / "out")
    code, stdout, stderr = parity(capsys, source, tmp_path / "out", "--train", "--trust-model-py", "--format", "json")
    report = json.loads(stdout)
    assert code == 0, stdout + stderr
    norm = next(o for o in report["outputs"] if o["name"] == "norm")
    # Keras eager returns beta + rounding noise, torch beta exactly: more than the fixed term allows ...
    assert norm["max_abs_err"] > 1e-5 * 1.0 + 1e-4 * 0.4
    # ... and less than the bound that adds Keras' own error (eager against tf.function)
    assert norm["max_abs_err"] <= norm["atol"]
    # a real LayerNorm error is still caught, and the hint names LayerNorm and its eps
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "out", bad)
    model_py = (bad / "model.py").read_text()
    assert "nn.LayerNorm(8, eps=1e-06)" in model_py  # block_norm; over one channel eps changes nothing
    (bad / "model.py").write_text(model_py.replace("nn.LayerNorm(8, eps=1e-06)", "nn.LayerNorm(8, eps=0.5)"))
    code, stdout, _ = parity(capsys, source, bad, "--train", "--trust-model-py", "--format", "json")
    first = json.loads(stdout)["first_divergence"]
    assert code == 1 and first["stage"] == "forward" and first["layer"] == "block_norm"
    assert "LayerNorm(" in first["explanation"] and "eps=0.5" in first["explanation"]
    assert "check LayerNorm eps" in first["explanation"] and "BatchNorm" not in first["explanation"]
    assert "model.py line" in first["explanation"]


def test_custom_layer_without_kwargs_names_the_cause_and_the_fix(capsys, converted):
    _, out = converted("case_text_float_ids")
    source = model_dir("case_text_float_ids") / "model.keras"
    code, stdout, stderr = parity(capsys, source, out, "--custom-objects", TEXT_OBJECTS)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert ("TokenAndPositionEmbedding.__init__() got an unexpected keyword argument 'trainable'" in stderr)
    assert "accept **kwargs in __init__" in stderr and "get_config" in stderr
    assert "could not be deserialized" not in stderr


def test_debug_shows_the_whole_chain(tmp_path, converted):
    from tests.cli_helpers import tf2torch

    _, out = converted("case_text_float_ids")
    run = tf2torch("parity", model_dir("case_text_float_ids") / "model.keras", out, "--custom-objects",
                   TEXT_OBJECTS, "--debug")
    assert run.returncode == 2
    assert "could not be deserialized properly" in run.stdout + run.stderr  # Keras' wrapper, in the chain
    assert "unexpected keyword argument 'trainable'" in run.stderr.strip().splitlines()[-1]


def test_augmentation_traced_in_training_mode_is_explained(tmp_path):
    with pytest.raises(ConversionError) as caught:
        migrate.convert(model_dir("case_augment_export") / "saved_model", tmp_path / "out")
    message = str(caught.value)
    assert "augmentation layers in training mode" in message and "random_flip" in message
    assert "model(x, training=False)" in message  # the re-export hint
    assert not message.startswith("unsupported TensorFlow op")
    assert not (tmp_path / "out").exists()


def test_keras_lstm_dropout_gives_no_training_mode_warning(capsys, tmp_path):
    source = model_dir("case_lstm_dropout") / "model.keras"
    result = migrate.convert(source, tmp_path / "out")
    assert result.manifest["warnings"] == []
    passes_with_default_inputs(capsys, source, tmp_path / "out")


def test_exit_codes_are_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "parity.md").read_text()
    table = text[text.index("## Exit codes"):]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert {"0", "1", "2"} <= set(rows)
    assert "**kwargs" in rows["2"] and "--range NAME=LOW:HIGH" in rows["2"]  # the cases above that exit 2
    assert InputError.exit_code == 2 and ConversionError.exit_code == 1
