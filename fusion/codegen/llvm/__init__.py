"""The LLVM backend (llvmlite): the loop-nest programs of fusion/codegen
printed as LLVM IR, optimized by LLVM's O3 pipeline, then either JIT-compiled
on this machine or emitted as object code / assembly for any CPU target.

    mod = fusion.codegen.llvm.compile("model.onnx")       # host JIT, no C compiler needed
    outs = mod.run({"input": x}); mod.close()
    obj = fusion.codegen.llvm.emit("model.onnx", "android-arm64", "obj")   # AArch64 ELF relocatable

See docs/llvm.md.
"""
from __future__ import annotations


def compile(model, target: str = "host", threads: int | None = None, **kwargs):
    """JIT-compile a model for this machine: an object with .run(feeds) -> dict and .close()."""
    from fusion.codegen.llvm.jit import compile as _compile
    return _compile(model, target=target, threads=threads, **kwargs)


def emit(model, target: str = "host", kind: str = "obj", out_dir: str | None = None, **kwargs):
    """LLVM IR text (kind 'llvm'), assembly text ('asm') or object bytes ('obj') for a CPU target."""
    from fusion.codegen.llvm.emitobj import emit as _emit
    return _emit(model, target=target, kind=kind, out_dir=out_dir, **kwargs)


__all__ = ["compile", "emit"]


def run_jit(graph, feeds: dict) -> dict:
    """The ONNX backend's "llvm" executor: JIT-compile for the host, run once."""
    mod = compile(graph, threads=1, profile_db=False)
    try:
        return mod.run(feeds)
    finally:
        mod.close()
