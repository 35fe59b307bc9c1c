"""`fusion fuzz`: differential testing against onnxruntime.

    fusion fuzz --graphs 200 --seed 0           random graphs, whole pipeline vs onnxruntime
    fusion fuzz --control --graphs 100          random models with Loop / If, C backend vs onnxruntime
    fusion fuzz importer --execs 2000           mutated ONNX bytes through the importer
    fusion fuzz sanitize zoo:tinybert:small     generated C under ASan + UBSan
"""
from __future__ import annotations

import sys

from fusion.errors import FusionError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register(sub) -> None:
    p = sub.add_parser("fuzz", help="differential testing: random graphs, importer fuzzing, sanitizers",
                       description="Random graphs through the whole pipeline, compared with onnxruntime. "
                                   "Failures are shrunk to a minimal graph; --save DIR writes them as .onnx.")
    p.add_argument("--graphs", type=int, default=100, help="how many random graphs (default 100)")
    p.add_argument("--seed", type=int, default=0, help="first seed (graph k uses seed+k)")
    p.add_argument("--batch", type=int, default=25, help="graphs per compiled library (default 25)")
    p.add_argument("--max-nodes", type=int, default=10, help="ops per graph at most (default 10)")
    p.add_argument("--save", metavar="DIR", help="write each shrunk failure as DIR/fuzz_<seed>_<ops>.onnx")
    p.add_argument("--no-shrink", action="store_true", help="report failures as found")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--control", action="store_true",
                   help="models with control flow (Loop, If; fusion/fuzz/control.py), one compiled library "
                        "each; --batch and --max-nodes do not apply; failures are reduced by switching "
                        "features off")
    p.set_defaults(func=_cmd_graphs)
    fsub = p.add_subparsers(dest="fuzz_command", metavar="{importer,sanitize}")

    pi = fsub.add_parser("importer", help="byte-level fuzzing of the ONNX importer in a child process")
    pi.add_argument("--execs", type=int, default=500, help="mutated models to load (default 500)")
    pi.add_argument("--seed", type=int, default=0)
    pi.add_argument("--save", metavar="DIR", help="keep the mutants that crashed, hung or raised a non-FusionError")
    pi.add_argument("--json", action="store_true")
    pi.set_defaults(func=_cmd_importer)

    ps = fsub.add_parser("sanitize", help="build the generated C with -fsanitize=address,undefined and run it")
    ps.add_argument("models", nargs="+", help="ONNX files or zoo:NAME:small; 'fuzz:N' = a batch of N random graphs")
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=_cmd_sanitize)


def _positive(n: int, flag: str) -> int:
    if n < 1:
        raise FusionError(f"{flag} must be at least 1, got {n}")
    return n


def _cmd_graphs(args) -> int:
    from fusion.cliutil import print_json
    from fusion.fuzz import campaign
    _positive(args.graphs, "--graphs")
    if args.control:
        return _cmd_control(args)
    _positive(args.batch, "--batch")
    if args.max_nodes < 2:
        raise FusionError(f"--max-nodes must be at least 2, got {args.max_nodes}")
    res = campaign.run(args.graphs, seed=args.seed, batch=args.batch, max_nodes=args.max_nodes,
                       save_dir=args.save, do_shrink=not args.no_shrink, log=_log)
    if args.json:
        print_json(res.to_json())
    else:
        print(f"{res.graphs} graphs (seeds {args.seed}..{args.seed + args.graphs - 1}), "
              f"{sum(res.ops.values())} ops of {len(res.ops)} kinds: {res.passed} pass, "
              f"{len(res.failures)} fail, {res.skipped} skipped (non-finite reference) in {res.seconds:.0f}s")
        for f in res.failures:
            print(f"  seed {f['seed']}: {f['kind']}: {f['message'][:200]}")
            if "shrunk_ops" in f:
                print(f"    shrunk to {' -> '.join(f['shrunk_ops'])}" + (f"  ({f['file']})" if f.get("file") else ""))
    return 1 if res.failures else 0


def _cmd_control(args) -> int:
    from fusion.cliutil import print_json
    from fusion.fuzz import control
    res = control.run(args.graphs, seed=args.seed, save_dir=args.save, do_reduce=not args.no_shrink, log=_log)
    if args.json:
        print_json(res.to_json())
        return 1 if res.failures else 0
    kinds = ("pass", "mismatch", "crash", "refusal", "skip", "invalid")
    counts = ", ".join(f"{res.counts.get(k, 0)} {k}" for k in kinds)
    print(f"{res.models} control-flow models (seeds {args.seed}..{args.seed + args.graphs - 1}): {counts} "
          f"in {res.seconds:.0f}s")
    for r, n in sorted(res.refusals.items(), key=lambda kv: -kv[1]):
        print(f"  refused {n}x: {r}")
    for f in res.failures:
        print(f"  seed {f['seed']}: {f['kind']}: {f['message'][:200]}")
        if "features_left" in f:
            print(f"    still fails with only: {' '.join(f['features_left'])}"
                  + (f"  ({f['file']})" if f.get("file") else ""))
    return 1 if res.failures else 0


def _cmd_importer(args) -> int:
    from fusion.cliutil import print_json
    from fusion.fuzz.importer import fuzz
    _positive(args.execs, "--execs")
    res = fuzz(args.execs, seed=args.seed, keep_dir=args.save, log=_log)
    if args.json:
        print_json(res.to_json())
    else:
        print(f"{res.execs} executions in {res.seconds:.0f}s: {res.ok} loaded, {res.clean} clean errors, "
              f"{len(res.findings)} findings")
        for f in res.findings:
            print(f"  exec {f['exec']}: {f['verdict']}: {f['message'][:200]}")
    return 1 if res.findings else 0


def _cmd_sanitize(args) -> int:
    from fusion.cliutil import print_json
    from fusion.fuzz.sanitize import sanitize
    runs = []
    for m in args.models:
        if m.startswith("fuzz:"):
            from fusion.fuzz.generator import generate
            from fusion.fuzz.spec import merge
            try:
                n = int(m[5:])
            except ValueError:
                raise FusionError(f"'{m}': write fuzz:N with N the number of random graphs") from None
            specs = [generate(args.seed + k) for k in range(_positive(n, m))]
            feeds = {}
            for k, s in enumerate(specs):
                feeds.update(s.random_feeds(f"g{k}_"))
            r = sanitize(merge(specs), feeds=feeds, label=m)
        else:
            try:
                r = sanitize(m, seed=args.seed)
            except FusionError as e:
                # a model the C backend cannot build is not a sanitizer finding: say so, go on
                if len(args.models) == 1:
                    raise
                print(f"{m}: not built: {e}")
                continue
        runs.append(r)
        if not args.json:
            print(f"{r.model}: {'clean' if r.ok else 'FINDING'} ({r.blocks} blocks, {r.seconds:.0f}s)"
                  + (f"\n  {r.report}" if r.report else "") + (f"\n  {r.mismatch}" if r.mismatch else ""))
    if args.json:
        print_json([r.to_json() for r in runs])
    return 0 if all(r.ok for r in runs) else 1
