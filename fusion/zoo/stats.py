"""Measured facts about zoo models, for `fusion zoo list` and docs/zoo.md.

    .venv/bin/python -m fusion.zoo.stats [NAME ...] [--small] [--latency] [--markdown]

Structure (nodes, ops, control flow, params) comes from the stored graph;
FLOPs from the op table's `flops` over fusion's imported graph (ops the table
does not know yet are listed and counted as 0); onnxruntime's optimized node
count and latency (ORT_ENABLE_ALL, 1 and 2 threads, median of up to 10 timed
runs after a warm-up, at least 3, at most ~20 s per setting) are
measured here, with the load average at the time recorded beside them.
Results are merged into fusion/zoo/data/manifest.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter

import numpy as np
import onnx

from fusion.zoo import registry

CONTROL_FLOW = {"If", "Loop", "Scan"}


def structure(name: str, small: bool) -> dict:
    from fusion import zoo
    m = zoo.stored(name, small)
    ops = Counter()

    def visit(g):
        for n in g.node:
            ops[n.op_type] += 1
            for a in n.attribute:
                if a.HasField("g"):
                    visit(a.g)
                for sg in a.graphs:
                    visit(sg)
    visit(m.graph)
    params = 0
    for t in m.graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            params += int(np.prod(list(t.dims), dtype=np.int64)) if len(t.dims) else 1
    return {"nodes": len(m.graph.node), "ops": dict(sorted(ops.items())), "params": params,
            "control_flow": sorted(o for o in ops if o in CONTROL_FLOW)}


def flops(name: str, small: bool) -> dict:
    import fusion
    from fusion.ops.table import get_op
    from fusion import zoo
    try:
        g = fusion.load(zoo.load(name, small))
    except Exception as e:  # an op the table does not know yet: say which
        return {"flops": None, "flops_note": str(e).splitlines()[0][:200]}
    total, unknown = 0, Counter()
    for n in g.nodes:
        od = get_op(n.op, getattr(n, "domain", ""))
        try:
            total += int(od.flops(n)) if od is not None else 0
        except Exception:
            unknown[n.op] += 1
    out = {"flops": total}
    if unknown:
        out["flops_note"] = "not counted: " + ", ".join(f"{k} x{v}" for k, v in sorted(unknown.items()))
    return out


def ort_facts(name: str, small: bool, latency: bool, runs: int = 10) -> dict:
    import onnxruntime as ort
    from fusion import zoo
    model = zoo.load(name, small)
    feeds = zoo.random_inputs(name, small)
    from fusion.oracle import ort_optimized_node_count
    out = {}
    data = model.SerializeToString()
    out["ort_optimized_nodes"] = ort_optimized_node_count(model)
    if latency:
        for threads in (1, 2):
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            want = {i.name for i in sess.get_inputs()}
            f = {k: v for k, v in feeds.items() if k in want}
            sess.run(None, f)
            times, start = [], time.perf_counter()
            while len(times) < runs and (len(times) < 3 or time.perf_counter() - start < 20):
                t = time.perf_counter()
                sess.run(None, f)
                times.append(time.perf_counter() - t)
            out[f"ort_ms_{threads}t"] = round(1000 * statistics.median(times), 2)
        out["load_average"] = round(os.getloadavg()[0], 2)
    return out


def update(names, small: bool, latency: bool) -> None:
    man = registry.manifest()
    for name in names:
        if not os.path.exists(registry.model_path(name, small)):
            print(f"{name}: not exported yet")
            continue
        facts = {**structure(name, small), **flops(name, small), **ort_facts(name, small, latency)}
        man.setdefault(name, {}).setdefault("small" if small else "full", {}).update(facts)
        print(name, json.dumps({k: v for k, v in facts.items() if k != "ops"}), flush=True)
        with open(registry.MANIFEST, "w") as f:
            json.dump({k: man[k] for k in sorted(man)}, f, indent=1)
            f.write("\n")


def fmt_count(n) -> str:
    if n is None:
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def markdown() -> str:
    man = registry.manifest()
    rows = ["| model | task | params | FLOPs | nodes | ORT optimized nodes | ORT 1 thread (ms) | "
            "ORT 2 threads (ms) | exporter | inputs | ops / control flow |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in registry.NAMES:
        e = man.get(name, {})
        f = e.get("full", {})
        if not f:
            rows.append(f"| {name} | {registry.ENTRIES[name].task} | not exported | | | | | | | | |")
            continue
        ins = ", ".join(f"{i['name']} {'x'.join(str(d) for d in i['shape'])} {i['dtype']}" for i in f.get("inputs", []))
        ops = f.get("ops", {})
        top = ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1]))
        cf = f.get("control_flow") or []
        exporter = e.get("exporter", "").split(" (")[0]
        rows.append(f"| {name} | {registry.ENTRIES[name].task} | {fmt_count(f.get('params'))} | "
                    f"{fmt_count(f.get('flops'))} | {f.get('nodes', '?')} | {f.get('ort_optimized_nodes', '?')} | "
                    f"{f.get('ort_ms_1t', '?')} | {f.get('ort_ms_2t', '?')} | {exporter} | {ins} | "
                    f"{top}{'; control flow: ' + ', '.join(cf) if cf else ''} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description="measure zoo models into manifest.json")
    p.add_argument("names", nargs="*")
    p.add_argument("--small", action="store_true")
    p.add_argument("--latency", action="store_true", help="also time onnxruntime at 1 and 2 threads")
    p.add_argument("--markdown", action="store_true", help="print the docs/zoo.md table")
    a = p.parse_args(argv)
    if a.markdown:
        print(markdown())
        return
    update(a.names or registry.NAMES, a.small, a.latency)


if __name__ == "__main__":
    main()
