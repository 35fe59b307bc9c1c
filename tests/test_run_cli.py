"""`fusion compile`, `fusion run --check`, `fusion bench`, `fusion targets` end to end."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from fusion.cli import main


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
    g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Relu", ["m"], ["y"])], "cli",
                     [h.make_tensor_value_info("x", T.FLOAT, ["batch", 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], [w])
    p = d / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(p))
    return str(p)


def test_run_check_json(onnx_file, capsys):
    assert main(["run", onnx_file, "--shape", "batch=5", "--check", "--json", "--threads", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["max_abs_err"] < 1e-4 and out["blocks"] == 1


def test_run_check_text(onnx_file, capsys):
    assert main(["run", onnx_file, "--shape", "batch=3", "--check"]) == 0
    out = capsys.readouterr().out
    assert "2 nodes -> 1 blocks" in out and "PASS: max abs err" in out


def test_open_dims_are_a_clear_error(onnx_file, capsys):
    assert main(["run", onnx_file, "--check"]) == 2
    err = capsys.readouterr().err
    assert "fusion: error:" in err and "--shape" in err and "Traceback" not in err


def test_compile_writes_artifact(onnx_file, tmp_path, capsys):
    out = tmp_path / "build"
    assert main(["compile", onnx_file, "--shape", "x=2x16", "-o", str(out)]) == 0
    for f in ("model.c", "model.h", "weights.bin", "libmodel.so", "report.json"):
        assert (out / f).exists()
    rep = json.loads((out / "report.json").read_text())
    assert rep["blocks"] == 1 and rep["peak_memory"]["weights_bytes"] >= 16 * 8 * 4
    from fusion.codegen.driver import CompiledModel
    mod = CompiledModel.from_dir(str(out), threads=1)
    x = np.ones((2, 16), np.float32)
    assert mod.run({"x": x})["y"].shape == (2, 8)


def test_bench_json(onnx_file, capsys):
    assert main(["bench", onnx_file, "--shape", "batch=4", "--runs", "3", "--threads", "1", "--no-memory",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fusion_ms"] > 0 and out["ort_ms"] > 0 and out["threads"] == 1


def test_targets(capsys):
    assert main(["targets"]) == 0
    assert "android-arm64" in capsys.readouterr().out


def test_bench_llvm_backend_reports_all_three(onnx_file, capsys):
    """`fusion bench --backend llvm`: onnxruntime, the LLVM JIT and the C backend, timed
    alternately on the same inputs, each checked against onnxruntime."""
    pytest.importorskip("llvmlite")
    assert main(["bench", onnx_file, "--shape", "batch=4", "--backend", "llvm", "--runs", "3", "--threads", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threads"] == 2 and out["llvm_ok"] is True and out["c_ok"] is True
    assert out["onnxruntime_ms"] > 0 and out["llvm_ms"] > 0 and out["c_ms"] > 0 and "load_average" in out
    assert main(["bench", onnx_file, "--shape", "batch=4", "--backend", "llvm", "--runs", "2"]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "llvm JIT" in text and "| C " in text and "matches" in text
