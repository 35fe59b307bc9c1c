"""The LLVM backend (fusion.codegen.llvm): host JIT checked against onnxruntime,
cross object code for AArch64."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import fusion
from fusion.errors import FusionError, InputError
from fusion.oracle import compare, random_inputs, run_onnxruntime

pytest.importorskip("llvmlite")
llvm = pytest.importorskip("fusion.codegen.llvm")

F = T.FLOAT
rng = np.random.default_rng(11)


def model(nodes, inputs, outputs, inits=(), opset=13):
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                     [h.make_tensor_value_info(n, t, None) for n, t in outputs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def const(name, arr):
    return onnx.numpy_helper.from_array(np.asarray(arr), name)


def W(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def i64(name, vals):
    return const(name, np.array(vals, np.int64))


def check(proto, feeds=None, threads=1):
    g = fusion.load(proto)
    feeds = feeds if feeds is not None else random_inputs(g, seed=3)
    expected = run_onnxruntime(proto, feeds)
    mod = llvm.compile(g, threads=threads, profile_db=False)
    try:
        got = mod.run(feeds)
        rep = compare(got, expected)
        assert rep.ok, str(rep)
    finally:
        mod.close()
    return mod


# --------------------------------------------------------------------------- per class

def test_elementwise_chain_is_one_function():
    m = model([h.make_node("Mul", ["x", "y"], ["a"]), h.make_node("Sigmoid", ["a"], ["b"]),
               h.make_node("Tanh", ["b"], ["c"]), h.make_node("Erf", ["c"], ["d"]),
               h.make_node("Sub", ["d", "x"], ["z"])],
              [("x", F, [3, 5, 7]), ("y", F, [3, 5, 7])], [("z", F)])
    mod = check(m)
    assert mod.report["kernels"] == 1 and mod.report["segments"] == 1
    assert "@tanhf" in mod.optimized_ir and "@erff" in mod.optimized_ir   # libm where LLVM has no intrinsic


def test_broadcasting():
    m = model([h.make_node("Add", ["x", "b"], ["a"]), h.make_node("Mul", ["a", "s"], ["c"]),
               h.make_node("Pow", ["c", "two"], ["d"]), h.make_node("Max", ["d", "x"], ["z"])],
              [("x", F, [2, 4, 6, 5]), ("b", F, [4, 1, 1]), ("s", F, [5])], [("z", F)],
              [const("two", np.array(2.0, np.float32))])
    check(m)


@pytest.mark.parametrize("op,attrs", [("Softmax", {"axis": -1}), ("Softmax", {"axis": 1}),
                                      ("LogSoftmax", {"axis": 1}),
                                      ("ReduceMean", {"axes": [1], "keepdims": 1}),
                                      ("ReduceMax", {"axes": [0, 2], "keepdims": 0}),
                                      ("ReduceMin", {"axes": [2], "keepdims": 0}),
                                      ("ReduceProd", {"axes": [1], "keepdims": 0}),
                                      ("ReduceLogSumExp", {"axes": [2], "keepdims": 1}),
                                      ("ArgMax", {"axis": 1}), ("ArgMin", {"axis": 2, "keepdims": 0})])
def test_reductions(op, attrs):
    m = model([h.make_node(op, ["x"], ["z"], **attrs)], [("x", F, [3, 6, 10])],
              [("z", T.INT64 if op.startswith("Arg") else F)])
    check(m)


def test_matmul_with_prologue_and_epilogue_is_a_plain_loop_nest():
    m = model([h.make_node("Relu", ["x"], ["xr"]), h.make_node("MatMul", ["xr", "w"], ["m"]),
               h.make_node("Add", ["m", "b"], ["a"]), h.make_node("Tanh", ["a"], ["z"])],
              [("x", F, [2, 9, 33])], [("z", F)], [const("w", W(33, 17)), const("b", W(17))])
    check(m)


def test_batched_matmul_and_gemm():
    m = model([h.make_node("MatMul", ["a", "b"], ["z"]),
               h.make_node("Gemm", ["g", "wg", "cg"], ["y"], transB=1, alpha=0.5)],
              [("a", F, [2, 3, 5, 7]), ("b", F, [3, 7, 4]), ("g", F, [6, 8])], [("z", F), ("y", F)],
              [const("wg", W(5, 8)), const("cg", W(5))])
    check(m)


def test_conv_bias_relu_and_pooling():
    m = model([h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
               h.make_node("Relu", ["c"], ["r"]),
               h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[1, 1]),
               h.make_node("GlobalAveragePool", ["p"], ["z"])],
              [("x", F, [1, 3, 11, 10])], [("z", F), ("p", F)], [const("w", W(8, 3, 3, 3)), const("b", W(8))])
    check(m)


def test_grouped_dilated_conv():
    m = model([h.make_node("Conv", ["x", "w"], ["z"], group=2, dilations=[2, 1], pads=[2, 0, 1, 1])],
              [("x", F, [2, 4, 9, 8])], [("z", F)], [const("w", W(6, 2, 3, 2))])
    check(m)


def test_movement_ops_compose_into_index_arithmetic():
    nodes = [h.make_node("Reshape", ["x", "s"], ["r"]), h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             h.make_node("Relu", ["t"], ["u"]), h.make_node("Concat", ["u", "y"], ["c"], axis=2),
             h.make_node("Slice", ["c", "st", "en", "ax", "sp"], ["sl"]), h.make_node("Sigmoid", ["sl"], ["z"])]
    m = model(nodes, [("x", F, [2, 12, 5]), ("y", F, [2, 10, 3])], [("z", F)],
              [i64("s", [2, 6, 10]), i64("st", [1, -1]), i64("en", [9, 0]), i64("ax", [1, 2]), i64("sp", [2, -2])])
    mod = check(m)
    assert mod.report["kernels"] == 1
    assert mod.program.ir_text.count("store float") == 1   # one store: nothing is copied


def test_integer_bool_and_cast_semantics():
    # floor modulo and division of negative ints, float->int casts, comparisons, Where, Not, bool output
    nodes = [h.make_node("Cast", ["x"], ["xi"], to=T.INT64), h.make_node("Mod", ["xi", "k"], ["m"]),
             h.make_node("Div", ["xi", "k"], ["d"]), h.make_node("Greater", ["m", "one"], ["g"]),
             h.make_node("Not", ["g"], ["ng"]), h.make_node("Where", ["g", "x", "y"], ["z"]),
             h.make_node("Cast", ["x"], ["x8"], to=T.INT32), h.make_node("Abs", ["x8"], ["a8"]),
             h.make_node("Mod", ["x", "fk"], ["fm"], fmod=1), h.make_node("Floor", ["y"], ["fl"])]
    m = model(nodes, [("x", F, [5, 6]), ("y", F, [5, 6])],
              [("z", F), ("m", T.INT64), ("d", T.INT64), ("ng", T.BOOL), ("a8", T.INT32), ("fm", F), ("fl", F)],
              [i64("k", -3), i64("one", 1), const("fk", np.array(2.5, np.float32))])
    feeds = {"x": (rng.standard_normal((5, 6)) * 10).astype(np.float32), "y": W(5, 6)}
    check(m, feeds)


def test_float64_and_layernorm_pattern():
    D = T.DOUBLE
    nodes = [h.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), h.make_node("Sub", ["x", "mu"], ["d"]),
             h.make_node("Mul", ["d", "d"], ["d2"]), h.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
             h.make_node("Add", ["var", "eps"], ["ve"]), h.make_node("Sqrt", ["ve"], ["sd"]),
             h.make_node("Div", ["d", "sd"], ["z"])]
    m = model(nodes, [("x", D, [4, 32])], [("z", D)], [const("eps", np.array(1e-5, np.float64))])
    check(m)


def test_multithreaded_equals_single_threaded():
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Softmax", ["m"], ["s"], axis=-1),
             h.make_node("Mul", ["s", "x2"], ["z"])]
    m = model(nodes, [("x", F, [256, 64]), ("x2", F, [256, 96])], [("z", F)], [const("w", W(64, 96))])
    g = fusion.load(m)
    feeds = random_inputs(g)
    mod = llvm.compile(g, threads=1, profile_db=False)
    assert any(b["parallel"] for b in mod.report["block_schedules"])
    one = mod.run(feeds)["z"]
    assert mod.set_threads(2) == 2
    for _ in range(10):
        np.testing.assert_array_equal(one, mod.run(feeds)["z"])
    assert compare({"z": one}, run_onnxruntime(g, feeds)).ok
    mod.close()


def _native_threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Threads:"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_thread_pool_persists_between_blocks_and_runs_and_stops_on_close():
    """The LLVM runtime's pool: workers start once, serve every parallel block of every run
    (no thread per block), follow set_threads, and are joined by close()."""
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Softmax", ["m"], ["s"], axis=-1),
             h.make_node("MatMul", ["s", "w2"], ["z"])]
    m = model(nodes, [("x", F, [256, 64])], [("z", F)], [const("w", W(64, 96)), const("w2", W(96, 32))])
    g = fusion.load(m)
    feeds = random_inputs(g)
    base = _native_threads()
    mod = llvm.compile(g, threads=3, profile_db=False)
    assert sum(b["parallel"] for b in mod.report["block_schedules"]) >= 2
    first = mod.run(feeds)["z"]
    assert _native_threads() == base + 2
    for _ in range(5):
        np.testing.assert_array_equal(first, mod.run(feeds)["z"])
    assert _native_threads() == base + 2          # the same workers, not new ones per block
    mod.set_threads(1)
    np.testing.assert_array_equal(first, mod.run(feeds)["z"])
    mod.set_threads(4)
    np.testing.assert_array_equal(first, mod.run(feeds)["z"])
    assert _native_threads() == base + 3
    assert compare({"z": first}, run_onnxruntime(g, feeds)).ok
    mod.close()
    assert _native_threads() == base


def test_outputs_that_are_inputs_or_constants():
    m = model([h.make_node("Relu", ["x"], ["z"]), h.make_node("Identity", ["c"], ["k"])],
              [("x", F, [4])], [("z", F), ("x", F), ("k", F)], [const("c", W(3))])
    check(m)


def test_wrong_inputs_give_clear_errors():
    m = model([h.make_node("Relu", ["x"], ["z"])], [("x", F, [2, 3])], [("z", F)])
    mod = llvm.compile(fusion.load(m), threads=1, profile_db=False)
    with pytest.raises(InputError, match=r"input 'x' has shape \[3, 2\].*compiled for \[2, 3\]"):
        mod.run({"x": np.zeros((3, 2), np.float32)})
    with pytest.raises(InputError, match=r"input 'x' has dtype float64, the model expects float32"):
        mod.run({"x": np.zeros((2, 3))})
    with pytest.raises(InputError, match=r"input 'x' is missing"):
        mod.run({})
    mod.close()
    with pytest.raises(FusionError, match="closed"):
        mod.run({"x": np.zeros((2, 3), np.float32)})


# --------------------------------------------------------------------------- host steps, run-time shapes

def _nms_model():
    nodes = [h.make_node("NonMaxSuppression", ["boxes", "scores", "mo", "iou", "st"], ["sel"]),
             h.make_node("Gather", ["sel", "two"], ["idx"], axis=1),
             h.make_node("Cast", ["idx"], ["f"], to=T.FLOAT), h.make_node("Mul", ["f", "half"], ["z"]),
             h.make_node("TopK", ["s2", "k"], ["v", "i"], axis=-1)]
    inits = [i64("mo", [4]), const("iou", np.array([0.3], np.float32)), const("st", np.array([0.0], np.float32)),
             i64("two", 2), const("half", np.array(0.5, np.float32)), i64("k", [3])]
    return model(nodes, [("boxes", F, [1, 30, 4]), ("scores", F, [1, 2, 30]), ("s2", F, [4, 9])],
                 [("z", F), ("v", F), ("i", T.INT64)], inits)


def test_opaque_ops_run_between_segments_with_data_dependent_shapes():
    pytest.importorskip("fusion.codegen.opaque")
    m = _nms_model()
    g = fusion.load(m)
    mod = llvm.compile(g, threads=1, profile_db=False)
    assert mod.report["host_steps"] >= 1
    assert [o.dynamic for o in mod.outputs] == [True, False, False]
    for seed in range(3):
        r = np.random.default_rng(seed)
        xy = r.random((1, 30, 2)).astype(np.float32) * 10
        feeds = {"boxes": np.concatenate([xy, xy + 1 + r.random((1, 30, 2)).astype(np.float32) * 3], axis=2),
                 "scores": r.random((1, 2, 30)).astype(np.float32), "s2": W(4, 9)}
        got, exp = mod.run(feeds), run_onnxruntime(m, feeds)
        assert got["z"].shape == exp["z"].shape     # the actual number of boxes, not the capacity
        assert compare(got, exp).ok
    mod.close()


def test_small_model_end_to_end():
    import os
    from fusion import zoo
    if not os.path.exists(zoo.model_path("tinybert", True)):
        pytest.skip("zoo model tinybert:small is not in this tree")
    g = fusion.load("zoo:tinybert:small")
    feeds = random_inputs(g, seed=1)
    mod = llvm.compile(g, threads=2, profile_db=False)
    rep = compare(mod.run(feeds), run_onnxruntime(g, feeds))
    mod.close()
    assert rep.ok, str(rep)


# --------------------------------------------------------------------------- IR, vectors, cross objects

def _softmax_mul():
    return model([h.make_node("Mul", ["x", "y"], ["a"]), h.make_node("ReduceSum", ["a", "ax"], ["s"]),
                  h.make_node("Add", ["a", "s"], ["z"])], [("x", F, [16, 256]), ("y", F, [16, 256])], [("z", F)],
                 [i64("ax", [1])])


def test_host_code_is_vectorized():
    mod = llvm.compile(fusion.load(_softmax_mul()), threads=1, profile_db=False)
    assert "x float>" in mod.optimized_ir   # LLVM's loop vectorizer used vector types (<8 x float> on AVX2)
    mod.close()


@pytest.mark.parametrize("target", ["android-arm64", "linux-arm64"])
def test_aarch64_object_is_an_elf_relocatable(target):
    g = fusion.load(_softmax_mul())
    obj = llvm.emit(g, target, "obj", profile_db=False)
    assert obj[:4] == b"\x7fELF" and obj[4] == 2 and obj[5] == 1      # 64-bit, little endian
    assert int.from_bytes(obj[16:18], "little") == 1                   # ET_REL
    assert int.from_bytes(obj[18:20], "little") == 183                 # EM_AARCH64
    asm = llvm.emit(g, target, "asm", profile_db=False)
    assert "fz_model_run" in asm and ".4s" in asm                      # NEON 128-bit float vectors
    ir_text = llvm.emit(g, target, "llvm", profile_db=False)
    assert "aarch64" in ir_text and "define void @fz_model_run" in ir_text


def test_gpu_target_is_refused_with_a_clear_error():
    with pytest.raises(FusionError, match="GPU target"):
        llvm.emit(fusion.load(_softmax_mul()), "opencl", "obj", profile_db=False)


@pytest.mark.parametrize("m_rows,n_cols,transposed", [(7, 21, False), (6, 40, False), (12, 5, False),
                                                     (6, 21, True)])
def test_matmul_simd_lanes_with_ragged_tails(m_rows, n_cols, transposed):
    # lanes over the output columns (the last chunk overlaps the one before it),
    # rows unrolled and jammed when they divide; a transposed output makes the store a scatter
    last = h.make_node("Transpose", ["mm"], ["z"], perm=[1, 0]) if transposed else h.make_node("Relu", ["mm"], ["z"])
    m = model([h.make_node("MatMul", ["x", "w"], ["mm"]), last],
              [("x", F, [m_rows, 33])], [("z", F)], [const("w", W(33, n_cols))])
    mod = check(m)
    scheds = " ".join(b["schedule"] for b in mod.report["block_schedules"])
    if n_cols >= 8:
        assert "SIMD lanes" in scheds, scheds
    if m_rows % 2 == 0 and n_cols >= 8:
        assert "unrolled" in scheds, scheds


def test_integer_reductions_over_a_middle_axis_use_vector_lanes():
    nodes = [h.make_node("ReduceSum", ["x", "ax"], ["s"], keepdims=0), h.make_node("ReduceMax", ["x"], ["mx"],
                                                                                    axes=[1], keepdims=0)]
    m = model(nodes, [("x", T.INT32, [4, 5, 20])], [("s", T.INT32), ("mx", T.INT32)], [i64("ax", [1])])
    feeds = {"x": rng.integers(-50, 50, (4, 5, 20)).astype(np.int32)}
    mod = check(m, feeds)
    assert all("SIMD lanes" in b["schedule"] for b in mod.report["block_schedules"])


def _have_cross() -> bool:
    import shutil
    return bool(shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64"))


@pytest.mark.skipif(not _have_cross(), reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (./setup.sh)")
def test_aarch64_object_runs_under_qemu_and_matches_onnxruntime():
    from fusion.codegen.llvm.crossrun import run_object
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Softmax", ["m"], ["s"], axis=-1),
             h.make_node("Conv", ["img", "k"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("ReduceMean", ["r"], ["z"], axes=[1], keepdims=0)]
    m = model(nodes, [("x", F, [6, 20]), ("img", F, [1, 3, 9, 10])], [("s", F), ("z", F)],
              [const("w", W(20, 36)), const("k", W(4, 3, 3, 3))])
    g = fusion.load(m)
    feeds = random_inputs(g, seed=5)
    got = run_object(g, feeds, "linux-arm64", threads=2, profile_db=False)
    rep = compare(got, run_onnxruntime(m, feeds))
    assert rep.ok, str(rep)


def test_small_int_half_and_double_dtypes():
    # (float16 values are compared as float16: onnxruntime's half Exp is not correctly rounded)
    nodes = [h.make_node("Cast", ["x"], ["xh"], to=T.FLOAT16), h.make_node("Exp", ["xh"], ["e"]),
             h.make_node("Cast", ["x"], ["u8"], to=T.UINT8), h.make_node("Max", ["u8", "sh"], ["u2"]),
             h.make_node("BitShift", ["u8", "sh"], ["bs"], direction="RIGHT"),
             h.make_node("Cast", ["x"], ["i32"], to=T.INT32), h.make_node("Div", ["i32", "d"], ["q"]),
             h.make_node("Cast", ["x"], ["dd"], to=T.DOUBLE), h.make_node("Tanh", ["dd"], ["td"]),
             h.make_node("Cast", ["td"], ["dh"], to=T.FLOAT16)]   # double -> half: a libgcc helper call
    m = model(nodes, [("x", F, [4, 9])], [("e", T.FLOAT16), ("u2", T.UINT8), ("bs", T.UINT8),
                                           ("q", T.INT32), ("td", T.DOUBLE), ("dh", T.FLOAT16)],
              [const("d", np.array(-3, np.int32)), const("sh", np.array(2, np.uint8))])
    check(m, {"x": (np.abs(rng.standard_normal((4, 9))) * 9).astype(np.float32)})


@pytest.mark.skipif(not _have_cross(), reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (./setup.sh)")
def test_small_model_aarch64_object_under_qemu():
    import os
    from fusion import zoo
    from fusion.codegen.llvm.crossrun import run_object
    if not os.path.exists(zoo.model_path("tinybert", True)):
        pytest.skip("zoo model tinybert:small is not in this tree")
    g = fusion.load("zoo:tinybert:small")
    feeds = random_inputs(g, seed=2)
    rep = compare(run_object(g, feeds, "linux-arm64", threads=2), run_onnxruntime(g, feeds))
    assert rep.ok, str(rep)


def test_padded_conv_uses_vector_loads_where_the_padding_allows():
    # lanes over the output width: the input is read with masked vector loads (lanes in the
    # padding are masked off, never touched); output channels unrolled and jammed. Values cannot
    # show a missing mask (the padding Select discards those lanes): the IR is checked for it.
    m = model([h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 2, 1, 2]), h.make_node("Relu", ["c"], ["z"])],
              [("x", F, [1, 3, 12, 37])], [("z", F)], [const("w", W(8, 3, 3, 5)), const("b", W(8))])
    mod = check(m)
    sched = mod.report["block_schedules"][0]["schedule"]
    assert "SIMD lanes over i3" in sched and "i1 unrolled" in sched, sched
    assert "llvm.masked.load" in mod.optimized_ir


def test_cli_runs_and_emits(tmp_path, capsys):
    import argparse
    from fusion.codegen.llvm import cli
    onnx.save(_softmax_mul(), str(tmp_path / "m.onnx"))
    ap = argparse.ArgumentParser()
    cli.register(ap.add_subparsers())
    args = ap.parse_args(["llvm", str(tmp_path / "m.onnx"), "--check", "--threads", "1"])
    assert args.func(args) == 0
    assert "PASS" in capsys.readouterr().out
    args = ap.parse_args(["llvm", str(tmp_path / "m.onnx"), "--target", "android-arm64", "--emit", "obj",
                          "-o", str(tmp_path / "out")])
    assert args.func(args) == 0
    assert (tmp_path / "out" / "model.o").read_bytes()[:4] == b"\x7fELF"
    assert (tmp_path / "out" / "layout.json").exists() and (tmp_path / "out" / "weights.bin").exists()


def test_host_object_is_an_x86_64_elf_when_the_host_is():
    import platform
    if platform.machine() != "x86_64":
        pytest.skip("host is not x86-64")
    obj = llvm.emit(fusion.load(_softmax_mul()), "host", "obj", profile_db=False)
    assert obj[:4] == b"\x7fELF" and int.from_bytes(obj[18:20], "little") == 62   # EM_X86_64
