"""Indexing and reduction-like ops: interpreter == onnxruntime, index function == reference."""
import numpy as np
import pytest

import fusion
from test_ops_common import check_op, make_model, rand

i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
X = rand(3, 4, 5)
IDX = np.array([[[1, 0, 1, 3, 2]], [[0, 0, 2, 2, 1]], [[3, 3, 3, 0, 0]]], np.int64)
XT = np.round(rand(3, 4, 5)).astype(np.float32)   # many ties for the Arg* tie-breaking

CASES = [
    ("Gather", {"x": X, "i": i64(0, 2, -1)}, 1, (), 21, {"axis": 1}),
    ("Gather", {"x": X, "i": np.array([[0, 2], [1, -3]], np.int32)}, 1, (), 21, {"axis": 0}),
    ("Gather", {"x": X, "i": np.array(1, np.int64)}, 1, (), 21, {"axis": 2}),
    ("Gather", {"x": X, "i": np.array(-1, np.int64)}, 1, ("i",), 21, {"axis": 1}),   # scalar constant index
    ("Gather", {"x": X, "i": i64(3, 0)}, 1, ("i",), 11, {"axis": -1}),
    ("GatherElements", {"x": X, "i": np.random.default_rng(0).integers(-4, 4, (3, 2, 5))}, 1, (), 21, {"axis": 1}),
    ("GatherND", {"x": X, "i": np.array([[0, 1], [2, -1]], np.int64)}, 1, (), 21, {}),
    ("GatherND", {"x": X, "i": np.array([[1], [2], [0]], np.int64)}, 1, (), 21, {"batch_dims": 1}),
    ("ScatterND", {"x": X, "i": np.array([[0, 1], [2, 3]], np.int64), "u": rand(2, 5, seed=4)}, 1, (), 21, {}),
    ("ScatterND", {"x": X, "i": np.array([[[2]], [[0]]], np.int64), "u": rand(2, 1, 4, 5, seed=4)}, 1, (), 21, {}),
    ("OneHot", {"i": np.array([[0, 3], [-1, 2]], np.int64), "d": np.array(4, np.int64), "v": np.array([0, 5], np.float32)},
     1, ("d",), 21, {}),
    ("OneHot", {"i": np.array([0, 3, 1], np.float32), "d": np.array(5, np.int64), "v": np.array([2, 7], np.int64)},
     1, ("d",), 21, {"axis": 0}),
    ("CumSum", {"x": X, "a": np.array(1, np.int64)}, 1, ("a",), 21, {}),
    ("CumSum", {"x": X, "a": np.array(-1, np.int32)}, 1, (), 21, {}),   # axis known only at run time
    ("ArgMax", {"x": XT}, 1, (), 21, {"axis": 1}),
    ("ArgMin", {"x": XT}, 1, (), 21, {"axis": 1}),
    ("ArgMax", {"x": XT}, 1, (), 21, {"axis": -1, "keepdims": 0, "select_last_index": 1}),
    ("ArgMin", {"x": XT}, 1, (), 21, {"axis": -1, "keepdims": 0, "select_last_index": 1}),
    ("ArgMax", {"x": XT}, 1, (), 11, {"axis": 0}),
]
for _red in ("none", "add", "mul", "max", "min"):
    CASES.append(("ScatterElements", {"x": X, "i": IDX, "u": rand(3, 1, 5, seed=4)}, 1, (), 18, {"axis": 1, "reduction": _red}))
    if _red != "none":  # duplicate indices are only defined with a reduction
        CASES.append(("ScatterND", {"x": X, "i": np.array([[0, 1], [2, 3], [0, 1]], np.int64), "u": rand(3, 5, seed=4)},
                      1, (), 18, {"reduction": _red}))
for _e in (0, 1):
    for _r in (0, 1):
        CASES.append(("CumSum", {"x": X, "a": np.array(-1, np.int32)}, 1, ("a",), 21, {"exclusive": _e, "reverse": _r}))


def _id(c):
    op, _, _, consts, opset, attrs = c
    return f"{op}-{opset}-{'c' if consts else ''}" + ",".join(f"{k}={v}" for k, v in attrs.items())


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_op_matches_onnxruntime_and_lowering(case):
    op, inputs, n_out, consts, opset, attrs = case
    check_op(op, inputs, n_out, consts=consts, opset=opset, **attrs)


def test_gather_index_out_of_range_is_a_clear_error():
    g = fusion.load(make_model("Gather", {"x": X, "i": i64(0, 7)}, axis=1))
    with pytest.raises(fusion.FusionError, match=r"Gather.*indices value 7 is out of range for a dimension of size 4"):
        fusion.run_reference(g, {"x": X, "i": i64(0, 7)})
