"""`fusion.compile`: graph -> (rewrite) -> plan -> C -> libmodel.so -> CompiledModel.

    mod = fusion.compile("model.onnx")           # or a Graph, or "zoo:NAME:small"
    outs = mod.run({"input": x})                 # dict name -> numpy array
    mod.report                                   # blocks, schedules, peak memory, compile seconds
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import time

import numpy as np

from fusion.errors import FusionError, InputError
from fusion.ir.graph import Graph
from fusion.targets import Target, get_target
from fusion.codegen.build import build, cache_dir
from fusion.codegen.emit import Artifact, ModelEmitter


def rewrite_if_available(graph: Graph, notes: list[str] | None = None) -> Graph:
    try:
        from fusion.rewrite import rewrite
    except ImportError as e:
        if notes is not None:
            notes.append(f"fusion.rewrite is not available ({e}); compiling the graph as imported")
        return graph
    return rewrite(graph)


def load_graph(model, shapes=None) -> Graph:
    if isinstance(model, Graph):
        return model
    import fusion
    return fusion.load(model, shapes=shapes)


def planned_graph(model, t: Target, plan=None, *, rewrite: bool = True, profile_db=None, shapes=None,
                  notes: list[str] | None = None):
    """The front half every code generator shares: load, rewrite, plan -> (graph, plan).
    A plan given by the caller brings its own graph."""
    if plan is not None:
        return plan.graph, plan
    graph = load_graph(model, shapes)
    if rewrite:
        graph = rewrite_if_available(graph, notes)
    from fusion.ir.shape_infer import resolve_value_dims
    from fusion.plan import plan as make_plan
    resolve_value_dims(graph)   # formulas for run-time sizes; the planner keeps data-size tensors stored
    return graph, make_plan(graph, t, profile_db=profile_db)


def _generate(model, t: Target, plan, rewrite: bool, profile_db, shapes, progress):
    """Rewrite, plan and emit the C sources: (graph, plan, artifact, emitter, notes, plan s, codegen s)."""
    t_start = time.perf_counter()
    notes: list[str] = []
    graph, plan = planned_graph(model, t, plan, rewrite=rewrite, profile_db=profile_db, shapes=shapes, notes=notes)
    t_plan = time.perf_counter()
    em = ModelEmitter(graph, plan, t)
    art = em.emit(progress=progress)
    return graph, plan, art, em, notes, t_plan - t_start, time.perf_counter() - t_plan


def _cpu_target(target: str | Target) -> Target:
    t = target if isinstance(target, Target) else get_target(target)
    if t.kind != "cpu":
        raise FusionError(f"target '{t.name}' is a GPU target; the C code generator builds CPU libraries "
                          f"(host, linux-arm64, android-arm64)")
    return t


def emit_sources(model, target: str | Target = "host", out_dir: str = "build", *, rewrite: bool = True,
                 profile_db=None, shapes=None, progress=None) -> dict:
    """Write the C sources of a model without compiling them (`fusion compile --emit c`):
    model.c, model.h, fz_runtime.h, weights.bin, the opaque-op kernels it needs under
    opaque/, report.json. Needs no C compiler; returns the report."""
    t_start = time.perf_counter()
    t = _cpu_target(target)
    graph, plan, art, em, notes, s_plan, s_gen = _generate(model, t, None, rewrite, profile_db, shapes, progress)
    from fusion.codegen.build import write_sources
    write_sources(art, out_dir)
    copy_opaque_sources(art.extra_sources, art.include_dirs, out_dir)
    report = make_report(graph, plan, art, em, seconds={
        "plan": round(s_plan, 3), "codegen": round(s_gen, 3), "cc": 0.0,
        "total": round(time.perf_counter() - t_start, 3)}, cache_hit=False, notes=notes)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def copy_opaque_sources(extra_sources: list[str], include_dirs: list[str], out_dir: str) -> list[str]:
    """The hand-written opaque-op kernels (NMS, TopK, ...) a model links, copied to out_dir/opaque/ so the
    directory alone rebuilds the library (the NDK recipe in USAGE.md). Returns their paths
    relative to out_dir."""
    if not extra_sources:
        return []
    dst = os.path.join(out_dir, "opaque")
    os.makedirs(dst, exist_ok=True)
    rel = []
    for d in include_dirs:
        for name in sorted(os.listdir(d)):
            if name.endswith(".h"):
                shutil.copy(os.path.join(d, name), os.path.join(dst, name))
    for src in extra_sources:
        shutil.copy(src, os.path.join(dst, os.path.basename(src)))
        rel.append(f"opaque/{os.path.basename(src)}")
    return rel


def compile(model, target: str | Target = "host", threads: int | None = None, *, plan=None,
            out_dir: str | None = None, rewrite: bool = True, profile_db=None, shapes=None,
            progress=None, use_cache: bool = True, profile: bool = False,
            cflags: list[str] | None = None) -> "CompiledModel":
    """Compile a model for `target` (only "host" runs in this process).

    model: a fusion Graph, an ONNX path, bytes, or 'zoo:NAME[:small]'.
    plan: a ready Plan for exactly this graph (then no rewrite, no planning).
    out_dir: where model.c, model.h, weights.bin, libmodel.so, report.json go
    (default: a directory in the compile cache keyed by the sources)."""
    t_start = time.perf_counter()
    t = _cpu_target(target)
    graph, plan, art, em, notes, s_plan, s_gen = _generate(model, t, plan, rewrite, profile_db, shapes, progress)
    from fusion.toolchain import source_digest
    from fusion.codegen.build import RUNTIME_DIR
    with open(os.path.join(RUNTIME_DIR, "fz_runtime.h")) as f:
        runtime = f.read()
    # Everything the library depends on: its source, weights, runtime header, flags, target.
    key = source_digest(art.c_source, art.weights[:64], runtime, "profile" if profile else "",
                        " ".join(cflags or []), t.name, t.triple, *[open(x).read() for x in art.extra_sources])
    explicit = out_dir is not None
    if not explicit:
        out_dir = os.path.join(os.path.dirname(cache_dir()), "models", key)
    lib = os.path.join(out_dir, "libmodel.so")
    if not explicit and use_cache and os.path.exists(os.path.join(out_dir, "ok")):
        compile_s, hit = 0.0, True   # never rewrite a library some process may have loaded
    else:
        if not explicit and os.path.exists(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)
        lib, compile_s, hit = build(art, out_dir, t, use_cache=use_cache, profile=profile, cflags=cflags)
        if not explicit:   # the cache's completeness mark; a user's directory gets only the artifact
            open(os.path.join(out_dir, "ok"), "w").close()
    report = make_report(graph, plan, art, em, seconds={
        "plan": round(s_plan, 3), "codegen": round(s_gen, 3),
        "cc": round(compile_s, 3), "total": round(time.perf_counter() - t_start, 3)}, cache_hit=hit, notes=notes)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    if t.name != "host":
        return CrossCompiledModel(lib, os.path.join(out_dir, "weights.bin"), art.inputs, art.outputs, report,
                                  threads, plan=plan, c_source=art.c_source, target=t,
                                  opaque_sources=(art.extra_sources, art.include_dirs))
    mod = CompiledModel(lib, os.path.join(out_dir, "weights.bin"), art.inputs, art.outputs, report, threads,
                        plan=plan, c_source=art.c_source)
    mod.opaque_sources = (art.extra_sources, art.include_dirs)
    return mod


def make_report(graph, plan, art: Artifact, em, seconds: dict, cache_hit: bool, notes: list[str]) -> dict:
    from collections import Counter
    classes = Counter(b.mapping.short for b in plan.blocks)
    refused = Counter(d.code for d in plan.refused)
    return {
        "model": graph.name, "target": plan.target, "nodes": len(graph.nodes), "blocks": len(plan.blocks),
        "kernels": len(art.blocks),
        "fusion_rate": round(len(graph.nodes) / max(len(plan.blocks), 1), 3),
        "blocks_by_class": dict(classes), "refusals_by_reason": dict(refused),
        "peak_memory": {"arena_bytes": art.arena_bytes, "arena_without_reuse_bytes": art.naive_arena_bytes,
                        "weights_bytes": art.weight_bytes,
                        "io_bytes": int(sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
                                            for s in art.inputs + art.outputs))},
        "compile_seconds": seconds, "cache_hit": cache_hit, "notes": notes,
        "inputs": [s.to_json() for s in art.inputs], "outputs": [s.to_json() for s in art.outputs],
        "block_schedules": art.blocks,
    }


class CompiledModel:
    """A loaded libmodel.so. `run(feeds)` checks names, shapes and dtypes."""

    # (C files, include dirs) of the opaque-op kernels linked in, when compiled in this process
    opaque_sources: tuple[list[str], list[str]] = ([], [])

    def __init__(self, lib_path: str, weights_path: str, inputs, outputs, report: dict,
                 threads: int | None = None, plan=None, c_source: str = ""):
        self.lib_path, self.weights_path = lib_path, weights_path
        self.plan, self.report = plan, report
        self.inputs, self.outputs = inputs, outputs
        self.c_source = c_source
        lib = ctypes.CDLL(os.path.abspath(lib_path))
        lib.model_create.restype = ctypes.c_void_p
        lib.model_create.argtypes = [ctypes.c_char_p]
        lib.model_run.restype = ctypes.c_int
        lib.model_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.model_destroy.argtypes = [ctypes.c_void_p]
        lib.model_last_error.restype = ctypes.c_char_p
        lib.model_set_threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.model_set_threads.restype = ctypes.c_int
        lib.model_output_actual_shape.restype = ctypes.POINTER(ctypes.c_int64)
        lib.model_output_actual_shape.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._lib = lib
        ctx = lib.model_create(os.path.abspath(weights_path).encode())
        if not ctx:
            raise FusionError(f"cannot load the compiled model: {lib.model_last_error().decode()}")
        self._ctx = ctx
        self.threads = lib.model_set_threads(ctx, int(threads or 0))

    @classmethod
    def from_dir(cls, out_dir: str, threads: int | None = None) -> "CompiledModel":
        """Load what `fusion compile -o DIR` wrote (libmodel.so, weights.bin, report.json)."""
        from fusion.codegen.emit import IOSpec
        try:
            with open(os.path.join(out_dir, "report.json")) as f:
                rep = json.load(f)
        except OSError:
            raise FusionError(f"'{out_dir}' holds no compiled model (report.json missing); "
                              f"run `fusion compile MODEL -o {out_dir}` first") from None
        ins = [IOSpec(d["name"], d["dtype"], tuple(d["shape"]), d.get("dynamic", False)) for d in rep["inputs"]]
        outs = [IOSpec(d["name"], d["dtype"], tuple(d["shape"]), d.get("dynamic", False)) for d in rep["outputs"]]
        return cls(os.path.join(out_dir, "libmodel.so"), os.path.join(out_dir, "weights.bin"), ins, outs, rep,
                   threads)

    def kernel_seconds(self) -> dict[str, float]:
        """Seconds spent per block over all runs so far (compile with profile=True)."""
        lib = self._lib
        lib.model_kernel_name.restype = ctypes.c_char_p
        lib.model_kernel_seconds.restype = ctypes.c_double
        return {lib.model_kernel_name(i).decode(): lib.model_kernel_seconds(i) for i in range(lib.model_num_kernels())}

    def set_threads(self, n: int | None) -> int:
        self.threads = self._lib.model_set_threads(self._ctx, int(n or 0))
        return self.threads

    def check_feeds(self, feeds: dict) -> list[np.ndarray]:
        if not isinstance(feeds, dict):
            raise InputError(f"run() takes a dict of input name -> array; got {type(feeds).__name__}")
        names = [s.name for s in self.inputs]
        unknown = [k for k in feeds if k not in names]
        if unknown:
            raise InputError(f"unknown input '{unknown[0]}'; the model's inputs are: {', '.join(names)}")
        arrays = []
        for s in self.inputs:
            if s.name not in feeds:
                raise InputError(f"input '{s.name}' is missing (expected {s.dtype} {list(s.shape)})")
            a = np.asarray(feeds[s.name])
            if a.dtype != np.dtype(s.dtype):
                raise InputError(f"input '{s.name}' has dtype {a.dtype}, the model expects {s.dtype} "
                                 f"(convert with .astype(np.{s.dtype}))")
            if tuple(a.shape) != tuple(s.shape):
                raise InputError(f"input '{s.name}' has shape {list(a.shape)}, the model was compiled for "
                                 f"{list(s.shape)} (recompile with --shape {s.name}="
                                 + "x".join(str(d) for d in a.shape) + ")")
            arrays.append(np.ascontiguousarray(a))
        return arrays

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        arrays = self.check_feeds(feeds)
        outs = [np.empty(s.shape, dtype=np.dtype(s.dtype)) for s in self.outputs]
        in_ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[o.ctypes.data for o in outs])
        rc = self._lib.model_run(self._ctx, in_ptrs, out_ptrs)
        if rc != 0:
            raise FusionError(f"the compiled model failed: {self._lib.model_last_error().decode()}")
        result = {}
        for j, (s, o) in enumerate(zip(self.outputs, outs)):
            if s.dynamic:
                # padded layout: the actual tensor is the leading corner of the capacity
                sh = self._lib.model_output_actual_shape(self._ctx, j)
                actual = tuple(int(sh[d]) for d in range(len(s.shape)))
                o = np.ascontiguousarray(o[tuple(slice(0, n) for n in actual)])
            result.setdefault(s.name, o)
        return result

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.model_destroy(self._ctx)
            self._ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class CrossCompiledModel(CompiledModel):
    """A library built for another CPU (linux-arm64, android-arm64): not loaded
    here; `run` goes through fusion.device (qemu-user for linux-arm64)."""

    def __init__(self, lib_path, weights_path, inputs, outputs, report, threads=None, plan=None, c_source="",
                 target=None, opaque_sources=([], [])):
        self.lib_path, self.weights_path = lib_path, weights_path
        self.opaque_sources = opaque_sources
        self.plan, self.report = plan, report
        self.inputs, self.outputs = inputs, outputs
        self.c_source = c_source
        self.target = target
        self.threads = threads
        self._ctx = None

    def set_threads(self, n):
        self.threads = n
        return n

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        arrays = self.check_feeds(feeds)
        try:
            from fusion.device.runner import run_library
        except ImportError:
            raise FusionError(f"running a {self.target.name} library needs fusion.device, which is not in this "
                              f"build") from None
        outs, _ = run_library(self.lib_path, self.weights_path, arrays, self.target, threads=self.threads)
        result = {}
        for s, o in zip(self.outputs, outs):
            result.setdefault(s.name, o)
        return result

    def close(self) -> None:
        pass
