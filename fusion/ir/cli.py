"""`fusion inspect` and `fusion ops`."""
from __future__ import annotations

from fusion.cliutil import add_model_arguments, load_model, print_json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="summarize a model: ops, parameters, FLOPs, intermediate bytes")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--graph", action="store_true", help="also print the graph in text form")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("ops", help="list the op table: every supported op with its class and properties")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ops)


def _fmt_count(n: float) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f}{unit}"
    return str(int(n))


def cmd_inspect(args) -> int:
    g = load_model(args)
    s = g.summary()
    if args.json:
        if args.graph:
            s["text"] = str(g)
        print_json(s)
        return 0
    print(f"model     {args.model}")
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in s["opset"].items())
    print(f"graph     {s['name']}  (opset {opsets})")
    for v in s["inputs"]:
        print(f"input     {v['name']}: {v['dtype']}[{','.join(map(str, v['shape']))}]")
    for v in s["outputs"]:
        print(f"output    {v['name']}: {v['dtype']}[{','.join(map(str, v['shape']))}]")
    print(f"nodes     {s['nodes']}")
    print(f"params    {_fmt_count(s['params'])} ({s['param_bytes'] / 2**20:.1f} MiB)")
    print(f"FLOPs     {_fmt_count(s['flops'])}")
    print(f"interm.   {s['intermediate_bytes'] / 2**20:.1f} MiB of intermediate results")
    print("ops       " + ", ".join(f"{k} {v}" for k, v in s["ops"].items()))
    if args.graph:
        print()
        print(g)
    return 0


def cmd_ops(args) -> int:
    from fusion.ops import all_ops
    from fusion.ops.table import Mapping
    rows = []
    for od in all_ops():
        m = od.mapping if isinstance(od.mapping, Mapping) else None
        a = od.algebra
        props = [k for k in ("commutative", "associative", "idempotent", "involution") if getattr(a, k)]
        if a.identity is not None:
            props.append(f"identity={a.identity}")
        if a.distributes_over:
            props.append("distributes over " + "/".join(a.distributes_over))
        rows.append({"op": od.name, "domain": od.domain or "ai.onnx", "category": od.category,
                     "mapping": m.short if m else "per-node", "opaque": od.opaque, "properties": props})
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(f"{r['op']:<28} {r['category']:<12} {r['mapping']:<9} {'opaque ' if r['opaque'] else ''}{', '.join(r['properties'])}")
    print(f"{len(rows)} ops")
    return 0
