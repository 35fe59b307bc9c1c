"""Microbenchmark: LLVM JIT vs the C backend vs onnxruntime, same inputs, same threads.

    python -m fusion.codegen.llvm.bench zoo:tinybert:small --threads 1 --runs 20

Prints the median latency of each (ms) after warm-up, the compile times, and
whether each output matches onnxruntime (fusion.oracle.compare).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def bench(model: str, threads: int = 1, runs: int = 20, with_c: bool = True) -> dict:
    import fusion
    from fusion.oracle import compare, ort_session, random_inputs
    from fusion.codegen import llvm
    g = fusion.load(model)
    feeds = random_inputs(g, seed=0)
    sess = ort_session(g, optimize=True, threads=threads)
    names = [o.name for o in sess.get_outputs()]
    want = {i.name for i in sess.get_inputs()}
    ort_feeds = {k: v for k, v in feeds.items() if k in want}

    def ort_run():
        return dict(zip(names, sess.run(names, ort_feeds)))
    expected = ort_run()
    out = {"model": model, "threads": threads, "runs": runs,
           "onnxruntime_ms": round(_median_ms(ort_run, runs), 3)}
    t = time.perf_counter()
    jit = llvm.compile(g, threads=threads)
    out["llvm_compile_s"] = round(time.perf_counter() - t, 2)
    out["llvm_ok"] = compare(jit.run(feeds), expected).ok
    out["llvm_ms"] = round(_median_ms(lambda: jit.run(feeds), runs), 3)
    jit.close()
    if with_c:
        try:
            t = time.perf_counter()
            cmod = fusion.compile(g, threads=threads)
            out["c_compile_s"] = round(time.perf_counter() - t, 2)
            out["c_ok"] = compare(cmod.run(feeds), expected).ok
            out["c_ms"] = round(_median_ms(lambda: cmod.run(feeds), runs), 3)
            cmod.close()
        except Exception as e:   # the C path is another area's; report, do not hide the JIT numbers
            out["c_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fusion.codegen.llvm.bench", description=__doc__.splitlines()[0])
    ap.add_argument("model", help="ONNX path or zoo:NAME[:small]")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-c", action="store_true", help="skip the C backend")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from fusion.errors import FusionError
    try:
        r = bench(a.model, a.threads, a.runs, not a.no_c)
    except FusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']}  threads={r['threads']}  median of {r['runs']} runs")
    print(f"  onnxruntime   {r['onnxruntime_ms']:9.3f} ms")
    print(f"  llvm (JIT)    {r['llvm_ms']:9.3f} ms   compile {r['llvm_compile_s']} s   "
          f"{'matches' if r['llvm_ok'] else 'DIFFERS from'} onnxruntime")
    if "c_ms" in r:
        print(f"  C backend     {r['c_ms']:9.3f} ms   compile {r['c_compile_s']} s   "
              f"{'matches' if r['c_ok'] else 'DIFFERS from'} onnxruntime")
    elif "c_error" in r:
        print(f"  C backend     failed: {r['c_error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
