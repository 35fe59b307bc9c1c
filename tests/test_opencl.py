"""The OpenCL backend on PoCL: kernels per op class and class pair, the
tiled GEMM, host steps, kernel-argument limits, fp16 storage, the C host
library, and small zoo models, all against onnxruntime."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import fusion
from fusion.errors import FusionError
from fusion.oracle import compare, random_inputs, run_onnxruntime


def _platform() -> str:
    try:
        import pyopencl as cl
        return "" if any(p.get_devices() for p in cl.get_platforms()) else "no OpenCL device"
    except ImportError:
        return "pyopencl is not installed"
    except Exception as e:   # pyopencl raises LogicError/RuntimeError without an ICD
        return f"no OpenCL platform ({e.__class__.__name__}); install pocl-opencl-icd"


_WHY = _platform()
pytestmark = pytest.mark.skipif(bool(_WHY), reason=_WHY or "ok")

from fusion.codegen import opencl  # noqa: E402

F = T.FLOAT
rng = np.random.default_rng(11)


def W(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def model(nodes, inputs, outputs, inits=(), opset=13):
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                     [h.make_tensor_value_info(n, t, None) for n, t in outputs],
                     [onnx.numpy_helper.from_array(a, n) for n, a in inits])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def check(proto, **kwargs):
    kwargs.setdefault("tiled_gemm", True)   # the GPU default, also on PoCL's CPU device
    g = fusion.load(proto)
    feeds = random_inputs(g, seed=5)
    expected = run_onnxruntime(proto, feeds)
    mod = opencl.compile(g, **kwargs)
    try:
        got = mod.run(feeds)
        rep = compare(got, expected)
        assert rep.ok, str(rep)
        assert mod.launches == mod.kernel_count   # one launch per kernel, no extra passes
    finally:
        mod.close()
    return mod


def kernels_of(mod):
    return [s for s in mod.prog.steps if hasattr(s, "storages")]


# ------------------------------------------------------------------ op classes

def test_one_to_one_chain_is_one_kernel_over_every_element():
    m = model([h.make_node("Mul", ["x", "y"], ["a"]), h.make_node("Sigmoid", ["a"], ["b"]),
               h.make_node("Erf", ["b"], ["c"]), h.make_node("Sub", ["c", "x"], ["z"])],
              [("x", F, [3, 5, 37]), ("y", F, [3, 5, 37])], [("z", F)])
    mod = check(m)
    assert mod.kernel_count == 1
    (k,) = kernels_of(mod)
    assert k.total == 3 * 5 * 37   # the CPU's inner vector loop moved into the NDRange
    src = mod.prog.source
    assert "__kernel void fz_b" in src and "if (p_ >= 555L) return;" in src


def test_broadcast_and_where():
    m = model([h.make_node("Add", ["x", "b"], ["a"]), h.make_node("Greater", ["a", "s"], ["c"]),
               h.make_node("Where", ["c", "a", "s"], ["z"])],
              [("x", F, [2, 4, 6, 5]), ("b", F, [4, 1, 1]), ("s", F, [5])], [("z", F)])
    check(m)


def test_reductions_keepdims_and_not():
    m = model([h.make_node("ReduceSum", ["x", "ax"], ["a"], keepdims=1),
               h.make_node("ReduceMax", ["x"], ["b"], axes=[0, 2], keepdims=0),
               h.make_node("Exp", ["b"], ["z"]), h.make_node("Div", ["x", "a"], ["y"])],
              [("x", F, [4, 6, 9])], [("y", F), ("z", F)], [("ax", np.array([1], np.int64))])
    check(m)


def test_softmax_middle_axis_and_layernorm_pattern():
    m = model([h.make_node("Softmax", ["x"], ["s"], axis=1),
               h.make_node("ReduceMean", ["s"], ["mu"], axes=[-1]), h.make_node("Sub", ["s", "mu"], ["d"]),
               h.make_node("Mul", ["d", "d"], ["d2"]), h.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
               h.make_node("Add", ["var", "eps"], ["ve"]), h.make_node("Sqrt", ["ve"], ["sd"]),
               h.make_node("Div", ["d", "sd"], ["z"])],
              [("x", F, [2, 7, 33])], [("z", F)], [("eps", np.array(1e-5, np.float32))])
    check(m)


def test_matmul_is_tiled_with_fused_epilogue():
    m = model([h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Add", ["a", "b"], ["c"]),
               h.make_node("Relu", ["c"], ["z"])],
              [("x", F, [2, 37, 29])], [("z", F)], [("w", W(29, 45)), ("b", W(45))])
    mod = check(m)
    assert mod.kernel_count == 1
    assert "tiled GEMM 37x45x29" in kernels_of(mod)[0].schedule
    assert "__local float As" in mod.prog.source and "barrier(CLK_LOCAL_MEM_FENCE)" in mod.prog.source


def test_batched_matmul_with_transposed_prologue_and_broadcast_batch():
    m = model([h.make_node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2]), h.make_node("MatMul", ["xt", "y"], ["z"])],
              [("x", F, [2, 3, 20, 17]), ("y", F, [3, 20, 33])], [("z", F)])
    mod = check(m)
    assert any("tiled" in k.schedule for k in kernels_of(mod))


def test_gemm_transposes_alpha_beta_and_plain_nest_agree():
    m = model([h.make_node("Gemm", ["x", "w", "b"], ["a"], transA=1, transB=1, alpha=0.5, beta=2.0),
               h.make_node("Tanh", ["a"], ["z"])],
              [("x", F, [40, 12])], [("z", F)], [("w", W(30, 40)), ("b", W(30))])
    tiled = check(m)
    assert "tiled" in kernels_of(tiled)[0].schedule
    plain = check(m, tiled_gemm=False)
    assert "tiled" not in kernels_of(plain)[0].schedule


def test_conv_bn_relu_pool():
    m = model([h.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
               h.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"]),
               h.make_node("Relu", ["n"], ["r"]),
               h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
               h.make_node("Conv", ["p", "dw"], ["d"], group=8, pads=[1, 1, 1, 1]),
               h.make_node("GlobalAveragePool", ["d"], ["z"])],
              [("x", F, [1, 3, 17, 17])], [("z", F), ("r", F)],
              [("w", W(8, 3, 3, 3)), ("cb", W(8)), ("g", W(8)), ("be", W(8)), ("mu", W(8)),
               ("var", np.abs(W(8)) + 0.5), ("dw", W(8, 1, 3, 3))])
    mod = check(m)
    sched = [k.schedule for k in kernels_of(mod)]
    assert any("tiled GEMM 8x81x27 x batch [1, 1]" in s for s in sched), sched   # implicit GEMM
    assert not all("tiled" in s for s in sched)   # depthwise (K = 9) keeps the plain nest


def test_conv_implicit_gemm_groups_dilation_asymmetric_pads():
    m = model([h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[0, 1, 2, 1], dilations=[2, 1], group=2),
               h.make_node("Sigmoid", ["c"], ["s"]), h.make_node("Mul", ["c", "s"], ["z"])],
              [("x", F, [2, 8, 15, 13])], [("z", F)], [("w", W(64, 4, 3, 3)), ("b", W(64))])
    mod = check(m)
    assert "32x169x36 x batch [2, 2]" in kernels_of(mod)[0].schedule and "2x2 outputs" in kernels_of(mod)[0].schedule


def test_reshape_transpose_slice_concat_compose_into_index_arithmetic():
    m = model([h.make_node("Reshape", ["x", "sh"], ["r"]), h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
               h.make_node("Slice", ["t", "st", "en", "ax"], ["s"]),
               h.make_node("Concat", ["s", "y"], ["c"], axis=3), h.make_node("Relu", ["c"], ["z"])],
              [("x", F, [2, 12, 20]), ("y", F, [2, 4, 9, 3])], [("z", F)],
              [("sh", np.array([2, 12, 4, 5], np.int64)), ("st", np.array([1, 0], np.int64)),
               ("en", np.array([10, 4], np.int64)), ("ax", np.array([2, 3], np.int64))])
    mod = check(m)
    assert mod.kernel_count <= 2


# --------------------------------------------------------------- host steps

def test_opaque_topk_runs_as_host_step_between_kernels():
    m = model([h.make_node("Mul", ["x", "x"], ["a"]), h.make_node("TopK", ["a", "k"], ["v", "i"], axis=-1),
               h.make_node("Sqrt", ["v"], ["s"]), h.make_node("Cast", ["i"], ["f"], to=F),
               h.make_node("Add", ["s", "f"], ["z"])],
              [("x", F, [3, 40])], [("z", F), ("i", T.INT64)], [("k", np.array([5], np.int64))])
    mod = check(m)
    assert mod.host_steps == 1 and mod.kernel_count >= 2
    kinds = ["host" if not hasattr(s, "storages") else "kernel" for s in mod.prog.steps]
    assert kinds.index("host") not in (0, len(kinds) - 1)   # in the middle: the device resumes after it
    from fusion.codegen.opencl import tools
    res = tools.run_check(fusion.load(m))   # what `fusion run --target opencl --check` prints (count = len)
    assert res["check"]["ok"] and len(res["host_steps"]) == 1 and "TopK" in res["host_steps"][0]


# ------------------------------------------------------------------- limits

def test_kernel_argument_limit_of_the_target():
    from fusion.targets import get_target
    n = 12
    nodes, acc = [], "x0"
    for i in range(1, n):
        nodes.append(h.make_node("Add", [acc, f"x{i}"], [f"s{i}"]))
        acc = f"s{i}"
    nodes.append(h.make_node("Relu", [acc], ["z"]))
    m = model(nodes, [(f"x{i}", F, [4, 8]) for i in range(n)], [("z", F)])
    t = get_target("opencl", max_kernel_args=5)
    mod = check(m, target=t)
    assert mod.kernel_count >= 3
    assert all(len(k.storages) <= 5 for k in kernels_of(mod))
    # a single op that needs more arguments than the target has: one clear error
    c = model([h.make_node("Concat", [f"x{i}" for i in range(n)], ["z"], axis=0)],
              [(f"x{i}", F, [4, 8]) for i in range(n)], [("z", F)])
    with pytest.raises(FusionError, match="arguments"):
        opencl.compile(fusion.load(c), target=t)


def test_work_group_respects_target_and_device():
    from fusion.targets import get_target
    m = model([h.make_node("Relu", ["x"], ["z"])], [("x", F, [1000])], [("z", F)])
    mod = opencl.compile(fusion.load(m), target=get_target("opencl", max_work_group=64))
    try:
        (st, _, glob, local) = mod.launch[0]
        assert local == 64 and glob == 1024 and glob % local == 0
        x = np.linspace(-1, 1, 1000, dtype=np.float32)
        np.testing.assert_array_equal(mod.run({"x": x})["z"], np.maximum(x, 0))
    finally:
        mod.close()


def test_fp16_storage():
    m = model([h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Sigmoid", ["a"], ["s"]),
               h.make_node("Softmax", ["s"], ["z"], axis=-1)],
              [("x", F, [8, 16])], [("z", F)], [("w", W(16, 24))])
    g = fusion.load(m)
    feeds = random_inputs(g, seed=5)
    expected = run_onnxruntime(m, feeds)
    mod = opencl.compile(g, fp16=True)
    try:
        src = mod.prog.source
        assert "vload_half" in src and "vstore_half" in src
        assert len(mod.prog.weights) < 16 * 24 * 4      # weights stored as half
        got = mod.run(feeds)
        half = lambda d: {k: np.asarray(v, np.float16) for k, v in d.items()}
        rep = compare(half(got), half(expected))
        assert rep.ok, str(rep)
        assert not compare(got, expected).max_abs_err == 0.0   # it really rounded through half
    finally:
        mod.close()


def test_user_errors_are_one_line():
    m = model([h.make_node("Relu", ["x"], ["z"])], [("x", F, [2, 3])], [("z", F)])
    mod = opencl.compile(fusion.load(m))
    try:
        with pytest.raises(FusionError, match="has shape \\[3, 2\\]"):
            mod.run({"x": np.zeros((3, 2), np.float32)})
        with pytest.raises(FusionError, match="dtype float64"):
            mod.run({"x": np.zeros((2, 3))})
    finally:
        mod.close()
    with pytest.raises(FusionError, match="CPU target"):
        opencl.compile(fusion.load(m), target="host")


# --------------------------------------------------------- C host / Android

def test_c_host_library_runs_on_this_machine_and_caches_the_binary(tmp_path):
    from fusion.codegen.opencl import android
    m = model([h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Gelu" if False else "Tanh", ["a"], ["b"]),
               h.make_node("ReduceSum", ["b", "ax"], ["z"], keepdims=0)],
              [("x", F, [4, 33, 20])], [("z", F), ("b", F)], [("w", W(20, 18)), ("ax", np.array([1], np.int64))])
    g = fusion.load(m)
    feeds = random_inputs(g, seed=2)
    expected = run_onnxruntime(m, feeds)
    art = android.build(g, str(tmp_path / "host"), target="host")
    for _ in range(2):   # second load: from the cached program binary
        lib = android.HostLibrary(art)
        try:
            rep = compare(lib.run(feeds), expected)
            assert rep.ok, str(rep)
        finally:
            lib.close()
        assert os.path.getsize(art.weights + ".clbin") > 0


def test_android_gpu_artifact_is_an_arm64_library(tmp_path):
    from fusion.codegen.opencl import android
    from fusion.device.cross import elf_info
    m = model([h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Relu", ["a"], ["z"])],
              [("x", F, [4, 16])], [("z", F)], [("w", W(16, 8))])
    art = android.build(fusion.load(m), str(tmp_path / "gpu"))
    info = elf_info(art.library)
    assert "AArch64" in str(info)
    assert "model_create" in str(info) and "libOpenCL" not in str(info.get("needed", ""))
    src = open(art.host_source).read()
    assert 'dlopen(names[i]' in src and "clEnqueueNDRangeKernel" not in src.split("static struct")[0]
    assert open(art.kernels).read().count("__kernel") == art.kernel_count == 1


# ---------------------------------------------------------------------- zoo

def _zoo(name: str, **kwargs):
    try:
        from fusion import zoo  # noqa: F401
    except ImportError:
        pytest.skip("fusion.zoo is not in this build")
    from fusion.codegen.driver import load_graph
    from fusion.ir.onnx_export import to_onnx
    g = load_graph(name)
    feeds = random_inputs(g, seed=0)
    expected = run_onnxruntime(to_onnx(g), feeds)
    mod = opencl.compile(g, **kwargs)
    try:
        rep = compare(mod.run(feeds), expected)
        assert rep.ok, f"{name}: {rep}"
        assert mod.kernel_count < len(g.nodes)
    finally:
        mod.close()
    return mod


@pytest.mark.parametrize("name,tiled", [("zoo:tinybert:small", True), ("zoo:efficientnet-b0:small", None)])
def test_zoo_small_models(name, tiled):
    mod = _zoo(name, tiled_gemm=tiled)
    if tiled:
        assert any("tiled GEMM" in k.schedule for k in kernels_of(mod))


# CI: the small variants that take under ~15 s each on PoCL (docs/opencl.md has the table);
# the three slowest run with -m slow.
@pytest.mark.parametrize("name", ["vgg-16", "distilbert", "albert", "bert-base", "mobilebert", "gpt-2", "c3d", "s3d",
                                  "u-net"])
def test_zoo_small_models_more(name):
    mod = _zoo(f"zoo:{name}:small")
    assert mod.host_steps == 0   # no host round trip in these models


def test_zoo_small_ssd_nms_and_topk_on_the_host():
    mod = _zoo("zoo:mobilenetv1-ssd:small")
    ops = {s.block.nodes[0].op for s in mod.prog.steps if not hasattr(s, "storages")}
    assert "NonMaxSuppression" in ops and mod.kernel_count > 40


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolo-v4", "faster-rcnn"])
def test_zoo_small_models_slow(name):
    _zoo(f"zoo:{name}:small")


def test_zoo_small_mask_rcnn_scatters_on_the_host():
    # in CI: a change of plan once turned its RoI pooler's ScatterElements (over run-time row counts)
    # into kernels that gave wrong rows on PoCL; only the slow test would have seen it
    mod = _zoo("zoo:mask-rcnn:small")
    ops = {n.op for s in mod.prog.steps if not hasattr(s, "storages") for n in s.block.nodes}
    assert "ScatterElements" in ops and "Loop" in ops


# ------------------------------------------------------- block-by-block check

def _three_matmuls():
    return model([h.make_node("MatMul", ["x", "w1"], ["a"]), h.make_node("MatMul", ["x", "w2"], ["b"]),
                  h.make_node("MatMul", ["b", "w3"], ["c"]), h.make_node("Add", ["c", "a"], ["z"])],
                 [("x", F, [6, 8])], [("z", F)], [("w1", W(8, 5)), ("w2", W(8, 7)), ("w3", W(7, 5))])


def test_check_blocks_passes_and_names_the_one_broken_kernel(monkeypatch):
    from fusion.codegen.opencl import program, tools
    ok = tools.check_blocks(fusion.load(_three_matmuls()))
    assert ok["ok"] and ok["steps"] == 3 and not ok["bad"]
    real = program.KernelPrinter.kernel
    calls = []

    def broken(self):   # the second kernel stores 1 + the right value
        text = real(self)
        calls.append(self.kname)
        return text.replace("] = (float)(", "] = (float)(1.0f + ") if self.kname == calls[min(1, len(calls) - 1)] \
            and len(calls) > 1 else text
    monkeypatch.setattr(program.KernelPrinter, "kernel", broken)
    res = tools.check_blocks(fusion.load(_three_matmuls()))
    assert not res["ok"] and calls[1] in res["first_bad"]
    assert len(res["bad"]) == 1   # fed correct inputs, the kernel after it passes
    chained = tools.check_blocks(fusion.load(_three_matmuls()), isolate=False)
    assert calls[1] in chained["first_bad"] and len(chained["bad"]) == 2 and not chained["clobbered"]


def test_check_blocks_chained_finds_an_arena_aliasing_bug(monkeypatch):
    from fusion.codegen.opencl import program, tools

    def one_slot(intervals):   # every intermediate at offset 0: the second MatMul overwrites the first's a
        for iv in intervals:
            iv.offset = 0
        return max(iv.size for iv in intervals)
    monkeypatch.setattr(program, "plan_memory", one_slot)
    res = tools.check_blocks(fusion.load(_three_matmuls()), isolate=False)
    assert not res["ok"] and len(res["clobbered"]) == 1
    assert "input v_a changed after it was written" in res["clobbered"][0]


# ------------------------------------------------- run-time sizes on the host

def test_blocks_the_kernel_lowering_refuses_run_on_the_host():
    """A Range whose length is computed from the data (a size symbol the C model_run
    reads between kernels): the OpenCL kernel lowering refuses its block; the block
    runs on the host and its values stay there (numpy, actual shape), while the
    kernels before it (Sigmoid; the count, stored because it sizes the Range) are untouched."""
    c = lambda name, v, dt=np.float32: onnx.numpy_helper.from_array(np.array(v, dt), name)
    g = h.make_graph([h.make_node("Sigmoid", ["x"], ["xs"]), h.make_node("Greater", ["x", "zero"], ["pos"]),
                      h.make_node("Cast", ["pos"], ["posf"], to=F),
                      h.make_node("ReduceSum", ["posf"], ["cnt"], keepdims=0),
                      h.make_node("Cast", ["cnt"], ["n"], to=T.INT64), h.make_node("Range", ["z64", "n", "one"], ["r"]),
                      h.make_node("Cast", ["r"], ["rf"], to=F), h.make_node("Mul", ["rf", "rf"], ["sq"]),
                      h.make_node("Add", ["sq", "half"], ["z"])], "t",
                     [h.make_tensor_value_info("x", F, [9])],
                     [h.make_tensor_value_info("z", F, None), h.make_tensor_value_info("xs", F, None)],
                     [c("zero", 0.0), c("z64", 0, np.int64), c("one", 1, np.int64), c("half", 0.5)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    mod = opencl.compile(fusion.load(m))
    try:
        assert mod.kernel_count == 2 and mod.host_steps == 1
        (fallback,) = [s for s in mod.prog.steps if not hasattr(s, "storages")]
        assert "Range" in [n.op for n in fallback.block.nodes] and "decided at run time" in fallback.reason
        assert mod.prog.places[fallback.writes[0]].storage == "host"
        for x, n in ((np.linspace(-1, 2, 9), 6), (np.linspace(-2, 1, 9), 3)):
            feeds = {"x": x.astype(np.float32)}
            got = mod.run(feeds)
            rep = compare(got, run_onnxruntime(m, feeds))
            assert rep.ok, str(rep)
            assert got["z"].shape == (n,)
    finally:
        mod.close()


def test_if_with_branches_of_different_lengths():
    """If outputs get the larger branch's capacity (the C emitter's rule) when
    it is known, so what follows stays a kernel; otherwise they stay on the host."""
    sub = lambda name, n: h.make_graph([h.make_node("Slice", ["xs", f"st{name}", f"en{name}"], [f"y{name}"])],
                                        name, [], [h.make_tensor_value_info(f"y{name}", F, None)],
                                        [onnx.numpy_helper.from_array(np.array([0], np.int64), f"st{name}"),
                                         onnx.numpy_helper.from_array(np.array([n], np.int64), f"en{name}")])
    g = h.make_graph([h.make_node("Sigmoid", ["x"], ["xs"]), h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                      h.make_node("Greater", ["s", "zero"], ["c"]),
                      h.make_node("If", ["c"], ["y"], then_branch=sub("t", 3), else_branch=sub("e", 7)),
                      h.make_node("Relu", ["y"], ["r"]), h.make_node("Mul", ["r", "r"], ["z"])], "t",
                     [h.make_tensor_value_info("x", F, [9])], [h.make_tensor_value_info("z", F, None)],
                     [onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    mod = opencl.compile(fusion.load(m))
    try:
        ops = [[n.op for n in s.block.nodes] for s in mod.prog.steps if not hasattr(s, "storages")]
        assert ["If"] in ops and len(ops) <= 2
        for x, n in ((np.linspace(-1, 2, 9), 3), (np.linspace(-2, 1, 9), 7), (np.linspace(-1, 2, 9), 3)):
            feeds = {"x": x.astype(np.float32)}
            got = mod.run(feeds)
            rep = compare(got, run_onnxruntime(m, feeds))
            assert rep.ok, str(rep)
            assert got["z"].shape == (n,)
    finally:
        mod.close()


def test_data_dependent_size_after_host_step():
    """NonMaxSuppression (host step) decides how many rows later kernels see:
    the kernel gets the run-time size as an argument, the output its actual shape."""
    g = h.make_graph([h.make_node("Relu", ["s0"], ["s"]),
                      h.make_node("NonMaxSuppression", ["b", "s", "mx", "iou"], ["sel"]),
                      h.make_node("Cast", ["sel"], ["f"], to=F), h.make_node("Mul", ["f", "two"], ["z"])], "t",
                     [h.make_tensor_value_info("b", F, [1, 20, 4]), h.make_tensor_value_info("s0", F, [1, 1, 20])],
                     [h.make_tensor_value_info("z", F, None), h.make_tensor_value_info("sel", T.INT64, None)],
                     [onnx.numpy_helper.from_array(np.array([6], np.int64), "mx"),
                      onnx.numpy_helper.from_array(np.array([0.3], np.float32), "iou"),
                      onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    r = np.random.default_rng(0)
    xy = r.uniform(0, 10, (1, 20, 2)).astype(np.float32)
    spread = {"b": np.concatenate([xy, xy + r.uniform(1, 4, (1, 20, 2)).astype(np.float32)], -1),
              "s0": r.standard_normal((1, 1, 20)).astype(np.float32)}
    same = {"b": np.tile(np.array([[[0, 0, 2, 2]]], np.float32), (1, 20, 1)), "s0": spread["s0"]}
    mod = opencl.compile(fusion.load(m))
    try:
        assert mod.host_steps == 1 and any(k.syms for k in kernels_of(mod))
        rows = []
        for feeds in (spread, same, spread):   # the size changes between runs and back
            got = mod.run(feeds)
            rep = compare(got, run_onnxruntime(m, feeds))
            assert rep.ok, str(rep)
            rows.append(got["z"].shape[0])
        assert rows[0] == rows[2] > rows[1] == 1
    finally:
        mod.close()


def test_outputs_no_kernel_writes():
    """A graph output that is an input, or the same value twice: copied at the end."""
    m = model([h.make_node("Relu", ["x"], ["z"]), h.make_node("Identity", ["z"], ["z2"])],
              [("x", F, [3, 4])], [("z", F), ("x", F), ("z2", F)])
    mod = check(m)
    assert mod.kernel_count == 1
