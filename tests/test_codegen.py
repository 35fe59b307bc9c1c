"""Fused C code generation for the host, checked against onnxruntime."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import fusion
from fusion.errors import InputError
from fusion.oracle import compare, random_inputs, run_onnxruntime


def model(nodes, inputs, outputs, inits=(), opset=13):
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                     [h.make_tensor_value_info(n, t, None) for n, t in outputs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def const(name, arr):
    arr = np.asarray(arr)
    return onnx.numpy_helper.from_array(arr, name)


def check(proto, plan_kwargs=None, threads=1):
    g = fusion.load(proto)
    feeds = random_inputs(g, seed=3)
    expected = run_onnxruntime(proto, feeds)
    mod = fusion.compile(g, threads=threads, profile_db=False)
    got = mod.run(feeds)
    rep = compare(got, expected)
    assert rep.ok, str(rep)
    return mod


F = T.FLOAT
rng = np.random.default_rng(7)


def W(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- per class

def test_one_to_one_chain_is_one_kernel():
    m = model([h.make_node("Mul", ["x", "y"], ["a"]), h.make_node("Sigmoid", ["a"], ["b"]),
               h.make_node("Tanh", ["b"], ["c"]), h.make_node("Sub", ["c", "x"], ["z"])],
              [("x", F, [3, 5, 7]), ("y", F, [3, 5, 7])], [("z", F)])
    mod = check(m)
    assert mod.report["kernels"] == 1


def test_one_to_many_broadcast():
    m = model([h.make_node("Add", ["x", "b"], ["a"]), h.make_node("Mul", ["a", "s"], ["z"])],
              [("x", F, [2, 4, 6, 5]), ("b", F, [4, 1, 1]), ("s", F, [5])], [("z", F)])
    check(m)


def test_many_to_many_matmul_with_prologue_and_epilogue():
    m = model([h.make_node("Relu", ["x"], ["xr"]), h.make_node("MatMul", ["xr", "w"], ["m"]),
               h.make_node("Add", ["m", "b"], ["a"]), h.make_node("Tanh", ["a"], ["z"])],
              [("x", F, [2, 9, 33])], [("z", F)], [const("w", W(33, 17)), const("b", W(17))])
    mod = check(m)
    roles = [b.roles() for b in mod.plan.blocks]
    assert any("prologue" in r.values() and "epilogue" in r.values() for r in roles)


def test_batched_matmul_both_runtime():
    m = model([h.make_node("MatMul", ["a", "b"], ["z"])], [("a", F, [2, 3, 5, 7]), ("b", F, [3, 7, 4])], [("z", F)])
    check(m)


def test_conv_bias_relu():
    m = model([h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
               h.make_node("Relu", ["c"], ["z"])],
              [("x", F, [1, 3, 11, 10])], [("z", F)], [const("w", W(8, 3, 3, 3)), const("b", W(8))])
    check(m)


def test_grouped_dilated_conv():
    m = model([h.make_node("Conv", ["x", "w"], ["z"], group=2, dilations=[2, 1], pads=[2, 0, 1, 1])],
              [("x", F, [2, 4, 9, 8])], [("z", F)], [const("w", W(6, 2, 3, 2))])
    check(m)


@pytest.mark.parametrize("op,attrs", [("Softmax", {"axis": -1}), ("LogSoftmax", {"axis": 1}),
                                      ("ReduceMean", {"axes": [1], "keepdims": 1}),
                                      ("ReduceMax", {"axes": [0, 2], "keepdims": 0}),
                                      ("ReduceLogSumExp", {"axes": [2], "keepdims": 1})])
def test_reductions(op, attrs):
    m = model([h.make_node(op, ["x"], ["z"], **attrs)], [("x", F, [3, 6, 10])], [("z", F)])
    check(m)


def test_layernorm_pattern_hoists_reductions():
    # mean and variance are computed once per row, not once per element
    nodes = [h.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), h.make_node("Sub", ["x", "mu"], ["d"]),
             h.make_node("Mul", ["d", "d"], ["d2"]), h.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
             h.make_node("Add", ["var", "eps"], ["ve"]), h.make_node("Sqrt", ["ve"], ["sd"]),
             h.make_node("Div", ["d", "sd"], ["z"])]
    m = model(nodes, [("x", F, [4, 32])], [("z", F)], [const("eps", np.array(1e-5, np.float32))])
    mod = check(m)
    lines = mod.c_source.splitlines()

    def depth(ln):
        return len(ln) - len(ln.lstrip())
    red = [depth(ln) for ln in lines if "for (int64_t r" in ln]
    elem = [depth(ln) for ln in lines if "for (int64_t i1" in ln]
    # both reductions sit beside the element loop (once per row), never inside it
    assert len(red) == 2 and elem and max(red) <= min(elem)


def test_reduction_over_a_middle_axis_runs_once_per_row():
    m = model([h.make_node("Softmax", ["x"], ["z"], axis=1)], [("x", F, [3, 6, 10])], [("z", F)])
    mod = check(m)
    # the loop over the softmax axis (i1) is innermost: max and sum are not recomputed per element
    src = mod.c_source
    assert src.index("for (int64_t i1") > max(src.index("for (int64_t r"), src.rindex("for (int64_t r"))


def test_reorganize_and_shuffle_are_index_arithmetic():
    nodes = [h.make_node("Reshape", ["x", "s"], ["r"]), h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             h.make_node("Relu", ["t"], ["u"]), h.make_node("Concat", ["u", "y"], ["c"], axis=2),
             h.make_node("Sigmoid", ["c"], ["z"])]
    m = model(nodes, [("x", F, [2, 12, 5]), ("y", F, [2, 10, 3])], [("z", F)],
              [const("s", np.array([2, 6, 10], np.int64))])
    mod = check(m)
    assert mod.report["kernels"] == 1
    # one loop nest, one store: Reshape/Transpose/Concat never copy
    stores = re.findall(r"^\s*v_\w+\[.*\] = ", mod.c_source, re.M)
    assert len(stores) == 1, stores


def test_integer_and_bool_ops():
    nodes = [h.make_node("Cast", ["x"], ["xi"], to=T.INT64), h.make_node("Mod", ["xi", "k"], ["m"]),
             h.make_node("Greater", ["m", "one"], ["g"]), h.make_node("Where", ["g", "x", "y"], ["z"])]
    m = model(nodes, [("x", F, [5, 6]), ("y", F, [5, 6])], [("z", F), ("m", T.INT64)],
              [const("k", np.array(3, np.int64)), const("one", np.array(1, np.int64))])
    g = fusion.load(m)
    feeds = {"x": (rng.standard_normal((5, 6)) * 10).astype(np.float32), "y": W(5, 6)}
    rep = compare(fusion.compile(g, threads=1, profile_db=False).run(feeds), run_onnxruntime(m, feeds))
    assert rep.ok, str(rep)


# --------------------------------------------------------------------------- runtime

def test_memory_planner_reuses_buffers():
    nodes = []
    prev = "x"
    for i in range(5):
        nodes.append(h.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        prev = f"m{i}"
    m = model(nodes, [("x", F, [8, 16])], [(prev, F)], [const(f"w{i}", W(16, 16)) for i in range(5)])
    mod = check(m)
    mem = mod.report["peak_memory"]
    assert mem["arena_bytes"] < mem["arena_without_reuse_bytes"]
    assert mem["arena_bytes"] == 2 * 8 * 16 * 4   # two live intermediates at a time


def test_wrong_inputs_give_clear_errors():
    m = model([h.make_node("Relu", ["x"], ["z"])], [("x", F, [2, 3])], [("z", F)])
    mod = fusion.compile(fusion.load(m), threads=1, profile_db=False)
    with pytest.raises(InputError, match=r"input 'x' has shape \[3, 2\].*compiled for \[2, 3\]"):
        mod.run({"x": np.zeros((3, 2), np.float32)})
    with pytest.raises(InputError, match=r"input 'x' has dtype float64, the model expects float32"):
        mod.run({"x": np.zeros((2, 3))})
    with pytest.raises(InputError, match=r"input 'x' is missing"):
        mod.run({})
    with pytest.raises(InputError, match=r"unknown input 'q'"):
        mod.run({"x": np.zeros((2, 3), np.float32), "q": 1})


def test_multithreaded_equals_single_threaded():
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Softmax", ["m"], ["s"], axis=-1),
             h.make_node("Mul", ["s", "x2"], ["z"])]
    m = model(nodes, [("x", F, [256, 64]), ("x2", F, [256, 96])], [("z", F)], [const("w", W(64, 96))])
    g = fusion.load(m)
    feeds = random_inputs(g)
    mod = fusion.compile(g, threads=1, profile_db=False)
    assert any(b["parallel"] for b in mod.report["block_schedules"])
    one = mod.run(feeds)["z"]
    assert mod.set_threads(2) == 2
    for _ in range(30):   # the pool hands out many jobs in a row without losing one
        two = mod.run(feeds)["z"]
        np.testing.assert_array_equal(one, two)
    assert compare({"z": two}, run_onnxruntime(g, feeds)).ok


def test_outputs_that_are_inputs_or_constants():
    m = model([h.make_node("Relu", ["x"], ["z"]), h.make_node("Identity", ["c"], ["k"])],
              [("x", F, [4])], [("z", F), ("x", F), ("k", F)], [const("c", W(3))])
    check(m)


def test_c_interface_header(tmp_path):
    m = model([h.make_node("Relu", ["x"], ["z"])], [("x", F, [2, 3])], [("z", F)])
    fusion.compile(fusion.load(m), out_dir=str(tmp_path), profile_db=False)
    for f in ("model.c", "model.h", "weights.bin", "libmodel.so", "report.json", "fz_runtime.h"):
        assert (tmp_path / f).exists(), f
    head = (tmp_path / "model.h").read_text()
    assert "[0] x: float32 [2, 3]" in head and "int model_run(void *model" in head
    import ctypes
    lib = ctypes.CDLL(str(tmp_path / "libmodel.so"))
    lib.model_create.restype = ctypes.c_void_p
    lib.model_last_error.restype = ctypes.c_char_p
    assert not lib.model_create(str(tmp_path / "nope.bin").encode())
    assert b"cannot open weights file" in lib.model_last_error()
    lib.model_input_name.restype = ctypes.c_char_p
    assert lib.model_num_inputs() == 1 and lib.model_input_name(0) == b"x" and lib.model_input_dtype(0) == 1


# --------------------------------------------------------------------------- opaque ops, run-time shapes

def _nms_model():
    from onnx import numpy_helper as nh
    nodes = [h.make_node("NonMaxSuppression", ["boxes", "scores", "mo", "iou", "st"], ["sel"]),
             h.make_node("Gather", ["sel", "two"], ["idx"], axis=1),
             h.make_node("Cast", ["idx"], ["f"], to=T.FLOAT), h.make_node("Mul", ["f", "half"], ["z"]),
             h.make_node("TopK", ["s2", "k"], ["v", "i"], axis=-1)]
    inits = [nh.from_array(np.array([4], np.int64), "mo"), nh.from_array(np.array([0.3], np.float32), "iou"),
             nh.from_array(np.array([0.0], np.float32), "st"), nh.from_array(np.array(2, np.int64), "two"),
             nh.from_array(np.array(0.5, np.float32), "half"), nh.from_array(np.array([3], np.int64), "k")]
    return model(nodes, [("boxes", F, [1, 30, 4]), ("scores", F, [1, 2, 30]), ("s2", F, [4, 9])],
                 [("z", F), ("v", F), ("i", T.INT64)], inits)


def test_opaque_ops_and_data_dependent_shapes():
    pytest.importorskip("fusion.codegen.opaque")
    m = _nms_model()
    g = fusion.load(m)
    mod = fusion.compile(g, threads=1, profile_db=False)
    assert [o.dynamic for o in mod.outputs] == [True, False, False]
    for seed in range(3):
        r = np.random.default_rng(seed)
        xy = r.random((1, 30, 2)).astype(np.float32) * 10
        feeds = {"boxes": np.concatenate([xy, xy + 1 + r.random((1, 30, 2)).astype(np.float32) * 3], axis=2),
                 "scores": r.random((1, 2, 30)).astype(np.float32), "s2": W(4, 9)}
        got = mod.run(feeds)
        exp = run_onnxruntime(m, feeds)
        assert got["z"].shape == exp["z"].shape     # the actual number of boxes, not the capacity
        assert compare(got, exp).ok


def test_blocks_of_constants_are_computed_at_compile_time():
    # a weight transposed at run time (nothing folded it before us) becomes a packed weight
    m = model([h.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), h.make_node("MatMul", ["x", "wt"], ["z"])],
              [("x", F, [3, 12])], [("z", F)], [const("w", W(7, 12))])
    mod = check(m)
    assert mod.report["kernels"] == 1


# --------------------------------------------------------------------------- class pairs and movement ops

def _i64(name, vals):
    return const(name, np.array(vals, np.int64))


PAIRS = {
    # first op's class + second op's class, each a small graph on x [2, 6, 8]
    "O2O+O2M": ([h.make_node("Sigmoid", ["x"], ["a"]), h.make_node("Expand", ["a", "sh"], ["z"])],
                [_i64("sh", [3, 2, 6, 8])]),
    "O2M+O2O": ([h.make_node("Gather", ["x", "ix"], ["a"], axis=2), h.make_node("Exp", ["a"], ["z"])],
                [_i64("ix", [[0, 7], [3, 3]])]),
    "Reorg+O2O": ([h.make_node("Reshape", ["x", "sh"], ["a"]), h.make_node("Neg", ["a"], ["z"])],
                  [_i64("sh", [12, 8])]),
    "Shuffle+M2M": ([h.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 1]),
                     h.make_node("MatMul", ["a", "w"], ["z"])], [const("w", W(6, 5))]),
    "M2M+Reorg": ([h.make_node("ReduceSum", ["x", "ax"], ["a"], keepdims=1), h.make_node("Flatten", ["a"], ["z"])],
                  [_i64("ax", [1])]),
    "M2M+Shuffle": ([h.make_node("Softmax", ["x"], ["a"], axis=1),
                     h.make_node("Transpose", ["a"], ["z"], perm=[2, 0, 1])], []),
    "Slice+Pad": ([h.make_node("Slice", ["x", "st", "en", "axs", "stp"], ["a"]),
                   h.make_node("Pad", ["a", "pd"], ["z"], mode="reflect")],
                  [_i64("st", [1, -1]), _i64("en", [5, 0]), _i64("axs", [1, 2]), _i64("stp", [1, -2]),
                   _i64("pd", [0, 1, 1, 0, 1, 0])]),
    "Split+Concat": ([h.make_node("Split", ["x", "sp"], ["a", "b"], axis=2),
                      h.make_node("Concat", ["b", "a"], ["z"], axis=2)], [_i64("sp", [3, 5])]),
    "O2O+M2M(pool)": ([h.make_node("Relu", ["x4"], ["a"]),
                       h.make_node("MaxPool", ["a"], ["z"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                      []),
}


@pytest.mark.parametrize("pair", list(PAIRS))
def test_class_pairs(pair):
    nodes, inits = PAIRS[pair]
    x = ("x4", F, [1, 2, 6, 8]) if pair.endswith("(pool)") else ("x", F, [2, 6, 8])
    mod = check(model(nodes, [x], [("z", F)], inits))
    if pair in ("Slice+Pad", "Split+Concat", "Reorg+O2O", "M2M+Shuffle"):
        # movement ops are index arithmetic inside one loop nest: one kernel, one store
        assert mod.report["kernels"] == 1
        assert len(re.findall(r"^\s*v_\w+\[.*\] = ", mod.c_source, re.M)) == 1


@pytest.mark.parametrize("ta,tb,alpha,beta", [(0, 0, 1.0, 1.0), (1, 0, 0.5, 2.0), (0, 1, 1.0, 0.0), (1, 1, -1.5, 0.3)])
def test_gemm_attributes(ta, tb, alpha, beta):
    A = W(9, 5) if ta else W(5, 9)
    B = W(7, 9) if tb else W(9, 7)
    m = model([h.make_node("Gemm", ["a", "b", "c"], ["g"], transA=ta, transB=tb, alpha=alpha, beta=beta),
               h.make_node("Relu", ["g"], ["z"])],
              [("a", F, list(A.shape))], [("z", F)], [const("b", B), const("c", W(7))])
    mod = check(m)
    assert "gemm" in mod.report["block_schedules"][0]["schedule"]


def test_nonzero_run_time_inner_dim():
    pytest.importorskip("fusion.codegen.opaque")
    # NonZero's [rank, nnz]: the run-time dim is not the leading one (padded vs compact layout)
    m = model([h.make_node("Greater", ["x", "zero"], ["g"]), h.make_node("NonZero", ["g"], ["nz"]),
               h.make_node("Add", ["nz", "one"], ["z"])],
              [("x", F, [3, 5])], [("z", T.INT64)],
              [const("zero", np.array(0.0, np.float32)), const("one", np.array(1, np.int64))])
    mod = fusion.compile(fusion.load(m), threads=1, profile_db=False)
    for seed in range(3):
        feeds = {"x": np.random.default_rng(seed).standard_normal((3, 5)).astype(np.float32)}
        rep = compare(mod.run(feeds), run_onnxruntime(m, feeds))
        assert rep.ok, str(rep)


def test_block_outputs_of_different_sizes():
    # LayerNormalization's Mean and InvStdDev are smaller than Y: one loop nest per output size
    m = model([h.make_node("LayerNormalization", ["x", "w", "b"], ["y", "mu", "isd"], axis=1)],
              [("x", F, [2, 3, 4])], [("y", F), ("mu", F), ("isd", F)], [const("w", W(3, 4)), const("b", W(3, 4))],
              opset=17)
    mod = check(m)
    assert mod.report["kernels"] == 2


def test_matmul_split_epilogue_uses_the_fast_kernel():
    # GPT-2's fused QKV projection: one GEMM, its columns split three ways and reshaped per head
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Split", ["m"], ["q", "k", "v"], axis=1, num_outputs=3),
             h.make_node("Reshape", ["k", "sh"], ["kr"]), h.make_node("Transpose", ["kr"], ["z1"], perm=[1, 0, 2]),
             h.make_node("Relu", ["q"], ["z0"]), h.make_node("Neg", ["v"], ["z2"])]
    m = model(nodes, [("x", F, [6, 16])], [("z0", F), ("z1", F), ("z2", F)],
              [const("w", W(16, 24)), _i64("sh", [6, 2, 4])], opset=18)
    mod = check(m)
    assert mod.report["kernels"] == 1 and "gemm" in mod.report["block_schedules"][0]["schedule"]


@pytest.mark.parametrize("attrs", [dict(strides=[2, 2]), dict(strides=[2, 2], pads=[1, 1, 0, 0], output_padding=[1, 1]),
                                   dict(group=2, dilations=[2, 1])])
def test_conv_transpose(attrs):
    m = model([h.make_node("ConvTranspose", ["x", "w", "b"], ["c"], **attrs), h.make_node("Relu", ["c"], ["z"])],
              [("x", F, [1, 4, 5, 6])], [("z", F)], [const("w", W(4, 3, 3, 3)), const("b", W(3 * attrs.get("group", 1)))])
    check(m)


def test_float16_tensors():
    m = model([h.make_node("Mul", ["x", "y"], ["a"]), h.make_node("Softmax", ["a"], ["z"], axis=-1)],
              [("x", T.FLOAT16, [3, 16]), ("y", T.FLOAT16, [3, 16])], [("z", T.FLOAT16)])
    mod = check(m)
    assert mod.outputs[0].dtype == "float16"


def test_epilogue_concat_with_other_inputs_keeps_every_piece():
    # the anchor fills only its own piece of a Concat: the kernel epilogue must not be used alone
    m = model([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Concat", ["y", "c"], ["z"], axis=1)],
              [("x", F, [1, 3, 6, 6]), ("y", F, [1, 2, 6, 6])], [("z", F)], [const("w", W(4, 3, 1, 1))])
    check(m)


# --------------------------------------------------------------------------- vectorizable float math

def _check_wide(proto, scale=8.0):
    """check() with inputs over a wide range, some of them extreme."""
    g = fusion.load(proto)
    feeds = {k: v * scale for k, v in random_inputs(g, seed=5).items()}
    for v in feeds.values():
        flat = v.reshape(-1)
        flat[:8] = [0.0, -0.0, 30.0, -30.0, 90.0, -110.0, 1e-3, -1e-3][:flat.size]
    expected = run_onnxruntime(proto, feeds)
    mod = fusion.compile(g, threads=1, profile_db=False)
    rep = compare(mod.run(feeds), expected)
    assert rep.ok, str(rep)
    return mod


def test_float_math_uses_the_vectorizable_runtime_functions():
    nodes = [h.make_node("Exp", ["x"], ["e"]), h.make_node("Tanh", ["x"], ["t"]), h.make_node("Erf", ["x"], ["r"]),
             h.make_node("Abs", ["x"], ["a"]), h.make_node("Log", ["a"], ["l"]), h.make_node("Sigmoid", ["x"], ["s"]),
             h.make_node("Sum", ["t", "r", "l", "s"], ["u"])]
    m = model(nodes, [("x", F, [4, 33])], [("e", F), ("u", F)])
    mod = _check_wide(m)
    src = mod.c_source
    for fn in ("fz_expf(", "fz_tanhf(", "fz_erff(", "fz_logf("):
        assert fn in src
    assert not re.search(r"(?<![\w])(expf|tanhf|erff|logf)\(", src)


def test_float64_math_keeps_libm():
    m = model([h.make_node("Exp", ["x"], ["e"]), h.make_node("Tanh", ["e"], ["z"])], [("x", T.DOUBLE, [3, 5])],
              [("z", T.DOUBLE)])
    src = check(m).c_source
    assert re.search(r"(?<![\w])exp\(", src) and re.search(r"(?<![\w])tanh\(", src) and "fz_expf(" not in src


def test_gemm_epilogue_gelu_uses_vectorizable_erf():
    m = model([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "b"], ["a"]),
               h.make_node("Gelu", ["a"], ["z"])],
              [("x", F, [16, 24])], [("z", F)], [const("w", W(24, 40) * 0.3), const("b", W(40))], opset=20)
    mod = _check_wide(m, scale=1.0)
    assert mod.report["kernels"] == 1 and "fz_erff(" in mod.c_source


def test_conv_mish_epilogue_is_one_exp():
    m = model([h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Mish", ["c"], ["z"])],
              [("x", F, [1, 3, 8, 8])], [("z", F)], [const("w", W(8, 3, 3, 3)), const("b", W(8))], opset=18)
    mod = _check_wide(m, scale=4.0)
    assert "fz_tanh_softplusf(" in mod.c_source and "fz_logf(" not in mod.c_source


def test_c_printer_spells_fast_math_only_where_asked():
    from fusion.codegen.cprint import ExprPrinter, fast_math
    from fusion.ir import expr as E
    x = E.Var("x", 8)
    ld = E.Load("buf", (x,), "float32")
    e = E.Call("exp", (ld,), "float32")
    mish = E.Call("tanh", (E.Call("log", (E.Bin("add", E.Call("exp", (ld,), "float32"), E.Const(1.0, "float32"),
                                                 "float32"),), "float32"),), "float32")
    plain = ExprPrinter({"buf": (8,)})
    # OpenCL prints anchor epilogues with this printer and maps libm names to its builtins
    assert plain.p(e).startswith("expf(") and plain.p(mish).startswith("tanhf(logf(")
    with fast_math():
        assert plain.p(e).startswith("fz_expf(") and plain.p(mish) == "fz_tanh_softplusf(buf[x])"
        assert ExprPrinter({"buf": (8,)}, fast=False).p(e).startswith("expf(")
    assert ExprPrinter({"buf": (8,)}, fast=True).p(e).startswith("fz_expf(")
    d = E.Call("exp", (E.Load("buf", (x,), "float64"),), "float64")
    assert ExprPrinter({"buf": (8,)}, fast=True).p(d).startswith("exp(")


_POOL_STRESS = r"""
#include "fz_runtime.h"
static int32_t fz_st_hits[4096];
static void fz_st_task(void *arg, int64_t b, int64_t e) {
    (void)arg;
    for (int64_t i = b; i < e; i++) {
        __atomic_add_fetch(&fz_st_hits[i], 1, __ATOMIC_RELAXED);
        if ((i & 63) == 0) for (volatile int k = 0; k < 200; k++) {}
    }
}
/* items run exactly once per job, all of them before fz_parallel_for returns */
int64_t fz_pool_stress(int threads, int jobs) {
    int64_t errors = 0;
    fz_set_threads(threads);
    for (int j = 0; j < jobs; j++) {
        int64_t n = 1 + (j * 7919) % 4096;
        memset(fz_st_hits, 0, sizeof fz_st_hits);
        fz_parallel_for(n, fz_st_task, NULL);
        for (int64_t i = 0; i < 4096; i++) errors += fz_st_hits[i] != (i < n);
    }
    return errors;
}
"""


def test_thread_pool_runs_every_item_once_with_more_threads_than_cores(tmp_path):
    # workers that wake late (oversubscribed cores) must neither be waited for nor claim a later job's items
    import ctypes
    from fusion.codegen.build import RUNTIME_DIR
    from fusion.toolchain import compile_shared
    src = tmp_path / "stress.c"
    src.write_text(_POOL_STRESS)
    lib = ctypes.CDLL(compile_shared([str(src)], str(tmp_path / "libstress.so"), "host",
                                     extra_flags=[f"-I{RUNTIME_DIR}"]).path)
    lib.fz_pool_stress.restype = ctypes.c_int64
    for threads in (2, 3, 5, 2, 1, 4):
        assert lib.fz_pool_stress(threads, 400) == 0, threads


def test_gemm_tile_width_fits_narrow_matrices():
    from fusion.codegen.kernels.common import GemmShape
    from fusion.codegen.kernels.gemm import fit_columns
    from fusion.targets import get_target
    avx512 = type("T", (), {"vector_registers": 32})()
    g = GemmShape(lanes=16, nv=3, mr=8, kc=64, mc=128, nc=192)
    assert fit_columns(g, 26, avx512).nr == 32 and fit_columns(g, 64, avx512).nr == 32   # head dims
    assert fit_columns(g, 1200, avx512) == g and fit_columns(g, 96, avx512) == g          # 48 divides them
    narrow = fit_columns(g, 128, avx512)
    assert narrow.nc % narrow.nr == 0 and narrow.mc % narrow.mr == 0
    neon = GemmShape(lanes=4, nv=3, mr=8, kc=64, mc=128, nc=48)
    assert fit_columns(neon, 26, get_target("linux-arm64")) == neon
    # end to end: a batched attention product with head dim 26 on the narrow tile, against onnxruntime
    m = model([h.make_node("MatMul", ["p", "v"], ["z"])], [("p", F, [3, 40, 40]), ("v", F, [3, 40, 26])], [("z", F)])
    check(m)
