"""This machine's FP32 FMA peak, measured: `python -m fusion.codegen.kernels.peak [threads]`.

A C loop runs CHAINS independent multiply-add chains on vectors of the
target's width (acc = acc * m + a, contracted to one FMA by -ffp-contract=fast).
One chain is bound by FMA latency (4-5 cycles on Zen / Skylake / Cortex-A76)
and a core issues two FMAs per cycle, so it takes latency x 2 = 8-10
independent chains in flight to saturate both pipes; 12 covers that with
margin and still fits 16 vector registers with the two operands (AVX2), so
nothing spills. Each thread runs the same loop; GFLOP/s = 2 x lanes x chains
x iterations / time, best of 10 short runs, by wall clock and by each
thread's CPU time (on a machine shared with other work the second is the
hardware's number: time spent descheduled is left out)."""
from __future__ import annotations

import ctypes
import os
import sys
import tempfile

from fusion.codegen.kernels.common import vec_type
from fusion.targets import host
from fusion.toolchain import compile_shared, source_digest

CHAINS = 12


def _source(lanes: int) -> str:
    vt, vdef = vec_type(lanes)
    accs = [f"c{i}" for i in range(CHAINS)]
    return f"""#include <stdint.h>
#include <pthread.h>
#include <time.h>
{vdef}
struct job {{ int64_t iters; double sink, cpu; }};
static void *fma_loop(void *p) {{
    struct job *j = p;
    struct timespec tc0, tc1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &tc0);
    volatile float vm = 0.999999f, va = 1e-7f;
    {vt} m = {{0}}, a = {{0}};
    m += vm; a += va;
    {vt} {", ".join(f"{c} = {{0}}" for c in accs)};
    {" ".join(f"{c} += {i}.0f;" for i, c in enumerate(accs))}
    for (int64_t i = 0; i < j->iters; i++) {{
        {" ".join(f"{c} = {c} * m + a;" for c in accs)}
        __asm__ volatile("" ::: "memory");
    }}
    {vt} s = {" + ".join(accs)};
    float *f = (float *)&s; double t = 0; for (int i = 0; i < (int)(sizeof(s) / 4); i++) t += f[i];
    j->sink = t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &tc1);
    j->cpu = (tc1.tv_sec - tc0.tv_sec) + 1e-9 * (tc1.tv_nsec - tc0.tv_nsec);
    return 0;
}}
/* wall seconds of the whole run; *cpu_max: the longest CPU time any thread needed (the time it
   would have taken with the cores to itself) */
double fz_peak_seconds(int64_t iters, int threads, double *cpu_max) {{
    pthread_t th[256]; struct job jobs[256];
    if (threads > 256) threads = 256;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < threads; t++) {{ jobs[t].iters = iters; pthread_create(&th[t], 0, fma_loop, &jobs[t]); }}
    for (int t = 0; t < threads; t++) pthread_join(th[t], 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *cpu_max = 0;
    for (int t = 0; t < threads; t++) if (jobs[t].cpu > *cpu_max) *cpu_max = jobs[t].cpu;
    return (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
}}
"""


def measure_peak(threads: int = 1, target=None, seconds: float = 0.1, repeats: int = 10,
                 cpu_time: bool = False) -> float:
    """FP32 GFLOP/s over `threads` threads, best of `repeats` runs: by wall clock, or with cpu_time by
    each thread's CPU time (what the cores do when nothing else runs on them)."""
    t = target or host()
    lanes = max(1, t.vector_bits // 32)
    src = _source(lanes)
    d = os.path.join(tempfile.gettempdir(), "fusion-kernels")
    os.makedirs(d, exist_ok=True)
    key = source_digest(src)
    so = os.path.join(d, f"peak_{key}.so")
    if not os.path.exists(so):
        c = os.path.join(d, f"peak_{key}.c")
        with open(c, "w") as f:
            f.write(src)
        tmp = so + f".{os.getpid()}.tmp"
        compile_shared([c], tmp, t)
        os.replace(tmp, so)
    lib = ctypes.CDLL(so)
    lib.fz_peak_seconds.restype = ctypes.c_double
    lib.fz_peak_seconds.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
    cpu = ctypes.c_double()
    iters = 1_000_000
    el = lib.fz_peak_seconds(iters, threads, ctypes.byref(cpu))
    iters = max(1000, int(iters * seconds / max(el, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        wall = lib.fz_peak_seconds(iters, threads, ctypes.byref(cpu))
        best = min(best, cpu.value if cpu_time else wall)
    return 2.0 * lanes * CHAINS * iters * threads / best / 1e9


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    t = host()
    counts = [int(argv[0])] if argv else sorted({1, t.cores})
    lanes = max(1, t.vector_bits // 32)
    print(f"FP32 FMA peak ({CHAINS} independent chains of {lanes}-lane FMAs per thread, best of 10 runs of 0.1 s):")
    for n in counts:
        print(f"  {n} thread{'s' if n > 1 else ''}: {measure_peak(n, t):.1f} GFLOP/s wall clock, "
              f"{measure_peak(n, t, cpu_time=True):.1f} GFLOP/s by CPU time (the cores to itself)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
