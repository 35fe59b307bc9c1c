"""`fusion zoo list | export | check`."""
from __future__ import annotations

import os
import sys

from fusion.errors import FusionError


def register(sub) -> None:
    p = sub.add_parser("zoo", help="the 15 bundled reference models: list, export, check",
                       description="The 15 reference models (DNNFusion's set), bundled without weights; "
                                   "weights are filled deterministically at load time.")
    zs = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    q = zs.add_parser("list", help="name, task, params, FLOPs, nodes, inputs, exporter")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.add_argument("--small", action="store_true", help="describe the small variants")
    q.set_defaults(func=cmd_list)
    q = zs.add_parser("export", help="write a normal ONNX file with the filled weights")
    q.add_argument("name", help="zoo name (or zoo:NAME[:small])")
    q.add_argument("--small", action="store_true", help="the small variant")
    q.add_argument("-o", "--output", required=True, help="output .onnx path")
    q.set_defaults(func=cmd_export)
    q = zs.add_parser("check", help="reference interpreter vs onnxruntime, plus activation health")
    q.add_argument("names", nargs="*", help="zoo names (default: all 15)")
    q.add_argument("--small", action="store_true", help="the small variants")
    q.add_argument("--seed", type=int, default=0, help="input seed (default 0)")
    q.add_argument("--no-reference", action="store_true", help="skip the reference interpreter (health only)")
    q.add_argument("--activations", action="store_true", help="also check every intermediate tensor is finite")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _name(spec: str, small: bool) -> tuple[str, bool]:
    from fusion.zoo import parse_name
    name, s = parse_name(spec)
    return name, s or small


def rows(small: bool = False) -> list[dict]:
    from fusion import zoo
    from fusion.zoo import registry
    from fusion.zoo.stats import structure
    man = registry.manifest()
    out = []
    for name in registry.NAMES:
        e = registry.ENTRIES[name]
        m = man.get(name, {})
        facts = m.get("small" if small else "full", {})
        row = {"name": name, "task": e.task, "exporter": m.get("exporter", ""),
               "available": os.path.exists(zoo.model_path(name, small))}
        if row["available"]:
            row.update({k: v for k, v in structure(name, small).items() if k in ("nodes", "params")})
            row["flops"] = facts.get("flops")
            row["inputs"] = _inputs(zoo.stored(name, small))
        out.append(row)
    return out


def _inputs(model) -> list[dict]:
    import onnx
    inits = {t.name for t in model.graph.initializer}
    out = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                    "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]})
    return out


def cmd_list(args) -> int:
    from fusion.cliutil import print_json
    from fusion.zoo.stats import fmt_count
    data = rows(args.small)
    if args.json:
        print_json(data)
        return 0
    print(f"{'name':<16} {'task':<27} {'params':>7} {'FLOPs':>7} {'nodes':>6}  {'exporter':<8} inputs")
    for r in data:
        if not r["available"]:
            print(f"{r['name']:<16} {r['task']:<27} (not exported yet)")
            continue
        ins = ", ".join(f"{i['name']}[{'x'.join(str(d) for d in i['shape'])}]" for i in r["inputs"])
        exp = r["exporter"].split(" ")[0]
        print(f"{r['name']:<16} {r['task']:<27} {fmt_count(r['params']):>7} {fmt_count(r['flops']):>7} "
              f"{r['nodes']:>6}  {exp:<8} {ins}")
    return 0


def cmd_export(args) -> int:
    import onnx
    from fusion import zoo
    name, small = _name(args.name, args.small)
    m = zoo.load(name, small)
    out = args.output
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise FusionError(f"{out}: folder {d} does not exist; create it or choose another -o path")
    if m.ByteSize() > 2_000_000_000:  # protobuf's 2 GB limit: weights go to a side file
        onnx.save_model(m, out, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(out) + ".data")
    else:
        onnx.save_model(m, out)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, {len(m.graph.node)} nodes, "
          f"zoo:{name}{':small' if small else ''})")
    return 0


def cmd_check(args) -> int:
    from fusion.cliutil import print_json
    from fusion.zoo import registry
    from fusion.zoo.check import check
    specs = args.names or registry.NAMES
    results, ok = [], True
    for spec in specs:
        name, small = _name(spec, args.small)
        r = check(name, small, seed=args.seed, reference=not args.no_reference, activations=args.activations)
        results.append(r)
        ok &= r.ok
        if not args.json:
            status = "PASS" if r.ok else "FAIL"
            cmp = r.compare["text"].splitlines()[0] if r.compare else ("skipped" if args.no_reference else "")
            pins = f" ({len(r.pinned)} near-tie decision(s) follow onnxruntime)" if r.ok and r.pinned else ""
            print(f"{status} {r.name}: {cmp}{pins}{'; ' + r.error if r.error else ''}")
            for p in r.pinned:
                print(f"  pinned: {p}")
            for p in r.unpinned:
                print(f"  not pinned: {p}")
            for h in r.health:
                print(f"  health: {h}")
            for k, s in r.outputs.items():
                rng = f" range [{s['min']:.4g}, {s['max']:.4g}] std {s['std']:.4g}" if "min" in s else ""
                print(f"  {k}: {s['dtype']}{s['shape']}{rng}")
            sys.stdout.flush()
    if args.json:
        print_json([r.to_json() for r in results])
    return 0 if ok else 1
