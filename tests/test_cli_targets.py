"""`fusion compile/run/bench` route every target to its backend: host C,
linux-arm64 (qemu), android-arm64 (build only), opencl (PoCL), android-arm64-gpu."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fusion
from fusion.cli import main


def _has_opencl() -> bool:
    try:
        import pyopencl as cl
        return any(p.get_devices() for p in cl.get_platforms())
    except Exception:
        return False


needs_opencl = pytest.mark.skipif(not _has_opencl(), reason="no OpenCL platform (./setup.sh installs PoCL)")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 6], list(np.linspace(-1, 1, 48)))
    b = helper.make_tensor("b", TensorProto.FLOAT, [6], list(np.linspace(-0.5, 0.5, 6)))
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Tanh", ["a"], ["t"]), helper.make_node("Softmax", ["t"], ["y"], axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 6])], [w, b])
    p = tmp_path_factory.mktemp("cli") / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    return str(p)


@needs_opencl
def test_run_opencl_check_json(model_path, capsys):
    assert main(["run", model_path, "--target", "opencl", "--check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["kernels"] >= 1 and out["max_abs_err"] < 1e-4


@needs_opencl
def test_api_compile_opencl_runs(model_path):
    mod = fusion.compile(model_path, target="opencl")
    try:
        x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
        y = mod.run({"x": x})["y"]
        np.testing.assert_allclose(y.sum(-1), np.ones(5), rtol=1e-5)
    finally:
        mod.close()


def test_android_gpu_run_is_refused_with_advice(model_path, capsys):
    assert main(["run", model_path, "--target", "android-arm64-gpu", "--check"]) == 2
    err = capsys.readouterr().err
    assert "cannot run here" in err and "--target opencl" in err and "Traceback" not in err


def test_android_gpu_compile_writes_kernels_and_arm64_host(model_path, tmp_path, capsys):
    from fusion.device import cross
    assert main(["compile", model_path, "--target", "android-arm64-gpu", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "model.cl").read_text().count("__kernel") >= 1
    info = cross.elf_info(str(tmp_path / "libmodel.so"))
    assert info["machine"] == "AArch64"
    assert "libOpenCL.so" not in info["needed"]   # loaded with dlopen on the phone


def test_unknown_target_is_one_line(model_path, capsys):
    assert main(["run", model_path, "--target", "tpu"]) == 2
    assert "unknown target 'tpu'" in capsys.readouterr().err
