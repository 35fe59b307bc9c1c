"""A standalone C harness around one KernelCode, for tests and the benchmark.

It plays the core's part: declares `struct NAME_args` (one pointer per
buffer, plus the packed weights), the block function holding the kernel's
body, and fz_parallel_for (pthreads taking chunks from a shared counter, or
inline for one thread), builds
it with fusion.toolchain.compile_shared and calls it through ctypes."""
from __future__ import annotations

import ctypes
import os
import tempfile

import numpy as np

from fusion.codegen.kernels.api import KernelCode
from fusion.toolchain import compile_shared, source_digest

PARALLEL_FOR = r"""
#include <pthread.h>
static int fz_threads = 1;
void fz_set_threads(int n) { fz_threads = n > 0 ? n : 1; }
/* same contract as the runtime's (fn gets contiguous chunks of [0, n); inline for one thread), with
   chunks handed out dynamically from a shared counter so a thread slowed by other load takes fewer */
struct fz_pf { void (*fn)(void *, int64_t, int64_t); void *arg; int64_t n, chunk; int64_t next; };
static void *fz_pf_run(void *p) {
    struct fz_pf *t = p;
    for (;;) {
        int64_t b = __atomic_fetch_add(&t->next, t->chunk, __ATOMIC_RELAXED);
        if (b >= t->n) break;
        t->fn(t->arg, b, b + t->chunk < t->n ? b + t->chunk : t->n);
    }
    return 0;
}
static void fz_parallel_for(int64_t n, void (*fn)(void *, int64_t, int64_t), void *arg) {
    int64_t T = fz_threads < n ? fz_threads : n;
    if (T <= 1) { fn(arg, 0, n); return; }
    if (T > 64) T = 64;
    pthread_t th[64];
    struct fz_pf job = { fn, arg, n, n / (4 * T) > 0 ? n / (4 * T) : 1, 0 };
    for (int64_t t = 1; t < T; t++) pthread_create(&th[t], 0, fz_pf_run, &job);
    fz_pf_run(&job);
    for (int64_t t = 1; t < T; t++) pthread_join(th[t], 0);
}
"""


class Harness:
    """Build `kc` for a block NAME whose args are `fields` (names, in order), then
    `run(arrays)` with one float32 array per field (weights filled in automatically)."""

    def __init__(self, name: str, kc: KernelCode, fields: list[str], build_dir: str | None = None):
        self.name, self.kc = name, kc
        self.fields = list(fields)
        self.wnames = list(kc.weights)
        self.weights = {k: np.ascontiguousarray(v, np.float32) for k, v in kc.weights.items()}
        allf = self.fields + self.wnames
        struct = "struct %s_args {\n%s};\n" % (name, "".join(f"    float *{f};\n" for f in allf))
        fill = "".join(f"    a.{f} = (float *)p[{i}];\n" for i, f in enumerate(allf))
        src = (f"#include <stdint.h>\n{PARALLEL_FOR}\n{struct}\n{kc.functions}\n"
               f"static void {name}(const struct {name}_args *A) {{\n{kc.body}\n}}\n"
               f"void fz_entry(void **p) {{\n    struct {name}_args a;\n{fill}    {name}(&a);\n}}\n"
               "#include <time.h>\n"
               "void fz_bench(void **p, int reps, double *secs) {\n"
               "    for (int r = 0; r < reps; r++) {\n"
               "        struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0); fz_entry(p);\n"
               "        clock_gettime(CLOCK_MONOTONIC, &t1);\n"
               "        secs[r] = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);\n    }\n}\n")
        self.source = src
        d = build_dir or os.path.join(tempfile.gettempdir(), "fusion-kernels")
        os.makedirs(d, exist_ok=True)
        key = source_digest(src)
        so = os.path.join(d, f"k_{key}.so")
        if not os.path.exists(so):
            c = os.path.join(d, f"k_{key}.c")
            with open(c, "w") as f:
                f.write(src)
            tmp = so + f".{os.getpid()}.tmp"
            compile_shared([c], tmp)
            os.replace(tmp, so)
        self.lib = ctypes.CDLL(so)
        self.lib.fz_entry.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.fz_set_threads.argtypes = [ctypes.c_int]
        self.lib.fz_bench.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.POINTER(ctypes.c_double)]

    def set_threads(self, n: int) -> None:
        self.lib.fz_set_threads(int(n))

    def run(self, arrays: dict[str, np.ndarray]) -> None:
        """Arrays by field name; outputs are written in place (must be C-contiguous float32)."""
        self.lib.fz_entry(self._ptrs(arrays))

    def time(self, arrays: dict[str, np.ndarray], reps: int) -> list[float]:
        """Seconds of each of `reps` back-to-back runs, timed in C."""
        secs = (ctypes.c_double * reps)()
        self.lib.fz_bench(self._ptrs(arrays), reps, secs)
        return list(secs)

    def _ptrs(self, arrays):
        ptrs = (ctypes.c_void_p * (len(self.fields) + len(self.wnames)))()
        for i, f in enumerate(self.fields):
            a = arrays[f]
            assert a.dtype == np.float32 and a.flags.c_contiguous, f
            ptrs[i] = a.ctypes.data
        for j, w in enumerate(self.wnames):
            ptrs[len(self.fields) + j] = self.weights[w].ctypes.data
        return ptrs


def flat(field: str, shape) -> "callable":
    """c_expr for a plain row-major buffer `A->field` of `shape`."""
    shape = [int(s) for s in shape]

    def expr(idx: list[str]) -> str:
        terms, stride = [], 1
        for i in range(len(shape) - 1, -1, -1):
            terms.append(f"({idx[i]})*{stride}" if stride != 1 else f"({idx[i]})")
            stride *= shape[i]
        return f"A->{field}[{' + '.join(reversed(terms)) or '0'}]"
    return expr


def offset(shape, idx: list[str]) -> str:
    """Row-major linear offset C expression."""
    return flat("_", shape)(idx)[len("A->_["):-1]


def run_cross(name: str, kc: KernelCode, fields: list[str], arrays: dict[str, np.ndarray], threads: int = 1,
              build_dir: str | None = None) -> dict[str, np.ndarray]:
    """Build the same harness for aarch64 Linux (static, NEON) and run it under qemu-aarch64: the
    buffers go through a file and come back with the outputs written. Returns the arrays after the run."""
    import subprocess
    from fusion.toolchain import find_tool
    cc = find_tool("aarch64-linux-gnu-gcc")
    qemu = find_tool("qemu-aarch64")
    wn = list(kc.weights)
    bufs = [np.ascontiguousarray(arrays[f], np.float32) for f in fields] + \
        [np.ascontiguousarray(kc.weights[w], np.float32) for w in wn]
    sizes = [b.size for b in bufs]
    allf = list(fields) + wn
    struct = "struct %s_args {\n%s};\n" % (name, "".join(f"    float *{f};\n" for f in allf))
    fill = "".join(f"    a.{f} = p[{i}];\n" for i, f in enumerate(allf))
    src = (f"#include <stdint.h>\n#include <stdio.h>\n{PARALLEL_FOR}\n{struct}\n{kc.functions}\n"
           f"static void {name}(const struct {name}_args *A) {{\n{kc.body}\n}}\n"
           f"static const int64_t fz_sizes[{len(sizes)}] = {{{', '.join(map(str, sizes))}}};\n"
           "int main(int argc, char **argv) {\n"
           f"    float *p[{len(sizes)}]; struct {name}_args a;\n"
           f"    FILE *f = fopen(argv[1], \"rb\");\n"
           f"    for (int i = 0; i < {len(sizes)}; i++) {{ p[i] = fzk_alloc(fz_sizes[i]);\n"
           "        if (fread(p[i], 4, fz_sizes[i], f) != (size_t)fz_sizes[i]) return 2; }\n"
           "    fclose(f);\n"
           f"    fz_set_threads({threads});\n{fill}    {name}(&a);\n"
           "    f = fopen(argv[2], \"wb\");\n"
           f"    for (int i = 0; i < {len(sizes)}; i++) fwrite(p[i], 4, fz_sizes[i], f);\n"
           "    fclose(f);\n    return 0;\n}\n")
    if build_dir is None:
        with tempfile.TemporaryDirectory(prefix="fusion-kernels-arm-") as d:
            return run_cross(name, kc, fields, arrays, threads, build_dir=d)
    d = build_dir
    os.makedirs(d, exist_ok=True)
    c, exe = os.path.join(d, "k.c"), os.path.join(d, "k")
    with open(c, "w") as fh:
        fh.write(src)
    proc = subprocess.run([cc, "-O2", "-std=gnu11", "-march=armv8.2-a", "-ffp-contract=fast", "-static", "-pthread",
                           "-o", exe, c, "-lm"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("aarch64 build failed:\n" + proc.stderr[-3000:])
    inp, outp = os.path.join(d, "in.bin"), os.path.join(d, "out.bin")
    with open(inp, "wb") as fh:
        for b in bufs:
            fh.write(b.tobytes())
    proc = subprocess.run([qemu, exe, inp, outp], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu-aarch64 run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    raw = np.fromfile(outp, np.float32)
    out, off = {}, 0
    for f, b in zip(fields, bufs):
        out[f] = raw[off:off + b.size].reshape(b.shape)
        off += b.size
    return out
