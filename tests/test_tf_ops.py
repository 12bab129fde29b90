"""``migrate/tf/tf_ops.py``: the ``tf.*`` functions a custom layer's ``call`` may use, traced as ``keras.ops``.

The TensorFlow side runs in a child process (``tests/tf_ops_cases.py``: TF and Keras only, never torch): every
table entry, called the way user code calls it (``tf.nn.sigmoid(x)``) on symbolic tensors while the table is
patched in, records Keras ops whose model reproduces the real ``tf`` function on concrete inputs. Here: each
name's error, that the port has an emitter for every op a mapping records, and the patching itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from migrate.porting.emitters.base import EMITTERS
from migrate.tf.tf_ops import CREATION, TABLE
from tests.cli_helpers import ROOT, env_with_root

SPECIAL = {"nn.dropout", *CREATION}  # checked by tf_ops_cases.checks()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf_ops") / "results.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "tf_ops_cases.py"), str(out)], capture_output=True,
                          text=True, env=env_with_root(), cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(set(TABLE) - SPECIAL))
def test_mapping_matches_the_tf_function(results, name):
    case = results["cases"][name]
    assert not case.get("missing"), f"tf.{name} has no case in tests/tf_ops_cases.py"
    assert case["err"] is not None, case.get("error")
    assert case["err"] <= 1e-5, (name, case)


def test_every_recorded_op_has_a_port_emitter(results):
    ops = {op for case in results["cases"].values() for op in case["ops"]}
    missing = sorted(op for op in ops if f"ops.{op}" not in EMITTERS)
    assert not missing, missing


def test_unmapped_function_is_named_and_everything_else_untouched(results):
    checks = results["checks"]
    assert checks["unmapped"] == "tf.image.resize has no port mapping yet"
    assert checks["concrete_unmapped"] == [1, 4, 4, 1]  # on a real tensor the real function runs
    assert checks["keras_inside"] == [2, 4, 4, 5]  # Keras' own layers and ops trace as before
    assert checks["eager_inside"] == 0.5
    assert checks["restored"]


def test_static_sizes_are_python_numbers(results):
    """``tf.cast(tf.shape(x)[-1], x.dtype)`` and ``tf.sqrt`` of it on a static size: numbers, graph constants."""
    assert results["checks"]["numbers"] == ["int", 3, "float", 3.0, pytest.approx(3 ** 0.5, rel=1e-6)]


def test_dropout_and_creation(results):
    checks = results["checks"]
    assert checks["dropout"] == ["Dropout"] and checks["dropout_rate"] == [0.25]
    assert "ops.Dropout" not in EMITTERS and "Dropout" in EMITTERS
    assert checks["dropout_off"] and checks["dropout_on"]
    assert checks["random_off"] == {"random.normal": [1.5], "random.uniform": [3.0], "random.truncated_normal": [-1.0]}
    for name in CREATION:
        assert checks[f"creation:{name}"] == 0.0, name
