"""`fusion llvm`: the LLVM backend from the command line.

    fusion llvm model.onnx --check                          # JIT on this machine, compare with onnxruntime
    fusion llvm model.onnx --target linux-arm64 --check     # AArch64 object under qemu-aarch64
    fusion llvm model.onnx --target android-arm64 --emit obj -o build/   # model.o, weights.bin, layout.json
"""
from __future__ import annotations

import os

from fusion.cliutil import add_model_arguments, load_model, print_json


def register(sub) -> None:
    p = sub.add_parser("llvm", help="the LLVM backend: JIT-run a model here, or emit LLVM IR / assembly / an "
                                    "object for a CPU target")
    add_model_arguments(p)
    p.add_argument("--target", default="host", help="host, linux-arm64 or android-arm64 (default host)")
    p.add_argument("--emit", choices=["run", "llvm", "asm", "obj"], default="run",
                   help="run (default: JIT on host, qemu for linux-arm64) or write model.ll / model.s / model.o")
    p.add_argument("-o", "--output", default="build-llvm", metavar="DIR", help="where --emit writes (default build-llvm)")
    p.add_argument("--threads", type=int, default=None, help="threads at run time (default: one per core)")
    p.add_argument("--check", action="store_true", help="compare every output with onnxruntime")
    p.add_argument("--seed", type=int, default=0, help="random input seed (default 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_llvm)


def cmd_llvm(args) -> int:
    from fusion.codegen import llvm
    g = load_model(args)
    if args.emit != "run":
        out = llvm.emit(g, args.target, args.emit, out_dir=args.output)
        path = os.path.join(args.output, {"llvm": "model.ll", "asm": "model.s", "obj": "model.o"}[args.emit])
        info = {"target": args.target, "file": path, "bytes": len(out), "weights": os.path.join(args.output, "weights.bin"),
                "layout": os.path.join(args.output, "layout.json")}
        if args.json:
            print_json(info)
        else:
            print(f"wrote {path} ({len(out)} bytes), weights.bin and layout.json for {args.target}")
        return 0
    from fusion.oracle import compare, random_inputs, run_onnxruntime
    feeds = random_inputs(g, seed=args.seed)
    if args.target == "host":
        mod = llvm.compile(g, threads=args.threads)
        outs = mod.run(feeds)
        scheds = [b["schedule"] for b in mod.report["block_schedules"]]
        mod.close()
        what = (f"llvm JIT: {len(scheds)} kernels ({sum('SIMD lanes' in s for s in scheds)} with SIMD lanes), "
                f"{mod.threads} threads")
    else:
        from fusion.codegen.llvm.crossrun import run_object
        outs = run_object(g, feeds, args.target, threads=args.threads or 1)
        what = f"llvm {args.target} object under qemu"
    result = {"backend": "llvm", "target": args.target, "outputs": {k: list(v.shape) for k, v in outs.items()}}
    if args.check:
        rep = compare(outs, run_onnxruntime(g, feeds))
        result.update(rep.to_json())
    if args.json:
        print_json(result)
    else:
        print(what)
        for k, v in outs.items():
            print(f"  {k}: {v.dtype} {list(v.shape)}")
        if args.check:
            print(str(rep))
    return 0 if not args.check or result["ok"] else 1
