"""Fused code generation: planned blocks -> loop nests -> C -> native library.

    mod = fusion.codegen.compile("model.onnx", target="host")
    outputs = mod.run({"input": x})
"""
from __future__ import annotations


def compile(model, target: str = "host", threads=None, **kwargs):
    """Compile a Graph, an ONNX path, or 'zoo:NAME[:small]' into a runnable CompiledModel."""
    from fusion.targets import Target, get_target
    t = target if isinstance(target, Target) else get_target(target)
    if t.kind == "gpu" and t.os != "android":
        # GPU targets print the same loop nests as OpenCL kernels (fusion/codegen/opencl).
        from fusion.codegen import opencl
        return opencl.compile(model, t, **kwargs)
    from fusion.codegen.driver import compile as _compile
    return _compile(model, target=target, threads=threads, **kwargs)


__all__ = ["compile"]


def run_compiled(graph, feeds: dict) -> dict:
    """The ONNX backend's "compiled" executor: compile for the host, run once.
    Tiny test graphs: -O1 builds several times faster and checks the same code."""
    mod = compile(graph, target="host", threads=1, profile_db=False, cflags=["-O1"])
    try:
        return mod.run(feeds)
    finally:
        mod.close()
