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
