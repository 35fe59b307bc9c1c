"""`fusion inspect`, `fusion ops` and `fusion conformance`."""
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

    from fusion.backend import CATEGORIES
    p = sub.add_parser("conformance", help="run the ONNX backend test suite through fusion: passed/failed/skipped "
                                           "per category, failures grouped by op")
    p.add_argument("--json", action="store_true", help="machine-readable results")
    p.add_argument("--executor", default="interpreter", choices=["interpreter", "compiled", "llvm"],
                   help="how fusion runs each model (default: the reference interpreter)")
    p.add_argument("--category", action="append", choices=list(CATEGORIES),
                   help="suite category to run (repeatable; default: all local ones)")
    p.add_argument("-k", dest="pattern", metavar="REGEX", help="only tests whose name matches")
    p.add_argument("--list", action="store_true", help="also list every failing and skipped test")
    p.set_defaults(func=cmd_conformance)


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


def cmd_conformance(args) -> int:
    from fusion.backend import CATEGORIES, run_suite, summarize
    from fusion.cliutil import Progress
    cats = args.category or list(CATEGORIES)
    prog = Progress(1, "conformance")

    def step(i, n, name):
        prog.total = n
        prog.step(name)
    results = run_suite(cats, executor=args.executor, pattern=args.pattern, progress=step)
    prog.done()
    s = summarize(results)
    if args.json:
        s["executor"] = args.executor
        s["tests"] = [{"category": r.category, "name": r.name, "status": r.status, "ops": r.ops,
                       "reason": r.reason} for r in results]
        print_json(s)
        return 0
    print(f"ONNX backend test suite through fusion (executor: {args.executor})")
    print(f"{'category':<20}{'passed':>8}{'failed':>8}{'skipped':>9}{'total':>8}")
    for cat, c in list(s["categories"].items()) + [("all", s["total"])]:
        print(f"{cat:<20}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}{c['total']:>8}")
    if s["failures_by_op"]:
        print("\nfailures by op:")
        for op, items in s["failures_by_op"].items():
            reasons = sorted({i["reason"] for i in items})
            print(f"  {op} ({len(items)}): {reasons[0][:150]}" + (f"  (+{len(reasons) - 1} other reasons)" if len(reasons) > 1 else ""))
            if args.list:
                for i in items:
                    print(f"      {i['test']}: {i['reason'][:200]}")
    if s["skips_by_reason"]:
        print("\nskipped by reason:")
        for reason, names in s["skips_by_reason"].items():
            print(f"  {len(names):>4}  {reason}")
            if args.list:
                print("        " + ", ".join(names))
    return 0
