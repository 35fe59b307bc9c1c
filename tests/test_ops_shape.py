"""Shape and movement ops: interpreter == onnxruntime, index function == reference."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from test_ops_common import check_op, rand

i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
f32 = lambda *v: np.array(v, np.float32)  # noqa: E731
X = rand(2, 3, 4)
IMG = rand(1, 2, 3, 4)

# (op, inputs, n_outputs, consts, opset, attrs)
CASES = [
    ("Flatten", {"x": X}, 1, (), 21, {"axis": 2}),
    ("Flatten", {"x": X}, 1, (), 9, {"axis": 0}),
    ("Flatten", {"x": X}, 1, (), 13, {"axis": -1}),
    ("Squeeze", {"x": rand(2, 1, 4), "a": i64(1)}, 1, ("a",), 21, {}),
    ("Squeeze", {"x": rand(2, 1, 4)}, 1, (), 11, {"axes": [-2]}),
    ("Squeeze", {"x": rand(1, 3, 1)}, 1, (), 21, {}),
    ("Unsqueeze", {"x": X, "a": i64(0, -1)}, 1, ("a",), 21, {}),
    ("Unsqueeze", {"x": X}, 1, (), 11, {"axes": [1]}),
    ("Shape", {"x": X}, 1, (), 21, {}),
    ("Shape", {"x": X}, 1, (), 21, {"start": 1, "end": -1}),
    ("Size", {"x": X}, 1, (), 21, {}),
    ("Slice", {"x": X, "s": i64(0, 1), "e": i64(2, 100), "a": i64(0, 2), "st": i64(1, 2)}, 1, ("s", "e", "a", "st"), 21, {}),
    ("Slice", {"x": X, "s": i64(-1, 3), "e": i64(-100, 0), "a": i64(1, 2), "st": i64(-1, -2)}, 1, ("s", "e", "a", "st"), 21, {}),
    ("Slice", {"x": X, "s": i64(2, 3), "e": i64(-5, -9), "a": i64(1, 2), "st": i64(-1, -1)}, 1, ("s", "e", "a", "st"), 21, {}),
    ("Slice", {"x": X}, 1, (), 9, {"starts": [1], "ends": [2], "axes": [1]}),
    ("Split", {"x": X, "s": i64(1, 3)}, 2, ("s",), 21, {"axis": 2}),
    ("Split", {"x": X}, 2, (), 11, {"axis": 2, "split": [3, 1]}),
    ("Split", {"x": rand(7, 2)}, 3, (), 18, {"num_outputs": 3}),
    ("Split", {"x": X}, 2, (), 13, {"axis": 0}),
    ("ConstantOfShape", {"s": i64(2, 3)}, 1, ("s",), 21, {"value": helper.make_tensor("v", TensorProto.INT32, [1], [7])}),
    ("ConstantOfShape", {"s": i64(2, 3)}, 1, ("s",), 21, {}),
    ("Range", {"a": np.array(1, np.float32), "b": np.array(7.5, np.float32), "c": np.array(0.5, np.float32)}, 1, ("a", "b", "c"), 21, {}),
    ("Range", {"a": np.array(10, np.int64), "b": np.array(1, np.int64), "c": np.array(-3, np.int64)}, 1, ("a", "b", "c"), 21, {}),
    ("Expand", {"x": rand(3, 1), "s": i64(2, 3, 4)}, 1, ("s",), 21, {}),
    ("Expand", {"x": rand(3, 1), "s": i64(1, 1)}, 1, ("s",), 21, {}),
    ("Tile", {"x": X, "r": i64(1, 2, 3)}, 1, ("r",), 21, {}),
    ("Pad", {"x": X, "p": i64(0, 1, 2, 1, 0, 1)}, 1, ("p",), 21, {}),
    ("Pad", {"x": X, "p": i64(0, 1, 2, 1, 0, 1), "v": np.array(1.5, np.float32)}, 1, ("p",), 21, {}),
    ("Pad", {"x": X, "p": i64(0, -1, 2, 1, 0, -1)}, 1, ("p",), 21, {"mode": "reflect"}),
    ("Pad", {"x": X, "p": i64(0, 1, 2, 1, 0, 3)}, 1, ("p",), 21, {"mode": "edge"}),
    ("Pad", {"x": X, "p": i64(0, 1, 2, 1, 0, 3)}, 1, ("p",), 19, {"mode": "wrap"}),
    ("Pad", {"x": X}, 1, (), 9, {"pads": [0, 1, 2, 1, 0, 1], "value": 2.0}),
    ("Pad", {"x": X, "p": i64(1, 2), "v": None, "a": i64(-1)}, 1, ("p", "a"), 18, {}),
    ("Trilu", {"x": X}, 1, (), 21, {}),
    ("Trilu", {"x": X, "k": np.array(1, np.int64)}, 1, (), 21, {"upper": 0}),
    ("Trilu", {"x": X, "k": i64(-1)}, 1, ("k",), 21, {}),
    ("DepthToSpace", {"x": rand(1, 8, 2, 3)}, 1, (), 21, {"blocksize": 2}),
    ("DepthToSpace", {"x": rand(1, 8, 2, 3)}, 1, (), 21, {"blocksize": 2, "mode": "CRD"}),
    ("SpaceToDepth", {"x": rand(1, 2, 4, 6)}, 1, (), 21, {"blocksize": 2}),
    ("Dropout", {"x": X}, 2, (), 21, {}),
    ("Dropout", {"x": X}, 1, (), 7, {"ratio": 0.3}),
    ("Resize", {"x": IMG, "r": None, "s": f32(1, 1, 2, 2)}, 1, ("s",), 21, {"mode": "nearest", "nearest_mode": "floor"}),
    ("Resize", {"x": IMG, "r": None, "s": f32(1, 1, 0.6, 0.5)}, 1, ("s",), 21, {"mode": "nearest"}),
    ("Resize", {"x": IMG, "r": None, "s": f32(1, 1, 2, 2)}, 1, ("s",), 21,
     {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}),
    ("Resize", {"x": IMG, "r": f32(0, 0, 0.2, 0.1, 1, 1, 0.8, 0.9), "s": f32(1, 1, 2, 2)}, 1, ("s", "r"), 21,
     {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 3.0}),
    ("Resize", {"x": IMG, "s": f32(1, 1, 2, 2)}, 1, ("s",), 10, {}),
    ("Resize", {"x": IMG, "r": None, "s": None, "z": i64(6, 6)}, 1, ("z",), 18,
     {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger", "mode": "linear"}),
    ("Upsample", {"x": IMG, "s": f32(1, 1, 2, 3)}, 1, ("s",), 9, {}),
    ("Upsample", {"x": IMG}, 1, (), 7, {"scales": [1.0, 1.0, 2.0, 2.0]}),
    ("Upsample", {"x": IMG}, 1, (), 7, {"scales": [1.0, 1.0, 2.0, 2.0], "mode": "linear"}),
]
# Shape-like inputs computed at run time (graph inputs, not constants): the
# interpreter takes them from the actual tensors; output dims are symbolic.
CASES += [
    ("Reshape", {"x": X, "s": i64(4, -1)}, 1, (), 21, {}),
    ("Squeeze", {"x": rand(2, 1, 4), "a": i64(-2)}, 1, (), 21, {}),
    ("Unsqueeze", {"x": X, "a": i64(3, 0)}, 1, (), 21, {}),
    ("Slice", {"x": X, "s": i64(1, -1), "e": i64(3, -4), "a": i64(2, 1), "st": i64(1, -1)}, 1, (), 21, {}),
    ("Split", {"x": X, "s": i64(1, 3)}, 2, (), 21, {"axis": -1}),
    ("Tile", {"x": X, "r": i64(2, 1, 2)}, 1, (), 21, {}),
    ("Expand", {"x": rand(3, 1), "s": i64(2, 3, 4)}, 1, (), 21, {}),
    ("ConstantOfShape", {"s": i64(2, 3)}, 1, (), 21, {}),
    ("Pad", {"x": X, "p": i64(1, 0, 2, 1), "v": np.array(3.0, np.float32), "a": i64(0, -1)}, 1, (), 21, {}),
    ("Pad", {"x": X, "p": i64(0, 1, 2, 1, 0, 1)}, 1, (), 21, {"mode": "reflect"}),
    ("Resize", {"x": IMG, "r": None, "s": f32(1, 1, 2, 1.5)}, 1, (), 21, {"mode": "linear"}),
    ("Resize", {"x": IMG, "r": None, "s": None, "z": i64(1, 2, 5, 3)}, 1, (), 21, {"mode": "nearest"}),
    ("ReduceSum", {"x": X, "a": i64(-1, 0)}, 1, (), 21, {"keepdims": 0}),
    ("ReduceMax", {"x": X, "a": i64(1)}, 1, (), 21, {}),
]
for _mode in ("nearest", "linear", "cubic"):
    for _ct in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"):
        CASES.append(("Resize", {"x": IMG, "r": None, "s": f32(1, 1, 2, 1.5)}, 1, ("s",), 21,
                      {"mode": _mode, "coordinate_transformation_mode": _ct}))
        CASES.append(("Resize", {"x": IMG, "r": None, "s": None, "z": i64(1, 2, 5, 3)}, 1, ("z",), 21,
                      {"mode": _mode, "coordinate_transformation_mode": _ct}))


def _id(c):
    op, _, _, _, opset, attrs = c
    return f"{op}-{opset}-" + ",".join(f"{k}={v}" for k, v in attrs.items() if not hasattr(v, "SerializeToString"))


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_op_matches_onnxruntime_and_lowering(case):
    op, inputs, n_out, consts, opset, attrs = case
    check_op(op, inputs, n_out, consts=consts, opset=opset, **attrs)


def test_shape_is_known_at_compile_time():
    g = check_op("Shape", {"x": X})
    assert g.nodes[0].outputs[0].known.tolist() == [2, 3, 4]


def test_range_with_run_time_limit_has_a_symbolic_length():
    import fusion
    from test_ops_common import make_model
    m = make_model("Range", {"a": np.array(0, np.int64), "b": np.array(5, np.int64), "c": np.array(2, np.int64)},
                   consts=("a", "c"))
    g = fusion.load(m)
    (n,) = g.nodes[0].outputs[0].shape
    assert not isinstance(n, int)
    out = fusion.run_reference(g, {"b": np.array(5, np.int64)})
    assert out["y0"].tolist() == [0, 2, 4]
