"""The mapping engine: coverage both ways, tolerant scopes, no reshape-to-fit, clear messages."""
from __future__ import annotations

import numpy as np
import pytest

from porting.mapping import MappingError, NameIndex, Rule, apply, plan

RULES = [
    Rule(r"conv\.weight", "block/conv/kernel:0", ["conv_kernel"]),
    Rule(r"conv\.bias", "block/conv/bias:0", ["squeeze"]),
    Rule(r"layers\.(?P<i>\d+)\.weight", lambda m: f"dense_{int(m['i']) + 1}/kernel:0", ["dense_kernel"]),
    Rule(r"filter", derived=True),
]
PT = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "layers.0.weight": (5, 2), "filter": (4,)}
TF = {"block/conv/kernel:0": np.zeros((3, 3, 3, 4)), "block/conv/bias:0": np.zeros((1, 4, 1, 1)),
      "dense_1/kernel:0": np.arange(10.0).reshape(2, 5), "optimizer/iter:0": np.zeros(())}


def test_plan_and_apply_report_unused_and_fill_everything():
    p = plan(RULES, PT, list(TF))
    assert p.unused == ["optimizer/iter:0"]
    out = apply(p, TF, PT)
    assert set(out) == {"conv.weight", "conv.bias", "layers.0.weight"}
    np.testing.assert_array_equal(out["layers.0.weight"], TF["dense_1/kernel:0"].T)
    assert [a.pt_key for a in p.assignments if a.tf_name is None] == ["filter"]


def test_extra_or_missing_leading_scope_is_tolerated():
    scoped = {"generator/" + k: v for k, v in TF.items()}
    p = plan(RULES, PT, list(scoped))
    assert {a.tf_name for a in p.assignments if a.tf_name} >= {"generator/block/conv/kernel:0"}
    bare = {k.split("/", 1)[1] if k.startswith("block/") else k: v for k, v in TF.items()}
    assert NameIndex(list(bare)).find("block/conv/kernel:0") == "conv/kernel:0"


def test_ambiguous_scope_is_an_error_not_a_guess():
    names = ["a/block/conv/kernel:0", "b/block/conv/kernel:0"]
    with pytest.raises(MappingError, match="ambiguous"):
        NameIndex(names).find("block/conv/kernel:0")


def test_unmatched_pytorch_key_is_named():
    with pytest.raises(MappingError, match=r"'extra\.weight' is matched by no rule"):
        plan(RULES, {**PT, "extra.weight": (1,)}, list(TF))


def test_missing_variable_suggests_nearest_names():
    tf = dict(TF)
    tf["block/conv/kernels:0"] = tf.pop("block/conv/kernel:0")
    with pytest.raises(MappingError) as e:
        plan(RULES, PT, list(tf), where="model.zip")
    msg = str(e.value)
    assert "model.zip" in msg and "'block/conv/kernel:0'" in msg and "conv.weight" in msg
    assert "nearest names: block/conv/kernels:0" in msg


def test_a_variable_feeds_one_tensor_only():
    rules = RULES + [Rule(r"conv\.weight2", "block/conv/kernel:0", ["conv_kernel"])]
    with pytest.raises(MappingError, match="would feed both"):
        plan(rules, {**PT, "conv.weight2": (4, 3, 3, 3)}, list(TF))


def test_two_rules_for_one_key_is_an_error():
    with pytest.raises(MappingError, match="several rules"):
        plan(RULES + [Rule(r"conv\..*", derived=True)], PT, list(TF))


def test_no_reshape_to_fit_same_size_wrong_layout_fails():
    """A kernel of the same size but another layout must not be reshaped into place."""
    tf = {**TF, "block/conv/kernel:0": np.zeros((3, 3, 4, 3))}  # in/out swapped: 108 values either way
    p = plan(RULES, PT, list(tf))
    with pytest.raises(MappingError) as e:
        apply(p, tf, PT, where="x.h5")
    msg = str(e.value)
    assert "x.h5" in msg and "block/conv/kernel:0" in msg and "conv.weight" in msg
    assert "expected [4, 3, 3, 3]" in msg and "found [3, 4, 3, 3]" in msg


def test_nonfinite_values_refused_unless_allowed():
    tf = {**TF, "dense_1/kernel:0": np.array([[np.inf] * 5, [0.0] * 5])}
    p = plan(RULES, PT, list(tf))
    with pytest.raises(MappingError, match="dense_1/kernel:0.*NaN/Inf.*--allow-nonfinite"):
        apply(p, tf, PT)
    assert np.isinf(apply(p, tf, PT, allow_nonfinite=True)["layers.0.weight"]).any()
