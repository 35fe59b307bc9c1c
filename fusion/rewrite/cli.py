"""`fusion rewrite` and `fusion rules`."""
from __future__ import annotations

import os
from collections import Counter

from fusion.cliutil import add_model_arguments, load_model, print_json
from fusion.errors import FusionError


def register(sub) -> None:
    p = sub.add_parser("rewrite", help="simplify a model with proven algebraic rules and structural passes")
    add_model_arguments(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the rewritten model as ONNX")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--strict-fp", action="store_true",
                   help="only rules exact in float arithmetic (no reassociation, no domain assumptions)")
    p.add_argument("--dump-after-each", metavar="DIR", help="write the graph (text and ONNX) after every pass")
    p.add_argument("--check", action="store_true",
                   help="run onnxruntime on the original and after every pass; name the first pass that differs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs used by --check")
    p.set_defaults(func=cmd_rewrite)

    p = sub.add_parser("rules", help="list every rewrite rule: family, proof status, what it saves")
    p.add_argument("--json", action="store_true")
    p.add_argument("--family", help="only this family")
    p.add_argument("--prove", action="store_true", help="run every proof now (sympy; takes a while)")
    p.set_defaults(func=cmd_rules)


def _dump(dirname: str):
    from fusion.ir.graph import format_graph
    import fusion
    os.makedirs(dirname, exist_ok=True)
    k = [0]

    def write(label, g):
        base = os.path.join(dirname, f"{k[0]:02d}_{label.replace(':', '_')}")
        with open(base + ".txt", "w") as f:
            f.write(format_graph(g) + "\n")
        fusion.save(g, base + ".onnx")
        k[0] += 1
    return write


def cmd_rewrite(args) -> int:
    from fusion.rewrite import rewrite_with_report
    g = load_model(args)
    dump = _dump(args.dump_after_each) if args.dump_after_each else None
    if dump:
        dump("original", g)

    def on_pass(run, gg):
        if dump and run.changes:
            dump(run.name, gg)
    out, rep = rewrite_with_report(g, strict_fp=args.strict_fp, on_pass=on_pass)
    check = None
    if args.check:
        from fusion.rewrite.check import check_rewrite
        check = check_rewrite(g, strict_fp=args.strict_fp, seed=args.seed)
    if args.output:
        import fusion
        fusion.save(out, args.output)
    if args.json:
        d = {"model": args.model, **rep.to_json()}
        if check is not None:
            d["check"] = check.to_json()
        if args.output:
            d["output"] = args.output
        print_json(d)
    else:
        _print_report(args, rep, check)
    return 0 if check is None or check.ok else 1


def _pct(a, b) -> str:
    return f"{100.0 * (b - a) / a:+.1f}%" if a else "n/a"


def _print_report(args, rep, check) -> None:
    print(f"model    {args.model}{'  (strict fp)' if rep.strict_fp else ''}")
    print(f"nodes    {rep.nodes_before} -> {rep.nodes_after}  ({_pct(rep.nodes_before, rep.nodes_after)})")
    print(f"GFLOP    {rep.flops_before / 1e9:.4f} -> {rep.flops_after / 1e9:.4f}  "
          f"({_pct(rep.flops_before, rep.flops_after)})")
    print(f"time     {rep.seconds:.2f} s")
    n = sum(rep.fired.values())
    print(f"rules    {n} applications of {len(rep.fired)} rules")
    for name, k in rep.fired.most_common():
        print(f"  {k:6d}  {name}")
    changed = [p for p in rep.passes if p.changes and not p.name.endswith(":algebra")]
    if changed:
        print("passes   " + ", ".join(f"{p.name} {p.changes}" for p in changed))
    if check is not None:
        print("check    onnxruntime on the original vs after every pass (same inputs):")
        for s in check.steps:
            print(f"  {s.name:28s} {s.changes:5d} changes  {'PASS' if s.ok else 'FAIL'}  max abs err {s.max_abs_err:.3g}")
        if check.ok:
            print("  all passes match onnxruntime")
        else:
            print(f"  first pass that differs: {check.first_bad}" + (f"; {check.culprit}" if check.culprit else ""))
            bad = next(s for s in check.steps if not s.ok)
            print("  " + bad.detail.replace("\n", "\n  "))
            if check.noise:
                print(f"  note: {check.noise}")
    if args.output:
        print(f"wrote    {args.output}")


def _saves(rule) -> str:
    from fusion.rewrite.pattern import PNode

    def count(p):
        return (1 + sum(count(a) for a in p.args)) if isinstance(p, PNode) else 0
    if rule.rhs_pattern is not None:
        return f"{count(rule.pattern)} -> {count(rule.rhs_pattern)} ops"
    return f"{count(rule.pattern)} -> fewer ops (computed)"


def rule_rows(prove: bool = False) -> list[dict]:
    from fusion.rewrite.proof import prove as run_proof
    from fusion.rewrite.rules import all_rules
    rows = []
    for r in all_rules():
        status = ("sympy" if r.proof == "sympy" else "numeric-only") if r.available() else "unavailable"
        row = {"name": r.name, "family": r.family, "lhs": r.lhs_text(), "rhs": r.rhs_text(),
               "proof": status, "exact": r.exact, "note": r.note, "saves": _saves(r), "doc": r.doc,
               "dtypes": r.dtypes, "available": r.available()}
        if prove:
            res = run_proof(r)
            row["proof"] = res.status
            row["proof_detail"] = res.detail
        rows.append(row)
    return rows


def cmd_rules(args) -> int:
    rows = rule_rows(prove=args.prove)
    if args.family:
        fams = sorted({r["family"] for r in rows})
        if args.family not in fams:
            raise FusionError(f"no rule family '{args.family}'; families: {', '.join(fams)}")
        rows = [r for r in rows if r["family"] == args.family]
    fam = Counter(r["family"] for r in rows)
    proof = Counter(r["proof"] for r in rows)
    if args.json:
        print_json({"count": len(rows), "by_family": dict(fam), "by_proof": dict(proof), "rules": rows})
        return 0 if proof.get("failed", 0) == 0 else 1
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        flag = "" if r["exact"] else "  [real-arithmetic only: " + (r["note"] or "rounding") + "]"
        print(f"{r['name']:<{w}}  {r['family']:<12} {r['proof']:<13} {r['lhs']}  ->  {r['rhs']}   ({r['saves']}){flag}")
    print(f"\n{len(rows)} rules: " + ", ".join(f"{k} {v}" for k, v in sorted(fam.items())))
    print("proofs: " + ", ".join(f"{k} {v}" for k, v in sorted(proof.items())))
    return 0 if proof.get("failed", 0) == 0 else 1
