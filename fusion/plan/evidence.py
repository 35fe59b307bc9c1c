"""The planner's evidence table for the 15 reference models:

    python -m fusion.plan.evidence [--small] [--target T] [--json] [NAME ...]

Per model, after rewriting (when fusion.rewrite exists): nodes, blocks,
fusion rate, DNNFusion's fused-layer count (DESIGN.md section 4),
onnxruntime's node count after its own fusions (ORT_ENABLE_ALL, from the
saved optimized model), intermediate bytes before and after fusion, and the
planning time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from fusion.errors import FusionError

# DESIGN.md section 4 (DNNFusion, Table 5): layers before fusion, fused layers.
DNNFUSION = {
    "efficientnet-b0": (309, 97), "vgg-16": (51, 17), "mobilenetv1-ssd": (202, 71), "yolo-v4": (398, 135),
    "c3d": (27, 16), "s3d": (272, 98), "u-net": (292, 82), "faster-rcnn": (3640, 942),
    "mask-rcnn": (3999, 981), "tinybert": (366, 74), "distilbert": (457, 109), "albert": (936, 225),
    "bert-base": (976, 216), "mobilebert": (2387, 510), "gpt-2": (2533, 254),
}


def ort_optimized_nodes(graph) -> int | None:
    """Nodes in onnxruntime's optimized model (all graph optimizations on)."""
    from fusion.oracle import ort_optimized_node_count
    return ort_optimized_node_count(graph)


def evaluate(name: str, small: bool, target: str, rewrite: bool = True, ort: bool = True) -> dict:
    import fusion
    from fusion.plan import plan
    g = fusion.load(f"zoo:{name}{':small' if small else ''}")
    imported = len(g.nodes)
    note = ""
    if rewrite:
        try:
            from fusion.rewrite import rewrite as rw
            ort_graph = g.copy() if ort else None
            g = rw(g)
        except ModuleNotFoundError:
            ort_graph = g
            note = "not rewritten (fusion.rewrite missing)"
    else:
        ort_graph = g
    t0 = time.perf_counter()
    p = plan(g, target, profile_db=False)
    secs = time.perf_counter() - t0
    before, after = p.intermediate_bytes()
    layers, fused = DNNFUSION.get(name, (None, None))
    return {"model": name + (":small" if small else ""), "imported": imported, "nodes": len(g.nodes),
            "blocks": len(p.blocks), "fusion_rate": round(len(g.nodes) / max(1, len(p.blocks)), 2),
            "dnnfusion_layers": layers, "dnnfusion_fused": fused,
            "ort_nodes": ort_optimized_nodes(ort_graph) if ort else None,
            "inter_before": before, "inter_after": after, "plan_s": round(secs, 2),
            "refused": _codes(p), "note": note}


def _codes(p) -> dict:
    out: dict[str, int] = {}
    for d in p.refused:
        out[d.code] = out.get(d.code, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| model | nodes (imported) | blocks | rate | DNNFusion fused | ORT nodes | interm. MiB before -> after | plan s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} |  |  |  |  |  |  |")
            continue
        lines.append(f"| {r['model']} | {r['nodes']} ({r['imported']}) | {r['blocks']} | {r['fusion_rate']} | "
                     f"{r['dnnfusion_fused']} | {r['ort_nodes'] if r['ort_nodes'] is not None else '-'} | "
                     f"{_mib(r['inter_before'])} -> {_mib(r['inter_after'])} | {r['plan_s']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fusion.plan.evidence")
    ap.add_argument("models", nargs="*", default=list(DNNFUSION))
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--target", default="host")
    ap.add_argument("--no-rewrite", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from fusion.cliutil import Progress
    prog = Progress(len(args.models), "evidence")
    rows = []
    for m in args.models:
        try:
            rows.append(evaluate(m, args.small, args.target, not args.no_rewrite, not args.no_ort))
        except (FusionError, ImportError) as e:  # ImportError: no fusion.zoo in this tree yet
            rows.append({"model": m, "error": str(e).splitlines()[0][:120]})
        prog.step(m)
        print(json.dumps(rows[-1]), file=sys.stderr)
    prog.done()
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
