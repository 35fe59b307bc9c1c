"""The OpenCL backend: fused blocks as OpenCL kernels for mobile GPUs.

    mod = fusion.codegen.opencl.compile("zoo:tinybert:small")   # target "opencl"
    outs = mod.run(feeds); mod.kernel_count; mod.launches; mod.close()

Pieces: clprint (loop nest -> __kernel), gemm (local-memory tiled GEMM for
MatMul/Gemm anchors), program (blocks -> kernels + host steps + memory plan),
runtime (pyopencl host), android (the .cl source plus a C host library for
android-arm64-gpu). docs/opencl.md explains the choices.
"""
from __future__ import annotations

import time


def build_program(model, target="opencl", *, fp16: bool = False, fp16_arith: bool = False, plan=None,
                  rewrite: bool = True, profile_db=False, shapes=None, tiled_gemm: bool = True):
    """Graph/ONNX/zoo name -> (graph, plan, Program, emitter)."""
    from fusion.targets import Target, get_target
    from fusion.codegen.driver import planned_graph
    from fusion.codegen.opencl.program import OpenCLEmitter
    from fusion.errors import FusionError
    t = target if isinstance(target, Target) else get_target(target)
    if t.kind != "gpu":
        raise FusionError(f"target '{t.name}' is a CPU target; the OpenCL backend builds for opencl or "
                          f"android-arm64-gpu")
    graph, plan = planned_graph(model, t, plan, rewrite=rewrite, profile_db=profile_db, shapes=shapes)
    em = OpenCLEmitter(graph, plan, t, fp16=fp16, tiled_gemm=tiled_gemm)
    prog = em.program(max_kernel_args=t.max_kernel_args, fp16_arith=fp16_arith)
    return graph, plan, prog, em


def compile(model, target="opencl", *, fp16: bool = False, device=None, profile: bool = False,
            tiled_gemm: bool | None = None, **kwargs):
    """Compile for the OpenCL device present here -> OpenCLModel (.run, .close,
    .kernel_count, .launches). target "android-arm64-gpu": use android.build.

    tiled_gemm: local-memory tiles for MatMul/Gemm/Conv; default on for GPUs,
    off for CPU devices (PoCL), where __local is ordinary memory and the
    barriers cost more than the reuse gains (measured: docs/opencl.md)."""
    from fusion.targets import Target, get_target
    from fusion.errors import FusionError
    from fusion.codegen.opencl.runtime import OpenCLModel, device_info, find_device
    t = target if isinstance(target, Target) else get_target(target)
    if t.name == "android-arm64-gpu":
        raise FusionError("android-arm64-gpu builds an ARM64 library that cannot run here; use "
                          "fusion.codegen.opencl.android.build(model, out_dir)")
    t0 = time.perf_counter()
    dev = device or find_device()
    info = device_info(dev)
    fp16_arith = fp16 and info["fp16"]
    if tiled_gemm is None:
        tiled_gemm = info["type"] != "cpu"
    graph, plan, prog, _ = build_program(model, t, fp16=fp16, fp16_arith=fp16_arith, tiled_gemm=tiled_gemm,
                                         **kwargs)
    mod = OpenCLModel(prog, t, dev, profile=profile)
    mod.plan, mod.graph = plan, graph
    mod.report = {"model": graph.name, "target": t.name, "device": mod.info, "nodes": len(graph.nodes),
                  "blocks": len(plan.blocks), "kernels": mod.kernel_count, "host_steps": mod.host_steps,
                  "arena_bytes": prog.arena_bytes, "arena_without_reuse_bytes": prog.naive_arena_bytes,
                  "weights_bytes": len(prog.weights), "max_kernel_args": prog.kernel_args_max,
                  "fp16": fp16, "tiled_gemm": tiled_gemm, "compile_seconds": round(time.perf_counter() - t0, 3)}
    return mod


__all__ = ["compile", "build_program"]
