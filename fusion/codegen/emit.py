"""A planned graph -> the C sources of one model library (model.c, model.h,
weights.bin) plus the facts the report needs.

Where every value lives: graph inputs and outputs in the caller's buffers,
constants in weights.bin (each 64-byte aligned), intermediates between blocks
in one arena planned by liveness (memory.py), values inside a block nowhere
(they are expressions in its loop nest).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from fusion.errors import UnsupportedOpError
from fusion.ir import expr as E
from fusion.ir.graph import Graph, Value
from fusion.plan.types import Block, Plan
from fusion.targets import Target
from fusion.codegen import lower as L
from fusion.codegen.cprint import C_TYPES, FunctionPrinter, ctype
from fusion.codegen.loops import Buffer, Function
from fusion.codegen.memory import ALIGN, Interval, align, naive_bytes, plan_memory

WEIGHTS_HEADER = 64   # magic + digest, keeps the data 64-byte aligned


@dataclass
class IOSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]      # capacity when dynamic
    dynamic: bool = False       # some dim is known only at run time (model_output_actual_shape)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "dynamic": self.dynamic}


@dataclass
class Artifact:
    c_source: str
    header: str
    weights: bytes
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    blocks: list[dict]
    arena_bytes: int
    naive_arena_bytes: int
    weight_bytes: int
    extra_sources: list[str] = field(default_factory=list)
    include_dirs: list[str] = field(default_factory=list)
    seconds: float = 0.0


def onnx_elem_type(dtype: str) -> int:
    from fusion.ir.dtypes import from_numpy
    return int(from_numpy(np.dtype(dtype)))


class ModelEmitter:
    def __init__(self, graph: Graph, plan: Plan, target: Target):
        self.graph, self.plan, self.target = graph, plan, target
        self.names: dict[int, str] = {}
        self.used_names: set[str] = set()
        self.weights: dict[str, tuple[int, np.ndarray]] = {}   # buffer name -> (offset, array)
        self.weight_end = 0
        self.functions: list[Function] = []
        self.block_info: list[dict] = []
        self.folded: dict[int, np.ndarray] = {}   # values computed at compile time (all inputs constant)
        self.dyn: dict[str, int] = {}          # run-time dim (sympy symbol name) -> compile-time upper bound
        self.extra_sources: list[str] = []
        self.include_dirs: list[str] = []

    # ------------------------------------------------ data-dependent dims
    # A dim known only at run time (after NonMaxSuppression, NonZero...) is a
    # C variable `fz_dyn_*` set by the op that decides it. Tensors holding such
    # dims are allocated at the bound and laid out with the bound's strides
    # (padded), so index arithmetic stays compile-time; loops over the dim use
    # the run-time extent; graph outputs report their actual shape.
    def define_dim(self, sym, bound: int) -> None:
        self.dyn.setdefault(str(sym), int(bound))

    def dim_var(self, sym) -> str:
        return "fz_dyn_" + re.sub(r"[^A-Za-z0-9_]", "_", str(sym))

    def _subs(self, d):
        import sympy
        expr = sympy.sympify(d)
        missing = [str(x) for x in expr.free_symbols if str(x) not in self.dyn]
        if missing:
            return None, missing
        return expr.subs({x: self.dyn[str(x)] for x in expr.free_symbols}), []

    def shape_of(self, v: Value) -> tuple:
        """Capacity shape: static dims, run-time dims at their bound."""
        out = []
        for d in v.shape:
            if isinstance(d, (int, np.integer)):
                out.append(int(d))
                continue
            val, missing = self._subs(d)
            if val is None:
                if v.producer is None:
                    raise UnsupportedOpError(f"input '{v.name}' has open dimension '{d}'; bind it with --shape")
                raise UnsupportedOpError(f"value '{v.name}' (from {v.producer.label()}) has dimension '{d}' decided "
                                         f"at run time, and shape inference gives no formula for it in terms of "
                                         f"the op that decides it ({', '.join(missing)}); the C backend cannot "
                                         f"size it yet")
            out.append(max(int(val), 0))
        return tuple(out)

    def runtime_dims(self, v: Value) -> list[str]:
        """C expressions of v's actual dims at run time."""
        import sympy
        out = []
        for d in v.shape:
            if isinstance(d, (int, np.integer)):
                out.append(str(int(d)))
            else:
                e = sympy.sympify(d)
                out.append("(int64_t)(" + sympy.ccode(e.xreplace({x: sympy.Symbol(self.dim_var(x))
                                                                    for x in e.free_symbols})) + ")")
        return out

    def nbytes(self, v: Value) -> int:
        return int(np.prod(self.shape_of(v))) * v.dtype.itemsize if v.shape else v.dtype.itemsize

    def half_ok(self) -> bool:
        """float16 is stored as C _Float16 (GCC >= 12 / Clang on x86-64 and
        AArch64); each op computes in float and rounds, as numpy does."""
        return self.target.arch in ("x86_64", "aarch64")

    def use_opaque(self, mod) -> None:
        from fusion.codegen.opaque_calls import sources
        if not self.extra_sources:
            self.extra_sources, self.include_dirs = sources(mod)

    # ---------------------------------------------------------------- values
    def cname(self, v: Value) -> str:
        n = self.names.get(id(v))
        if n is None:
            base = "v_" + re.sub(r"[^A-Za-z0-9_]", "_", v.name)[:40]
            n, k = base, 1
            while n in self.used_names:
                k += 1
                n = f"{base}_{k}"
            self.used_names.add(n)
            self.names[id(v)] = n
        return n

    def constval(self, v: Value) -> np.ndarray | None:
        if v.const is not None:
            return v.const
        if v.known is not None:
            return v.known
        return self.folded.get(id(v))

    FOLD_LIMIT = 64 << 20

    def fold(self, b: Block) -> bool:
        """A block reading only constants (a weight's Transpose that nothing
        folded before us) is computed now: its outputs become weights."""
        if b.opaque or any(self.constval(v) is None for v in b.inputs):
            return False
        if any(v.shape is None or not v.is_static for n in b.nodes for v in n.outputs):
            return False
        if sum(v.nbytes for n in b.nodes for v in n.outputs) > self.FOLD_LIMIT:
            return False
        vals: dict[int, np.ndarray] = {}
        for n in b.nodes:
            args = [None if v is None else vals.get(id(v), self.constval(v)) for v in n.inputs]
            od = n.opdef
            if od is None or od.reference is None or od.needs_env:
                return False
            with np.errstate(all="ignore"):
                outs = od.reference(n, args)
            for v, a in zip(n.outputs, outs):
                vals[id(v)] = np.ascontiguousarray(np.asarray(a).astype(v.dtype, copy=False).reshape(v.shape))
        for v in b.outputs:
            self.folded[id(v)] = vals[id(v)]
        return True

    def literal(self, v: Value) -> E.Expr | None:
        a = self.constval(v)
        if a is None or np.asarray(a).size != 1:
            return None
        a = np.asarray(a)
        dt = a.dtype.name
        if dt not in C_TYPES:
            return None
        x = a.reshape(-1)[0]
        return E.Const(bool(x) if dt == "bool" else x.item(), dt)

    def add_weight(self, name: str, arr: np.ndarray) -> int:
        if name in self.weights:
            return self.weights[name][0]
        arr = np.ascontiguousarray(arr)
        off = align(self.weight_end, ALIGN)
        self.weights[name] = (off, arr)
        self.weight_end = off + arr.nbytes
        return off

    # ---------------------------------------------------------------- blocks
    def buffers_for(self, loads: dict[str, Value], outputs: list[Value]) -> list[Buffer]:
        bufs = []
        for name, v in loads.items():
            a = self.constval(v)
            if a is not None:
                self.add_weight(name, np.asarray(a, dtype=v.dtype))
                bufs.append(Buffer(name, v.dtype.name, self.shape_of(v), "weight", v.name))
            else:
                bufs.append(Buffer(name, v.dtype.name, self.shape_of(v), "in", v.name))
        for v in outputs:
            bufs.append(Buffer(self.cname(v), v.dtype.name, self.shape_of(v), "out", v.name))
        return bufs

    def lower_block(self, b: Block) -> Function | None:
        outs = [v for v in b.outputs if self.constval(v) is None]
        if not outs or self.fold(b):
            return None   # everything it computes is known at compile time
        if b.opaque:
            return self.opaque_block(b, outs)
        touched = {id(v): v for n in b.nodes for v in n.all_inputs() + n.outputs}
        dynamic = [v for v in touched.values() if v.shape is not None and not v.is_static]
        if not dynamic:
            groups: dict[int, list[Value]] = {}
            for v in outs:
                groups.setdefault(int(np.prod(self.shape_of(v))), []).append(v)
            if len(groups) == 1:
                from fusion.codegen import anchors
                fn = anchors.fast_block(self, b, outs)
                if fn is not None:
                    return fn
            # One loop nest per output size: a multi-output op (LayerNormalization's
            # Mean and InvStdDev) can give one block outputs of different sizes.
            fns = [L.lower_block(b.name if k == 0 else f"{b.name}_{k + 1}", b.nodes, grp, cname=self.cname,
                                 literal=self.literal, shape_of=self.shape_of, buffers_for=self.buffers_for)
                   for k, grp in enumerate(groups.values())]
            return fns[0] if len(fns) == 1 else fns
        return self._lower_dynamic(b, outs, dynamic)

    def _lower_dynamic(self, b: Block, outs: list[Value], dynamic: list[Value]) -> Function:
        from fusion.ops.table import Mapping
        from fusion.codegen.loops import Sym
        import sympy
        for n in b.nodes:
            od = n.opdef
            m = od.mapping_of(n) if od is not None else Mapping.OPAQUE
            vals = [v for v in n.inputs + n.outputs if v is not None and v.shape is not None]
            if all(v.is_static for v in vals) or (m == Mapping.REORG and _leading_only(n)):
                continue
            if m in (Mapping.M2M, Mapping.REORG):
                raise UnsupportedOpError(f"{n.label()}: {n.op} over a tensor whose shape is known only at run time "
                                         f"({', '.join(v.name + str(list(v.shape)) for v in dynamic[:2])}) is not "
                                         f"supported by the C backend yet")
        caps = {id(v): self.shape_of(v) for v in dynamic}
        saved = {id(v): v.shape for v in dynamic}
        groups: dict[tuple, list[Value]] = {}
        for v in outs:
            groups.setdefault((int(np.prod(self.shape_of(v))), tuple(str(d) for d in v.shape)), []).append(v)
        plans = []
        for k, grp in enumerate(groups.values()):
            syms = []
            for d in grp[0].shape:
                if isinstance(d, (int, np.integer)):
                    syms.append(None)
                    continue
                e = sympy.sympify(d)
                if not isinstance(e, sympy.Symbol):
                    raise UnsupportedOpError(f"block {b.name}: run-time dimension '{d}' is an expression; only "
                                             f"plain run-time sizes can be loop extents in the C backend yet")
                syms.append(Sym(self.dim_var(e), self.dyn[str(e)]))
            plans.append((b.name if k == 0 else f"{b.name}_{k + 1}", grp, syms))
        try:
            for v in dynamic:
                v.shape = caps[id(v)]
            fns = [L.lower_block(name, b.nodes, grp, cname=self.cname, literal=self.literal, shape_of=self.shape_of,
                                 buffers_for=self.buffers_for, dyn_extents=syms) for name, grp, syms in plans]
        finally:
            for v in dynamic:
                v.shape = saved[id(v)]
        return fns[0] if len(fns) == 1 else fns

    def opaque_block(self, b: Block, outs: list[Value]) -> Function:
        from fusion.codegen import opaque_calls
        return opaque_calls.lower_opaque(self, b, outs)

    # ------------------------------------------------------------- the model
    def emit(self, progress=None) -> Artifact:
        t0 = time.perf_counter()
        g = self.graph
        for v in g.inputs:
            if not v.is_static:
                raise UnsupportedOpError(f"input '{v.name}' has open dimensions {list(v.shape)}; bind them with "
                                         f"--shape {v.name}=" + "x".join(str(d) if isinstance(d, int) else "N"
                                                                         for d in v.shape))
        for v in g.inputs + g.outputs:
            if v.dtype.name not in C_TYPES or (v.dtype.name == "float16" and not self.half_ok()):
                raise UnsupportedOpError(f"{'input' if v in g.inputs else 'output'} '{v.name}' has element type "
                                         f"{v.dtype.name}, which the C backend does not support")
        fns: list[tuple[Block, Function]] = []
        if progress is not None and hasattr(progress, "start"):
            progress.start(len(self.plan.blocks))
        for b in self.plan.blocks:
            fn = self.lower_block(b)
            if progress is not None:
                progress.step(b.name)
            for f in (fn if isinstance(fn, list) else [fn] if fn is not None else []):
                fns.append((b, f))
        self.functions = [f for _, f in fns]
        return self._assemble(fns, time.perf_counter() - t0)

    def _assemble(self, fns, seconds) -> Artifact:
        g = self.graph
        in_index = {id(v): i for i, v in enumerate(g.inputs)}
        out_index: dict[int, int] = {}
        for j, v in enumerate(g.outputs):
            out_index.setdefault(id(v), j)
        # Liveness of intermediates over the block sequence.
        written: dict[str, tuple[int, Value]] = {}
        last_read: dict[str, int] = {}
        for k, (_, fn) in enumerate(fns):
            for buf in fn.buffers:
                if buf.role == "out":
                    written.setdefault(buf.name, (k, None))
            for buf in fn.buffers:
                if buf.role == "in":
                    last_read[buf.name] = k
        values_by_name = {self.names[id(v)]: v for v in g.values.values() if id(v) in self.names}
        for n in g.nodes:
            for v in n.outputs:
                if id(v) in self.names:
                    values_by_name[self.names[id(v)]] = v
        intervals = []
        for name, (k, _) in written.items():
            v = values_by_name[name]
            if id(v) in out_index:
                continue
            intervals.append(Interval(name, self.nbytes(v), k, last_read.get(name, k)))
        arena = plan_memory(intervals)
        offsets = {iv.key: iv.offset for iv in intervals}

        def pointer(buf: Buffer) -> str:
            v = values_by_name.get(buf.name)
            ct = ctype(buf.dtype)
            cst = "const " if buf.role != "out" else ""
            if buf.role == "weight":
                return f"({cst}{ct} *)(W + {self.weights[buf.name][0]})"
            if v is not None and id(v) in in_index:
                return f"({cst}{ct} *)inputs[{in_index[id(v)]}]"
            if v is not None and id(v) in out_index:
                return f"({cst}{ct} *)outputs[{out_index[id(v)]}]"
            if buf.name in offsets:
                return f"({cst}{ct} *)(M + {offsets[buf.name]})"
            raise AssertionError(f"no storage for {buf.name}")

        # Graph outputs nobody writes: constants, inputs, repeated outputs.
        tail = []
        written_outs = {id(values_by_name[n]) for n in written if id(values_by_name[n]) in out_index}
        for j, v in enumerate(g.outputs):
            nb = self.nbytes(v)
            if id(v) in written_outs and out_index[id(v)] == j:
                continue
            if id(v) in written_outs:
                tail.append(f"    memcpy(outputs[{j}], outputs[{out_index[id(v)]}], {nb});")
            elif self.constval(v) is not None:
                name = self.cname(v)
                off = self.add_weight(name, np.asarray(self.constval(v), dtype=v.dtype))
                tail.append(f"    memcpy(outputs[{j}], W + {off}, {nb});")
            elif id(v) in in_index:
                tail.append(f"    memcpy(outputs[{j}], inputs[{in_index[id(v)]}], {nb});")
            else:
                raise AssertionError(f"graph output {v.name} is never computed")

        weights_blob = self._weights_blob()
        digest = self._digest
        parts = [f"/* {g.name}: generated by fusion for target {self.target.name}. One function per fused block. */",
                 '#include "fz_runtime.h"', '#include "model.h"', ""]
        for _, fn in fns:
            fp = FunctionPrinter(fn)
            parts.append(f"/* block {fn.name}: {fn.comment or ''}{fn.schedule} */")
            parts.append(fp.struct())
            if getattr(fn, "run_inline", None) is not None:
                parts.append(fn.functions)
            else:
                parts.append(fp.function())
            parts.append("")
        run = ["int model_run(void *ctx, const void *const *inputs, void *const *outputs) {",
               "    struct fz_model *c = (struct fz_model *)ctx;",
               "    if (!c) { fz_set_error(\"model_run: null model\"); return -1; }",
               "    const char *W = c->weights + FZ_WEIGHTS_HEADER; char *M = c->arena;",
               "    (void)W; (void)M; (void)inputs; (void)outputs;"]
        for sym, bound in self.dyn.items():
            run.append(f"    int64_t {self.dim_var(sym)} = {bound};")
        run_ids: list[str] = []
        for b, fn in fns:
            inits = ", ".join(f".{buf.name} = {pointer(buf)}" for buf in fn.buffers)
            inits += "".join(f", .{s_} = {s_}" for s_ in sorted(FunctionPrinter(fn)._syms()))
            inline = getattr(fn, "run_inline", None)
            if inline is not None:
                run.append(f"    {{ struct {fn.name}_args a = {{ {inits} }};")
                run.extend("        " + ln for ln in inline.splitlines())
                run.append("    }")
            else:
                run.append(f"    {{ struct {fn.name}_args a = {{ {inits} }}; FZ_TIC; {fn.name}(&a); FZ_TOC({len(run_ids)}); }}")
                run_ids.append(fn.name)
        run.extend(tail)
        for j, v in enumerate(g.outputs):
            for d, dim in enumerate(self.runtime_dims(v)):
                run.append(f"    c->out_shape[{j}][{d}] = {dim};")
        prof = ["/* Per-block time (seconds, summed over runs) when built with -DFZ_PROFILE. */",
                "#ifdef FZ_PROFILE",
                "#include <time.h>",
                f"static double fz_prof[{max(len(run_ids), 1)}];",
                "static double fz_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); "
                "return t.tv_sec + 1e-9 * t.tv_nsec; }",
                "#define FZ_TIC double fz_t0 = fz_now()",
                "#define FZ_TOC(i) fz_prof[i] += fz_now() - fz_t0",
                "#else",
                "#define FZ_TIC (void)0",
                "#define FZ_TOC(i) (void)0",
                "#endif",
                f"int model_num_kernels(void) {{ return {len(run_ids)}; }}",
                "const char *model_kernel_name(int i) {",
                f"    static const char *const n[] = {{ {', '.join(chr(34) + x + chr(34) for x in run_ids) or '0'} }};",
                f"    return (i >= 0 && i < {len(run_ids)}) ? n[i] : 0;", "}",
                "double model_kernel_seconds(int i) {",
                "#ifdef FZ_PROFILE",
                f"    return (i >= 0 && i < {len(run_ids)}) ? fz_prof[i] : 0.0;",
                "#else",
                "    (void)i; return -1.0;",
                "#endif",
                "}"]
        run = prof + run
        run += ["    return 0;", "}",
                "const int64_t *model_output_actual_shape(void *ctx, int i) {",
                "    struct fz_model *c = (struct fz_model *)ctx;",
                f"    return (c && i >= 0 && i < {max(len(g.outputs), 1)}) ? c->out_shape[i] : 0;", "}"]
        if self.extra_sources:
            parts.insert(3, '#include "fz_opaque.h"')
        parts.append(_RUNTIME_API.replace("@NOUT@", str(max(len(g.outputs), 1))).replace("@WEIGHTS@", str(len(weights_blob))).replace("@ARENA@", str(max(arena, 64)))
                     .replace("@DIGEST@", digest))
        parts.append("\n".join(run))
        parts.append(self._introspection())
        ins = [IOSpec(v.name, v.dtype.name, self.shape_of(v)) for v in g.inputs]
        outs = [IOSpec(v.name, v.dtype.name, self.shape_of(v), not v.is_static) for v in g.outputs]
        info = []
        for b, fn in fns:
            info.append({"name": fn.name, "ops": [n.op for n in b.nodes], "class": b.mapping.short,
                         "anchor": b.anchor.op if b.anchor is not None else None, "schedule": fn.schedule,
                         "parallel": fn.parallel})
        return Artifact("\n".join(parts) + "\n", self._header(ins, outs), weights_blob, ins, outs, info,
                        arena, naive_bytes(intervals), len(weights_blob) - WEIGHTS_HEADER,
                        extra_sources=list(getattr(self, "extra_sources", [])),
                        include_dirs=list(getattr(self, "include_dirs", [])), seconds=seconds)

    def _weights_blob(self) -> bytes:
        body = bytearray(align(self.weight_end, ALIGN))
        for name, (off, arr) in self.weights.items():
            body[off:off + arr.nbytes] = arr.tobytes()
        digest = _digest(bytes(body))
        head = (b"FZW1" + digest.encode()).ljust(WEIGHTS_HEADER, b"\0")
        self._digest = digest
        return head + bytes(body)

    def _introspection(self) -> str:
        g = self.graph
        L_ = []
        for kind, vals in (("input", g.inputs), ("output", g.outputs)):
            names = ", ".join(f'"{_c_str(v.name)}"' for v in vals) or "0"
            dts = ", ".join(str(onnx_elem_type(v.dtype.name)) for v in vals) or "0"
            ranks = ", ".join(str(v.rank) for v in vals) or "0"
            shapes = []
            for i, v in enumerate(vals):
                dims = ", ".join(str(d) for d in self.shape_of(v)) or "0"
                L_.append(f"static const int64_t fz_{kind}_shape{i}[] = {{ {dims} }};")
                shapes.append(f"fz_{kind}_shape{i}")
            L_.append(f"static const char *const fz_{kind}_names[] = {{ {names} }};")
            L_.append(f"static const int fz_{kind}_dtypes[] = {{ {dts} }};")
            L_.append(f"static const int fz_{kind}_ranks[] = {{ {ranks} }};")
            L_.append(f"static const int64_t *const fz_{kind}_shapes[] = {{ {', '.join(shapes) or '0'} }};")
            n = len(vals)
            L_.append(f"int model_num_{kind}s(void) {{ return {n}; }}")
            L_.append(f"const char *model_{kind}_name(int i) {{ return (i >= 0 && i < {n}) ? fz_{kind}_names[i] : 0; }}")
            L_.append(f"int model_{kind}_dtype(int i) {{ return (i >= 0 && i < {n}) ? fz_{kind}_dtypes[i] : -1; }}")
            L_.append(f"int model_{kind}_rank(int i) {{ return (i >= 0 && i < {n}) ? fz_{kind}_ranks[i] : -1; }}")
            L_.append(f"const int64_t *model_{kind}_shape(int i) {{ return (i >= 0 && i < {n}) ? fz_{kind}_shapes[i] : 0; }}")
        return "\n".join(L_)

    def _header(self, ins: list[IOSpec], outs: list[IOSpec]) -> str:
        lines = ["/* model.h: generated by fusion. The C interface of libmodel.so.",
                 " *",
                 " *   void *m = model_create(\"weights.bin\");      // NULL on error: model_last_error()",
                 " *   model_run(m, inputs, outputs);              // arrays of pointers, in the order below; 0 = ok",
                 " *   model_destroy(m);",
                 " *",
                 " * Inputs:"]
        for i, s in enumerate(ins):
            lines.append(f" *   [{i}] {s.name}: {s.dtype} {list(s.shape)}")
        lines.append(" * Outputs:")
        for i, s in enumerate(outs):
            lines.append(f" *   [{i}] {s.name}: {s.dtype} {list(s.shape)}")
        lines += [" */", "#ifndef FUSION_MODEL_H", "#define FUSION_MODEL_H", "#include <stdint.h>", "",
                  f"#define MODEL_NUM_INPUTS {len(ins)}", f"#define MODEL_NUM_OUTPUTS {len(outs)}"]
        for kind, specs in (("INPUT", ins), ("OUTPUT", outs)):
            for i, s in enumerate(specs):
                ident = re.sub(r"[^A-Za-z0-9_]", "_", s.name).upper()
                n = int(np.prod(s.shape)) if s.shape else 1
                lines.append(f"#define MODEL_{kind}_{i}_NAME \"{_c_str(s.name)}\"  /* {ctype(s.dtype)} */")
                lines.append(f"#define MODEL_{kind}_{ident}_INDEX {i}")
                lines.append(f"#define MODEL_{kind}_{i}_ELEMENTS {n}")
        lines += ["",
                  "void *model_create(const char *weights_path);",
                  "int model_run(void *model, const void *const *inputs, void *const *outputs);",
                  "void model_destroy(void *model);",
                  "const char *model_last_error(void);",
                  "int model_set_threads(void *model, int threads);   /* <= 0: one per core; returns the count */",
                  "int model_num_inputs(void);", "const char *model_input_name(int i);",
                  "int model_input_dtype(int i);   /* ONNX TensorProto element type */",
                  "int model_input_rank(int i);", "const int64_t *model_input_shape(int i);",
                  "int model_num_outputs(void);", "const char *model_output_name(int i);",
                  "int model_output_dtype(int i);", "int model_output_rank(int i);",
                  "const int64_t *model_output_shape(int i);",
                  "int64_t model_arena_bytes(void);",
                  "/* actual shape of output i after model_run (differs from model_output_shape only for outputs",
                  "   whose size depends on the data; such outputs are laid out with the capacity's strides) */",
                  "const int64_t *model_output_actual_shape(void *model, int i);", "",
                  "#endif", ""]
        return "\n".join(lines)


def _leading_only(n) -> bool:
    """A reshape whose run-time dim is the leading one on both sides, with the
    same trailing size: padded (capacity-strided) layout equals row-major."""
    a, b = n.inputs[0], n.outputs[0]
    if a.rank == 0 or b.rank == 0:
        return False
    if any(not isinstance(d, (int, np.integer)) for d in list(a.shape[1:]) + list(b.shape[1:])):
        return False
    return str(a.shape[0]) == str(b.shape[0]) and int(np.prod(a.shape[1:])) == int(np.prod(b.shape[1:]))


def _c_str(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _digest(b: bytes) -> str:
    import hashlib
    return hashlib.sha256(b).hexdigest()[:24]


_RUNTIME_API = r"""
#define FZ_WEIGHTS_BYTES @WEIGHTS@
#define FZ_WEIGHTS_HEADER 64
#define FZ_ARENA_BYTES @ARENA@
static const char fz_weights_digest[] = "@DIGEST@";

struct fz_model { char *weights; char *arena; int64_t out_shape[@NOUT@][8]; };

static FZ_TLS char fz_error[512];   /* per thread where the platform has TLS */
static int fz_live_models;

static void fz_set_error(const char *msg) { snprintf(fz_error, sizeof fz_error, "%s", msg); }
const char *model_last_error(void) { return fz_error; }
int64_t model_arena_bytes(void) { return FZ_ARENA_BYTES; }

void *model_create(const char *weights_path) {
    FILE *f = fopen(weights_path, "rb");
    if (!f) { snprintf(fz_error, sizeof fz_error, "cannot open weights file '%s'", weights_path); return NULL; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size != FZ_WEIGHTS_BYTES) {
        snprintf(fz_error, sizeof fz_error, "weights file '%s' has %ld bytes, this library expects %ld: "
                 "it belongs to another compile", weights_path, size, (long)FZ_WEIGHTS_BYTES);
        fclose(f); return NULL;
    }
    struct fz_model *c = (struct fz_model *)calloc(1, sizeof *c);
    /* posix_memalign, not aligned_alloc: Android has the latter only from API 28 */
    void *w_ = NULL, *a_ = NULL;
    if (!c || posix_memalign(&w_, 64, ((size_t)FZ_WEIGHTS_BYTES + 63) / 64 * 64 + 64)) w_ = NULL;
    if (!c || posix_memalign(&a_, 64, ((size_t)FZ_ARENA_BYTES + 63) / 64 * 64 + 64)) a_ = NULL;
    if (!c) { free(w_); free(a_); snprintf(fz_error, sizeof fz_error, "out of memory"); fclose(f); return NULL; }
    c->weights = (char *)w_;
    c->arena = (char *)a_;
    if (!c->weights || !c->arena || fread(c->weights, 1, (size_t)size, f) != (size_t)size) {
        snprintf(fz_error, sizeof fz_error, "cannot read weights file '%s'", weights_path);
        fclose(f); free(c->weights); free(c->arena); free(c); return NULL;
    }
    fclose(f);
    if (memcmp(c->weights, "FZW1", 4) != 0 || memcmp(c->weights + 4, fz_weights_digest, 24) != 0) {
        snprintf(fz_error, sizeof fz_error, "weights file '%s' does not match this library (digest differs)",
                 weights_path);
        free(c->weights); free(c->arena); free(c); return NULL;
    }
    fz_live_models++;
    return c;
}

void model_destroy(void *ctx) {
    struct fz_model *c = (struct fz_model *)ctx;
    if (!c) return;
    free(c->weights); free(c->arena); free(c);
    if (--fz_live_models == 0) fz_pool_shutdown();
}

int model_set_threads(void *ctx, int n) { (void)ctx; fz_set_threads(n); return fz_get_threads(); }
"""
