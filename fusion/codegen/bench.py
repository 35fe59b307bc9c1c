"""`fusion bench`: the compiled model against onnxruntime (ORT_ENABLE_ALL),
same inputs, same thread count, alternated in short rounds (each round starts
with an untimed run), median after warm-up.

Peak memory is measured the same way for both: a fresh process loads the
model (our libmodel.so from the compile directory, or an onnxruntime
session), runs it once, and reports its peak resident set size above the
baseline it had just before loading.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from fusion.oracle import ort_session, random_inputs


def _median_ms(ts: list[float]) -> float:
    return round(1000 * statistics.median(ts), 4)


def alternate(engines, runs: int, burst: int = 5) -> list[list[float]]:
    """Seconds per timed run of each engine, in rounds: each engine in turn does
    one untimed run, then up to `burst` timed runs. Why not strictly one run
    each: onnxruntime's (and fusion's) worker threads spin-wait for a while
    after a run, and on a machine with as many cores as threads that spinning
    takes the cores the other engine's next run needs (measured: fusion 2x
    slower on tinybert when every run followed an onnxruntime run). The untimed
    run lets the other engine's threads park, so each is timed as it runs alone."""
    times: list[list[float]] = [[] for _ in engines]
    runs = max(int(runs), 1)
    while len(times[0]) < runs:
        k = min(burst, runs - len(times[0]))
        for run, ts in zip(engines, times):
            run()
            for _ in range(k):
                t0 = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t0)
    return times


def bench_model(spec: str, graph, *, threads: int | None = None, runs: int = 20, warmup: int = 3,
                rewrite: bool = True, memory: bool = True, shapes=None, mod=None) -> dict:
    from fusion.codegen.cli import oracle_source
    from fusion.codegen.driver import compile as fz_compile
    threads = threads or os.cpu_count() or 1
    feeds = random_inputs(graph)
    src = oracle_source(spec, graph) if isinstance(spec, str) else graph
    if mod is None:
        mod = fz_compile(graph, threads=threads, rewrite=rewrite)
    mod.set_threads(threads)
    sess = ort_session(src, optimize=True, threads=threads)
    want = {i.name for i in sess.get_inputs()}
    ort_feeds = {k: v for k, v in feeds.items() if k in want}
    for _ in range(max(warmup, 1)):
        mod.run(feeds)
        sess.run(None, ort_feeds)
    tf, to = alternate([lambda: mod.run(feeds), lambda: sess.run(None, ort_feeds)], runs)
    res = {"model": spec if isinstance(spec, str) else graph.name, "threads": threads, "runs": runs,
           "fusion_ms": _median_ms(tf), "ort_ms": _median_ms(to)}
    res["ratio"] = round(res["fusion_ms"] / max(res["ort_ms"], 1e-9), 3)
    res["fusion_planned_bytes"] = int(mod.report["peak_memory"]["arena_bytes"] + mod.report["peak_memory"]["weights_bytes"])
    if memory:
        with tempfile.TemporaryDirectory() as tmp:
            npz = os.path.join(tmp, "feeds.npz")
            np.savez(npz, **feeds)
            res["fusion_peak_rss_bytes"] = probe_memory("fusion", os.path.dirname(mod.lib_path), threads, npz)
            path = src if isinstance(src, str) else _save_proto(src, tmp)
            res["ort_peak_rss_bytes"] = probe_memory("ort", path, threads, npz)
    return res


def _save_proto(src, tmp: str) -> str:
    import onnx
    from fusion.ir.graph import Graph
    from fusion.ir.onnx_export import to_onnx
    proto = to_onnx(src) if isinstance(src, Graph) else src
    path = os.path.join(tmp, "model.onnx")
    onnx.save(proto, path)
    return path


def probe_memory(kind: str, where: str, threads: int, feeds_npz: str) -> int | None:
    code = ("import sys; from fusion.codegen.bench import _probe; "
            "_probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])")
    try:
        out = subprocess.run([sys.executable, "-c", code, kind, where, str(threads), feeds_npz], capture_output=True,
                             text=True, timeout=600)
        return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_bytes"])
    except Exception:
        return None


def _rss_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _probe(kind: str, where: str, threads: int, feeds_npz: str) -> None:
    """Child process: load one runtime, run once, print peak RSS above baseline."""
    import onnxruntime  # noqa: F401  (both sides pay the same imports before the baseline)
    from fusion.codegen.driver import CompiledModel
    feeds = dict(np.load(feeds_npz))
    try:   # reset the high-water mark so import-time peaks do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = _rss_now()
    if kind == "fusion":
        mod = CompiledModel.from_dir(where, threads=threads)
        mod.run(feeds)
    else:
        sess = ort_session(where, optimize=True, threads=threads)
        want = {i.name for i in sess.get_inputs()}
        sess.run(None, {k: v for k, v in feeds.items() if k in want})
    print(json.dumps({"peak_rss_bytes": max(_rss_hwm() - base, 0)}))


def _mib(n) -> str:
    return "?" if n is None else f"{n / 2 ** 20:.1f} MiB"


def format_bench(r: dict) -> str:
    lines = [f"{r['model']}: fusion {r['fusion_ms']:.3f} ms, onnxruntime {r['ort_ms']:.3f} ms "
             f"(median of {r['runs']}, {r['threads']} threads, alternated in rounds) -> fusion/onnxruntime = {r['ratio']:.2f}x"]
    if "fusion_peak_rss_bytes" in r:
        lines.append(f"peak memory (RSS above baseline, fresh process): fusion {_mib(r['fusion_peak_rss_bytes'])}, "
                     f"onnxruntime {_mib(r['ort_peak_rss_bytes'])}; fusion planned "
                     f"{_mib(r['fusion_planned_bytes'])} (weights + intermediates)")
    return "\n".join(lines)
