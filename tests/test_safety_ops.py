"""Guarantee: the operator allow-list (migrate/conversion/pt2_ops.py) is exactly what tf2torch emits, and harmless.

The list was derived with ``python -m tests.derive_pt2_ops --zoo DIR`` over every SavedModel fixture; these
tests check its shape (no file access, no printing, no out= or in-place writes beyond ``detach_``) and that
converted fixtures, including ones with higher-order operators, stay within it.
"""

from __future__ import annotations

import re

import pytest

from migrate.conversion import pt2_ops
from tests.derive_pt2_ops import program_targets


def test_the_allow_list_holds_no_operator_that_touches_files_prints_or_writes_into_a_tensor():
    forbidden = re.compile(r"\.(from_file|save|load|_print|print)\.|\.out$|_out$")
    assert not [op for op in pt2_ops.OPERATORS if forbidden.search(op)]
    in_place = {op for op in pt2_ops.OPERATORS if re.fullmatch(r"torch\.ops\.\w+\.\w+_\.\w+", op)}
    assert in_place == {"torch.ops.aten.detach_.default"}
    assert all(pt2_ops.never_allowed(op) for op in ("torch.ops.aten.from_file.default", "torch.ops.aten.save.default",
                                                    "torch.ops.aten.add.out", "torch.ops.aten.copy_.default"))
    assert set(pt2_ops.STRING_ARGUMENTS) <= pt2_ops.OPERATORS
    assert pt2_ops.HIGHER_ORDER == {"torch.ops.higher_order.cond", "torch.ops.higher_order.scan"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "shape_dynamic", "cond_tf_module", "rnn_gru_dynamic", "attn_encoder"])
def test_converted_fixtures_stay_within_the_allow_list(converted, name):
    _, out = converted(name)
    targets, strings = program_targets(out / "model.pt2")
    assert targets <= pt2_ops.OPERATORS | pt2_ops.SYMBOLIC, targets - pt2_ops.OPERATORS - pt2_ops.SYMBOLIC
    for target, argument, value in strings:
        assert pt2_ops.STRING_ARGUMENTS[target][argument].fullmatch(value)
