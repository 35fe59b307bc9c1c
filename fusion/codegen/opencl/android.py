"""android-arm64-gpu: the OpenCL kernels plus a C host library for ARM64.

    art = build("model.onnx", "build/gpu")     # model.cl, fz_cl_host.c, weights.bin, libmodel.so, report.json

libmodel.so is cross-compiled with fusion/toolchain.py (clang + lld, stub
bionic libs) and has the CPU library's C interface; on the phone it opens the
vendor's libOpenCL.so at model_create. It cannot run here (no ARM GPU); the
same host file built for this machine (`build(..., target="host")`) runs on
PoCL in the tests.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from fusion.targets import get_target


@dataclass
class GPUArtifact:
    out_dir: str
    library: str
    weights: str
    kernels: str
    host_source: str
    kernel_count: int
    report: dict


def build(model, out_dir: str, target: str = "android-arm64-gpu", *, fp16: bool = False, **kwargs) -> GPUArtifact:
    """Write the kernels and the C host, and build the host library: for
    ARM64 Android (target android-arm64-gpu) or this machine (target "host",
    planned with the opencl target's limits)."""
    from fusion.codegen.opencl import build_program
    from fusion.codegen.opencl.chost import host_source
    from fusion.toolchain import compile_shared
    gpu = get_target("android-arm64-gpu" if target in ("android-arm64-gpu", "android") else "opencl")
    graph, plan, prog, _ = build_program(model, gpu, fp16=fp16, **kwargs)
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f) for k, f in
             (("cl", "model.cl"), ("c", "fz_cl_host.c"), ("w", "weights.bin"), ("so", "libmodel.so"))}
    src = host_source(prog, gpu.max_work_group)
    with open(paths["cl"], "w") as f:
        f.write(prog.source)
    with open(paths["c"], "w") as f:
        f.write(src)
    with open(paths["w"], "wb") as f:
        f.write(prog.weights)
    if os.path.exists(paths["w"] + ".clbin"):
        os.remove(paths["w"] + ".clbin")   # a binary of an older build
    lib_target = "android-arm64" if gpu.name == "android-arm64-gpu" else "host"
    res = compile_shared([paths["c"]], paths["so"], lib_target, extra_flags=["-O2"], libs=["-ldl"])
    kernels = sum(1 for s in prog.steps if hasattr(s, "storages"))
    report = {"model": graph.name, "target": gpu.name, "library_target": lib_target, "nodes": len(graph.nodes),
              "blocks": len(plan.blocks), "kernels": kernels, "arena_bytes": prog.arena_bytes,
              "weights_bytes": len(prog.weights), "max_kernel_args": prog.kernel_args_max,
              "cc_seconds": round(res.seconds, 3),
              "inputs": [{"name": v.name, "dtype": v.dtype.name, "shape": [int(d) for d in v.shape]}
                         for v in prog.inputs],
              "outputs": [{"name": v.name, "dtype": v.dtype.name, "shape": [int(d) for d in v.shape]}
                          for v in prog.outputs]}
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return GPUArtifact(out_dir, paths["so"], paths["w"], paths["cl"], paths["c"], kernels, report)


class HostLibrary:
    """The C host library built for this machine, loaded with ctypes (tests)."""

    def __init__(self, art: GPUArtifact):
        import ctypes
        from fusion.errors import FusionError
        self.art = art
        lib = ctypes.CDLL(os.path.abspath(art.library))
        lib.model_create.restype = ctypes.c_void_p
        lib.model_create.argtypes = [ctypes.c_char_p]
        lib.model_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.model_destroy.argtypes = [ctypes.c_void_p]
        lib.model_last_error.restype = ctypes.c_char_p
        self._lib = lib
        self._ctx = lib.model_create(os.path.abspath(art.weights).encode())
        if not self._ctx:
            raise FusionError(f"cannot load the OpenCL model: {lib.model_last_error().decode()}")

    def run(self, feeds: dict) -> dict:
        import ctypes
        import numpy as np
        from fusion.errors import FusionError
        ins = [np.ascontiguousarray(feeds[d["name"]], dtype=d["dtype"]) for d in self.art.report["inputs"]]
        outs = [np.empty(d["shape"], d["dtype"]) for d in self.art.report["outputs"]]
        ip = (ctypes.c_void_p * max(len(ins), 1))(*[a.ctypes.data for a in ins])
        op = (ctypes.c_void_p * max(len(outs), 1))(*[a.ctypes.data for a in outs])
        if self._lib.model_run(self._ctx, ip, op) != 0:
            raise FusionError(f"the OpenCL model failed: {self._lib.model_last_error().decode()}")
        return {d["name"]: a for d, a in zip(self.art.report["outputs"], outs)}

    def close(self) -> None:
        if self._ctx:
            self._lib.model_destroy(self._ctx)
            self._ctx = None
