"""The op table as a whole: the reference models' ops are all described, each
fully (shape rule, reference, index function or opaque, class, FLOPs), old
opsets normalize to forms that export back to ONNX, and user mistakes give
one clear line."""
import numpy as np
import pytest

import fusion
from fusion.ir.builder import GraphBuilder
from fusion.ops import get_op
from fusion.ops.table import Mapping
from fusion.oracle import compare, run_onnxruntime
from test_ops_common import make_model, rand

# The ops of the 15 reference models (issue 2, item 4), beyond the elementwise ones.
MODEL_OPS = """Gemm BatchNormalization MaxPool AveragePool GlobalAveragePool GlobalMaxPool Flatten Squeeze
Unsqueeze Gather Slice Split Shape Size Expand Pad ConstantOfShape Range Constant LayerNormalization Dropout
Resize Upsample ConvTranspose Tile Trilu CumSum ArgMax ArgMin InstanceNormalization GatherElements GatherND
ScatterND ScatterElements Einsum DepthToSpace SpaceToDepth OneHot TopK NonMaxSuppression RoiAlign NonZero
If Loop Scan Conv MatMul Reshape Transpose Concat Softmax ReduceMean""".split()
OPAQUE = {"TopK", "NonMaxSuppression", "RoiAlign", "NonZero", "If", "Loop", "Scan", "Constant"}


@pytest.mark.parametrize("name", MODEL_OPS)
def test_model_op_is_fully_described(name):
    od = get_op(name)
    assert od is not None, f"{name} is not in the op table"
    assert od.infer is not None and od.reference is not None
    if name in OPAQUE:
        assert od.lower is None and od.mapping == Mapping.OPAQUE
    else:
        assert od.lower is not None
        assert callable(od.mapping) or od.mapping != Mapping.OPAQUE, f"{name} declares no class"


def test_builder_reaches_new_ops_and_flops_are_counted():
    b = GraphBuilder()
    x = b.input("x", "float32", [1, 4, 8, 8])
    y = b.max_pool(x, kernel_shape=[2, 2], strides=[2, 2])
    y = b.global_average_pool(y)
    y = b.flatten(y)
    y = b.gemm(y, rand(4, 3), rand(3))
    b.output(y)
    g = b.build()
    assert [n.op for n in g.nodes] == ["MaxPool", "GlobalAveragePool", "Flatten", "Gemm"]
    assert g.outputs[0].shape == (1, 3)
    flops = [n.opdef.flops(n) for n in g.nodes]
    assert flops[0] == 4 * 4 * 4 * 4 and flops[3] > 2 * 4 * 3
    out = fusion.run_reference(g, {"x": rand(1, 4, 8, 8)})["Gemm"]
    assert out.shape == (1, 3)


i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
X = rand(2, 3, 4)
# Old-opset spellings: imported, normalized, exported at a newer opset, and
# still computing what onnxruntime computes on the original.
OLD = [
    ("Slice", {"x": X}, 1, 9, {"starts": [1], "ends": [3], "axes": [2]}),
    ("Pad", {"x": X}, 1, 9, {"pads": [0, 1, 0, 0, 1, 2], "value": 0.5}),
    ("Split", {"x": X}, 2, 11, {"axis": 2, "split": [1, 3]}),
    ("Squeeze", {"x": rand(2, 1, 4)}, 1, 11, {"axes": [1]}),
    ("Unsqueeze", {"x": X}, 1, 11, {"axes": [0]}),
    ("TopK", {"x": X}, 2, 9, {"k": 2}),
    ("Dropout", {"x": X}, 1, 7, {"ratio": 0.2}),
    ("ReduceMean", {"x": X}, 1, 11, {"axes": [1]}),
]


@pytest.mark.parametrize("case", OLD, ids=[c[0] for c in OLD])
def test_old_opsets_normalize_and_export(case):
    op, inputs, n, opset, attrs = case
    m = make_model(op, inputs, n, opset=opset, **attrs)
    g = fusion.load(m)
    exported = fusion.to_onnx(g)
    feeds = {k: v for k, v in inputs.items()}
    want = run_onnxruntime(m, feeds)
    got = run_onnxruntime(exported, feeds)
    assert compare(got, want).ok
    assert compare(fusion.run_reference(g, feeds), want).ok


ERRORS = [
    ("Slice", {"x": X, "s": i64(0), "e": i64(1), "a": i64(0), "st": i64(0)}, ("s", "e", "a", "st"), {}, "Slice step 0"),
    ("Split", {"x": X}, (), {"axis": 2}, "does not split evenly into 3 outputs"),
    ("Squeeze", {"x": X, "a": i64(1)}, ("a",), {}, "cannot squeeze axis 1 of size 3"),
    ("Gemm", {"a": rand(3, 4), "b": rand(5, 4)}, (), {}, "Gemm inner dimensions differ"),
    ("MaxPool", {"x": rand(1, 1, 2, 2)}, (), {"kernel_shape": [3, 3]}, "does not fit input"),
    ("Reshape", {"x": X, "s": i64(5, -1)}, ("s",), {}, "cannot reshape"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_user_mistakes_are_one_line_errors(case):
    op, inputs, consts, attrs, msg = case
    n_out = 3 if op == "Split" else 1
    m = make_model(op, inputs, n_out, consts=consts, **attrs)
    with pytest.raises(fusion.FusionError) as e:
        fusion.load(m)
    assert msg in str(e.value) and "\n" not in str(e.value) and f"({op})" in str(e.value)
