"""Run-time (data-dependent) dims in the C backend: small graphs where NonZero
or TopK decides a size, followed by the movement, gather and reduction ops
that must respect the actual size (not the capacity), each compiled and
compared with onnxruntime on inputs that give different sizes (0 included)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import fusion
from fusion.errors import UnsupportedOpError
from fusion.oracle import compare, run_onnxruntime

pytest.importorskip("fusion.codegen.opaque")

F, I64 = T.FLOAT, T.INT64


def model(nodes, inputs, outputs, inits=(), opset=13):
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                     [h.make_tensor_value_info(n, t, None) for n, t in outputs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def i64(name, vals):
    return onnx.numpy_helper.from_array(np.array(vals, np.int64), name)


def f32(name, vals):
    return onnx.numpy_helper.from_array(np.array(vals, np.float32), name)


# x [12] -> positions of its positive elements: p [1, n] (int64), n decided at run time
NZ = [h.make_node("Greater", ["x", "zero"], ["g"]), h.make_node("NonZero", ["g"], ["p"])]
NZ_INITS = [f32("zero", 0.0)]


def feeds_for(seed):
    if seed == 0:
        return {"x": -np.ones(12, np.float32)}          # nothing selected: every run-time size is 0
    if seed == 1:
        return {"x": np.ones(12, np.float32)}           # everything selected: sizes at their bound
    return {"x": np.random.default_rng(seed).standard_normal(12).astype(np.float32)}


def run_cases(m, seeds=range(6)):
    mod = fusion.compile(fusion.load(m), threads=1, profile_db=False)
    for seed in seeds:
        feeds = feeds_for(seed)
        exp = run_onnxruntime(m, feeds)
        got = mod.run(feeds)
        for k in exp:
            assert got[k].shape == exp[k].shape, (seed, k, got[k].shape, exp[k].shape)
        rep = compare(got, exp)
        assert rep.ok, f"seed {seed}: {rep}"
    return mod


def test_transpose_and_elementwise_over_run_time_dim():
    # faster-rcnn's RPN: NonZero -> Transpose [n, 1] -> arithmetic
    m = model(NZ + [h.make_node("Transpose", ["p"], ["t"], perm=[1, 0]), h.make_node("Cast", ["t"], ["c"], to=F),
                    h.make_node("Mul", ["c", "half"], ["z"])],
              [("x", F, [12])], [("z", F)], NZ_INITS + [f32("half", 0.5)])
    run_cases(m)


def test_reduction_over_run_time_dim_skips_the_padding():
    m = model(NZ + [h.make_node("Cast", ["p"], ["c"], to=F), h.make_node("Add", ["c", "one"], ["d"]),
                    h.make_node("ReduceSum", ["d", "ax"], ["s"], keepdims=1),
                    h.make_node("ReduceMax", ["d"], ["mx"], axes=[1], keepdims=0),
                    h.make_node("ArgMax", ["d"], ["am"], axis=1)],
              [("x", F, [12])], [("s", F), ("mx", F), ("am", I64)], NZ_INITS + [f32("one", 1.0), i64("ax", [1])])
    mod = fusion.compile(fusion.load(m), threads=1, profile_db=False)
    for seed in range(1, 6):   # max/argmax of nothing is an error in onnxruntime: n > 0 here
        feeds = feeds_for(seed)
        assert compare(mod.run(feeds), run_onnxruntime(m, feeds)).ok


def test_softmax_and_matmul_over_run_time_dim():
    # Softmax along the run-time axis; a MatMul whose reduction runs over it ([1, n] x [n, 1])
    m = model(NZ + [h.make_node("Cast", ["p"], ["c"], to=F), h.make_node("Mul", ["c", "k"], ["d"]),
                    h.make_node("Softmax", ["d"], ["sm"], axis=1),
                    h.make_node("Transpose", ["d"], ["dt"], perm=[1, 0]),
                    h.make_node("MatMul", ["d", "dt"], ["mm"]),
                    h.make_node("MatMul", ["dt", "w"], ["rows"])],
              [("x", F, [12])], [("sm", F), ("mm", F), ("rows", F)],
              NZ_INITS + [f32("k", 0.3), f32("w", np.arange(3, dtype=np.float32).reshape(1, 3))])
    run_cases(m)


def test_slice_with_negative_start_and_step_on_run_time_dim():
    # the SSD post-processing pattern: a Slice of a run-time-sized vector (length Min(3, n) etc.)
    m = model(NZ + [h.make_node("Squeeze", ["p", "ax0"], ["q"]),
                    h.make_node("Slice", ["q", "s1", "e1"], ["a"]),
                    h.make_node("Slice", ["q", "s2", "e2", "ax0", "st2"], ["b"]),
                    h.make_node("Slice", ["q", "s3", "e3"], ["c"])],
              [("x", F, [12])], [("a", I64), ("b", I64), ("c", I64)],
              NZ_INITS + [i64("ax0", [0]), i64("s1", [-3]), i64("e1", [2 ** 62]), i64("s2", [-1]),
                          i64("e2", [-2 ** 62]), i64("st2", [-2]), i64("s3", [1]), i64("e3", [-1])])
    run_cases(m)


def test_gather_concat_shape_on_run_time_dims():
    # Gather with negative indices along the run-time axis; Concat of two run-time pieces
    # (offset of the second = actual size of the first, a formula k + n); Shape of the result
    nodes = NZ + [h.make_node("Cast", ["p"], ["c"], to=F),
                  h.make_node("TopK", ["x2", "kk"], ["tv", "ti"], axis=1),
                  h.make_node("Concat", ["c", "tv"], ["cat"], axis=1),
                  h.make_node("Gather", ["cat", "gi"], ["g2"], axis=1),
                  h.make_node("Shape", ["cat"], ["shp"]),
                  h.make_node("ReduceSum", ["cat", "ax1"], ["tot"], keepdims=0)]
    m = model(nodes, [("x", F, [12])], [("cat", F), ("g2", F), ("shp", I64), ("tot", F)],
              NZ_INITS + [f32("x2", np.arange(7, dtype=np.float32)[None] * 1.5), i64("kk", [4]),
                          i64("gi", [-1, 0, -2]), i64("ax1", [1])])
    run_cases(m, seeds=range(1, 6))


def test_reshape_keeping_the_padded_layout():
    # [1, n] -> [n] -> [n, 1] -> [n]: the run-time dim stays the only non-1 leading dim
    m = model(NZ + [h.make_node("Reshape", ["p", "m1"], ["r"]), h.make_node("Unsqueeze", ["r", "ax1"], ["u"]),
                    h.make_node("Concat", ["u", "u"], ["uu"], axis=1), h.make_node("Flatten", ["uu"], ["z"], axis=0)],
              [("x", F, [12])], [("z", I64)], NZ_INITS + [i64("m1", [-1]), i64("ax1", [1])])
    run_cases(m)


def test_unsupported_use_of_a_run_time_dim_is_one_clear_line():
    # ReduceMean divides by the number of terms: not maskable; refused, naming the node
    m = model(NZ + [h.make_node("Cast", ["p"], ["c"], to=F),
                    h.make_node("ReduceMean", ["c"], ["z"], axes=[1], keepdims=0, name="mean_of_positions")],
              [("x", F, [12])], [("z", F)], NZ_INITS)
    with pytest.raises(UnsupportedOpError) as e:
        fusion.compile(fusion.load(m), threads=1, profile_db=False)
    msg = str(e.value)
    assert "mean_of_positions" in msg and "run time" in msg and "\n" not in msg


def test_if_with_branches_of_different_run_time_sizes():
    # torchvision's batched_nms: `if boxes.numel() == 0: return empty else: ...keep`; each branch's
    # kernels run under a guard and the taken branch's actual size becomes the If output's size
    then_g = h.make_graph([h.make_node("Squeeze", ["p", "ax0"], ["tq"])], "then", [],
                          [h.make_tensor_value_info("tq", I64, None)])
    else_g = h.make_graph([h.make_node("Constant", [], ["ec"], value=onnx.numpy_helper.from_array(
        np.array([7, 7, 7, 7, 7], np.int64)))], "else", [], [h.make_tensor_value_info("ec", I64, None)])
    nodes = NZ + [h.make_node("ReduceMax", ["x"], ["mx"], keepdims=0), h.make_node("Greater", ["mx", "half"], ["c"]),
                  h.make_node("If", ["c"], ["r"], then_branch=then_g, else_branch=else_g),
                  h.make_node("Add", ["r", "one"], ["z"])]
    m = model(nodes, [("x", F, [12])], [("z", I64)], NZ_INITS + [i64("ax0", [0]), f32("half", 0.5), i64("one", 1)])
    run_cases(m)


def test_sizes_that_are_run_time_values_get_formulas():
    # Expand to a shape built from Shape of a run-time-sized tensor; Range up to a run-time size
    # (negative indices) feeding ScatterElements over a run-time axis; Pad keeping the run-time dim;
    # a Slice whose end is computed at run time on the run-time axis
    nodes = NZ + [
        h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Cast", ["q"], ["qf"], to=F),
        h.make_node("Shape", ["p"], ["shp"]), h.make_node("Gather", ["shp", "one"], ["n0"]),
        h.make_node("Unsqueeze", ["n0", "ax0"], ["n1"]), h.make_node("Concat", ["three", "n1"], ["esh"], axis=0),
        h.make_node("Cast", ["p"], ["pf"], to=F), h.make_node("Expand", ["pf", "esh"], ["ex"]),
        h.make_node("Neg", ["n0"], ["negn"]), h.make_node("Sub", ["negn", "one"], ["lim"]),
        h.make_node("Range", ["m1", "lim", "m1"], ["ridx"]),
        h.make_node("ScatterElements", ["qf", "ridx", "qf"], ["rev"], axis=0),
        h.make_node("Unsqueeze", ["qf", "ax1"], ["q2"]), h.make_node("Pad", ["q2", "pads"], ["pd"]),
        h.make_node("Slice", ["q", "one1", "n1"], ["sl"])]
    m = model(nodes, [("x", F, [12])], [("ex", F), ("rev", F), ("pd", F), ("sl", I64)],
              NZ_INITS + [i64("ax0", [0]), i64("ax1", [1]), i64("one", 1), i64("one1", [1]), i64("m1", -1),
                          i64("three", [3]), i64("pads", [0, 1, 0, 2])])
    run_cases(m)


def test_conv_and_pool_over_run_time_batch():
    # Mask R-CNN's mask head: convolutions over a run-time number of RoIs
    rng = np.random.default_rng(0)
    nodes = NZ + [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["img", "q"], ["rois"], axis=0),
                  h.make_node("Conv", ["rois", "w", "b"], ["cv"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["cv"], ["r"]),
                  h.make_node("MaxPool", ["r"], ["z"], kernel_shape=[2, 2], strides=[2, 2])]
    m = model(nodes, [("x", F, [12])], [("z", F)],
              NZ_INITS + [i64("ax0", [0]), f32("img", rng.standard_normal((12, 2, 6, 6))),
                          f32("w", rng.standard_normal((3, 2, 3, 3))), f32("b", rng.standard_normal(3))])
    run_cases(m)


def test_slice_length_formula_follows_onnx_clamping():
    import itertools
    import sympy
    from fusion.ops.shape import slice_count_formula
    n = sympy.Symbol("n", integer=True, nonnegative=True)
    for s, e, st in itertools.product([-7, -1, 0, 2, 9, 2 ** 40], [-9, -1, 0, 3, 2 ** 62, -2 ** 62], [1, 2, -1, -3]):
        f = slice_count_formula(s, e, st, n)
        for d in range(8):
            assert int(f.subs(n, d)) == len(range(*slice(s, e, st).indices(d))), (s, e, st, d, f)
    assert slice_count_formula(n - 3, 5, 1, n) is None   # the sign of a run-time start must be known


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_elements_over_run_time_indices(reduction):
    # torchvision's MultiScaleRoIAlign: each level's RoIs scattered back into place by run-time indices
    # (a direct scatter kernel over the actual indices; negative indices count from the actual end)
    nodes = NZ + [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Neg", ["q"], ["nq"]),
                  h.make_node("Sub", ["nq", "one"], ["idx"]),          # -(q + 1): negative, from the end
                  h.make_node("Unsqueeze", ["idx", "ax1"], ["idx2"]), h.make_node("Expand", ["idx2", "sh"], ["ie"]),
                  h.make_node("Cast", ["ie"], ["upd"], to=F),
                  h.make_node("ScatterElements", ["data", "ie", "upd"], ["z"], axis=0, reduction=reduction)]
    m = model(nodes, [("x", F, [12])], [("z", F)],
              NZ_INITS + [i64("ax0", [0]), i64("ax1", [1]), i64("one", 1), i64("sh", [1, 3]),
                          f32("data", np.arange(36, dtype=np.float32).reshape(12, 3))], opset=16)
    mod = run_cases(m)
    assert "direct scatter" in " ".join(b["schedule"] for b in mod.report["block_schedules"])


def test_slice_with_run_time_ends_keeps_the_unsliced_axes_static():
    # ends from a run-time count, axes constant: only axis 0 is decided at run time
    nodes = NZ + [h.make_node("Shape", ["p"], ["ps"]), h.make_node("Gather", ["ps", "one"], ["n"], axis=0),
                  h.make_node("Unsqueeze", ["n", "ax0"], ["end"]),
                  h.make_node("Slice", ["table", "zero_i", "end", "ax0"], ["y"])]
    m = model(nodes, [("x", F, [12])], [("y", F)],
              NZ_INITS + [i64("one", 1), i64("ax0", [0]), i64("zero_i", [0]),
                          f32("table", np.arange(48, dtype=np.float32).reshape(12, 4))])
    g = fusion.load(m)
    y = g.outputs[0]
    assert not isinstance(y.shape[0], int) and y.shape[1] == 4
    run_cases(m)
