"""The host JIT: a Program compiled in-process by llvmlite's MCJIT and run
through ctypes. No C compiler is needed on the machine."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time

import llvmlite.binding as llvm
import numpy as np

from fusion.errors import FusionError
from fusion.codegen.llvm import machine
from fusion.codegen.llvm.model import HostStep, Program, Segment, build_program

_SEG = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_SET_THREADS = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)
_SHUTDOWN = ctypes.CFUNCTYPE(None)


@functools.cache
def _load_libs() -> None:
    # The generated code calls libm (expf, erff...) and pthreads; make sure the
    # JIT's symbol resolver (dlsym on the process) can see them.
    # libgcc_s: LLVM's code calls its helpers for some conversions (__truncdfhf2: double -> half).
    for name in ("m", "pthread", "gcc_s"):
        path = ctypes.util.find_library(name)
        if path:
            try:
                llvm.load_library_permanently(path)
            except RuntimeError:
                pass


def compile(model, target: str = "host", threads: int | None = None, **kwargs) -> "JITModel":
    """Compile a Graph, ONNX path or 'zoo:NAME[:small]' for this machine with LLVM; see JITModel."""
    if target != "host":
        raise FusionError(f"the LLVM JIT runs on this machine only (target 'host'); for '{target}' use "
                          f"fusion.codegen.llvm.emit(model, '{target}', 'obj')")
    t0 = time.perf_counter()
    prog, plan = build_program(model, "host", **kwargs)
    t1 = time.perf_counter()
    return JITModel(prog, plan, threads, seconds={"lower": round(t1 - t0, 3)})


class JITModel:
    """`run(feeds) -> dict` like the C path's CompiledModel; `close()` frees the engine."""

    def __init__(self, prog: Program, plan=None, threads: int | None = None, seconds: dict | None = None):
        _load_libs()
        self.program, self.plan = prog, plan
        self.inputs, self.outputs = prog.inputs, prog.outputs
        t0 = time.perf_counter()
        tm = machine.target_machine("host", jit=True)
        mod = machine.parse(prog.ir_text, tm)
        t1 = time.perf_counter()
        machine.optimize(mod, tm)
        _check_symbols(mod)
        t2 = time.perf_counter()
        self._engine = llvm.create_mcjit_compiler(mod, tm)
        self._engine.finalize_object()
        t3 = time.perf_counter()
        self.optimized_ir = str(mod)
        self._segs = {s.name: _SEG(self._engine.get_function_address(s.name))
                      for s in prog.steps if isinstance(s, Segment)}
        self._set_threads = _SET_THREADS(self._engine.get_function_address("fz_set_threads"))
        addr = self._engine.get_function_address("fz_pool_shutdown")
        self._shutdown = _SHUTDOWN(addr) if addr else (lambda: None)
        self._weights = _aligned(len(prog.weights))
        self._weights[:] = np.frombuffer(prog.weights, np.uint8)
        self._arena = _aligned(prog.arena_bytes)
        self._dyn = np.array(prog.dyn_bounds or [0], dtype=np.int64)
        self._seconds: dict[str, float] = {}
        self.threads = self.set_threads(threads)
        self.report = {"backend": "llvm", "blocks": len(prog.blocks), "kernels": len(prog.blocks),
                       "host_steps": sum(isinstance(s, HostStep) for s in prog.steps),
                       "segments": len(self._segs), "arena_bytes": prog.arena_bytes,
                       "weights_bytes": len(prog.weights),
                       "compile_seconds": dict(seconds or {}, parse=round(t1 - t0, 3), opt=round(t2 - t1, 3),
                                               codegen=round(t3 - t2, 3)),
                       "block_schedules": prog.blocks}

    def kernel_seconds(self) -> dict[str, float]:
        """Seconds per segment (per block when compiled with profile=True) over all runs so far."""
        return dict(self._seconds)

    def set_threads(self, n: int | None) -> int:
        n = int(n or os.cpu_count() or 1)
        self.threads = self._set_threads(n)
        return self.threads

    def check_feeds(self, feeds: dict) -> list[np.ndarray]:
        from fusion.codegen.driver import CompiledModel
        return CompiledModel.check_feeds(self, feeds)   # the C path's checks and messages

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        if self._engine is None:
            raise FusionError("this model was closed; compile it again")
        prog = self.program
        arrays = self.check_feeds(feeds)
        outs = [np.empty(s.shape, dtype=np.dtype(s.dtype)) for s in self.outputs]
        ins_p = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        outs_p = (ctypes.c_void_p * max(len(outs), 1))(*[o.ctypes.data for o in outs])
        self._dyn[:len(prog.dyn_bounds)] = prog.dyn_bounds
        W, M, D = self._weights.ctypes.data, self._arena.ctypes.data, self._dyn.ctypes.data
        for step in prog.steps:
            t = time.perf_counter()
            if isinstance(step, Segment):
                self._segs[step.name](ctypes.addressof(ins_p), ctypes.addressof(outs_p), W, M, D)
                key = "+".join(f.name for f in step.functions)
            else:
                self._host_step(step, arrays, outs)
                key = step.fn.name
            self._seconds[key] = self._seconds.get(key, 0.0) + time.perf_counter() - t
        for j, kind, src in prog.tail:
            o = outs[j].reshape(-1).view(np.uint8)
            if kind == "out":
                o[:] = outs[src].reshape(-1).view(np.uint8)
            elif kind == "in":
                o[:] = arrays[src].reshape(-1).view(np.uint8)
            else:
                o[:] = self._weights[src:src + o.size]
        result = {}
        for j, (s, o) in enumerate(zip(self.outputs, outs)):
            if s.dynamic:
                actual = self._actual(prog.out_dims[j])
                o = np.ascontiguousarray(o[tuple(slice(0, n) for n in actual)])
            result.setdefault(s.name, o)
        return result

    # ------------------------------------------------------------ host steps
    def _actual(self, dims) -> tuple[int, ...]:
        import sympy
        env = {sympy.Symbol(n): int(self._dyn[k]) for k, n in enumerate(self.program.dyn_names)}
        out = []
        for d in dims:
            if isinstance(d, int):
                out.append(d)
            else:
                e = sympy.sympify(d)
                out.append(int(e.xreplace({x: env[sympy.Symbol(_dim_var(x))] for x in e.free_symbols})))
        return tuple(out)

    def _view(self, buf, arrays, outs) -> np.ndarray:
        kind, where = self.program.storage[buf.name]
        if kind == "in":
            return arrays[where]
        if kind == "out":
            return outs[where]
        base = self._weights if kind == "weight" else self._arena
        n = int(np.prod(buf.shape)) if buf.shape else 1
        dt = np.dtype(buf.dtype)
        return base[where:where + n * dt.itemsize].view(dt).reshape(buf.shape)

    def _host_step(self, step: HostStep, arrays, outs) -> None:
        node = step.block.nodes[0]
        views = {b.name: self._view(b, arrays, outs) for b in step.fn.buffers}
        args = []
        for v in node.inputs:
            if v is None:
                args.append(None)
                continue
            a = views[self._name(v)]
            if not v.is_static:
                a = a[tuple(slice(0, n) for n in self._actual(list(v.shape)))]
            args.append(np.ascontiguousarray(a))
        with np.errstate(all="ignore"):
            results = node.opdef.reference(node, args)
        for k, (v, r) in enumerate(zip(node.outputs, results)):
            name = self.program.names.get(id(v)) if v is not None else None
            if name is None or name not in views:   # an output nothing reads
                continue
            r = np.asarray(r).astype(v.dtype, copy=False)
            if not v.is_static:
                for d, sym in enumerate(v.shape):
                    if not isinstance(sym, (int, np.integer)):
                        key = _dim_var(sym)
                        if key in self.program.dyn_names:
                            self._dyn[self.program.dyn_names.index(key)] = r.shape[d]
            dst = views[name]
            if v.is_static and r.size == dst.size:
                r = r.reshape(dst.shape)   # a reference giving [1] for a scalar
            if r.ndim != dst.ndim or any(a > c for a, c in zip(r.shape, dst.shape)):
                raise FusionError(f"{node.label()}: {node.op} produced shape {list(r.shape)}, beyond the "
                                  f"capacity {list(dst.shape)} the model was compiled for")
            dst[tuple(slice(0, n) for n in r.shape)] = r

    def _name(self, v) -> str:
        return self.program.names[id(v)]

    def close(self) -> None:
        # The pool's workers run code inside the engine: join them before it is freed.
        if getattr(self, "_engine", None) is not None:
            self._shutdown()
        self._engine = None
        self._segs = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _check_symbols(mod) -> None:
    """An unresolvable call would abort the process inside MCJIT: refuse it here."""
    for f in mod.functions:
        if f.is_declaration and not f.name.startswith("llvm.") and llvm.address_of_symbol(f.name) is None:
            raise FusionError(f"the LLVM JIT cannot find '{f.name}' in this process (libm, libpthread, libgcc_s); "
                              f"install the C runtime libraries or use the C backend")


def _dim_var(sym) -> str:
    import re
    return "fz_dyn_" + re.sub(r"[^A-Za-z0-9_]", "_", str(sym))


def _aligned(n: int, align: int = 64) -> np.ndarray:
    raw = np.zeros(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n]
