"""Linear, normalization and pooling ops: interpreter == onnxruntime, index function == reference."""
import numpy as np
import pytest

from test_ops_common import check_op, rand

X = rand(2, 3, 5, 6)
C = rand(3)
V = np.abs(rand(3, seed=5)) + 0.5
BN = {"x": X, "s": C, "b": rand(3, seed=1), "m": rand(3, seed=2), "v": V}

CASES = [
    ("Gemm", {"a": rand(3, 4), "b": rand(5, 4), "c": rand(5)}, 1, (), 21, {"transB": 1, "alpha": 0.5, "beta": 2.0}),
    ("Gemm", {"a": rand(4, 3), "b": rand(4, 5)}, 1, (), 21, {"transA": 1}),
    ("Gemm", {"a": rand(3, 4), "b": rand(4, 5), "c": rand(3, 1)}, 1, ("b", "c"), 9, {}),
    ("ConvTranspose", {"x": rand(1, 2, 3, 3), "w": rand(2, 3, 3, 3)}, 1, (), 21, {}),
    ("ConvTranspose", {"x": rand(1, 2, 3, 4), "w": rand(2, 3, 3, 2), "b": rand(3)}, 1, (), 21,
     {"strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 0]}),
    ("ConvTranspose", {"x": rand(1, 4, 3, 3), "w": rand(4, 1, 2, 2)}, 1, (), 21, {"group": 2, "strides": [2, 2], "dilations": [2, 1]}),
    ("ConvTranspose", {"x": rand(1, 2, 3, 3), "w": rand(2, 3, 3, 3)}, 1, (), 21, {"strides": [2, 2], "output_shape": [7, 8]}),
    ("ConvTranspose", {"x": rand(1, 2, 3, 3), "w": rand(2, 3, 3, 3)}, 1, (), 21, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("ConvTranspose", {"x": rand(1, 2, 3, 3), "w": rand(2, 3, 3, 3)}, 1, (), 21, {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ("ConvTranspose", {"x": rand(1, 2, 5), "w": rand(2, 3, 3)}, 1, (), 21, {"strides": [3]}),
    ("Einsum", {"a": rand(2, 3, 4), "b": rand(2, 4, 5)}, 1, (), 21, {"equation": "bij,bjk->bik"}),
    ("Einsum", {"a": rand(3, 3)}, 1, (), 21, {"equation": "ii->i"}),
    ("Einsum", {"a": rand(3, 4)}, 1, (), 21, {"equation": "ij->ji"}),
    ("Einsum", {"a": rand(3), "b": rand(4)}, 1, (), 21, {"equation": "i,j->ij"}),
    ("Einsum", {"a": rand(2, 3, 4), "b": rand(4, 5)}, 1, (), 21, {"equation": "...j,jk->...k"}),
    ("Einsum", {"a": rand(3, 4)}, 1, (), 21, {"equation": "ij"}),
    ("BatchNormalization", BN, 1, (), 21, {}),
    ("BatchNormalization", BN, 1, ("s", "b", "m", "v"), 9, {"epsilon": 1e-3}),
    ("BatchNormalization", dict(BN, x=rand(2, 3)), 1, (), 7, {}),
    ("LayerNormalization", {"x": X, "s": rand(6), "b": rand(6, seed=3)}, 1, (), 17, {}),
    ("LayerNormalization", {"x": X, "s": rand(5, 6)}, 3, (), 17, {"axis": 2, "epsilon": 1e-3}),
    ("InstanceNormalization", {"x": X, "s": C, "b": rand(3, seed=1)}, 1, (), 21, {}),
    ("MaxPool", {"x": X}, 1, (), 21, {"kernel_shape": [2, 2]}),
    ("MaxPool", {"x": X}, 2, (), 21, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"x": X}, 2, (), 21, {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1, "storage_order": 1}),
    ("MaxPool", {"x": X}, 1, (), 21, {"kernel_shape": [3, 2], "auto_pad": "SAME_UPPER", "strides": [2, 1]}),
    ("MaxPool", {"x": X}, 1, (), 21, {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 0, 1, 0]}),
    ("MaxPool", {"x": rand(1, 2, 7)}, 1, (), 21, {"kernel_shape": [3], "auto_pad": "SAME_LOWER", "strides": [2]}),
    ("MaxPool", {"x": rand(1, 1, 3, 3, 3)}, 1, (), 21, {"kernel_shape": [2, 2, 2]}),
    ("MaxPool", {"x": X}, 1, (), 7, {"kernel_shape": [2, 2]}),
    ("AveragePool", {"x": X}, 1, (), 21, {"kernel_shape": [2, 2]}),
    ("AveragePool", {"x": X}, 1, (), 21, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"x": X}, 1, (), 21, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"x": X}, 1, (), 21, {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"x": X}, 1, (), 21, {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1,
                                          "count_include_pad": 1, "pads": [1, 0, 1, 0]}),
    ("AveragePool", {"x": X}, 1, (), 21, {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("AveragePool", {"x": X}, 1, (), 19, {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    ("GlobalAveragePool", {"x": X}, 1, (), 21, {}),
    ("GlobalMaxPool", {"x": X}, 1, (), 21, {}),
    ("GlobalAveragePool", {"x": rand(2, 3, 4)}, 1, (), 21, {}),
]


def _id(c):
    op, _, n, consts, opset, attrs = c
    return f"{op}-{opset}-{n}-{'c' if consts else ''}" + ",".join(f"{k}={v}" for k, v in attrs.items())


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_op_matches_onnxruntime_and_lowering(case):
    op, inputs, n_out, consts, opset, attrs = case
    check_op(op, inputs, n_out, consts=consts, opset=opset, **attrs)


def test_batchnorm_class_depends_on_constant_parameters():
    from fusion.ops.table import Mapping
    g = check_op("BatchNormalization", BN, consts=("s", "b", "m", "v"))
    assert g.nodes[0].opdef.mapping_of(g.nodes[0]) == Mapping.O2O
    g = check_op("BatchNormalization", BN)
    assert g.nodes[0].opdef.mapping_of(g.nodes[0]) == Mapping.O2M


def test_batchnorm_training_mode_is_a_clear_error():
    import fusion
    from test_ops_common import make_model
    m = make_model("BatchNormalization", BN, 3, opset=15, training_mode=1)
    with pytest.raises(fusion.FusionError, match="training_mode=1 is not supported"):
        fusion.load(m)
