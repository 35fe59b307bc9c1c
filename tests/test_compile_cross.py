"""The same generated C cross-built for ARM64: run under qemu-user (linux-arm64),
built only for Android (no device here)."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import fusion
from fusion.oracle import compare, random_inputs, run_onnxruntime

pytest.importorskip("fusion.device.runner")


def _model():
    w = onnx.numpy_helper.from_array(np.random.default_rng(1).standard_normal((24, 10)).astype(np.float32), "w")
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Softmax", ["m"], ["s"], axis=-1),
             h.make_node("Transpose", ["s"], ["z"], perm=[1, 0])]
    g = h.make_graph(nodes, "cross", [h.make_tensor_value_info("x", T.FLOAT, [7, 24])],
                     [h.make_tensor_value_info("z", T.FLOAT, None)], [w])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="qemu-aarch64 / aarch64-linux-gnu-gcc not installed (setup.sh installs them)")
def test_linux_arm64_under_qemu():
    m = _model()
    g = fusion.load(m)
    feeds = random_inputs(g)
    mod = fusion.compile(g, target="linux-arm64", threads=2, profile_db=False)
    assert compare(mod.run(feeds), run_onnxruntime(m, feeds)).ok


def test_android_arm64_builds(tmp_path):
    if shutil.which("clang") is None or shutil.which("ld.lld") is None:
        pytest.skip("clang / ld.lld not installed (setup.sh installs them)")
    mod = fusion.compile(fusion.load(_model()), target="android-arm64", out_dir=str(tmp_path), profile_db=False)
    head = (tmp_path / "libmodel.so").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[18] == 183   # e_machine = EM_AARCH64
    assert mod.report["target"] == "android-arm64"


needs_qemu = pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None,
                                reason="qemu-aarch64 / aarch64-linux-gnu-gcc not installed (setup.sh installs them)")


@needs_qemu
@pytest.mark.slow   # ~45 s: the NonZero kernel's sources are cross-compiled (tests/test_device.py checks the driver)
def test_data_dependent_output_under_qemu():
    """An output whose size is decided at run time (NonZero): the driver writes the actual
    leading corner of the capacity, with the actual shape."""
    zero = onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [h.make_node("Greater", ["x", "zero"], ["g"]), h.make_node("NonZero", ["g"], ["idx"]),
             h.make_node("Relu", ["x"], ["r"])]
    g = h.make_graph(nodes, "nz", [h.make_tensor_value_info("x", T.FLOAT, [3, 5])],
                     [h.make_tensor_value_info("idx", T.INT64, None), h.make_tensor_value_info("r", T.FLOAT, None)],
                     [zero])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    feeds = random_inputs(fusion.load(m), seed=1)
    expected = run_onnxruntime(m, feeds)
    assert 0 < expected["idx"].shape[1] < 15
    got = fusion.compile(fusion.load(m), target="linux-arm64", profile_db=False).run(feeds)
    assert got["idx"].shape == expected["idx"].shape and compare(got, expected).ok


# The small zoo models under qemu-aarch64 (C backend, cross-built, checked against onnxruntime).
# Seconds per model for compile + onnxruntime + qemu, cold compile cache, 2 cores at load ~7:
# tinybert 13, efficientnet-b0 11, c3d 10, mobilebert 10, u-net 16, yolo-v4 18 (CI: one of each
# family, ~80 s); vgg-16 10, s3d 22, distilbert 25, albert 29, bert-base 19, gpt-2 25 (slow).
# At load ~14 the slow ones took 23-57 s each, mobilenetv1-ssd 92 s, faster-rcnn 395 s; full size:
# tinybert 58 s, efficientnet-b0 70 s, mobilebert 204 s.
QEMU_CI = ["tinybert", "efficientnet-b0", "c3d", "mobilebert", "u-net", "yolo-v4"]
QEMU_SLOW = ["vgg-16", "s3d", "distilbert", "albert", "bert-base", "gpt-2", "mobilenetv1-ssd", "faster-rcnn",
             "mask-rcnn"]

def _zoo_under_qemu(name: str, small: bool = True):
    from fusion import zoo
    spec = f"zoo:{name}" + (":small" if small else "")
    g = fusion.load(spec)
    feeds = random_inputs(g, seed=0)
    mod = fusion.compile(g, target="linux-arm64", threads=2)
    rep = compare(mod.run(feeds), run_onnxruntime(zoo.resolve(spec), feeds))
    assert rep.ok, f"{spec} under qemu-aarch64: {rep}"


@needs_qemu
@pytest.mark.parametrize("name", QEMU_CI)
def test_small_zoo_model_under_qemu(name):
    _zoo_under_qemu(name)


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("name", QEMU_SLOW)
def test_small_zoo_model_under_qemu_slow(name):
    _zoo_under_qemu(name)


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("name", ["tinybert", "efficientnet-b0", "mobilebert"])
def test_full_size_zoo_model_under_qemu(name):
    _zoo_under_qemu(name, small=False)
