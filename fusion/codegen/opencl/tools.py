"""What `fusion run --target opencl --check` and `fusion bench --target opencl`
need, as plain functions returning JSON-ready dicts (the CLI only prints)."""
from __future__ import annotations

import time

import numpy as np


def _inputs(graph, seed: int = 0):
    from fusion.oracle import random_inputs
    return random_inputs(graph, seed=seed)


def host_steps(prog) -> list[str]:
    """One line per host step: its ops, and why the kernel lowering refused it
    when it is not an opaque op (the CLI prints their count)."""
    from fusion.codegen.opencl.program import HostStep
    out = []
    for s in prog.steps:
        if isinstance(s, HostStep):
            ops = "+".join(n.op for n in s.block.nodes[:6]) + ("+..." if len(s.block.nodes) > 6 else "")
            out.append(f"{s.block.name}: {ops}" + (f" (not a kernel: {s.reason})" if s.reason else ""))
    return out


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
               "host_steps": host_steps(mod.prog),
               "outputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in got.items()}}
        if check:
            from fusion.ir.onnx_export import to_onnx
            from fusion.oracle import compare, run_onnxruntime
            oracle_model = to_onnx(graph)
            expected = run_onnxruntime(oracle_model, feeds)
            if fp16:   # compared at half precision: the tolerance of the storage type
                got = {k: np.asarray(v, np.float16) if v.dtype == np.float32 else v for k, v in got.items()}
                expected = {k: np.asarray(v, np.float16) if v.dtype == np.float32 else v for k, v in expected.items()}
            rep = compare(got, expected)
            out["check"] = {"ok": rep.ok, "max_abs_err": rep.max_abs_err, "max_rel_err": rep.max_rel_err,
                            "report": str(rep)}
            if not rep.ok and not fp16:
                # the C check's rule (fusion.zoo.pin.explain_near_ties): the reference semantics,
                # differing from onnxruntime only through checked near-tie decisions
                from fusion.zoo.pin import explain_near_ties
                tie = explain_near_ties(oracle_model, feeds, got)
                out["check"]["ok"] = tie.ok
                out["check"]["report"] += "\n" + "\n".join(tie.lines()) + \
                    ("\nPASS (near-tie): the differences above come from the pinned decisions only" if tie.ok else "")
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


def check_blocks(model, target: str = "opencl", *, seed: int = 0, isolate: bool = True, fp16: bool = False,
                 feeds: dict | None = None, first_only: bool = False, **kwargs) -> dict:
    """Run the OpenCL program step by step against the reference interpreter
    (fusion.ir.interpreter on the same planned graph): after every kernel or
    host step its outputs are read back and compared with the interpreter's
    values (fusion.oracle tolerances).

    isolate=True writes the interpreter's values of a step's inputs into their
    buffers first, so each block is judged on correct inputs (what `fusion
    passes --check` does for C). isolate=False runs the chain as is and also
    checks that every input still holds, bit for bit, what its writer left
    there: a change means another step overwrote a live buffer (an arena
    aliasing bug). Returns {"ok", "steps", "bad": [...], "first_bad", "clobbered"}."""
    from fusion.codegen import opencl
    from fusion.codegen.driver import load_graph
    from fusion.codegen.opencl.program import HostStep
    from fusion.ir.interpreter import run as interpret
    from fusion.oracle import compare_arrays
    graph = load_graph(model, kwargs.pop("shapes", None))
    feeds = feeds if feeds is not None else _inputs(graph, seed)
    mod = opencl.compile(graph, target, fp16=fp16, **kwargs)
    prog = mod.prog
    env: dict = {}
    interpret(mod.graph, {v.name: feeds[v.name] for v in mod.graph.inputs}, env=env, keep=True)
    device_ins = {"in" + str(i) for i in range(len(prog.inputs))}

    def ref(name):
        v = prog.values[name]
        a = v.const if v.const is not None else env.get(id(v))
        return None if a is None else np.asarray(a)

    def names_of(step):
        if isinstance(step, HostStep):
            return step.reads, step.writes, f"host step {step.block.name} ({', '.join(n.op for n in step.block.nodes)})"
        reads = [n for n in step.reads if prog.places[n].storage not in ("W", "D")]
        label = f"kernel {step.name} (block {step.block}: {', '.join(step.ops[:8])}" + \
                ("..." if len(step.ops) > 8 else "") + f"; {step.schedule})"
        return reads, step.writes, label

    def cmp(name, got, want):
        if fp16 and want.dtype == np.float32:
            got, want = got.astype(np.float16), want.astype(np.float16)
        return compare_arrays(name, got, want)

    written: dict = {}       # buffer -> bytes read back right after its writer ran (chained mode)
    rows, bad, clobbered = [], [], []

    def before(step):
        reads, _, label = names_of(step)
        for n in reads:
            if prog.places[n].storage in device_ins:
                continue
            if isolate:
                want = ref(n)
                if want is not None:
                    mod._write(n, want)
            elif n in written:
                now = mod._read(n)
                if now.tobytes() != written[n]:
                    clobbered.append(f"{label}: input {n} changed after it was written (arena offset "
                                     f"{prog.places[n].offset}): overwritten by a step that ran in between")

    def after(step):
        _, writes, label = names_of(step)
        row = {"step": label, "outputs": {}}
        for n in writes:
            got = mod._read(n)
            if not isolate:
                written[n] = got.tobytes()
            want = ref(n)
            if want is None:
                continue
            d = cmp(n, got, want.reshape(got.shape) if want.size == got.size else want)
            row["outputs"][n] = {"ok": d.ok, "max_abs_err": d.max_abs_err, "message": d.message,
                                 "worst_index": list(d.worst_index) if d.worst_index else None}
            if not d.ok:
                row["bad"] = True
        rows.append(row)
        if row.get("bad"):
            bad.append(row)

    try:
        mod.run(feeds, before=before, after=after)
    finally:
        mod.close()
    if first_only:
        rows = bad[:1]
    return {"ok": not bad and not clobbered, "isolate": isolate, "steps": len(rows) if not first_only else None,
            "bad": [{"step": r["step"], "outputs": {k: v for k, v in r["outputs"].items() if not v["ok"]}}
                    for r in bad],
            "first_bad": bad[0]["step"] if bad else None, "clobbered": clobbered}


def _main(argv=None) -> int:
    """python -m fusion.codegen.opencl.tools MODEL [--chained] [--fp16] [--seed N]"""
    import argparse
    import json
    ap = argparse.ArgumentParser(prog="python -m fusion.codegen.opencl.tools",
                                 description="OpenCL program vs the reference interpreter, block by block")
    ap.add_argument("model")
    ap.add_argument("--chained", action="store_true", help="no correct inputs fed per block; report clobbered "
                    "buffers (arena aliasing)")
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiled-gemm", action="store_true", default=None)
    a = ap.parse_args(argv)
    res = check_blocks(a.model, seed=a.seed, isolate=not a.chained, fp16=a.fp16, tiled_gemm=a.tiled_gemm)
    print(json.dumps(res, indent=1, default=str))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(_main())
