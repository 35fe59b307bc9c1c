"""Loop in the C backend: small hand-built loops compiled and compared with
onnxruntime — a loop-carried sum, a carried tensor that grows by one row per
iteration with a run-time trip count, sizes computed from data inside the
body (Mask R-CNN's mask pasting in miniature), a loop ended by its condition,
and the one-line refusals."""
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

F, I64, B = T.FLOAT, T.INT64, T.BOOL


def i64(name, vals):
    return onnx.numpy_helper.from_array(np.array(vals, np.int64), name)


def f32(name, vals):
    return onnx.numpy_helper.from_array(np.array(vals, np.float32), name)


def body(nodes, carried, outs, inits=()):
    """A Loop body graph: (i, cond, carried...) -> (cond, carried...)."""
    ins = [h.make_tensor_value_info("i", I64, []), h.make_tensor_value_info("cond", B, [])]
    ins += [h.make_tensor_value_info(n, t, s) for n, t, s in carried]
    return h.make_graph(nodes, "body", ins, [h.make_tensor_value_info(n, t, None) for n, t in outs], list(inits))


def model(nodes, inputs, outputs, inits=()):
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                     [h.make_tensor_value_info(n, t, None) for n, t in outputs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


def check(m, feeds_list):
    mod = fusion.compile(fusion.load(m), threads=1, profile_db=False)
    for feeds in feeds_list:
        exp = run_onnxruntime(m, feeds)
        got = mod.run(feeds)
        for k in exp:
            assert got[k].shape == exp[k].shape, (k, got[k].shape, exp[k].shape)
        rep = compare(got, exp)
        assert rep.ok, rep
    return mod


def test_loop_carried_sum_with_iteration_number():
    b = body([h.make_node("Cast", ["i"], ["fi"], to=F),
              h.make_node("Mul", ["x", "fi"], ["xi"]),
              h.make_node("Add", ["acc", "xi"], ["acc2"]),
              h.make_node("Identity", ["cond"], ["cond2"])],
             [("acc", F, [4])], [("cond2", B), ("acc2", F)])
    m = model([h.make_node("Loop", ["M", "t", "acc0"], ["acc_final"], body=b)],
              [("x", F, [4])], [("acc_final", F)],
              [i64("M", 5), onnx.numpy_helper.from_array(np.array(True), "t"), f32("acc0", [1, 2, 3, 4])])
    rng = np.random.default_rng(0)
    check(m, [{"x": rng.standard_normal(4).astype(np.float32)} for _ in range(2)])


# x [12] -> the positive elements' positions p [1, n]: the trip count n is decided at run time
def _grow_model(row_nodes, width, inits=()):
    b = body(row_nodes + [h.make_node("Concat", ["acc", "row"], ["acc2"], axis=0),
                          h.make_node("Identity", ["cond"], ["cond2"])],
             [("acc", F, [0, width])], [("cond2", B), ("acc2", F)])
    nodes = [h.make_node("Greater", ["x", "zero"], ["g"]), h.make_node("NonZero", ["g"], ["p"]),
             h.make_node("Shape", ["p"], ["ps"]), h.make_node("Gather", ["ps", "one"], ["n"], axis=0),
             h.make_node("Loop", ["n", "t", "acc0"], ["rows"], body=b)]
    return model(nodes, [("x", F, [12])], [("rows", F)],
                 [f32("zero", 0.0), i64("one", 1), onnx.numpy_helper.from_array(np.array(True), "t"),
                  onnx.numpy_helper.from_array(np.zeros((0, width), np.float32), "acc0")] + list(inits))


def _feeds(n=6):
    out = [{"x": -np.ones(12, np.float32)}, {"x": np.ones(12, np.float32)}]   # 0 and 12 iterations
    out += [{"x": np.random.default_rng(s).standard_normal(12).astype(np.float32) * 3} for s in range(n - 2)]
    return out


def test_loop_carried_tensor_grows_by_a_row_per_iteration():
    # row i = [x[p[i]] * 2, x[p[i]] + 1]
    rows = [h.make_node("Gather", ["p", "zero_i"], ["p0"], axis=0),
            h.make_node("Gather", ["p0", "i"], ["j"], axis=0),
            h.make_node("Gather", ["x", "j"], ["xj"], axis=0),
            h.make_node("Mul", ["xj", "two"], ["a"]), h.make_node("Add", ["xj", "onef"], ["c"]),
            h.make_node("Unsqueeze", ["a", "ax0"], ["a1"]), h.make_node("Unsqueeze", ["c", "ax0"], ["c1"]),
            h.make_node("Concat", ["a1", "c1"], ["r"], axis=0),
            h.make_node("Unsqueeze", ["r", "ax0"], ["row"])]
    m = _grow_model(rows, 2, [i64("zero_i", 0), f32("two", 2.0), f32("onef", 1.0), i64("ax0", [0])])
    mod = check(m, _feeds())
    # the body only extends the carried value: its rows are appended in place, no Concat of it
    assert "rows appended to a loop-carried value" in mod.c_source


def test_loop_carried_concat_also_read_elsewhere_is_copied():
    # the carried value is also read by the body (its row count): no in-place append; copied back
    rows = [h.make_node("Shape", ["acc"], ["sh"]), h.make_node("Gather", ["sh", "zero_i"], ["k"], axis=0),
            h.make_node("Cast", ["k"], ["kf"], to=F), h.make_node("Gather", ["x", "i"], ["xi"], axis=0),
            h.make_node("Add", ["kf", "xi"], ["a"]), h.make_node("Unsqueeze", ["a", "ax01"], ["row"])]
    m = _grow_model(rows, 1, [i64("zero_i", 0), i64("ax01", [0, 1])])
    mod = check(m, _feeds())
    assert "rows appended to a loop-carried value" not in mod.c_source


def test_loop_body_sizes_from_data():
    # row i = k ones then 4 - k zeros, k = trunc(clip(x[p[i]], 0, 4)): ConstantOfShape sized by data
    rows = [h.make_node("Gather", ["p", "zero_i"], ["p0"], axis=0),
            h.make_node("Gather", ["p0", "i"], ["j"], axis=0),
            h.make_node("Gather", ["x", "j"], ["xj"], axis=0),
            h.make_node("Clip", ["xj", "lo", "hi"], ["xc"]),
            h.make_node("Cast", ["xc"], ["k"], to=I64),
            h.make_node("Unsqueeze", ["k", "ax0"], ["k1"]),
            h.make_node("Sub", ["four", "k1"], ["r1"]),
            h.make_node("ConstantOfShape", ["k1"], ["ones"], value=f32("v1", [1.0])),
            h.make_node("ConstantOfShape", ["r1"], ["zeros"], value=f32("v0", [0.0])),
            h.make_node("Concat", ["ones", "zeros"], ["r"], axis=0),
            h.make_node("Unsqueeze", ["r", "ax0"], ["row"])]
    m = _grow_model(rows, 4, [i64("zero_i", 0), f32("lo", 0.0), f32("hi", 4.0), i64("ax0", [0]),
                              i64("four", [4])])
    mod = check(m, _feeds(8))
    # k is a run-time size read from the stored tensor after its kernel, range-checked
    assert "fz_dyn_val_k_0 = " in mod.c_source and "fz_dyn_val_k_0 < 0 || fz_dyn_val_k_0 > 4" in mod.c_source


def test_loop_ended_by_its_condition():
    b = body([h.make_node("Add", ["s", "onef"], ["s2"]),
              h.make_node("Less", ["s2", "lim"], ["c2"]),
              h.make_node("Squeeze", ["c2"], ["cond2"])],
             [("s", F, [1])], [("cond2", B), ("s2", F)], [f32("onef", [1.0])])
    m = model([h.make_node("Loop", ["M", "", "s0"], ["s_final"], body=b)],
              [("lim", F, [1])], [("s_final", F)], [i64("M", 100), f32("s0", [0.0])])
    check(m, [{"lim": np.array([v], np.float32)} for v in (3.5, -1.0, 250.0, 0.5)])


def test_loop_size_from_unbounded_data_is_refused_in_one_line():
    rows = [h.make_node("Gather", ["x", "i"], ["xj"], axis=0),
            h.make_node("Cast", ["xj"], ["k"], to=I64),           # no Clip: any size
            h.make_node("Unsqueeze", ["k", "ax0"], ["k1"]),
            h.make_node("ConstantOfShape", ["k1"], ["row0"], value=f32("v1", [1.0])),
            h.make_node("ReduceSum", ["row0"], ["s"], keepdims=1),
            h.make_node("Unsqueeze", ["s", "ax0"], ["row"])]
    m = _grow_model(rows, 1, [i64("ax0", [0])])
    with pytest.raises(UnsupportedOpError) as e:
        fusion.compile(fusion.load(m), threads=1, profile_db=False)
    msg = str(e.value)
    assert "\n" not in msg and "'k'" in msg and "bound" in msg, msg


def test_loop_growing_without_a_trip_count_bound_is_refused():
    b = body([h.make_node("Concat", ["acc", "one_row"], ["acc2"], axis=0),
              h.make_node("Identity", ["cond"], ["cond2"])],
             [("acc", F, [0, 2])], [("cond2", B), ("acc2", F)], [f32("one_row", [[1.0, 2.0]])])
    m = model([h.make_node("Loop", ["n", "t", "acc0"], ["rows"], body=b)],
              [("n", I64, [])], [("rows", F)],
              [onnx.numpy_helper.from_array(np.array(True), "t"),
               onnx.numpy_helper.from_array(np.zeros((0, 2), np.float32), "acc0")])
    with pytest.raises(FusionError) as e:
        fusion.compile(fusion.load(m), threads=1, profile_db=False)
    assert "Loop" in str(e.value) and "bound" in str(e.value)


def test_loop_scan_outputs_one_row_per_iteration():
    # scan output: row i = x * i; with a fixed trip count and with a run-time one (NonZero count)
    b = body([h.make_node("Cast", ["i"], ["fi"], to=F),
              h.make_node("Mul", ["x", "fi"], ["row"]),
              h.make_node("Add", ["acc", "row"], ["acc2"]),
              h.make_node("Identity", ["cond"], ["cond2"])],
             [("acc", F, [12])], [("cond2", B), ("acc2", F), ("row", F)])
    nodes = [h.make_node("Greater", ["x", "zero"], ["g"]), h.make_node("NonZero", ["g"], ["p"]),
             h.make_node("Shape", ["p"], ["ps"]), h.make_node("Gather", ["ps", "one"], ["n"], axis=0),
             h.make_node("Loop", ["n", "t", "acc0"], ["acc_n", "rows_n"], body=b),
             h.make_node("Loop", ["M", "", "acc0"], ["acc_m", "rows_m"], body=b)]
    m = model(nodes, [("x", F, [12])], [("acc_n", F), ("rows_n", F), ("acc_m", F), ("rows_m", F)],
              [f32("zero", 0.0), i64("one", 1), i64("M", 3), onnx.numpy_helper.from_array(np.array(True), "t"),
               f32("acc0", np.zeros(12))])
    check(m, _feeds())


def test_growing_loop_with_a_huge_trip_count_is_refused():
    # torch exports `while` loops as Loop(M = INT64_MAX, cond): appending rows then has no usable bound
    b = body([h.make_node("Concat", ["acc", "one_row"], ["acc2"], axis=0),
              h.make_node("Identity", ["cond"], ["cond2"])],
             [("acc", F, [0, 2])], [("cond2", B), ("acc2", F)], [f32("one_row", [[1.0, 2.0]])])
    m = model([h.make_node("Loop", ["M", "c", "acc0"], ["rows"], body=b)],
              [("c", B, [])], [("rows", F)],
              [i64("M", 2 ** 63 - 1), onnx.numpy_helper.from_array(np.zeros((0, 2), np.float32), "acc0")])
    with pytest.raises(UnsupportedOpError) as e:
        fusion.compile(fusion.load(m), threads=1, profile_db=False)
    assert "at most" in str(e.value) and "\n" not in str(e.value)
