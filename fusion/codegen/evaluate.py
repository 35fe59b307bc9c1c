"""`fusion eval`: the reference models, one table.

Per model: nodes (as imported), blocks after rewriting and planning, fusion
rate, DNNFusion's fused-layer count (DESIGN.md section 4), onnxruntime's node
count after its own fusions, fusion and onnxruntime latency (same inputs,
same threads, alternated, median), their ratio, the max error against
onnxruntime (optimizations off), peak memory and compile seconds. Written
as eval.md, eval.csv and eval.svg (a bar chart of the latency ratios).
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
import traceback

from fusion.cliutil import Progress
from fusion.errors import FusionError

COLUMNS = [("model", "model"), ("nodes", "nodes"), ("blocks", "blocks"), ("fusion_rate", "fusion rate"),
           ("dnnfusion_fused", "DNNFusion fused"), ("ort_nodes", "ORT nodes"), ("fusion_ms", "fusion ms"),
           ("ort_ms", "ORT ms"), ("ratio", "ratio"), ("max_abs_err", "max abs err"), ("ok", "ok"),
           ("peak_mib", "peak MiB"), ("compile_s", "compile s"), ("error", "error")]


def ort_nodes(src) -> int | None:
    """Nodes in onnxruntime's optimized model (ORT_ENABLE_ALL)."""
    from fusion.oracle import ort_optimized_node_count
    return ort_optimized_node_count(src)


def eval_model(name: str, small: bool, threads: int, runs: int) -> dict:
    import fusion
    from fusion.codegen.bench import bench_model
    from fusion.codegen.cli import oracle_source
    from fusion.codegen.driver import compile as fz_compile
    from fusion.oracle import compare, random_inputs, run_onnxruntime
    from fusion.plan.evidence import DNNFUSION
    spec = f"zoo:{name}{':small' if small else ''}"
    row: dict = {"model": spec, "dnnfusion_fused": DNNFUSION.get(name, (None, None))[1]}
    try:
        g = fusion.load(spec)
        row["nodes"] = len(g.nodes)
        src = oracle_source(spec, g)
        row["ort_nodes"] = ort_nodes(src)
        feeds = random_inputs(g)
        expected = run_onnxruntime(src, feeds)
        mod = fz_compile(g, threads=threads)
        rep = mod.report
        row.update(blocks=rep["blocks"], fusion_rate=round(row["nodes"] / max(rep["blocks"], 1), 2),
                   compile_s=rep["compile_seconds"]["total"],
                   peak_mib=round((rep["peak_memory"]["arena_bytes"] + rep["peak_memory"]["weights_bytes"]) / 2 ** 20, 2))
        got = mod.run(feeds)
        res = compare(got, expected)
        row.update(ok=res.ok, max_abs_err=float(f"{res.max_abs_err:.3g}"))
        if not res.ok:
            from fusion.zoo.pin import explain_near_ties
            tie = explain_near_ties(src, feeds, got)
            if tie.ok:   # the reference semantics; only near-tie decisions differ (listed)
                row.update(ok=True, max_abs_err=float(f"{tie.vs_reference.max_abs_err:.3g}"),
                           error=f"near-tie (max abs error vs the interpreter; vs onnxruntime {res.max_abs_err:.3g}): "
                                 + "; ".join(p.split(" (")[0] for p in tie.pins))
        b = bench_model(spec, g, threads=threads, runs=runs, warmup=2, memory=False, mod=mod)
        row.update(fusion_ms=b["fusion_ms"], ort_ms=b["ort_ms"], ratio=b["ratio"])
    except FusionError as e:
        row.update(ok=False, error=str(e).splitlines()[0][:200])
    except Exception as e:   # a bug: keep going, but say where
        tb = traceback.extract_tb(e.__traceback__)[-1]
        row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:150]} ({os.path.basename(tb.filename)}:{tb.lineno})")
    return row


def run_eval(names=None, *, small=False, threads=2, runs=10, out_dir="eval") -> tuple[list[dict], dict]:
    from fusion import zoo
    names = names or list(zoo.NAMES)
    unknown = [n for n in names if n not in zoo.NAMES]
    if unknown:
        raise FusionError(f"unknown zoo model '{unknown[0]}'; known: {', '.join(zoo.NAMES)}")
    prog = Progress(len(names), "eval", enabled=True if sys.stderr.isatty() else None)
    rows = []
    for n in names:
        t0 = time.perf_counter()
        prog.step(n, 0)
        rows.append(eval_model(n, small, threads, runs))
        prog.step(f"{n} ({time.perf_counter() - t0:.0f} s)")
    prog.done()
    os.makedirs(out_dir, exist_ok=True)
    paths = {"md": os.path.join(out_dir, "eval.md"), "csv": os.path.join(out_dir, "eval.csv"),
             "svg": os.path.join(out_dir, "eval.svg")}
    with open(paths["md"], "w") as f:
        f.write(markdown(rows, threads))
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([c for c, _ in COLUMNS])
        for r in rows:
            w.writerow([r.get(c, "") for c, _ in COLUMNS])
    with open(paths["svg"], "w") as f:
        f.write(svg(rows))
    return rows, paths


def _fmt(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v else f"{v:,.2f}"
    return str(v)


def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def markdown(rows: list[dict], threads: int) -> str:
    cols = [c for c in COLUMNS if any(r.get(c[0]) not in (None, "") for r in rows)]
    out = [f"fusion vs onnxruntime (ORT_ENABLE_ALL), {threads} threads, median latency; ratio = fusion / ORT "
           f"(below 1: fusion faster)", "",
           "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c, _ in cols) + " |")
    g = geomean([r.get("ratio") for r in rows])
    ok = sum(1 for r in rows if r.get("ok"))
    out += ["", f"{ok} of {len(rows)} models compiled and match onnxruntime; geometric-mean ratio "
                f"{g:.2f}" if g else f"{ok} of {len(rows)} models compiled and match onnxruntime", ""]
    return "\n".join(out)


def svg(rows: list[dict]) -> str:
    data = [(r["model"], r["ratio"]) for r in rows if r.get("ratio")]
    w, bar, gap, left = 640, 18, 6, 200
    h = 40 + len(data) * (bar + gap) + 30
    top = max([x for _, x in data] + [1.5])
    scale = (w - left - 60) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="12">', f'<text x="10" y="20" font-size="14">latency ratio fusion / onnxruntime '
             f'(lower is better)</text>']
    x1 = left + scale
    parts.append(f'<line x1="{x1:.1f}" y1="30" x2="{x1:.1f}" y2="{h - 20}" stroke="#888" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{x1 - 8:.1f}" y="{h - 6}">1.0</text>')
    for i, (name, r) in enumerate(data):
        y = 36 + i * (bar + gap)
        color = "#3a7" if r <= 1.0 else "#d84" if r <= 1.5 else "#c33"
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{name}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{max(r * scale, 1):.1f}" height="{bar}" fill="{color}"/>')
        parts.append(f'<text x="{left + r * scale + 4:.1f}" y="{y + 13}">{r:.2f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
