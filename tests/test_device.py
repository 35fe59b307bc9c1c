"""Cross builds and the device driver: a hand-written library with the model
C ABI, built for linux-arm64 (run under qemu) and android-arm64 (checked as
an Android reviewer would: SONAME, NEEDED, imports, exports)."""
import json
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


DYNAMIC_C = r"""
#include <stdint.h>
#include <stdlib.h>
static const int64_t in_shape[1] = {4};
static const int64_t cap[2] = {3, 4};
static int64_t actual[2];
void *model_create(const char *path) { (void)path; return calloc(1, 1); }
int model_run(void *p, const void *const *in, void *const *out) {
  const float *x = in[0]; float *y = out[0];
  actual[0] = (int64_t)x[0]; actual[1] = (int64_t)x[1];
  for (int i = 0; i < 12; i++) y[i] = (float)i;   /* capacity layout: row stride 4 */
  return 0; }
void model_destroy(void *p) { free(p); }
const char *model_last_error(void) { return ""; }
int model_num_inputs(void) { return 1; } int model_num_outputs(void) { return 1; }
const char *model_input_name(int i) { return "x"; } const char *model_output_name(int i) { return "y"; }
int model_input_dtype(int i) { return 1; } int model_output_dtype(int i) { return 1; }
int model_input_rank(int i) { return 1; } int model_output_rank(int i) { return 2; }
const int64_t *model_input_shape(int i) { return in_shape; } const int64_t *model_output_shape(int i) { return cap; }
const int64_t *model_output_actual_shape(void *m, int i) { return actual; }
"""


@needs_cross
def test_driver_writes_the_actual_corner_of_data_dependent_outputs(tmp_path):
    """A data-dependent output is laid out with its capacity's strides: the driver reports the
    actual shape and writes that leading corner densely."""
    from fusion.device import runner
    (tmp_path / "dyn.c").write_text(DYNAMIC_C)
    lib = str(tmp_path / "libdyn.so")
    compile_shared([str(tmp_path / "dyn.c")], lib, "linux-arm64")
    (tmp_path / "w.bin").write_bytes(b"")
    outs, rep = runner.run_library(lib, str(tmp_path / "w.bin"), [np.array([2, 3, 0, 0], np.float32)], "linux-arm64")
    assert rep["outputs"][0]["shape"] == [2, 3]
    np.testing.assert_array_equal(outs[0], np.arange(12, dtype=np.float32).reshape(3, 4)[:2, :3])


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


# ---------------------------------------------------------------- fusion compile --emit, USAGE.md, JNI glue

def _small_onnx(path, dynamic_name=False):
    import onnx
    from onnx import TensorProto, helper
    w = helper.make_tensor("w", TensorProto.FLOAT, [24, 10], list(np.linspace(-1, 1, 240)))
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Softmax", ["m"], ["probs"], axis=-1),
         helper.make_node("ArgMax", ["m"], ["label"], axis=-1, keepdims=0)],
        "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7, 24])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [7, 10]),
         helper.make_tensor_value_info("label", TensorProto.INT64, [7])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    return _small_onnx(tmp_path_factory.mktemp("emit") / "tiny.onnx")


def _have_android_tools():
    return shutil.which("clang") is not None and shutil.which("ld.lld") is not None


needs_android = pytest.mark.skipif(not _have_android_tools(), reason="clang/lld not installed (./setup.sh)")


def test_emit_c_writes_a_rebuildable_tree_without_any_compiler(small_onnx, tmp_path, monkeypatch, capsys):
    """--emit c: sources, CMakeLists.txt, USAGE.md and the JNI glue; no compiler may run
    (it is what a machine without the cross tools gives an NDK user)."""
    from fusion.cli import main
    import fusion.toolchain as tc
    from fusion.device import cross

    def no_compiler(*a, **k):
        raise AssertionError("--emit c must not run a compiler")
    monkeypatch.setattr(tc, "run_build", no_compiler)
    monkeypatch.setattr(cross, "run_build", no_compiler)
    out = tmp_path / "c"
    assert main(["compile", small_onnx, "--target", "android-arm64", "--emit", "c", "-o", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"model.c", "model.h", "fz_runtime.h", "weights.bin", "CMakeLists.txt", "exports.map", "USAGE.md",
            "report.json", "jni"} <= names
    assert "libmodel.so" not in names and "ok" not in names
    assert "model_*" in (out / "exports.map").read_text()
    assert "android-24" in (out / "CMakeLists.txt").read_text()
    assert "wrote" in capsys.readouterr().out


def test_emit_c_carries_the_opaque_kernels_a_model_needs(tmp_path):
    """A model with an opaque op (TopK): its kernels are copied beside model.c and named in
    CMakeLists.txt and the NDK command, so the directory alone rebuilds the library."""
    import onnx
    from onnx import TensorProto, helper
    from fusion.cli import main
    k = helper.make_tensor("k", TensorProto.INT64, [1], [3])
    g = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1)], "topk",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 9])],
                          [helper.make_tensor_value_info("v", TensorProto.FLOAT, [4, 3]),
                           helper.make_tensor_value_info("i", TensorProto.INT64, [4, 3])], [k])
    path = tmp_path / "topk.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = tmp_path / "c"
    assert main(["compile", str(path), "--target", "android-arm64", "--emit", "c", "-o", str(out)]) == 0
    kernels = sorted(p.name for p in (out / "opaque").glob("*.c"))
    assert "fz_topk.c" in kernels and (out / "opaque" / "fz_opaque.h").exists()
    assert '#include "fz_opaque.h"' in (out / "model.c").read_text()
    cmake, usage = (out / "CMakeLists.txt").read_text(), (out / "USAGE.md").read_text()
    assert all(f"opaque/{n}" in cmake and f"opaque/{n}" in usage for n in kernels)
    assert "-Iopaque" in usage


def test_emit_so_only_leaves_out_the_sources(small_onnx, tmp_path):
    from fusion.cli import main
    out = tmp_path / "so"
    assert main(["compile", small_onnx, "--emit", "so", "-o", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"libmodel.so", "model.h", "weights.bin", "USAGE.md", "jni"} <= names
    assert not names & {"model.c", "CMakeLists.txt", "ok"}
    assert "--emit so,c" in (out / "USAGE.md").read_text()   # says how to get the sources


@pytest.mark.parametrize("argv,msg", [
    (["--emit", "exe"], "choose from so, c, llvm, asm, obj"),
    (["--emit", "so,obj"], "LLVM backend"),
    (["--target", "linux-arm64", "--api-level", "28"], "--api-level applies to --target android-arm64"),
    (["--target", "android-arm64", "--api-level", "19"], "starts at API 21"),
    (["--jni-class", "NoPackage"], "not a Java class name"),
    (["--jni-class", "com.example.class.Model"], "not a Java class name"),
    (["--target", "opencl", "--emit", "c"], "apply to the CPU targets"),
])
def test_compile_option_mistakes_are_one_line(small_onnx, tmp_path, capsys, argv, msg):
    from fusion.cli import main
    assert main(["compile", small_onnx, "-o", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_emit_llvm_asm_obj_for_android(small_onnx, tmp_path, capsys):
    from fusion.cli import main
    out = tmp_path / "llvm"
    assert main(["compile", small_onnx, "--target", "android-arm64", "--api-level", "29", "--emit", "llvm,asm,obj",
                 "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["triple"] == "aarch64-linux-android29" and info["files"][:3] == ["model.ll", "model.s", "model.o"]
    assert "aarch64" in (out / "model.ll").read_text().split("target triple", 1)[1].splitlines()[0]
    assert "android29" in (out / "model.ll").read_text()
    head = (out / "model.o").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[16] == 1 and head[18] == 183   # ET_REL, EM_AARCH64
    assert "fz_model_run" in (out / "model.s").read_text() and "fz_model_run" in (out / "USAGE.md").read_text()
    layout = json.loads((out / "layout.json").read_text())
    assert [s["name"] for s in layout["outputs"]] == ["probs", "label"]


@needs_android
def test_api_level_reaches_the_android_link(small_onnx, tmp_path, monkeypatch):
    from fusion.cli import main
    from fusion.device import cross
    seen = []
    real = cross.run_build
    monkeypatch.setattr(cross, "run_build", lambda cmd, out: (seen.append(cmd), real(cmd, out))[1])
    assert main(["compile", small_onnx, "--target", "android-arm64", "--api-level", "28", "--emit", "so",
                 "-o", str(tmp_path / "a28")]) == 0
    assert any("--target=aarch64-linux-android28" in c for cmd in seen for c in cmd)
    assert "API 28" in (tmp_path / "a28" / "USAGE.md").read_text()


@needs_android
def test_usage_note_is_generated_from_the_model(small_onnx, tmp_path):
    """USAGE.md names this model's tensors with their dtypes, shapes and byte sizes, the call
    sequence, where weights.bin goes, the JNI symbols and the NDK rebuild."""
    from fusion.cli import main
    out = tmp_path / "u"
    assert main(["compile", small_onnx, "--target", "android-arm64", "-o", str(out),
                 "--jni-class", "org.my_app.Net"]) == 0
    text = (out / "USAGE.md").read_text()
    assert text.startswith("# tiny.onnx: libmodel.so for android-arm64 (Android API 24+)")
    assert "| input | 0 | `x` | float32 | [7, 24] | 672 |" in text
    assert "| output | 0 | `probs` | float32 | [7, 10] | 280 |" in text
    assert "| output | 1 | `label` | int64 | [7] | 56 |" in text
    for s in ("model_create(", "model_run(m, inputs, outputs)", "model_destroy(m)", "model_set_threads",
              "model_last_error()", "weights.bin", "context.filesDir", "jniLibs/arm64-v8a",
              'System.loadLibrary("model")', "Java_org_my_1app_Net_nativeRun", "external fun nativeRun",
              "private native void nativeRun", "aarch64-linux-android24-clang", "android.toolchain.cmake",
              "LongArray(7).also { outputs[1].asLongBuffer().get(it) }"):
        assert s in text, s
    assert (out / "jni" / "Net.java").read_text().startswith("package org.my_app;")
    assert "Java_org_my_1app_Net_nativeCreate" in (out / "jni" / "model_jni.c").read_text()


@needs_android
def test_usage_ndk_command_line_rebuilds_the_library(small_onnx, tmp_path):
    """The NDK command printed in USAGE.md, with the NDK's clang replaced by clang + bionic stubs
    (what fusion itself links with), rebuilds libmodel.so from the directory alone."""
    import shlex
    import subprocess
    from fusion.cli import main
    from fusion.device import cross
    out = tmp_path / "r"
    assert main(["compile", small_onnx, "--target", "android-arm64", "-o", str(out)]) == 0
    text = (out / "USAGE.md").read_text()
    block = text.split("or directly:", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    cmd = block.replace("\\\n", " ").strip().splitlines()[0]
    ndk_clang = "$ANDROID_NDK/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android24-clang"
    assert cmd.startswith(ndk_clang)
    (out / "libmodel.so").unlink()
    stand_in = [shutil.which("clang"), "--target=aarch64-linux-android24", "-nostdlib", "-fuse-ld=lld",
                "-isystem", "/usr/aarch64-linux-gnu/include", "-Wl,-z,defs"]
    argv = stand_in + shlex.split(cmd[len(ndk_clang):]) + [f"-L{cross.android_stub_dir(24)}", "-lc"]
    r = subprocess.run(argv, cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = cross.elf_info(str(out / "libmodel.so"))
    assert info["machine"] == "AArch64" and info["soname"] == "libmodel.so"
    assert all(x.startswith("model_") for x in info["exported"]) and "model_run" in info["exported"]


def test_jni_name_mangling():
    from fusion.device.android import jni_mangle
    assert jni_mangle("org.my_app") == "org_my_1app"
    assert jni_mangle("a.b$c") == "a_b_00024c"


def _jdk_include():
    javac = shutil.which("javac")
    if not javac:
        return None
    inc = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(javac))), "include")
    return inc if os.path.exists(os.path.join(inc, "jni.h")) else None


@needs_android
@pytest.mark.skipif(_jdk_include() is None, reason="no JDK (jni.h) on this machine")
def test_jni_glue_cross_builds_for_android_against_libmodel(small_onnx, tmp_path):
    """The glue links against the Android libmodel.so with -z defs: every symbol it uses exists."""
    from fusion.cli import main
    from fusion.device import cross
    out = tmp_path / "j"
    assert main(["compile", small_onnx, "--target", "android-arm64", "--emit", "so", "-o", str(out)]) == 0
    inc, lib = _jdk_include(), str(out / "libmodel_jni.so")
    from fusion.toolchain import run_build
    run_build([shutil.which("clang"), "--target=aarch64-linux-android24", "-O2", "-fPIC", "-shared", "-nostdlib",
               "-fuse-ld=lld", "-Wl,-z,defs", "-isystem", "/usr/aarch64-linux-gnu/include", f"-I{inc}",
               f"-I{inc}/linux", f"-I{out}", str(out / "jni" / "model_jni.c"), f"-L{out}", "-lmodel",
               f"-L{cross.android_stub_dir(24)}", "-lc", "-o", lib], lib)
    info = cross.elf_info(lib)
    assert info["machine"] == "AArch64" and "libmodel.so" in info["needed"]
    assert {f"Java_com_example_fusion_FusionModel_native{m}" for m in ("Create", "Run", "OutputShape", "Destroy")} \
        <= set(info["exported"])


JAVA_MAIN = r"""
import java.nio.ByteBuffer;
import java.nio.file.*;
import com.example.fusion.FusionModel;

public class Main {
    public static void main(String[] a) throws Exception {
        try (FusionModel m = new FusionModel(a[1], 2)) {
            ByteBuffer[] in = FusionModel.newBuffers(FusionModel.INPUT_BYTES);
            ByteBuffer[] out = FusionModel.newBuffers(FusionModel.OUTPUT_BYTES);
            for (int i = 0; i < in.length; i++) in[i].put(Files.readAllBytes(Paths.get(a[0], "in" + i + ".bin")));
            m.run(in, out);
            for (int j = 0; j < out.length; j++) {
                byte[] b = new byte[FusionModel.OUTPUT_BYTES[j]];
                out[j].get(b);
                Files.write(Paths.get(a[0], "out" + j + ".bin"), b);
            }
            try { m.run(new ByteBuffer[] {ByteBuffer.allocate(4)}, out); }
            catch (IllegalArgumentException e) { System.out.println("IAE " + e.getMessage()); }
            try { m.run(in, new ByteBuffer[] {ByteBuffer.allocateDirect(8), out[1]}); }
            catch (IllegalArgumentException e) { System.out.println("IAE " + e.getMessage()); }
        }
        try { new FusionModel(a[0] + "/missing.bin", 1); }
        catch (IllegalStateException e) { System.out.println("ISE " + e.getMessage()); }
    }
}
"""


@pytest.mark.skipif(_jdk_include() is None or shutil.which("cmake") is None or shutil.which("java") is None,
                    reason="needs a JDK and cmake (not part of ./setup.sh)")
def test_generated_cmake_and_jni_run_the_model_from_java(small_onnx, tmp_path):
    """The emitted tree rebuilt by its own CMakeLists.txt (host compiler: the NDK runs the same file),
    the JNI glue loaded by a JVM, the outputs checked against onnxruntime; the glue's errors
    arrive as Java exceptions with the library's message."""
    import subprocess
    from fusion.cli import main
    from fusion.oracle import compare, run_onnxruntime
    out = tmp_path / "tree"
    assert main(["compile", small_onnx, "--emit", "c", "-o", str(out)]) == 0
    env = dict(os.environ, JAVA_HOME=os.path.dirname(_jdk_include()))
    for cmd in (["cmake", "-S", str(out), "-B", str(out / "b"), "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", str(out / "b")]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (out / "b" / "libmodel_jni.so").exists()
    src = tmp_path / "java"
    (src / "com" / "example" / "fusion").mkdir(parents=True)
    (src / "com" / "example" / "fusion" / "FusionModel.java").write_text((out / "jni" / "FusionModel.java").read_text())
    (src / "Main.java").write_text(JAVA_MAIN)
    r = subprocess.run(["javac", "-d", str(tmp_path / "cls"), str(src / "Main.java"),
                        str(src / "com" / "example" / "fusion" / "FusionModel.java")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(3).standard_normal((7, 24)).astype(np.float32)
    x.tofile(tmp_path / "in0.bin")
    r = subprocess.run(["java", f"-Djava.library.path={out / 'b'}", "-cp", str(tmp_path / "cls"), "Main",
                        str(tmp_path), str(out / "weights.bin")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = {"probs": np.fromfile(tmp_path / "out0.bin", np.float32).reshape(7, 10),
           "label": np.fromfile(tmp_path / "out1.bin", np.int64).reshape(7)}
    assert compare(got, run_onnxruntime(small_onnx, {"x": x})).ok
    lines = r.stdout.splitlines()
    assert any(l.startswith("IAE input 'x' must be a direct ByteBuffer") for l in lines)
    assert "IAE output 'probs' has 8 bytes, the model needs 280" in lines
    assert any(l.startswith("ISE cannot open weights file") for l in lines)


@needs_android
def test_android_zoo_library_exports_only_the_abi(tmp_path):
    """readelf on a real zoo model's Android build (python -m fusion.device.report's row)."""
    from fusion.device.report import ABI, android_build
    row = android_build("zoo:tinybert:small", 24, out_dir=str(tmp_path), use_cache=False)
    assert row["machine"] == "AArch64" and row["soname"] == "libmodel.so" and row["bind_now"]
    assert set(row["needed"]) <= {"libc.so", "libm.so", "libdl.so"} and "libc.so" in row["needed"]
    assert set(row["exported"]) <= ABI and {"model_create", "model_run", "model_destroy"} <= set(row["exported"])
    assert row["imported_outside_bionic"] == []
    # arm64-v8a promises ARMv8.0 only: no ARMv8.1 LSE atomics (the thread pool's counter) or v8.2 dot products
    objdump = shutil.which("aarch64-linux-gnu-objdump") or shutil.which("llvm-objdump")
    if objdump:
        import re
        import subprocess
        asm = subprocess.run([objdump, "-d", str(tmp_path / "libmodel.so")], capture_output=True, text=True).stdout
        assert "ldax" in asm or "ldxr" in asm   # the pool's atomics are there, as exclusive loads
        assert not re.findall(r"\s(ldadd|cas|swp|ldset|ldclr|sdot|udot)[a-z]*\s", asm)
