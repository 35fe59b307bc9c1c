"""Cross builds and the device driver: a hand-written library with the model
C ABI, built for linux-arm64 (run under qemu) and android-arm64 (checked as
an Android reviewer would: SONAME, NEEDED, imports, exports)."""
import os
import shutil

import numpy as np
import pytest

from fusion.errors import FusionError, ToolchainError
from fusion.toolchain import compile_shared

MODEL_C = r"""
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <stdio.h>
typedef struct { float w[4]; int threads; } ctx_t;
static const int64_t in_shape[2] = {2, 4};
static const int64_t out_shape[2] = {2, 4};
static const char *err = "";
void *model_create(const char *path) { ctx_t *c = calloc(1, sizeof *c); FILE *f = fopen(path, "rb");
  if (!f) { err = "cannot open weights"; free(c); return 0; }
  if (fread(c->w, 4, 4, f) != 4) { err = "short weights"; fclose(f); free(c); return 0; } fclose(f); return c; }
int model_run(void *p, const void *const *in, void *const *out) { ctx_t *c = p; const float *x = in[0]; float *y = out[0];
  for (int i = 0; i < 8; i++) y[i] = tanhf(x[i] * c->w[i % 4]); return 0; }
void model_destroy(void *p) { free(p); }
const char *model_last_error(void) { return err; }
void model_set_threads(void *p, int n) { ((ctx_t *)p)->threads = n; }
int model_num_inputs(void) { return 1; } int model_num_outputs(void) { return 1; }
const char *model_input_name(int i) { return "x"; } const char *model_output_name(int i) { return "y"; }
int model_input_dtype(int i) { return 1; } int model_output_dtype(int i) { return 1; }
int model_input_rank(int i) { return 2; } int model_output_rank(int i) { return 2; }
const int64_t *model_input_shape(int i) { return in_shape; } const int64_t *model_output_shape(int i) { return out_shape; }
int internal_helper(void) { return 1; }
"""

needs_cross = pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
                                 reason="aarch64 cross toolchain / qemu-user not installed (./setup.sh installs them)")


@pytest.fixture(scope="module")
def model_src(tmp_path_factory):
    d = tmp_path_factory.mktemp("device")
    src = d / "model.c"
    src.write_text(MODEL_C)
    w = np.array([1, 2, 3, -1], np.float32)
    w.tofile(d / "w.bin")
    return d, str(src), w


@needs_cross
def test_linux_arm64_runs_under_qemu(model_src):
    from fusion.device import cross, runner
    d, src, w = model_src
    lib = str(d / "libmodel.so")
    compile_shared([src], lib, "linux-arm64")
    info = cross.elf_info(lib)
    assert info["machine"] == "AArch64"
    assert "model_run" in info["exported"] and "internal_helper" not in info["exported"]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    outs, rep = runner.run_library(lib, str(d / "w.bin"), [x], "linux-arm64", runs=3)
    assert rep["outputs"][0]["shape"] == [2, 4] and rep["runs"] == 3
    np.testing.assert_allclose(outs[0], np.tanh(x * w), rtol=1e-6, atol=1e-6)


@needs_cross
def test_driver_reports_model_errors(model_src):
    from fusion.device import runner
    d, src, _ = model_src
    lib = str(d / "libmodel2.so")
    compile_shared([src], lib, "linux-arm64")
    with pytest.raises(FusionError, match="cannot open weights"):
        runner.run_library(lib, str(d / "missing.bin"), [np.zeros((2, 4), np.float32)], "linux-arm64")
    with pytest.raises(FusionError, match="needs 32 bytes"):
        runner.run_library(lib, str(d / "w.bin"), [np.zeros((2, 3), np.float32)], "linux-arm64")


@pytest.mark.skipif(shutil.which("clang") is None or shutil.which("ld.lld") is None, reason="clang/lld not installed")
def test_android_library_is_what_android_loads(model_src):
    from fusion.device import cross
    d, src, _ = model_src
    lib = str(d / "libmodel_android.so")
    compile_shared([src], lib, "android-arm64")
    info = cross.elf_info(lib)
    assert info["machine"] == "AArch64" and info["soname"] == "libmodel.so" and info["bind_now"]
    assert set(info["needed"]) <= {"libc.so", "libm.so", "libdl.so"}
    allowed = set(" ".join(cross.ANDROID_LIBS.values()).split())
    assert set(info["imported"]) <= allowed
    assert all(s.startswith("model_") for s in info["exported"])
    with pytest.raises(FusionError, match="Android"):
        from fusion.device import runner
        runner.run_library(lib, str(d / "w.bin"), [np.zeros((2, 4), np.float32)], "android-arm64")


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed")
def test_android_refuses_functions_android_lacks(tmp_path):
    src = tmp_path / "bad.c"
    src.write_text("#include <string.h>\nextern int glibc_only_function(void);\nint model_x(void) { return glibc_only_function(); }\n")
    with pytest.raises(ToolchainError, match="glibc_only_function"):
        compile_shared([str(src)], str(tmp_path / "libbad.so"), "android-arm64")


def test_missing_tool_names_the_package(monkeypatch):
    from fusion.toolchain import find_tool
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    with pytest.raises(ToolchainError, match="apt-get install"):
        find_tool("cc", "CC")


@pytest.mark.skipif(shutil.which("clang") is None or shutil.which("ld.lld") is None, reason="clang/lld not installed")
def test_compiled_model_for_android_api24_links_only_bionic(tmp_path):
    """A real compiled model (matmul + softmax + erf), built for Android API 24:
    every imported function must exist in bionic at that level."""
    import onnx
    from onnx import TensorProto, helper
    from fusion.cli import main
    from fusion.device import cross
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], list(np.linspace(-1, 1, 64)))
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Erf", ["m"], ["e"]),
         helper.make_node("Softmax", ["e"], ["y"], axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert main(["compile", str(path), "--target", "android-arm64", "-o", str(tmp_path / "out")]) == 0
    info = cross.elf_info(str(tmp_path / "out" / "libmodel.so"))
    allowed = set(" ".join(cross.android_symbols(24).values()).split())
    assert set(info["imported"]) <= allowed, set(info["imported"]) - allowed
    assert info["soname"] == "libmodel.so" and set(info["needed"]) <= {"libc.so", "libm.so", "libdl.so"}
    assert all(s.startswith("model_") for s in info["exported"])
