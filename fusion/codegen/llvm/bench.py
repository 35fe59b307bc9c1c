"""Microbenchmark: LLVM JIT vs the C backend vs onnxruntime, same inputs, same threads.

    python -m fusion.codegen.llvm.bench zoo:tinybert:small --threads 1 --runs 20

Prints the median latency of each (ms) after warm-up, timed round-robin (one run of
each per round, so a load change hits all three alike), the compile times, whether each
output matches onnxruntime (fusion.oracle.compare), and the load average.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _alternated_ms(fns: dict, runs: int, warmup: int = 2) -> dict:
    """Median ms of each callable, timed round-robin (one run of each per round), so load that
    changes during the benchmark hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: round(statistics.median(v) * 1e3, 3) for k, v in times.items()}


def bench(model, threads: int = 1, runs: int = 20, with_c: bool = True, shapes=None) -> dict:
    import os
    import fusion
    from fusion.oracle import compare, ort_session, random_inputs
    from fusion.codegen import llvm
    g = fusion.load(model, shapes=shapes)
    feeds = random_inputs(g, seed=0)
    sess = ort_session(g, optimize=True, threads=threads)
    names = [o.name for o in sess.get_outputs()]
    want = {i.name for i in sess.get_inputs()}
    ort_feeds = {k: v for k, v in feeds.items() if k in want}

    def ort_run():
        return dict(zip(names, sess.run(names, ort_feeds)))
    expected = ort_run()
    out = {"model": model if isinstance(model, str) else g.name, "threads": threads, "runs": runs}
    fns = {"onnxruntime_ms": ort_run}
    t = time.perf_counter()
    jit = llvm.compile(g, threads=threads)
    out["llvm_compile_s"] = round(time.perf_counter() - t, 2)
    out["llvm_ok"] = compare(jit.run(feeds), expected).ok
    fns["llvm_ms"] = lambda: jit.run(feeds)
    cmod = None
    if with_c:
        try:
            t = time.perf_counter()
            cmod = fusion.compile(g, threads=threads)
            out["c_compile_s"] = round(time.perf_counter() - t, 2)
            out["c_ok"] = compare(cmod.run(feeds), expected).ok
            fns["c_ms"] = lambda: cmod.run(feeds)
        except Exception as e:   # the C path is another area's; report, do not hide the JIT numbers
            out["c_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    out.update(_alternated_ms(fns, runs))
    out["load_average"] = round(os.getloadavg()[0], 1)
    jit.close()
    if cmod is not None:
        cmod.close()
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
    print(f"{r['model']}  threads={r['threads']}  median of {r['runs']} runs (alternated), "
          f"load average {r['load_average']}")
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
