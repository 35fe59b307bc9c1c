"""Ahead-of-time output of the LLVM backend: IR, assembly or an ELF object for
any CPU target (host, linux-arm64, android-arm64).

The object exports, with C linkage,

    void fz_model_run(const void *const *inputs, void *const *outputs,
                      const char *weights, char *arena, int64_t *dyn);
    int  fz_set_threads(int n);

`weights` is weights.bin (written next to it with out_dir), `arena` a
64-byte-aligned scratch buffer of `arena_bytes` (layout.json), `dyn` the
run-time dims (their bounds, in layout.json's order). It needs libm and
pthreads at link time; nothing else.
"""
from __future__ import annotations

import json
import os

from fusion.errors import UnsupportedOpError
from fusion.targets import Target, get_target
from fusion.codegen.llvm import machine
from fusion.codegen.llvm.model import HostStep, Program, build_program

KINDS = ("llvm", "asm", "obj")


def emit(model, target: str | Target = "host", kind: str = "obj", out_dir: str | None = None, **kwargs):
    return emit_kinds(model, target, [kind], out_dir, **kwargs)[kind]


def emit_kinds(model, target: str | Target = "host", kinds=("obj",), out_dir: str | None = None, **kwargs) -> dict:
    """Several of llvm/asm/obj from one program build and one O3 run: kind -> text or bytes."""
    for kind in kinds:
        if kind not in KINDS:
            raise UnsupportedOpError(f"--emit {kind}: the LLVM backend writes one of {', '.join(KINDS)}")
    t = target if isinstance(target, Target) else get_target(target)
    tm = machine.target_machine(t)   # refuses GPU targets before any work
    prog, _ = build_program(model, t, **kwargs)
    host = [s for s in prog.steps if isinstance(s, HostStep)]
    if host:
        node = host[0].block.nodes[0]
        raise UnsupportedOpError(f"{node.label()}: op '{node.op}' runs as a host step (numpy) in the LLVM backend, "
                                 f"which an object file cannot carry; build this model with the C backend "
                                 f"(fusion compile --target {t.name} --emit so)")
    mod = machine.parse(prog.ir_text, tm)
    machine.optimize(mod, tm)
    outs = {}
    for kind in kinds:
        if kind == "llvm":
            outs[kind] = str(mod)
        elif kind == "asm":
            outs[kind] = tm.emit_assembly(mod)
        else:
            outs[kind] = tm.emit_object(mod)
        if out_dir is not None:
            write(out_dir, prog, t, kind, outs[kind])
    return outs


def write(out_dir: str, prog: Program, t: Target, kind: str, out) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, {"llvm": "model.ll", "asm": "model.s", "obj": "model.o"}[kind])
    with open(path, "wb" if kind == "obj" else "w") as f:
        f.write(out)
    with open(os.path.join(out_dir, "weights.bin"), "wb") as f:
        f.write(prog.weights)
    layout = {"target": t.name, "triple": t.triple, "entry": "fz_model_run", "arena_bytes": prog.arena_bytes,
              "weights_bytes": len(prog.weights), "dyn": dict(zip(prog.dyn_names, prog.dyn_bounds)),
              "inputs": [s.to_json() for s in prog.inputs], "outputs": [s.to_json() for s in prog.outputs],
              "blocks": prog.blocks}
    with open(os.path.join(out_dir, "layout.json"), "w") as f:
        json.dump(layout, f, indent=2)
    return path
