"""What `fusion run --target opencl --check` and `fusion bench --target opencl`
need, as plain functions returning JSON-ready dicts (the CLI only prints)."""
from __future__ import annotations

import time

import numpy as np


def _inputs(graph, seed: int = 0):
    from fusion.oracle import random_inputs
    return random_inputs(graph, seed=seed)


def run_check(model, target: str = "opencl", *, check: bool = True, fp16: bool = False, seed: int = 0,
              feeds: dict | None = None, **kwargs) -> dict:
    """Compile, run once on the OpenCL device, compare with onnxruntime."""
    from fusion.codegen import opencl
    from fusion.codegen.driver import load_graph
    graph = load_graph(model, kwargs.pop("shapes", None))
    feeds = feeds if feeds is not None else _inputs(graph, seed)
    mod = opencl.compile(graph, target, fp16=fp16, **kwargs)
    try:
        t0 = time.perf_counter()
        got = mod.run(feeds)
        out = {**mod.report, "launches": mod.launches, "run_seconds": round(time.perf_counter() - t0, 4),
               "outputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in got.items()}}
        if check:
            from fusion.ir.onnx_export import to_onnx
            from fusion.oracle import compare, run_onnxruntime
            expected = run_onnxruntime(to_onnx(graph), feeds)
            if fp16:   # compared at half precision: the tolerance of the storage type
                got = {k: np.asarray(v, np.float16) if v.dtype == np.float32 else v for k, v in got.items()}
                expected = {k: np.asarray(v, np.float16) if v.dtype == np.float32 else v for k, v in expected.items()}
            rep = compare(got, expected)
            out["check"] = {"ok": rep.ok, "max_abs_err": rep.max_abs_err, "max_rel_err": rep.max_rel_err,
                            "report": str(rep)}
        return out
    finally:
        mod.close()


def bench(model, target: str = "opencl", *, runs: int = 20, warmup: int = 2, threads: int = 1, fp16: bool = False,
          seed: int = 0, **kwargs) -> dict:
    """Median latency on the OpenCL device and of onnxruntime (same inputs),
    plus per-kernel device time of one profiled run."""
    from fusion.codegen import opencl
    from fusion.codegen.driver import load_graph
    from fusion.ir.onnx_export import to_onnx
    from fusion.oracle import ort_session
    graph = load_graph(model, kwargs.pop("shapes", None))
    feeds = _inputs(graph, seed)
    mod = opencl.compile(graph, target, fp16=fp16, profile=True, **kwargs)
    try:
        times = []
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            mod.run(feeds)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        kernels = {k: v / (warmup + runs) for k, v in mod.kernel_seconds().items()}
        report = dict(mod.report)
    finally:
        mod.close()
    sess = ort_session(to_onnx(graph), optimize=True, threads=threads)
    names = [o.name for o in sess.get_outputs()]
    want = {i.name for i in sess.get_inputs()}
    ort_feeds = {k: v for k, v in feeds.items() if k in want}
    ort = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        sess.run(names, ort_feeds)
        if i >= warmup:
            ort.append(time.perf_counter() - t0)
    top = sorted(kernels.items(), key=lambda x: -x[1])[:10]
    return {**report, "runs": runs, "opencl_ms": round(1e3 * float(np.median(times)), 3),
            "onnxruntime_ms": round(1e3 * float(np.median(ort)), 3), "onnxruntime_threads": threads,
            "slowest_kernels_ms": {k: round(1e3 * v, 3) for k, v in top}}
