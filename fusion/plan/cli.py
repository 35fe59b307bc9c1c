"""`fusion plan` and `fusion profile`."""
from __future__ import annotations

import sys
from collections import Counter

from fusion.cliutil import Progress, add_model_arguments, load_model, print_json
from fusion.errors import FusionError


def register(sub) -> None:
    p = sub.add_parser("plan", help="which operators fuse into one kernel, and why others don't")
    add_model_arguments(p)
    next(a for a in p._actions if a.dest == "model").nargs = "?"   # optional with --table
    _plan_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable plan (nodes, blocks, refused, blocks_detail)")
    p.add_argument("--svg", metavar="FILE", help="draw the graph: blocks coloured, refused edges red")
    p.add_argument("--html", metavar="FILE", help="the drawing plus tables of blocks and refused edges")
    p.add_argument("--all", action="store_true", help="also list fused edges with their reasons")
    p.add_argument("--table", action="store_true", help="print the fusion table and exit")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("profile", help="the profile database for the fusion table's (profile) pairs")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION")
    q = psub.add_parser("prefill", help="plan models and store every profile decision they need")
    q.add_argument("models", nargs="*", help="ONNX files or zoo:NAME (default: the 15 reference models)")
    q.add_argument("--small", action="store_true", help="with no models given, use the zoo's small variants")
    _plan_options(q)
    q.set_defaults(func=cmd_prefill)
    q = psub.add_parser("show", help="summarize the database")
    q.add_argument("--profile-db", metavar="PATH", help="database file (default $FUSION_CACHE/profile.json "
                                                         "or ~/.cache/fusion/profile.json)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _plan_options(p) -> None:
    from fusion.targets import names
    p.add_argument("--target", default="host", help=f"target whose limits apply ({', '.join(names())})")
    p.add_argument("--no-rewrite", action="store_true", help="plan the graph as imported (skip fusion.rewrite)")
    p.add_argument("--profile-db", metavar="PATH", help="profile database (default $FUSION_CACHE/profile.json "
                                                         "or ~/.cache/fusion/profile.json)")
    p.add_argument("--measure", action="store_true",
                   help="settle profile pairs by compiling and timing them on this machine (needs the code "
                        "generator); default: the analytical cost model")
    p.add_argument("--no-merge", action="store_true", help="seed-and-grow only (skip merging adjacent blocks)")
    p.add_argument("--max-block-ops", type=int, help="override the target's max ops per block")
    p.add_argument("--max-kernel-args", type=int, help="override the target's max kernel arguments (0: none)")


def _rewrite(g, args, notes: list[str]):
    if args.no_rewrite:
        return g
    try:
        from fusion.rewrite import rewrite
    except ModuleNotFoundError as e:
        if e.name and "fusion.rewrite".startswith(e.name):
            notes.append("fusion.rewrite is not available: planning the graph as imported")
            return g
        raise
    return rewrite(g)


def _db(args):
    from fusion.plan.profile import CompileAndTime, CostModel, ProfileDB
    return ProfileDB(args.profile_db, CompileAndTime() if args.measure else CostModel())


def _plan(g, args, db, progress=None):
    from fusion.plan import plan
    return plan(g, args.target, profile_db=db, merge_blocks=not args.no_merge,
                max_block_ops=args.max_block_ops, max_kernel_args=args.max_kernel_args, progress=progress)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def cmd_plan(args) -> int:
    if args.table:
        from fusion.plan.table import format_table
        print(format_table())
        return 0
    if not args.model:
        raise FusionError("fusion plan: give a model (an ONNX file or zoo:NAME), or --table")
    notes: list[str] = []
    g = _rewrite(load_model(args), args, notes)
    db = _db(args)
    prog = Progress(len(g.nodes), "planning")
    p = _plan(g, args, db, prog)
    prog.done()
    db.save()
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.svg:
        from fusion.plan.draw import to_svg
        _write(args.svg, to_svg(p))
    if args.html:
        from fusion.plan.draw import to_html
        _write(args.html, to_html(p, title=f"fusion plan: {args.model}"))
    if args.json:
        j = p.to_json()
        if notes:
            j["notes"] = notes
        print_json(j)
        return 0
    before, after = p.intermediate_bytes()
    print(f"model    {args.model}  (target {p.target}{', not rewritten' if args.no_rewrite or notes else ''})")
    print(f"nodes    {len(g.nodes)} -> {len(p.blocks)} blocks (fusion rate "
          f"{len(g.nodes) / max(len(p.blocks), 1):.2f}), planned in {p.stats.get('seconds', 0):.2f} s")
    print(f"memory   intermediate results {_mib(before)} -> {_mib(after)}")
    if p.stats.get("profile_lookups"):
        print(f"profile  {p.stats['profile_lookups']} lookups; {db.summary()['entries']} entries in {db.path}")
    print()
    print("blocks:")
    for b in p.blocks:
        ops = "+".join(n.op for n in b.nodes)
        if len(ops) > 60:
            ops = ops[:57] + "..."
        anchor = f"anchor {b.anchor.name}" if b.anchor is not None else ("opaque" if b.opaque else "")
        print(f"  b{b.id:<4} {b.mapping.short:<7} {ops:<60} {anchor:<24} in {len(b.inputs)} out {len(b.outputs)}"
              + (f"  saves {_mib(b.saved_bytes)}" if b.saved_bytes else ""))
    refused = p.refused
    print()
    counts = Counter(d.code for d in refused)
    print(f"refused edges: {len(refused)}" + (" (" + ", ".join(f"{k} {v}" for k, v in counts.most_common()) + ")"
                                              if refused else ""))
    for d in refused:
        print(f"  {d.producer.name} ({d.producer.op}) -> {d.consumer.name} ({d.consumer.op}): {d.reason}")
    if args.all:
        print()
        print("fused edges:")
        for d in p.decisions:
            if d.fused:
                print(f"  {d.producer.name} ({d.producer.op}) -> {d.consumer.name} ({d.consumer.op}): {d.reason}")
    return 0


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise FusionError(f"cannot write {path}: {e}") from None
    print(f"wrote {path}", file=sys.stderr)


def cmd_prefill(args) -> int:
    import fusion
    from fusion.zoo import NAMES
    models = args.models or [f"zoo:{m}{':small' if args.small else ''}" for m in NAMES]
    db = _db(args)
    start = len(db)
    prog = Progress(len(models), "prefill")
    for m in models:
        notes: list[str] = []
        try:
            g = fusion.load(m)
        except (FusionError, ImportError) as e:  # ImportError: no fusion.zoo in this tree yet
            print(f"{m}: skipped ({e})", file=sys.stderr)
            prog.step(m)
            continue
        g = _rewrite(g, args, notes)
        before = db.hits + db.misses
        p = _plan(g, args, db)
        db.save()
        prog.step(m)
        print(f"{m}: {len(g.nodes)} nodes, {len(p.blocks)} blocks, {db.hits + db.misses - before} profile lookups"
              + (f" ({'; '.join(notes)})" if notes else ""))
    prog.done()
    s = db.summary()
    print(f"{s['entries']} entries ({s['entries'] - start} new) in {s['path']}; sources: "
          + ", ".join(f"{k} {v}" for k, v in s["by_source"].items()))
    return 0


def cmd_show(args) -> int:
    from fusion.plan.profile import ProfileDB
    db = ProfileDB(args.profile_db, readonly=True)
    s = db.summary()
    if args.json:
        s["items"] = list(db.entries.values())
        print_json(s)
        return 0
    print(f"{s['path']}: {s['entries']} entries; fused slower in {s['fused_slower']}")
    for k, v in s["by_source"].items():
        print(f"  {k}: {v}")
    for e in sorted(db.entries.values(), key=lambda e: e.get("what", ""))[:50]:
        r = e["fused_s"] / e["separate_s"] if e["separate_s"] else 1.0
        print(f"  {e.get('what', '?'):<50} {'/'.join(e['key']['classes']):<12} fused/separate {r:5.2f}  "
              f"{e['source']}")
    if s["entries"] > 50:
        print(f"  ... {s['entries'] - 50} more (--json for all)")
    return 0
