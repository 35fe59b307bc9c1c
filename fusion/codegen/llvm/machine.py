"""LLVM target machines from fusion's target descriptions, the O3 pipeline,
and object/assembly emission (llvmlite.binding)."""
from __future__ import annotations

import functools

import llvmlite.binding as llvm

from fusion.errors import FusionError
from fusion.targets import Target, get_target


@functools.cache
def _init() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def target_machine(target: Target | str, jit: bool = False) -> llvm.TargetMachine:
    """host: this CPU and all its features; others: the description's triple, CPU and features."""
    _init()
    t = target if isinstance(target, Target) else get_target(target)
    if t.kind != "cpu":
        raise FusionError(f"target '{t.name}' is a GPU target; the LLVM backend emits CPU code "
                          f"(host, linux-arm64, android-arm64)")
    if t.name == "host":
        triple = llvm.get_process_triple()
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    elif t.arch == "aarch64":
        # ARMv8.0-A, as the C backend's cross builds (fusion/device/cross.py): arm64-v8a devices
        # need not have the v8.1/v8.2 extensions (LSE atomics, dot product) the target's cpu has.
        triple, cpu = t.triple, "generic"
        features = ",".join(f for f in t.features.split(",") if f in ("+neon", "+fp-armv8")) or "+neon,+fp-armv8"
    else:
        triple, cpu, features = t.triple, t.cpu, t.features
    try:
        tgt = llvm.Target.from_triple(triple)
    except RuntimeError as e:
        raise FusionError(f"LLVM in this llvmlite cannot generate code for '{triple}' ({e})") from None
    # PIC: the objects go into shared libraries (libmodel.so on Android).
    return tgt.create_target_machine(cpu=cpu, features=features, opt=3, reloc="pic",
                                     codemodel="jitdefault" if jit else "default")


def optimize(mod: llvm.ModuleRef, tm: llvm.TargetMachine, level: int = 3) -> None:
    """LLVM's new pass manager at -O3 with loop and SLP vectorization on."""
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pto.loop_interleaving = True
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    pm.run(mod, pb)


def parse(ir_text: str, tm: llvm.TargetMachine) -> llvm.ModuleRef:
    _init()
    mod = llvm.parse_assembly(ir_text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    return mod
