"""fz_runtime.h's vectorizable float math (fz_expf, fz_logf, fz_log1pf, fz_tanhf,
fz_erff, fz_tanh_softplusf): accuracy against float64 numpy over every sign and
exponent (a strided walk over all float bit patterns, dense ranges around the
branch points, and edge cases), and a check that loops calling them vectorize."""
from __future__ import annotations

import ctypes
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from fusion.codegen.build import RUNTIME_DIR
from fusion.toolchain import compile_shared, host_cc

FUNCS = ["fz_expf", "fz_logf", "fz_log1pf", "fz_tanhf", "fz_erff", "fz_tanh_softplusf"]

_erf = np.frompyfunc(math.erf, 1, 1)


def _tanh_softplus(x):
    with np.errstate(over="ignore"):
        return np.tanh(np.log1p(np.exp(x)))


REFERENCE = {
    "fz_expf": np.exp, "fz_logf": np.log, "fz_log1pf": np.log1p, "fz_tanhf": np.tanh,
    "fz_erff": lambda x: _erf(x).astype(np.float64), "fz_tanh_softplusf": _tanh_softplus,
}
# Max error in units of the last place of the float32 result (measured: exp 1.0, log 0.8,
# log1p 1.4, tanh 1.3, erf 1.0, tanh_softplus 4.0 over all 2^32 inputs); headroom for other compilers.
MAX_ULP = {"fz_expf": 1.5, "fz_logf": 1.5, "fz_log1pf": 2.0, "fz_tanhf": 2.0, "fz_erff": 2.0,
           "fz_tanh_softplusf": 4.5}

SOURCE = "#include \"fz_runtime.h\"\n" + "".join(
    f"void v_{f}(const float *restrict x, float *restrict y, long n) {{\n"
    f"    for (long i = 0; i < n; i++) y[i] = {f}(x[i]);\n}}\n" for f in FUNCS)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("fastmath")
    src = d / "fm.c"
    src.write_text(SOURCE)
    # the flags generated models are built with (host target)
    res = compile_shared([str(src)], str(d / "libfm.so"), "host", extra_flags=["-fopenmp-simd", f"-I{RUNTIME_DIR}"])
    return ctypes.CDLL(res.path)


def run(lib, fn, x):
    x = np.ascontiguousarray(x, np.float32)
    y = np.empty_like(x)
    f = getattr(lib, "v_" + fn)
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    f(x.ctypes.data, y.ctypes.data, x.size)
    return y


def ulp_error(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| in float32 ulps of ref; 0 where both are the same NaN/Inf, inf on a class mismatch."""
    got = got.astype(np.float64)
    err = np.zeros(ref.shape)
    nan = np.isnan(ref)
    err[nan != np.isnan(got)] = np.inf
    big = ~nan & (np.abs(ref) > np.finfo(np.float32).max)      # overflows in float32
    err[big & ~((np.abs(got) == np.inf) & (np.sign(got) == np.sign(ref)))] = np.inf
    fin = ~nan & ~big & np.isfinite(got)
    err[~nan & ~big & ~np.isfinite(got)] = np.inf
    a = np.abs(ref[fin])
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    ulp = np.maximum(np.exp2(e - 23), 2.0 ** -149)
    err[fin] = np.abs(got[fin] - ref[fin]) / ulp
    return err


def samples() -> np.ndarray:
    bits = np.arange(0, 2 ** 32, 4099, dtype=np.uint64).astype(np.uint32)     # every exponent, both signs
    walk = bits.view(np.float32)
    rng = np.random.default_rng(0)
    dense = [np.linspace(lo, hi, 200_001, dtype=np.float32) for lo, hi in
             [(-6, 6), (-0.7, 0.7), (0.5, 2.0), (-1.0, -0.9), (85, 90), (-105, -85), (1e-8, 1e-4)]]
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.1754942e-38, 1.17549435e-38,
                        88.72283, 88.72284, -87.33654, -103.97208, -103.9721, -104.0, 104.0, 1e30, -1e30,
                        -1.0, 1.0, 0.625, -0.625, 3.92, 4.0, 9.01, 20.0, 3.4028235e38, -3.4028235e38],
                       np.float32)
    return np.concatenate([walk, *dense, rng.standard_normal(200_000).astype(np.float32) * 10, special])


@pytest.mark.parametrize("fn", FUNCS)
def test_accuracy_against_numpy(lib, fn):
    x = samples()
    got = run(lib, fn, x)
    with np.errstate(all="ignore"):
        ref = REFERENCE[fn](x.astype(np.float64))
    err = ulp_error(got, ref)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[fn], (f"{fn}({x[worst]!r}) = {got[worst]!r}, numpy (float64) {ref[worst]!r}: "
                                       f"{err[worst]:.2f} ulp")


@pytest.mark.parametrize("fn,cases", [
    ("fz_expf", [(0.0, 1.0), (-0.0, 1.0), (np.inf, np.inf), (-np.inf, 0.0), (1000.0, np.inf), (-1000.0, 0.0),
                 (88.8, np.inf), (-104.0, 0.0)]),
    ("fz_logf", [(0.0, -np.inf), (-0.0, -np.inf), (1.0, 0.0), (np.inf, np.inf), (-1.0, np.nan),
                 (-np.inf, np.nan), (2.0 ** -149, -149 * math.log(2.0))]),
    ("fz_log1pf", [(0.0, 0.0), (-0.0, -0.0), (-1.0, -np.inf), (-2.0, np.nan), (np.inf, np.inf),
                   (-np.inf, np.nan), (1e-30, 1e-30), (-1e-45, -1e-45)]),
    ("fz_tanhf", [(0.0, 0.0), (-0.0, -0.0), (np.inf, 1.0), (-np.inf, -1.0), (50.0, 1.0), (-50.0, -1.0),
                  (1e-40, 1e-40)]),
    ("fz_erff", [(0.0, 0.0), (-0.0, -0.0), (np.inf, 1.0), (-np.inf, -1.0), (5.0, 1.0), (-5.0, -1.0)]),
    ("fz_tanh_softplusf", [(np.inf, 1.0), (-np.inf, 0.0), (100.0, 1.0), (0.0, 0.6)]),
])
def test_edge_cases(lib, fn, cases):
    x = np.array([c[0] for c in cases] + [np.nan], np.float32)
    want = np.array([c[1] for c in cases] + [np.nan], np.float32)
    got = run(lib, fn, x)
    for xi, g, w in zip(x, got, want):
        if np.isnan(w):
            assert np.isnan(g), (fn, xi, g)
        else:
            assert g == w or abs(g - w) <= 2 * np.spacing(abs(w)), (fn, xi, g, w)
            assert np.signbit(g) == np.signbit(w), (fn, xi, g, w)


def _is_gcc(cc: str) -> bool:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return "Free Software Foundation" in out


VEC_SOURCE = "#include \"fz_runtime.h\"\n" + "".join(
    f"void v_{f}(const float *restrict x, float *restrict y, long n) {{ for (long i = 0; i < n; i++) y[i] = {f}(x[i]); }}\n"
    for f in FUNCS)


def _vectorized_lines(cmd: list[str], tmp_path) -> set[int]:
    src = tmp_path / "vec.c"
    src.write_text(VEC_SOURCE)
    proc = subprocess.run(cmd + ["-c", str(src), "-o", str(tmp_path / "vec.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {int(m) for m in re.findall(r"vec\.c:(\d+):\d+: (?:optimized: loop vectorized|remark: vectorized loop)",
                                       proc.stderr)}


ANDROID_SYSINC = "/usr/aarch64-linux-gnu/include"     # what fusion.device.cross builds android against
# Plain SSE2 / NEON have no masked vector ops, so any branch left in a function body stops
# vectorization there: these are the configurations that catch one.
VEC_TARGETS = [
    ("host gcc, -march=native", lambda: host_cc() if _is_gcc(host_cc()) else None, ["-march=native"], "gcc"),
    ("host gcc, baseline ISA", lambda: host_cc() if _is_gcc(host_cc()) else None, [], "gcc"),
    ("aarch64 gcc", lambda: shutil.which("aarch64-linux-gnu-gcc"), [], "gcc"),
    ("clang android-arm64", lambda: shutil.which("clang") if os.path.isdir(ANDROID_SYSINC) else None,
     ["--target=aarch64-linux-android24", "-isystem", ANDROID_SYSINC, "-DFZ_ANDROID=1"], "clang"),
]


@pytest.mark.parametrize("what,find,flags,kind", VEC_TARGETS, ids=[t[0] for t in VEC_TARGETS])
def test_loops_calling_them_vectorize(tmp_path, what, find, flags, kind):
    cc = find()
    if cc is None:
        pytest.skip(f"no compiler for {what}")
    report = ["-fopt-info-vec-optimized"] if kind == "gcc" else ["-Rpass=loop-vectorize"]
    cmd = [cc, "-O3", "-std=gnu11", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp-simd",
           f"-I{RUNTIME_DIR}", *flags, *report]
    lines = _vectorized_lines(cmd, tmp_path)
    missing = [f for i, f in enumerate(FUNCS) if i + 2 not in lines]
    assert not missing, f"{what}: loops over {missing} did not vectorize"
