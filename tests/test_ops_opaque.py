"""Opaque ops (no index function): reference semantics == onnxruntime, incl.
output order, tie-breaking and data-dependent output sizes."""
import numpy as np
import pytest

import fusion
from fusion.ops import get_op
from fusion.ops.table import Mapping
from test_ops_common import check_op, make_model, rand

i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
f32 = lambda *v: np.array(v, np.float32)  # noqa: E731
XT = np.round(rand(3, 6) * 2).astype(np.float32)   # ties
_rng = np.random.default_rng(0)
BOXES = _rng.random((2, 8, 4)).astype(np.float32)
BOXES[..., 2:] += BOXES[..., :2]
BOXES[1, 2] = BOXES[1, 2, [2, 3, 0, 1]]            # flipped corners
SCORES = _rng.random((2, 3, 8)).astype(np.float32)
SCORES[0, 0, 3] = SCORES[0, 0, 5]                  # a tie
_r2 = np.random.default_rng(3)
MANY = (_r2.random((1, 300, 4)) * 10).astype(np.float32)      # clustered: lots of overlap
MANY[..., 2:] = MANY[..., :2] + 1 + _r2.random((1, 300, 2)).astype(np.float32) * 3
MANY_S = np.round(_r2.random((1, 2, 300)), 2).astype(np.float32)   # rounded: many equal scores
IMG = rand(2, 3, 10, 12)
ROIS = f32([0, 0, 9, 9], [1.5, 2.2, 7.9, 11.3], [3, 3, 4, 5], [-2, -1, 3, 14])
BIDX = i64(0, 1, 1, 0)

CASES = [
    ("TopK", {"x": XT, "k": i64(3)}, 2, ("k",), 21, {}),
    ("TopK", {"x": XT, "k": i64(2)}, 2, ("k",), 21, {"axis": 0, "largest": 0}),
    ("TopK", {"x": XT, "k": i64(4)}, 2, (), 21, {}),
    ("TopK", {"x": XT}, 2, (), 9, {"k": 2}),
    ("TopK", {"x": np.array([[3, 1, 3, 2, 1]], np.int64), "k": i64(4)}, 2, ("k",), 21, {"largest": 0}),
    ("NonMaxSuppression", {"b": BOXES, "s": SCORES, "m": i64(3), "i": f32(0.3), "t": f32(0.2)}, 1, (), 21, {}),
    ("NonMaxSuppression", {"b": BOXES, "s": SCORES, "m": i64(10), "i": f32(0.5)}, 1, (), 21, {"center_point_box": 1}),
    ("NonMaxSuppression", {"b": BOXES, "s": SCORES}, 1, (), 21, {}),
    ("NonMaxSuppression", {"b": BOXES, "s": SCORES, "m": i64(2), "i": f32(0.0), "t": f32(0.0)}, 1, ("m", "i"), 10, {}),
    ("NonMaxSuppression", {"b": MANY, "s": MANY_S, "m": i64(40), "i": f32(0.4), "t": f32(0.1)}, 1, (), 21, {}),
    ("RoiAlign", {"x": IMG, "r": ROIS, "b": BIDX}, 1, (), 10, {"sampling_ratio": 2, "output_height": 2, "output_width": 2}),
    ("NonZero", {"x": np.array([[1, 0, 2], [0, 0, 3]], np.float32)}, 1, (), 21, {}),
    ("NonZero", {"x": np.array([True, False, True])}, 1, (), 21, {}),
]
for _mode in ("avg", "max"):
    for _ct in ("half_pixel", "output_half_pixel"):
        CASES.append(("RoiAlign", {"x": IMG, "r": ROIS, "b": BIDX}, 1, (), 16,
                      {"mode": _mode, "coordinate_transformation_mode": _ct, "output_height": 3, "output_width": 4,
                       "spatial_scale": 0.9}))


def _id(c):
    op, _, _, consts, opset, attrs = c
    return f"{op}-{opset}-{'c' if consts else ''}" + ",".join(f"{k}={v}" for k, v in attrs.items())


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_opaque_op_matches_onnxruntime(case):
    op, inputs, n_out, consts, opset, attrs = case
    g = check_op(op, inputs, n_out, consts=consts, opset=opset, **attrs)
    n = g.nodes[0]
    assert n.opdef.lower is None and n.opdef.mapping_of(n) == Mapping.OPAQUE


@pytest.mark.parametrize("op", ["NonZero", "NonMaxSuppression"])
def test_data_dependent_sizes_are_symbolic(op):
    inputs = {"x": XT} if op == "NonZero" else {"b": BOXES, "s": SCORES, "m": i64(2)}
    g = fusion.load(make_model(op, inputs))
    shape = g.nodes[0].outputs[0].shape
    assert any(not isinstance(d, int) for d in shape)


def test_opaque_set_is_what_the_design_names():
    for name in ("TopK", "NonMaxSuppression", "RoiAlign", "NonZero", "If", "Loop", "Scan"):
        od = get_op(name)
        assert od is not None and od.opaque, name
