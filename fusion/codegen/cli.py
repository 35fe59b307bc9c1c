"""`fusion compile`, `fusion run`, `fusion bench`, `fusion eval`, `fusion targets`."""
from __future__ import annotations

import os
import sys

from fusion.cliutil import Progress, add_model_arguments, load_model, print_json


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile a model to a native library (model.c, model.h, weights.bin, "
                                       "libmodel.so, report.json, USAGE.md)")
    add_model_arguments(p)
    _common(p)
    p.add_argument("-o", "--output", default="build", metavar="DIR", help="output directory (default: build)")
    p.add_argument("--emit", default="so,c", metavar="KINDS",
                   help="what to write, comma-separated (default so,c): so = libmodel.so + model.h + weights.bin "
                        "+ USAGE.md + JNI glue; c = model.c and everything to rebuild it (CMakeLists.txt, no "
                        "compiler needed); llvm, asm, obj = the LLVM backend's model.ll / model.s / model.o "
                        "(own weights.bin and layout.json; not combinable with so/c)")
    p.add_argument("--api-level", type=int, default=None, metavar="N",
                   help="android-arm64: the lowest Android API level the library must load on (default 24)")
    p.add_argument("--jni-class", default=None, metavar="PKG.CLASS",
                   help="the Java/Kotlin class the generated JNI glue binds to (default com.example.fusion.FusionModel)")
    p.add_argument("--json", action="store_true", help="print report.json")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="compile for this machine, run on seeded random inputs, compare with onnxruntime")
    add_model_arguments(p)
    _common(p)
    p.add_argument("--check", action="store_true", help="compare every output with onnxruntime (optimizations off)")
    p.add_argument("--seed", type=int, default=0, help="random input seed (default 0)")
    p.add_argument("--json", action="store_true", help='machine-readable: {"ok", "max_abs_err", "max_rel_err", ...}')
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="latency of the compiled model against onnxruntime (ORT_ENABLE_ALL)")
    add_model_arguments(p)
    _common(p)
    p.add_argument("--runs", type=int, default=20, help="timed runs of each (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--no-memory", action="store_true", help="skip measuring peak memory (two extra processes)")
    p.add_argument("--backend", choices=["c", "llvm"], default="c",
                   help="c (default) or llvm: the LLVM JIT beside the C backend and onnxruntime")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="the reference models: fusion, speed and accuracy against onnxruntime, one table")
    p.add_argument("--small", action="store_true", help="the zoo's small variants (quick)")
    p.add_argument("--models", help="comma-separated zoo names (default: all 15)")
    p.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default 2)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per model (default 10)")
    p.add_argument("-o", "--output", default="eval", metavar="DIR",
                   help="where eval.md, eval.csv and eval.svg go (default: eval/)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("targets", help="the targets fusion knows (vector width, cores, limits)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_targets)


def _common(p) -> None:
    p.add_argument("--target", default="host",
                   help="host (default), linux-arm64 (runs under qemu), android-arm64 (build only), "
                        "opencl (the OpenCL device present), android-arm64-gpu (build only); see `fusion targets`")
    p.add_argument("--fp16", action="store_true", help="GPU targets: half-precision storage (and arithmetic "
                                                        "where the device has cl_khr_fp16)")
    p.add_argument("--threads", type=int, default=None, help="threads at run time (default: one per core)")
    p.add_argument("--no-rewrite", action="store_true", help="skip fusion.rewrite (compile the graph as imported)")


class BlockProgress:
    """Progress over the blocks being generated (known only after planning)."""

    def __init__(self, label: str):
        self.label, self.p = label, None

    def start(self, total: int) -> None:
        self.p = Progress(total, self.label)

    def step(self, what: str = "") -> None:
        if self.p is not None:
            self.p.step(what)

    def done(self, msg: str = "") -> None:
        if self.p is not None:
            self.p.done(msg)


def compile_args(args, graph, out_dir=None, target=None, use_cache: bool = True):
    from fusion.codegen.driver import compile as fz_compile
    prog = BlockProgress(f"compiling {args.model}")
    mod = fz_compile(graph, target=target or args.target, threads=args.threads, out_dir=out_dir,
                     rewrite=not args.no_rewrite, progress=prog, use_cache=use_cache)
    prog.done(f"{mod.report['compile_seconds']['total']:.2f} s")
    return mod


def _bytes(n: int) -> str:
    for unit, k in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n} B"


def summary_lines(rep: dict) -> list[str]:
    classes = ", ".join(f"{k} {v}" for k, v in sorted(rep["blocks_by_class"].items()))
    refused = ", ".join(f"{k} {v}" for k, v in sorted(rep["refusals_by_reason"].items())) or "none"
    s = rep["compile_seconds"]
    m = rep["peak_memory"]
    lines = [f"{rep['model']}: {rep['nodes']} nodes -> {rep['blocks']} blocks (fusion rate {rep['fusion_rate']:.2f}); "
             f"blocks by class: {classes}",
             f"refused fusions by reason: {refused}",
             f"compile: {s['total']:.2f} s (plan {s['plan']:.2f}, codegen {s['codegen']:.2f}, C compiler {s['cc']:.2f}"
             f"{', cached' if rep.get('cache_hit') else ''})",
             f"peak memory: intermediates {_bytes(m['arena_bytes'])} (without reuse {_bytes(m['arena_without_reuse_bytes'])}),"
             f" weights {_bytes(m['weights_bytes'])}"]
    lines += [f"note: {n}" for n in rep.get("notes", [])]
    return lines


def gpu_target(args):
    """The Target when --target names a GPU (OpenCL) target, else None."""
    from fusion.targets import get_target
    t = get_target(args.target)
    return t if t.kind == "gpu" else None


EMIT_C, EMIT_LLVM = ("so", "c"), ("llvm", "asm", "obj")


def parse_emit(text: str) -> list[str]:
    from fusion.errors import FusionError
    kinds = [k.strip() for k in (text or "").split(",") if k.strip()]
    bad = [k for k in kinds if k not in EMIT_C + EMIT_LLVM]
    if bad or not kinds:
        raise FusionError(f"--emit {text!r}: choose from so, c, llvm, asm, obj (comma-separated)")
    if any(k in EMIT_C for k in kinds) and any(k in EMIT_LLVM for k in kinds):
        raise FusionError(f"--emit {text}: {'/'.join(k for k in kinds if k in EMIT_LLVM)} come from the LLVM "
                          f"backend, whose weights.bin differs from the C library's; write them to another "
                          f"directory (a second `fusion compile --emit {','.join(k for k in kinds if k in EMIT_LLVM)} "
                          f"-o DIR2`)")
    return list(dict.fromkeys(kinds))


def compile_target(args):
    """The Target of `fusion compile`, with --api-level applied (Android targets only)."""
    from fusion.errors import FusionError
    from fusion.targets import get_target
    t = get_target(args.target)
    api = getattr(args, "api_level", None)
    if api is None:
        return t
    if t.name != "android-arm64":
        raise FusionError(f"--api-level applies to --target android-arm64 (got --target {t.name})")
    if not 21 <= api <= 40:
        raise FusionError(f"--api-level {api}: 64-bit ARM Android starts at API 21; give a level from 21 to 40")
    return get_target(t.name, api_level=api, triple=f"aarch64-linux-android{api}")


def cmd_compile(args) -> int:
    from fusion.errors import FusionError
    kinds = parse_emit(args.emit)
    if gpu_target(args) is not None:
        if kinds != ["so", "c"] or args.api_level is not None or args.jni_class is not None:
            raise FusionError(f"--target {args.target} writes model.cl and its OpenCL host library; --emit, "
                              f"--api-level and --jni-class apply to the CPU targets")
        return cmd_compile_gpu(args)
    t = compile_target(args)
    from fusion.device import android
    jni_class = args.jni_class or android.DEFAULT_JNI_CLASS
    android.check_jni_class(jni_class)   # before minutes of compiling
    g = load_model(args)
    out = os.path.abspath(args.output)
    if kinds[0] in EMIT_LLVM:
        return _compile_llvm(args, g, t, kinds, out)
    opaque: list[str] = []
    if "so" in kinds:
        # The cache keys of fusion.codegen.build do not include the API level: bypass them for non-default levels.
        mod = compile_args(args, g, out_dir=out, target=t, use_cache=args.api_level in (None, 24))
        report = mod.report
        if "c" in kinds:
            from fusion.codegen.driver import copy_opaque_sources
            opaque = copy_opaque_sources(*mod.opaque_sources, out)
        else:
            for f in ("model.c", "fz_runtime.h"):
                if os.path.exists(os.path.join(out, f)):
                    os.remove(os.path.join(out, f))
    else:
        from fusion.codegen.driver import emit_sources
        prog = BlockProgress(f"generating C for {args.model}")
        report = emit_sources(g, t, out, rewrite=not args.no_rewrite, progress=prog)
        prog.done(f"{report['compile_seconds']['total']:.2f} s")
        opaque = sorted(f"opaque/{f}" for f in os.listdir(os.path.join(out, "opaque")) if f.endswith(".c")) \
            if os.path.isdir(os.path.join(out, "opaque")) else []
    files = [f for f in ("libmodel.so", "model.h", "weights.bin", "model.c", "fz_runtime.h", "report.json")
             if os.path.exists(os.path.join(out, f))]
    if "c" in kinds:
        files += android.write_build_files(out, t, opaque)
    # The user's name for the model (exporters often call every graph "main_graph").
    shown = dict(report, model=args.model if args.model.startswith("zoo:") else os.path.basename(args.model))
    files += android.write_jni(out, shown, t, jni_class)
    android.write_usage(out, shown, t, files, jni_class, opaque)
    files.append("USAGE.md")
    if opaque:
        files.append("opaque/")
    report = dict(report, files=files, emit=kinds, api_level=t.api_level or None)
    if args.json:
        print_json(report)
        return 0
    for line in summary_lines(report):
        print(line)
    print(f"wrote {out}/: {', '.join(files)}")
    return 0


def _compile_llvm(args, g, t, kinds, out) -> int:
    import json
    from fusion.codegen.llvm.emitobj import emit_kinds
    from fusion.device import android
    outs = emit_kinds(g, t, kinds, out_dir=out, rewrite=not args.no_rewrite)
    with open(os.path.join(out, "layout.json")) as f:
        layout = json.load(f)
    layout["model"] = args.model if args.model.startswith("zoo:") else os.path.basename(args.model)
    android.write_llvm_usage(out, t, layout, kinds)
    names = {"llvm": "model.ll", "asm": "model.s", "obj": "model.o"}
    files = [names[k] for k in kinds] + ["weights.bin", "layout.json", "USAGE.md"]
    if args.json:
        print_json({"target": t.name, "triple": t.triple, "emit": kinds, "files": files,
                    "bytes": {names[k]: len(v) for k, v in outs.items()}, "arena_bytes": layout["arena_bytes"]})
        return 0
    print(f"{g.name}: LLVM backend for {t.name} ({t.triple}): " +
          ", ".join(f"{names[k]} {len(v):,} bytes" for k, v in outs.items()))
    print(f"wrote {out}/: {', '.join(files)}")
    return 0


def oracle_source(spec: str, graph):
    """What onnxruntime runs: the user's own file (or the zoo's ONNX), not our re-export."""
    if os.path.isfile(spec):
        return spec
    if spec.startswith("zoo:"):
        try:
            from fusion import zoo
            return zoo.resolve(spec)
        except Exception:
            return graph
    return graph


def cmd_compile_gpu(args) -> int:
    from fusion.codegen.opencl import android
    g = load_model(args)
    out = os.path.abspath(args.output)
    lib_target = "android-arm64-gpu" if args.target == "android-arm64-gpu" else "host"
    art = android.build(g, out, target=lib_target, fp16=args.fp16)
    if args.json:
        print_json(art.report)
        return 0
    r = art.report
    print(f"{r['model']}: {r['nodes']} nodes -> {r['blocks']} blocks -> {r['kernels']} OpenCL kernels "
          f"(target {r['target']}, host library for {r['library_target']}); max kernel args {r['max_kernel_args']}")
    print(f"wrote {out}/: model.cl, fz_cl_host.c, weights.bin, libmodel.so, report.json")
    return 0


def cmd_run_gpu(args) -> int:
    from fusion.codegen.opencl import tools
    if args.target == "android-arm64-gpu":
        from fusion.errors import FusionError
        raise FusionError("android-arm64-gpu builds a library for a phone; it cannot run here. Use "
                          "`fusion compile --target android-arm64-gpu -o DIR`, or --target opencl to run the same "
                          "kernels on the OpenCL device present")
    g = load_model(args)
    res = tools.run_check(g, args.target, check=args.check, fp16=args.fp16, seed=args.seed)
    if args.json:
        print_json(res.get("check", {}) | {k: v for k, v in res.items() if k != "check"})
    else:
        dev = res.get("device", {})
        print(f"{res['model']}: {res['nodes']} nodes -> {res['blocks']} blocks -> {res['kernels']} OpenCL kernels, "
              f"{res['launches']} launches, {len(res.get('host_steps') or [])} host steps "
              f"(device: {dev.get('name', '?') if isinstance(dev, dict) else dev})")
        print(f"compile: {res['compile_seconds']:.2f} s; run {res['run_seconds']:.3f} s")
        if args.check:
            print(res["check"]["report"])
    return 0 if not args.check or res["check"]["ok"] else 1


def cmd_run(args) -> int:
    from fusion.oracle import compare, random_inputs, run_onnxruntime
    if gpu_target(args) is not None:
        return cmd_run_gpu(args)
    g = load_model(args)
    feeds = random_inputs(g, seed=args.seed)
    src = oracle_source(args.model, g)
    expected = run_onnxruntime(src, feeds) if args.check else None
    mod = compile_args(args, g)
    got = mod.run(feeds)
    rep = mod.report
    if not args.check:
        if args.json:
            print_json({"report": rep, "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                                   for k, v in got.items()}})
        else:
            for line in summary_lines(rep):
                print(line)
            for k, v in got.items():
                print(f"output {k}: {v.dtype} {list(v.shape)}")
        return 0
    result = compare(got, expected)
    tie = None
    if not result.ok:
        # a detector's discrete decisions (a box corner within float noise of an integer
        # pixel) may legally differ: explained only if the compiled outputs are the
        # reference semantics and the reference matches onnxruntime with the decision pinned
        from fusion.zoo.pin import explain_near_ties
        tie = explain_near_ties(src, feeds, got)
    ok = result.ok or tie.ok
    if args.json:
        extra = {} if tie is None else {"ok": ok, "near_tie": {"explained": tie.ok, "lines": tie.lines()}}
        print_json(result.to_json() | extra | {"nodes": rep["nodes"], "blocks": rep["blocks"],
                                       "blocks_by_class": rep["blocks_by_class"],
                                       "refusals_by_reason": rep["refusals_by_reason"],
                                       "compile_seconds": rep["compile_seconds"]["total"],
                                       "peak_memory_bytes": rep["peak_memory"]["arena_bytes"]})
    else:
        for line in summary_lines(rep):
            print(line)
        print(str(result))
        for line in tie.lines() if tie is not None else ():
            print(line)
        if tie is not None and tie.ok:
            print("PASS (near-tie): the differences above come from the pinned decisions only")
    return 0 if ok else 1


def cmd_bench(args) -> int:
    from fusion.codegen.bench import bench_model, format_bench
    if args.backend == "llvm":
        from fusion.codegen.llvm.bench import bench as llvm_bench
        from fusion.cliutil import parse_shape_flags
        res = llvm_bench(args.model, threads=args.threads or 1, runs=args.runs,
                         shapes=parse_shape_flags(getattr(args, "shape", None)) or None)
        if args.json:
            print_json(res)
        else:
            print(f"{res['model']}, {res['threads']} thread(s), median of {res['runs']}: onnxruntime "
                  f"{res['onnxruntime_ms']} ms | llvm JIT {res['llvm_ms']} ms ({'matches' if res['llvm_ok'] else 'DIFFERS'})"
                  + (f" | C {res['c_ms']} ms ({'matches' if res['c_ok'] else 'DIFFERS'})" if 'c_ms' in res else
                     f" | C: {res.get('c_error', '-')}") + f" (alternated; load average {res['load_average']})")
        return 0
    if gpu_target(args) is not None:
        from fusion.codegen.opencl import tools
        res = tools.bench(load_model(args), args.target, runs=args.runs, warmup=args.warmup,
                          threads=args.threads or 1, fp16=args.fp16)
        if args.json:
            print_json(res)
        else:
            for k, v in res.items():
                print(f"{k}: {v}")
        return 0
    g = load_model(args)
    res = bench_model(args.model, g, threads=args.threads, runs=args.runs, warmup=args.warmup,
                      rewrite=not args.no_rewrite, memory=not args.no_memory, shapes=getattr(args, "shape", None))
    if args.json:
        print_json(res)
    else:
        print(format_bench(res))
    return 0


def cmd_eval(args) -> int:
    from fusion.codegen.evaluate import run_eval
    names = [m.strip() for m in args.models.split(",")] if args.models else None
    rows, paths = run_eval(names, small=args.small, threads=args.threads, runs=args.runs, out_dir=args.output)
    if args.json:
        print_json({"rows": rows, "files": paths})
    else:
        with open(paths["md"]) as f:
            sys.stdout.write(f.read())
        print(f"\nwrote {', '.join(paths.values())}")
    return 0 if all(r.get("ok") for r in rows) else 1


def cmd_targets(args) -> int:
    from fusion.targets import get_target, names
    ts = [get_target(n) for n in names()]
    if args.json:
        print_json([t.to_json() for t in ts])
        return 0
    print(f"{'name':<20} {'kind':<4} {'arch':<8} {'vector':>6} {'cores':>5} {'L1':>7} {'L2':>8} {'max args':>8}  doc")
    for t in ts:
        print(f"{t.name:<20} {t.kind:<4} {t.arch:<8} {t.vector_bits:>6} {t.cores:>5} {t.l1_bytes // 1024:>6}K "
              f"{t.l2_bytes // 1024:>7}K {t.max_kernel_args or '-':>8}  {t.doc}")
    return 0

