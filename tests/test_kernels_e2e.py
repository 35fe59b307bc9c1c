"""The anchor kernels inside whole compiled models (fusion.compile, the core's
code generator), checked against onnxruntime: every anchor must get a fast
kernel (its schedule in the report) and the outputs must match."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fusion.oracle import compare, run_onnxruntime  # noqa: E402


class _Net:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def w(self, *shape):
        t = numpy_helper.from_array((self.rng.standard_normal(shape) * 0.3).astype(np.float32), f"w{len(self.inits)}")
        self.inits.append(t)
        return t.name

    def add(self, op, ins, **attrs):
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def const_i64(self, vals):
        t = numpy_helper.from_array(np.array(vals, np.int64), f"c{len(self.inits)}")
        self.inits.append(t)
        return t.name

    def model(self, inputs, out):
        g = helper.make_graph(self.nodes, "k", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                for n, s in inputs],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _cnn():
    n = _Net(1)
    h = n.add("Conv", ["x", n.w(16, 3, 3, 3), n.w(16)], pads=[1, 1, 1, 1], strides=[2, 2])
    h = n.add("Relu", [h])
    h = n.add("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    h = n.add("Conv", [h, n.w(16, 1, 3, 3), n.w(16)], pads=[1, 1, 1, 1], group=16)
    h = n.add("Relu", [h])
    h = n.add("Conv", [h, n.w(24, 16, 1, 1)])
    h = n.add("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = n.add("GlobalAveragePool", [h])
    h = n.add("Flatten", [h])
    h = n.add("Gemm", [h, n.w(10, 24), n.w(10)], transB=1)
    return n.model([("x", [2, 3, 45, 47])], h), 7


def _cnn_concat_ceil():
    """A Concat of a conv's output with another branch in the conv's block (the kernel writes its
    channels, a loop nest the rest), ceil-mode pooling, a depthwise conv on rows narrower than a
    vector register, Gemm with alpha/beta."""
    n = _Net(3)
    a = n.add("Conv", ["x", n.w(8, 3, 3, 3), n.w(8)], pads=[1, 1, 1, 1])
    b = n.add("Relu", [n.add("Conv", ["x", n.w(6, 3, 1, 1)])])
    h = n.add("Concat", [n.add("Sigmoid", [a]), b, n.add("Relu", [a])], axis=1)
    h = n.add("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    h = n.add("Conv", [h, n.w(22, 1, 3, 3), n.w(22)], pads=[1, 1, 1, 1], group=22)
    h = n.add("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, count_include_pad=1,
              pads=[1, 1, 0, 0])
    h = n.add("GlobalAveragePool", [h])
    h = n.add("Flatten", [h])
    h = n.add("Gemm", [h, n.w(10, 22), n.w(10)], transB=1, alpha=0.5, beta=2.0)
    return n.model([("x", [1, 3, 14, 13])], h), 7


def _attention():
    """x [1, 20, 32] -> q, k, v projections -> scores = q k^T (both at run time) -> softmax -> p v -> out."""
    n = _Net(2)
    q = n.add("MatMul", ["x", n.w(32, 32)])
    k = n.add("MatMul", ["x", n.w(32, 32)])
    v = n.add("MatMul", ["x", n.w(32, 32)])
    q4 = n.add("Transpose", [n.add("Reshape", [q, n.inits.append(numpy_helper.from_array(
        np.array([1, 20, 4, 8], np.int64), "shp")) or "shp"])], perm=[0, 2, 1, 3])
    k4 = n.add("Transpose", [n.add("Reshape", [k, "shp"])], perm=[0, 2, 3, 1])
    v4 = n.add("Transpose", [n.add("Reshape", [v, "shp"])], perm=[0, 2, 1, 3])
    s = n.add("MatMul", [q4, k4])
    p = n.add("Softmax", [s], axis=-1)
    o = n.add("MatMul", [p, v4])
    o = n.add("Reshape", [n.add("Transpose", [o], perm=[0, 2, 1, 3]), n.inits.append(numpy_helper.from_array(
        np.array([1, 20, 32], np.int64), "shp2")) or "shp2"])
    o = n.add("MatMul", [o, n.w(32, 32)])
    return n.model([("x", [1, 20, 32])], o), 6


@pytest.mark.parametrize("make", [_cnn, _cnn_concat_ceil, _attention], ids=["cnn", "concat-ceil", "attention"])
def test_compiled_model_uses_kernels_and_matches(make):
    fusion = pytest.importorskip("fusion")
    try:
        from fusion.codegen import compile as compile_model  # noqa: F401
    except ImportError:
        pytest.skip("the core code generator is not in this tree")
    model, anchors = make()
    mod = fusion.compile(model)
    x = np.random.default_rng(0).standard_normal(
        [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    got = mod.run({"x": x})
    want = run_onnxruntime(model, {"x": x})
    rep = compare(got, want)
    assert rep.ok, str(rep)
    ours = ("micro-kernel", "direct conv", "pool")
    fast = [b for b in mod.report["block_schedules"] if b.get("anchor") and any(s in b["schedule"] for s in ours)]
    anchored = [b for b in mod.report["block_schedules"] if b.get("anchor") and b["anchor"] != "Softmax"]
    assert len(fast) == len(anchored) == anchors, mod.report["block_schedules"]


def test_concat_in_conv_block_keeps_the_kernel():
    """The conv block that also holds the Concat gets the GEMM kernel plus a loop nest for the
    other inputs' channels (not a plain loop nest recomputing the conv per element)."""
    fusion = pytest.importorskip("fusion")
    model, _ = _cnn_concat_ceil()
    mod = fusion.compile(model)
    cat = [b for b in mod.report["block_schedules"] if "Concat" in b["ops"]]
    assert cat and all("micro-kernel" in b["schedule"] and "Concat inputs" in b["schedule"] for b in cat), cat


def test_flat_epilogues_only_where_the_position_enters_as_its_offset():
    """SiLU + residual Add (same shape) run as one loop over each plane; an Add of a [1, 1, 7, 1]
    constant (broadcast along W: the offset alone does not give its element) must keep the
    per-row epilogue. Both against onnxruntime."""
    fusion = pytest.importorskip("fusion")
    n = _Net(4)
    h = n.add("Conv", ["x", n.w(8, 1, 3, 3), n.w(8)], pads=[1, 1, 1, 1], group=8)
    h = n.add("Add", [n.add("Mul", [h, n.add("Sigmoid", [h])]), "x"])
    h = n.add("Conv", [h, n.w(8, 1, 3, 3)], pads=[1, 1, 1, 1], group=8)
    h = n.add("Add", [h, n.w(1, 1, 7, 1)])
    h = n.add("Conv", [h, n.w(96, 8, 1, 1)])
    h = n.add("Add", [h, n.w(1, 96, 7, 1)])
    model = n.model([("x", [1, 8, 7, 7])], h)
    mod = fusion.compile(model)
    x = np.random.default_rng(1).standard_normal((1, 8, 7, 7)).astype(np.float32)
    rep = compare(mod.run({"x": x}), run_onnxruntime(model, {"x": x}))
    assert rep.ok, str(rep)
    kinds = [b["schedule"] for b in mod.report["block_schedules"] if b.get("anchor") == "Conv"]
    assert len(kinds) == 3 and all("direct conv" in k or "gemm" in k for k in kinds), kinds


@pytest.mark.parametrize("case", ["gemm", "transposed", "depthwise", "mean-const"])
def test_flat_epilogue_with_an_innermost_dim_of_one(case):
    """Outputs [n, c, H, 1]: the flat epilogue's offset goes in the innermost spatial index, which
    an extent-1 dim prints as 0, so it must keep the per-row form (fuzz_900544_Conv_Abs wrote every
    output row to its first element and left the rest unwritten)."""
    fusion = pytest.importorskip("fusion")
    n = _Net(5)
    if case == "gemm":        # 1x2 kernel, strides 2 over a 2-column input (fuzz_900544); 300 positions
        shape = [1, 1, 600, 2]
        h = n.add("Conv", ["x", n.w(2, 1, 1, 2), n.w(2)], strides=[2, 2])
        h = n.add("Abs", [h])
    elif case == "transposed":  # few positions, many channels
        shape = [1, 32, 7, 1]
        h = n.add("Conv", ["x", n.w(96, 32, 1, 1), n.w(96)])
        h = n.add("Abs", [h])   # one-input chains reach the store through the forward map: W index 0
    elif case == "depthwise":
        shape = [2, 8, 9, 1]
        h = n.add("Conv", ["x", n.w(8, 1, 3, 1), n.w(8)], pads=[1, 0, 1, 0], group=8)
        h = n.add("Add", [n.add("Mul", [h, n.add("Sigmoid", [h])]), "x"])
    else:                     # 2x1 kernel -> Mean with a constant (fuzz_800675)
        shape = [5, 2, 8, 1]
        h = n.add("Conv", ["x", n.w(3, 2, 2, 1), n.w(3)], kernel_shape=[2, 1])
        h = n.add("Mean", [h, n.w(1, 1, 1)])
    model = n.model([("x", shape)], h)
    mod = fusion.compile(model)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    rep = compare(mod.run({"x": x}), run_onnxruntime(model, {"x": x}))
    assert rep.ok, str(rep)
    kinds = [b["schedule"] for b in mod.report["block_schedules"] if b.get("anchor") == "Conv"]
    want = {"gemm": "implicit gemm", "transposed": "transposed gemm", "depthwise": "direct conv",
            "mean-const": "gemm"}[case]   # 7 positions: the transposed form
    assert len(kinds) == 1 and want in kinds[0], kinds


@pytest.mark.parametrize("op", ["Pow", "Mul"])
def test_concat_of_the_anchor_with_a_function_of_it(op):
    """Concat(f(pool), pool): the other input's part reads the anchor, which exists only inside the
    kernel's epilogue, so no loop nest after the kernel can compute it from there (fuzz_600838
    wrote pow(0, 0) = 1 there): the pooling goes to a scratch buffer and the whole output is
    computed from it. The values must match onnxruntime."""
    fusion = pytest.importorskip("fusion")
    n = _Net(6)
    p = n.add("MaxPool", ["x"], kernel_shape=[1, 3], strides=[2, 2])
    h = n.add("Concat", [n.add(op, [p, p]), p], axis=2)
    model = n.model([("x", [1, 3, 1, 6])], h)
    mod = fusion.compile(model)
    x = np.random.default_rng(3).uniform(0.5, 2.0, (1, 3, 1, 6)).astype(np.float32)
    rep = compare(mod.run({"x": x}), run_onnxruntime(model, {"x": x}))
    assert rep.ok, str(rep)
    kinds = [b["schedule"] for b in mod.report["block_schedules"]]
    assert len(kinds) == 1 and "scratch buffer" in kinds[0], kinds


def test_conv_transpose_kernel_equals_stride_with_output_padding():
    """kernel == stride with output_padding reaching past the last tap (fuzz seed 950004): the
    outputs no tap writes hold the bias, so this is not the exact GEMM + scatter (which stores
    only where a tap lands); it takes the gather form."""
    fusion = pytest.importorskip("fusion")
    n = _Net(7)
    h = n.add("ConvTranspose", ["x", n.w(4, 3, 2, 2), n.w(3)], kernel_shape=[2, 2], strides=[2, 2],
              pads=[0, 1, 0, 0], output_padding=[1, 1])
    model = n.model([("x", [1, 4, 3, 5])], h)
    mod = fusion.compile(model)
    x = np.random.default_rng(4).standard_normal((1, 4, 3, 5)).astype(np.float32)
    rep = compare(mod.run({"x": x}), run_onnxruntime(model, {"x": x}))
    assert rep.ok, str(rep)
    kinds = [b["schedule"] for b in mod.report["block_schedules"] if b.get("anchor") == "ConvTranspose"]
    assert len(kinds) == 1 and "gather form" in kinds[0], kinds


def _box_decode():
    """SSD's box head: a conv whose output is read at other elements than its own (each box's
    centre needs its size, four channels apart), reshaped and concatenated with a second head."""
    n = _Net(8)
    a = n.add("Conv", ["x", n.w(8, 6, 3, 3), n.w(8)], pads=[1, 1, 1, 1])
    a = n.add("Reshape", [n.add("Transpose", [a], perm=[0, 2, 3, 1]), n.const_i64([1, -1, 4])])
    b = n.add("Conv", ["y", n.w(4, 6, 1, 1), n.w(4)])
    b = n.add("Reshape", [n.add("Transpose", [b], perm=[0, 2, 3, 1]), n.const_i64([1, -1, 4])])
    h = n.add("Concat", [a, b], axis=1)
    xy = n.add("Slice", [h, n.const_i64([0]), n.const_i64([2]), n.const_i64([2])])
    wh = n.add("Slice", [h, n.const_i64([2]), n.const_i64([4]), n.const_i64([2])])
    h = n.add("Concat", [n.add("Add", [xy, n.add("Mul", [wh, xy])]), n.add("Exp", [wh])], axis=2)
    return n.model([("x", [1, 6, 5, 5]), ("y", [1, 6, 3, 3])], h)


def test_anchor_read_at_other_elements_goes_through_a_scratch_buffer():
    """An output that reads the conv at other elements than its own (box decode) used to cost the
    block its kernel (the conv recomputed per read in a loop nest): now the kernel stores the conv
    in a scratch buffer and loop nests compute the outputs from it. Against onnxruntime, 2 threads."""
    fusion = pytest.importorskip("fusion")
    model = _box_decode()
    mod = fusion.compile(model, threads=2)
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((1, 6, 5, 5)).astype(np.float32),
             "y": rng.standard_normal((1, 6, 3, 3)).astype(np.float32)}
    rep = compare(mod.run(feeds), run_onnxruntime(model, feeds))
    assert rep.ok, str(rep)
    kinds = [b["schedule"] for b in mod.report["block_schedules"] if b.get("anchor") == "Conv"]
    assert kinds and all("gemm" in k or "direct conv" in k for k in kinds), kinds
    assert any("scratch buffer" in k for k in kinds), kinds


@pytest.mark.parametrize("shape, k, stride, grp", [
    ([1, 20, 7, 7], 5, 1, 20),      # 8 + 8 + 4 planes per batch of copies, one vector per row
    ([1, 12, 7, 7], 3, 1, 12),
    ([2, 6, 9, 70], 3, 2, 3),        # two channels per group, rows of two blocks (the last partial)
    ([1, 4, 6, 70], 3, 1, 4),        # a 64-lane block then a partial one: spills onto the next row
])
def test_depthwise_batched_planes_with_silu(shape, k, stride, grp):
    """Small planes are copied, convolved and finished (SiLU, one loop per plane) several groups
    at a time; against onnxruntime with 2 threads (work items split inside a batch)."""
    fusion = pytest.importorskip("fusion")
    n = _Net(9)
    c = shape[1]
    h = n.add("Conv", ["x", n.w(c, c // grp, k, k), n.w(c)], pads=[k // 2] * 4, group=grp, strides=[stride] * 2)
    h = n.add("Mul", [h, n.add("Sigmoid", [h])])
    model = n.model([("x", shape)], h)
    mod = fusion.compile(model, threads=2)
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    rep = compare(mod.run({"x": x}), run_onnxruntime(model, {"x": x}))
    assert rep.ok, str(rep)
    kinds = [b["schedule"] for b in mod.report["block_schedules"] if b.get("anchor") == "Conv"]
    assert len(kinds) == 1 and "direct conv" in kinds[0], kinds


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_gemm_anchor_read_at_other_elements(op):
    """out = y[..., :4] op f(y[..., 4:]) of a batched MatMul / a Gemm with bias: the scratch buffer
    holds y at the GEMM kernels' [*batch, m, n] index (Gemm's C added before the store)."""
    fusion = pytest.importorskip("fusion")
    n = _Net(11)
    if op == "MatMul":
        shape, axis = [2, 5, 16], 2
        y = n.add("MatMul", ["x", n.w(2, 16, 8)])
    else:
        shape, axis = [5, 16], 1
        y = n.add("Gemm", ["x", n.w(16, 8), n.w(8)])
    a = n.add("Slice", [y, n.const_i64([0]), n.const_i64([4]), n.const_i64([axis])])
    b = n.add("Slice", [y, n.const_i64([4]), n.const_i64([8]), n.const_i64([axis])])
    h = n.add("Mul", [a, n.add("Exp", [b])])
    model = n.model([("x", shape)], h)
    mod = fusion.compile(model, threads=2)
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    rep = compare(mod.run({"x": x}), run_onnxruntime(model, {"x": x}))
    assert rep.ok, str(rep)
    kinds = [b["schedule"] for b in mod.report["block_schedules"]]
    assert len(kinds) == 1 and "gemm" in kinds[0] and "scratch buffer" in kinds[0], kinds
