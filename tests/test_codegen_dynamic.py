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
from fusion.errors import FusionError, UnsupportedOpError
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
    # MeanVarianceNormalization divides by the number of terms: not masked yet; refused, naming the node
    m = model(NZ + [h.make_node("Cast", ["p"], ["c"], to=F),
                    h.make_node("MeanVarianceNormalization", ["c"], ["z"], axes=[1], name="mean_of_positions")],
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
    # a start/end whose sign is known only at run time (read from data): both rules, chosen by sign
    v = sympy.Symbol("v", integer=True)
    for st, e in [(1, 5), (1, -2), (2, 2 ** 62), (-1, -2 ** 62), (-2, 0)]:
        f = slice_count_formula(v, e, st, n)
        g = slice_count_formula(n - 3, e, st, n)
        for d in range(8):
            for x in range(-10, 11):
                assert int(f.subs({n: d, v: x})) == len(range(*slice(x, e, st).indices(d))), (x, e, st, d)
            assert int(g.subs(n, d)) == len(range(*slice(d - 3, e, st).indices(d))), (e, st, d)


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


# ---------------------------------------------------------------------------
# Resize / Pad whose sizes are known only at run time

# n = number of positive x; the count as a [1] tensor: n1
COUNT = NZ + [h.make_node("Shape", ["p"], ["ps"]), h.make_node("Gather", ["ps", "one"], ["n"], axis=0),
              h.make_node("Unsqueeze", ["n", "ax0"], ["n1"])]
COUNT_INITS = NZ_INITS + [i64("one", 1), i64("ax0", [0]), i64("one1", [1]), i64("two1", [2]), i64("c11", [1, 1]),
                          i64("c8", [8])]
IMG = np.random.default_rng(3).standard_normal((1, 1, 12, 4)).astype(np.float32)

RESIZE_MODES = [dict(mode="linear"), dict(mode="linear", coordinate_transformation_mode="align_corners"),
                dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                dict(mode="nearest"), dict(mode="nearest", coordinate_transformation_mode="pytorch_half_pixel",
                                           nearest_mode="ceil"),
                dict(mode="cubic"), dict(mode="cubic", coordinate_transformation_mode="align_corners",
                                         exclude_outside=1, cubic_coeff_a=-0.5),
                dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric")]


def _mode_id(a):
    return "-".join(str(v) for v in a.values())


@pytest.mark.parametrize("attrs", RESIZE_MODES, ids=_mode_id)
def test_resize_to_run_time_sizes_of_a_static_input(attrs):
    # Mask R-CNN's mask paste: Resize(mask [1,1,6,4], sizes=[1,1,n+1,8]); the scale along
    # axis 2 is (n+1)/6 of the actual size, not of the capacity (13)
    nodes = COUNT + [h.make_node("Add", ["n1", "one1"], ["n2"]),
                     h.make_node("Concat", ["c11", "n2", "c8"], ["sz"], axis=0),
                     h.make_node("Resize", ["img", "", "", "sz"], ["y"], **attrs)]
    m = model(nodes, [("x", F, [12])], [("y", F)], COUNT_INITS + [f32("img", IMG[:, :, :6])], opset=19)
    run_cases(m)


@pytest.mark.parametrize("attrs", RESIZE_MODES[:4] + RESIZE_MODES[5:6], ids=_mode_id)
def test_resize_of_a_run_time_input_to_run_time_sizes(attrs):
    # input [1,1,n,4] (rows picked by the positions), sizes [1,1,2n,n+1]: n = 0 gives an empty output
    nodes = COUNT + [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["img", "q"], ["gi"], axis=2),
                     h.make_node("Mul", ["n1", "two1"], ["h2"]), h.make_node("Add", ["n1", "one1"], ["w2"]),
                     h.make_node("Concat", ["c11", "h2", "w2"], ["sz"], axis=0),
                     h.make_node("Resize", ["gi", "", "", "sz"], ["y"], **attrs)]
    m = model(nodes, [("x", F, [12])], [("y", F)], COUNT_INITS + [f32("img", IMG)], opset=19)
    run_cases(m)


@pytest.mark.parametrize("op,scales", [("Resize", [1, 1, 2.0, 0.5]), ("Resize", [1, 1, 1.5, 0.75]),
                                       ("Upsample", [1, 1, 2.0, 1.5])])
def test_resize_by_constant_scales_of_a_run_time_input(op, scales):
    # output dim floor(n * scale): a formula (scales exact in float32 products)
    if op == "Resize":
        nodes = NZ + [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["img", "q"], ["gi"], axis=2),
                      h.make_node("Resize", ["gi", "", "sc"], ["y"], mode="linear")]
        inits, opset = [i64("ax0", [0])], 13
    else:
        nodes = NZ + [h.make_node("Squeeze", ["p"], ["q"], axes=[0]), h.make_node("Gather", ["img", "q"], ["gi"], axis=2),
                      h.make_node("Upsample", ["gi", "sc"], ["y"], mode="nearest")]
        inits, opset = [], 9
    m = model(nodes, [("x", F, [12])], [("y", F)], NZ_INITS + inits + [f32("sc", scales), f32("img", IMG)], opset=opset)
    y = fusion.load(m).outputs[0]
    assert not isinstance(y.shape[2], int) and isinstance(y.shape[3], int)
    run_cases(m)


def test_resize_antialias_to_run_time_sizes_is_one_clear_line():
    nodes = COUNT + [h.make_node("Add", ["n1", "one1"], ["n2"]),
                     h.make_node("Concat", ["c11", "n2", "c8"], ["sz"], axis=0),
                     h.make_node("Resize", ["img", "", "", "sz"], ["y"], mode="linear", antialias=1, name="aa_resize")]
    m = model(nodes, [("x", F, [12])], [("y", F)], COUNT_INITS + [f32("img", IMG[:, :, :6])], opset=19)
    with pytest.raises(UnsupportedOpError) as e:
        fusion.compile(fusion.load(m), threads=1, profile_db=False)
    msg = str(e.value)
    assert "aa_resize" in msg and "run time" in msg and "\n" not in msg


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
def test_pad_of_a_run_time_dim(mode):
    # [n, 3] padded by (1, 2) rows and (0, 1) columns: borders at the actual n; reflect needs n >= 3
    nodes = NZ + [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["tab", "q"], ["t"], axis=0),
                  h.make_node("Pad", ["t", "pads", "cv"], ["y"], mode=mode)]
    m = model(nodes, [("x", F, [12])], [("y", F)],
              NZ_INITS + [i64("ax0", [0]), i64("pads", [1, 0, 2, 1]), f32("cv", 7.5),
                          f32("tab", np.arange(36, dtype=np.float32).reshape(12, 3))])
    mod = fusion.compile(fusion.load(m), threads=1, profile_db=False)
    for seed in range(8):
        feeds = feeds_for(seed)
        n = int((feeds["x"] > 0).sum())
        if mode == "reflect" and n < 3 or mode in ("edge", "wrap") and n == 0:
            continue   # onnxruntime refuses these
        exp = run_onnxruntime(m, feeds)
        got = mod.run(feeds)
        assert got["y"].shape == exp["y"].shape and compare(got, exp).ok, (seed, n)


@pytest.mark.parametrize("dyn_in", [False, True])
def test_pad_by_run_time_pads(dyn_in):
    # pads [0, n, 0, 1] (n columns before, 1 after) read at run time, on [6, 3] or on [n, 3]
    nodes = NZ + [h.make_node("Shape", ["p"], ["ps"]), h.make_node("Gather", ["ps", "one"], ["n"], axis=0),
                  h.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
                  h.make_node("Concat", ["zero1", "n1", "zero1", "one1"], ["pads"], axis=0)]
    if dyn_in:
        nodes += [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["tab", "q"], ["t"], axis=0)]
    nodes.append(h.make_node("Pad", ["t" if dyn_in else "tab6", "pads", "cv"], ["y"]))
    tab = np.arange(36, dtype=np.float32).reshape(12, 3)
    m = model(nodes, [("x", F, [12])], [("y", F)],
              NZ_INITS + [i64("one", 1), i64("ax0", [0]), i64("zero1", [0]), i64("one1", [1]), f32("cv", -1.0),
                          f32("tab", tab), f32("tab6", tab[:6])])
    run_cases(m)


def test_resize_by_an_inexact_scale_of_a_run_time_input_is_one_clear_line():
    # floor(n * 0.3) in onnxruntime's float32 is not an integer formula of n: refused, naming the node
    nodes = NZ + [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["img", "q"], ["gi"], axis=2),
                  h.make_node("Resize", ["gi", "", "sc"], ["y"], mode="linear", name="odd_scale")]
    m = model(nodes, [("x", F, [12])], [("y", F)], NZ_INITS + [i64("ax0", [0]), f32("sc", [1, 1, 0.3, 1]), f32("img", IMG)])
    with pytest.raises(UnsupportedOpError) as e:
        fusion.compile(fusion.load(m), threads=1, profile_db=False)
    msg = str(e.value)
    assert "odd_scale" in msg and "run time" in msg and "\n" not in msg


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_resize_crop_and_resize_of_a_run_time_input(mode):
    # tf_crop_and_resize: (in-1)/(out-1) and the extrapolation test at the actual sizes of [1,1,n,4] -> [1,1,n+1,8]
    nodes = COUNT + [h.make_node("Add", ["n1", "one1"], ["n2"]), h.make_node("Concat", ["c11", "n2", "c8"], ["sz"], axis=0),
                     h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["img", "q"], ["gi"], axis=2),
                     h.make_node("Resize", ["gi", "roi", "", "sz"], ["y"], mode=mode, extrapolation_value=-3.0,
                                 coordinate_transformation_mode="tf_crop_and_resize")]
    m = model(nodes, [("x", F, [12])], [("y", F)],
              COUNT_INITS + [f32("img", IMG), f32("roi", [0, 0, -0.1, 0.2, 1, 1, 0.9, 1.3])], opset=19)
    run_cases(m, seeds=range(1, 6))   # n = 0: onnxruntime refuses to resize an empty axis to n+1 = 1


def test_resize_sizes_read_from_data():
    # sizes = [1, 1, trunc(clip(4 * x[0], 1, 20)), 8]: a size computed from data, not shape arithmetic;
    # its tensor stays a block output ("stored-size") and model_run reads it after its kernel
    nodes = [h.make_node("Slice", ["x", "s0", "s1"], ["x0"]), h.make_node("Mul", ["x0", "four"], ["x4"]),
             h.make_node("Clip", ["x4", "lo", "hi"], ["xc"]), h.make_node("Cast", ["xc"], ["hh"], to=I64),
             h.make_node("Concat", ["c11", "hh", "c8"], ["sz"], axis=0),
             h.make_node("Resize", ["img", "", "", "sz"], ["y"], mode="linear")]
    m = model(nodes, [("x", F, [3])], [("y", F)],
              [i64("s0", [0]), i64("s1", [1]), f32("four", 4.0), f32("lo", 1.0), f32("hi", 20.0),
               i64("c11", [1, 1]), i64("c8", [8]), f32("img", np.random.default_rng(0).standard_normal((1, 1, 6, 4)))],
              opset=19)
    mod = fusion.compile(fusion.load(m), threads=1, profile_db=False)
    assert "fz_dyn_val_hh_0 < 1 || fz_dyn_val_hh_0 > 20" in mod.c_source
    assert any(d.code == "stored-size" for d in mod.plan.decisions)
    for v in [0.1, 1.0, 2.6, 4.9, 7.0]:
        feeds = {"x": np.array([v, 0, 0], np.float32)}
        exp = run_onnxruntime(m, feeds)
        got = mod.run(feeds)
        assert got["y"].shape == exp["y"].shape and compare(got, exp).ok, v
    # NaN survives Clip; its Cast is no size (onnxruntime fails too): a clean error, no crash
    with pytest.raises(FusionError, match="hh.*outside"):
        mod.run({"x": np.array([np.nan, 0, 0], np.float32)})


def test_reduce_mean_over_run_time_dim_divides_by_the_actual_count():
    # rows = x[p] as [n, 1] scaled to [n, 3]; means over the run-time axis, the static one, and both
    nodes = NZ + [h.make_node("Squeeze", ["p", "ax0"], ["q"]), h.make_node("Gather", ["x", "q"], ["xs"], axis=0),
                  h.make_node("Unsqueeze", ["xs", "ax1"], ["col"]), h.make_node("Mul", ["col", "w"], ["rows"]),
                  h.make_node("ReduceMean", ["rows"], ["m0"], axes=[0], keepdims=1),
                  h.make_node("ReduceMean", ["rows"], ["m1"], axes=[1], keepdims=0),
                  h.make_node("ReduceMean", ["rows"], ["mall"], keepdims=0)]
    m = model(nodes, [("x", F, [12])], [("m0", F), ("m1", F), ("mall", F)],
              NZ_INITS + [i64("ax0", [0]), i64("ax1", [1]), f32("w", [[1.0, -2.0, 0.5]])])
    mod = run_cases(m, seeds=range(1, 6))
    # nothing selected: onnxruntime's mean over no elements is 0
    feeds = feeds_for(0)
    got, exp = mod.run(feeds), run_onnxruntime(m, feeds)
    assert compare(got, exp).ok and got["m1"].shape == exp["m1"].shape == (0,)
