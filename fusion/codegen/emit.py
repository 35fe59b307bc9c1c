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
        self.dyn_lo: dict[str, int] = {}       # lower bounds of run-time sizes read from data (others: 0)
        self.loop_vars: list[str] = []         # C locals of compiled Loops (iteration number, condition)
        self._ranges = None                    # value ranges (fusion.ir.intervals), computed when first needed
        self._nest = 0                         # > 0 while lowering an If branch or a Loop body
        self.dyn_exprs: dict[str, tuple] = {}  # str(formula of run-time dims) -> (C variable, formula, bound)
        self.dim_slots: dict[str, tuple] = {}  # str(run-time size) -> (index in fz_dims, sympy expr)
        self._dims_used = False
        self._copies = False
        self.value_by_cname: dict[str, Value] = {}   # every named value, branch subgraphs' included
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
        self._define_values(expr)
        missing = [str(x) for x in expr.free_symbols if str(x) not in self.dyn]
        if missing:
            return None, missing
        return self.bound_of(expr), []

    def bound_of(self, expr) -> int:
        """A compile-time upper bound of a formula of run-time dims (each in
        [0, its bound]): exact by enumeration for one symbol with a small bound,
        else the largest value at the corners of the box (the formulas shape
        inference gives, sums, products, Min/Max of clamped slices, are monotone
        in each dim)."""
        import itertools
        import sympy
        syms = sorted(expr.free_symbols, key=str)
        if not syms:
            return max(int(expr), 0)
        if any(str(x) in self.dyn_lo for x in syms) or expr.has(sympy.Piecewise):
            # sizes read from data: not monotone in each symbol (a Slice start of unknown
            # sign), so interval arithmetic over the symbols' ranges (sound, maybe loose)
            return max(0, _ceil(self._range_of(expr)[1]))
        if len(syms) == 1 and self.dyn[str(syms[0])] <= 1 << 16:
            f = sympy.lambdify(syms, expr, modules=[{"Min": min, "Max": max, "floor": _floor, "ceiling": _ceil}])
            return max(0, max(int(f(k)) for k in range(self.dyn[str(syms[0])] + 1)))
        best = 0
        for corner in itertools.product(*[(0, self.dyn[str(x)]) for x in syms]):
            best = max(best, int(expr.subs(dict(zip(syms, corner)))))
        return best

    def dim_cvar(self, d) -> str:
        """The C variable holding run-time size `d` (a symbol an op decides, or
        a formula of such symbols, recomputed in model_run whenever one changes)."""
        import sympy
        e = sympy.sympify(d)
        if isinstance(e, sympy.Symbol):
            return self.dim_var(e)
        hit = self.dyn_exprs.get(str(e))
        if hit is None:
            self._define_values(e)
            missing = [str(x) for x in e.free_symbols if str(x) not in self.dyn]
            if missing:
                raise UnsupportedOpError(f"run-time size '{e}' depends on '{', '.join(missing)}', which no op of "
                                         f"the model decides before it is needed; the C backend cannot size it")
            self._c_formula(e)   # refuse formulas C cannot print, now
            hit = (f"fz_dyn_e{len(self.dyn_exprs)}", e, self.bound_of(e))
            self.dyn_exprs[str(e)] = hit
        return hit[0]

    def dim_bound(self, d) -> int:
        import sympy
        e = sympy.sympify(d)
        return self.dyn[str(e)] if isinstance(e, sympy.Symbol) else self.dyn_exprs[str(e)][2] \
            if str(e) in self.dyn_exprs else self.bound_of(e)

    def dim_load(self, d) -> E.Expr:
        """Run-time size `d` inside a kernel: element of the model's fz_dims array."""
        import sympy
        e = sympy.sympify(d)
        if e.is_Integer:
            return E.Const(int(e))
        self.dim_cvar(e)
        slot = self.dim_slots.get(str(e))
        if slot is None:
            slot = (len(self.dim_slots), e)
            self.dim_slots[str(e)] = slot
        self._dims_used = True
        return E.load("fz_dims", [E.Const(slot[0])], "int64")

    def _c_formula(self, e) -> str:
        """A formula of run-time dims in C (integer arithmetic, floor semantics)."""
        import sympy
        if isinstance(e, sympy.Integer):
            return f"INT64_C({int(e)})"
        if isinstance(e, sympy.Symbol):
            return self.dim_var(e)
        if isinstance(e, (sympy.Min, sympy.Max)):
            fn = "fz_dmin" if isinstance(e, sympy.Min) else "fz_dmax"
            args = [self._c_formula(a) for a in e.args]
            out = args[0]
            for a in args[1:]:
                out = f"{fn}({out}, {a})"
            return out
        if isinstance(e, (sympy.floor, sympy.ceiling)):
            num, den = sympy.fraction(sympy.together(e.args[0]))
            if not den.is_Integer or int(den) <= 0:
                raise UnsupportedOpError(f"run-time size '{e}' is not integer arithmetic the C backend can print")
            q = int(den)
            n_ = self._c_formula(sympy.expand(num))
            if isinstance(e, sympy.ceiling):
                return f"(-fz_dfloordiv(-({n_}), {q}))"
            return f"fz_dfloordiv({n_}, {q})"
        if isinstance(e, sympy.Add):
            return "(" + " + ".join(self._c_formula(a) for a in e.args) + ")"
        if isinstance(e, sympy.Mul):
            num, den = sympy.fraction(e)
            if den != 1:
                if not den.is_Integer:
                    raise UnsupportedOpError(f"run-time size '{e}' is not integer arithmetic the C backend can print")
                return f"fz_dfloordiv({self._c_formula(num)}, {int(den)})"
            return "(" + " * ".join(self._c_formula(a) for a in e.args) + ")"
        if isinstance(e, sympy.Pow) and e.exp.is_Integer and int(e.exp) > 0:
            return "(" + " * ".join([self._c_formula(e.base)] * int(e.exp)) + ")"
        if isinstance(e, sympy.Mod):
            return f"fz_dmod({self._c_formula(e.args[0])}, {self._c_formula(e.args[1])})"
        if isinstance(e, sympy.Piecewise):
            out = None
            for val, cond in reversed(e.args):
                v = self._c_formula(val)
                out = v if out is None or cond == sympy.true else f"({self._c_formula(cond)} ? {v} : {out})"
            return out
        rel = {sympy.StrictLessThan: "<", sympy.LessThan: "<=", sympy.StrictGreaterThan: ">",
               sympy.GreaterThan: ">=", sympy.Equality: "==", sympy.Unequality: "!="}.get(type(e))
        if rel is not None:
            return f"({self._c_formula(e.lhs)} {rel} {self._c_formula(e.rhs)})"
        if isinstance(e, sympy.Abs):
            x = self._c_formula(e.args[0])
            return f"fz_dmax({x}, -({x}))"
        raise UnsupportedOpError(f"run-time size '{e}' is not integer arithmetic the C backend can print")

    # ------------------------------------------------ sizes read from data
    # shape_infer.resolve_value_dims turns a size computed from tensor data (a box
    # corner) into symbols standing for the elements of the small integer tensor
    # it starts from (graph.value_sources). Each gets a range from the value-range
    # analysis; model_run reads it after the kernel storing that tensor and fails
    # if it lies outside (the bound every tensor it sizes was allocated with).
    def _define_values(self, expr) -> None:
        srcs = getattr(self.graph, "value_sources", None) or {}
        for x in expr.free_symbols:
            name = str(x)
            if name in self.dyn or name not in srcs:
                continue
            v, k = srcs[name]
            lo, hi = self._value_range(v, k)
            if lo is None or hi is None:
                raise UnsupportedOpError(f"value '{v.name}' (from {v.producer.label()}) is read as a size, and no "
                                         f"bound of its values follows from the model (its range is "
                                         f"[{lo}, {hi}]); the C backend needs a bound to allocate what it sizes")
            self.dyn_lo[name] = int(lo)
            self.dyn[name] = int(hi)

    def _value_range(self, v: Value, k: int):
        import math
        if self._ranges is None or self._ranges[0] != len(self.dyn):
            from fusion.ir.intervals import value_ranges
            self._ranges = (len(self.dyn), value_ranges(self.graph, dim_range=self._dim_range))
        r = self._ranges[1].of(v)
        if r is None:
            return None, None
        lo, hi = (np.asarray(t, dtype=np.float64) for t in r)
        lo = lo.reshape(-1)[k] if lo.size > 1 else lo.reshape(-1)[0]
        hi = hi.reshape(-1)[k] if hi.size > 1 else hi.reshape(-1)[0]
        return (None if not math.isfinite(lo) else math.floor(lo)), (None if not math.isfinite(hi) else math.ceil(hi))

    def _dim_range(self, d):
        import sympy
        e = sympy.sympify(d)
        if e.is_Integer:
            return int(e), int(e)
        if any(str(x) not in self.dyn for x in e.free_symbols):
            return None
        lo, hi = self._range_of(e) if any(str(x) in self.dyn_lo for x in e.free_symbols) else (0, self.bound_of(e))
        return max(0, lo), hi

    def _range_of(self, e):
        """Interval arithmetic of a size formula over its symbols' ranges."""
        from fusion.ir.intervals import formula_range

        def unbounded(x):
            raise UnsupportedOpError(f"run-time size '{e}': no bound for '{x}' (the C backend allocates at a bound)")
        return formula_range(e, lambda x: (self.dyn_lo.get(str(x), 0), self.dyn[str(x)]), unbounded)

    def _dyn_refresh(self) -> list[str]:
        """Recompute the formula variables and fz_dims after run-time dims changed."""
        out = []
        for var, e, bound in self.dyn_exprs.values():
            out.append(f"    {var} = fz_dmin(fz_dmax({self._c_formula(e)}, 0), {bound});")
        for k, e in self.dim_slots.values():
            out.append(f"    fz_dims[{k}] = {self.dim_cvar(e)};")
        return out

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
                out.append(self.dim_cvar(d))
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
            self.value_by_cname[n] = v
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

    def lower_marked(self, b: Block) -> list[Function]:
        """lower_block, then what model_run does around the kernels: read the
        sizes it stores (value sources), check run-time sizes meeting fixed ones."""
        import sympy
        f = self.lower_block(b)
        fns = f if isinstance(f, list) else [f] if f is not None else []
        if not fns:
            return fns
        srcs = getattr(self.graph, "value_sources", None) or {}
        mine = {id(v) for v in b.outputs}
        for name, (v, k) in srcs.items():
            if id(v) not in mine:
                continue
            self._define_values(sympy.Symbol(name))
            cn = self.cname(v)
            w = next((fn for fn in reversed(fns) if any(x.name == cn and x.role == "out" for x in fn.buffers)), fns[-1])
            w.__dict__.setdefault("decides", []).append((cn, v, k, name))
            self._decided = getattr(self, "_decided", set()) | {name}
        # run-time sizes meeting fixed ones (a Concat's other axes): equal at run time or fail
        for n in b.nodes:
            if n.op != "Concat" or n.outputs[0].shape is None:
                continue
            out = n.outputs[0]
            ax = n.attrs.get("axis", 0) % max(out.rank, 1)
            for v in n.inputs:
                if v is None or v.shape is None:
                    continue
                for d, (x, y) in enumerate(zip(v.shape, out.shape)):
                    if d != ax and isinstance(y, (int, np.integer)) and not isinstance(x, (int, np.integer)):
                        fns[0].__dict__.setdefault("asserts", []).append(
                            (self.dim_cvar(x), int(y), f"{n.label()}: input '{v.name}' has {{}} on axis {d} at run "
                                                       f"time, the other inputs {int(y)}"))
        return fns

    def lower_block(self, b: Block) -> Function | None:
        outs = [v for v in b.outputs if self.constval(v) is None]
        if not outs or self.fold(b):
            return None   # everything it computes is known at compile time
        if b.opaque and b.nodes[0].op == "If":
            return self.if_block(b, outs)
        if b.opaque and b.nodes[0].op == "Loop":
            return self.loop_block(b, outs)
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
        from fusion.codegen.loops import Sym
        caps = {id(v): self.shape_of(v) for v in dynamic}
        saved = {id(v): v.shape for v in dynamic}
        last = b.nodes[-1]
        if type(self) is ModelEmitter and last.op == "ScatterElements" and outs == list(last.outputs):
            if len(b.nodes) == 1:
                return self._scatter_fn(b)
            # the nodes computing its operands (torchvision's zeros of the RoI count) first,
            # as their own loop nest into the arena, then the direct scatter
            inside = {id(v) for n in b.nodes[:-1] for v in n.outputs}
            feeds = [v for v in last.inputs if v is not None and id(v) in inside]
            used = {id(v) for n in b.nodes for v in n.all_inputs()}
            if all(id(v) in used or v in feeds for n in b.nodes[:-1] for v in n.outputs):
                pre = Block(id=f"{b.id}a", nodes=b.nodes[:-1], outputs=feeds,
                            inputs=[v for v in b.inputs if any(v is x for n in b.nodes[:-1] for x in n.all_inputs())])
                f1 = self.lower_block(pre)
                f1 = f1 if isinstance(f1, list) else [f1] if f1 is not None else []
                return f1 + [self._scatter_fn(Block(id=b.id, nodes=[last], outputs=list(last.outputs)))]
        if type(self) is ModelEmitter and _rows_only(b, dynamic):
            # An anchor over a run-time number of rows (RoIs through the box head's
            # Gemms, the mask head's Convs): rows are independent, so the fast kernel
            # over the capacity is right on the actual rows (the padding rows are
            # computed and never read).
            from fusion.codegen import anchors
            try:
                for v in dynamic:
                    v.shape = caps[id(v)]
                fn = anchors.fast_block(self, b, outs)
            finally:
                for v in dynamic:
                    v.shape = saved[id(v)]
            if fn is not None:
                fn.schedule += " (over the capacity of the run-time rows)"
                return fn
        groups: dict[tuple, list[Value]] = {}
        for v in outs:
            groups.setdefault((int(np.prod(self.shape_of(v))), tuple(str(d) for d in v.shape)), []).append(v)
        plans = []
        for k, grp in enumerate(groups.values()):
            syms = [None if isinstance(d, (int, np.integer)) else Sym(self.dim_cvar(d), self.dim_bound(d))
                    for d in grp[0].shape]
            plans.append((b.name if k == 0 else f"{b.name}_{k + 1}", grp, syms))
        dyn = L.DynInfo(saved, self.dim_load)
        self._dims_used = False
        try:
            for v in dynamic:
                v.shape = caps[id(v)]
            fns = [L.lower_block(name, b.nodes, grp, cname=self.cname, literal=self.literal, shape_of=self.shape_of,
                                 buffers_for=self.buffers_for, dyn_extents=syms, dyn=dyn)
                   for name, grp, syms in plans]
        finally:
            for v in dynamic:
                v.shape = saved[id(v)]
        exprs = any(isinstance(x, Sym) and x.name.startswith("fz_dyn_e") for _, _, syms in plans for x in syms)
        if not getattr(self, "dims_in_kernels", type(self) is ModelEmitter) and (self._dims_used or exprs):
            # fz_dims and formula extents are set up by this class's model_run and by
            # emitters that declare dims_in_kernels (OpenCL passes fz_dims as a buffer)
            raise UnsupportedOpError(f"block {b.name}: sizes decided at run time are used inside its index "
                                     f"arithmetic (or a formula of them is a loop extent); only the C backend "
                                     f"supports that yet")
        if self._dims_used:
            for fn in fns:
                fn.buffers.append(Buffer("fz_dims", "int64", (1,), "in", "run-time dims"))
        return fns[0] if len(fns) == 1 else fns

    # ------------------------------------------------------------ control flow
    def if_block(self, b: Block, outs: list[Value]) -> list[Function]:
        """If: each branch is planned and lowered like a model of its own; its
        kernels run under a guard on the condition, then its outputs are copied
        into the If's (allocated at the larger capacity; run-time dims of the If
        outputs take the taken branch's actual sizes)."""
        node = b.nodes[0]
        cond = node.inputs[0]
        c = self.constval(cond)
        fns: list[Function] = []
        branches = [("then", node.attrs["then_branch"], True), ("else", node.attrs["else_branch"], False)]
        if c is not None:
            branches = [br for br in branches if br[2] == bool(np.asarray(c).reshape(-1)[0])]
        # run-time dims of the If's outputs: bounded by the larger branch capacity
        for j, v in enumerate(node.outputs):
            for d, dim in enumerate(v.shape or ()):
                if isinstance(dim, (int, np.integer)):
                    continue
                import sympy
                if not isinstance(sympy.sympify(dim), sympy.Symbol):
                    raise UnsupportedOpError(f"{node.label()}: output '{v.name}' has a formula dim '{dim}'; the C "
                                             f"backend needs a plain run-time size there")
                caps = []
                for _, sg, _ in branches:
                    caps.append(self.shape_of_deferred(sg.outputs[j], d, sg))
                self.define_dim(dim, max(caps) if caps else 0)
        for tag, sg, want in branches:
            body = self._lower_subgraph(sg, f"{b.id}_{tag}")
            for j, v in enumerate(node.outputs):
                if v in outs:
                    body.append(self._copy_fn(f"{b.name}_{tag}_out{j}", sg.outputs[j], v))
            if c is None:
                guard = Buffer(self.cname(cond), cond.dtype.name, (), "in", cond.name)
                for f in body:
                    f.guards = [(guard, want)] + list(getattr(f, "guards", []))
                    if all(x.name != guard.name for x in f.buffers):
                        f.buffers.append(guard)
            fns.extend(body)
        return fns

    LOOP_TRIPS_MAX = 1 << 20   # iterations a growing Loop is allocated for at most

    def loop_block(self, b: Block, outs: list[Value]) -> list[Function]:
        """Loop: the body is planned and lowered like a model of its own and its
        kernels run inside a C loop in model_run. Loop-carried values live in the
        body inputs' buffers: the initial values are copied in, each iteration's
        body outputs copied back. A carried dim that grows by a constant per
        iteration (a Concat appending a row) is allocated at initial + growth x
        the trip count's bound, and checked at run time."""
        import sympy
        from fusion.ops.control import _loop_counts
        node = b.nodes[0]
        body = node.attrs["body"]
        n_c, n_s = _loop_counts(node)
        if self._nest:
            raise UnsupportedOpError(f"{node.label()}: a Loop inside an If branch or another Loop is not supported by "
                                     f"the C backend yet")
        M = node.inputs[0] if node.inputs and node.inputs[0] is not None else None
        C0 = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] is not None else None
        lid = len(self.loop_vars) // 2
        it, cv = f"fz_it{lid}", f"fz_cond{lid}"
        self.loop_vars += [f"int64_t {it} = 0;", f"int {cv} = 1;"]
        trips = None   # upper bound of the trip count
        if M is not None:
            c = self.constval(M)
            trips = int(np.asarray(c).reshape(-1)[0]) if c is not None else self._value_range(M, 0)[1]
        # capacities of the carried values' dims
        growing = n_s > 0
        for k in range(n_c):
            v0, vin, vout = node.inputs[2 + k], body.inputs[2 + k], body.outputs[1 + k]
            if vin.shape is None or vout.shape is None:
                raise UnsupportedOpError(f"{node.label()}: loop-carried value '{vin.name}' has no known shape")
            for d, x in enumerate(vin.shape):
                xs = sympy.sympify(x)
                if not (isinstance(xs, sympy.Symbol) and str(xs).startswith(f"{node.name}_carried")):
                    continue
                y = sympy.sympify(vout.shape[d])
                c0 = self.shape_of(v0)[d]
                growth = sympy.simplify(y - xs)
                if growth.is_Integer and int(growth) >= 0:
                    if int(growth) and trips is None:
                        raise UnsupportedOpError(f"{node.label()}: loop-carried '{vin.name}' grows by {growth} per "
                                                 f"iteration on axis {d}, and the trip count has no bound")
                    cap = c0 + int(growth) * (trips or 0)
                    growing = growing or int(growth) > 0
                elif xs not in y.free_symbols:   # set anew each iteration: the larger capacity
                    cap = max(c0, self.dim_bound(y))
                else:
                    raise UnsupportedOpError(f"{node.label()}: loop-carried '{vin.name}' changes size on axis {d} "
                                             f"as {y} (from {xs}); the C backend needs a constant growth")
                self.define_dim(xs, cap)
        for k, v in enumerate(node.outputs[:n_c]):
            for d, dim in enumerate(v.shape or ()):
                if isinstance(sympy.sympify(dim), sympy.Symbol) and str(dim) not in self.dyn:
                    self.define_dim(dim, self.shape_of(body.inputs[2 + k])[d])
        if n_s and trips is None:
            raise UnsupportedOpError(f"{node.label()}: Loop with scan outputs and no bound on its trip count; "
                                     f"the C backend allocates them at a bound")
        if growing and trips > self.LOOP_TRIPS_MAX:
            raise UnsupportedOpError(f"{node.label()}: its trip count may reach {trips}, and its loop-carried or scan "
                                     f"outputs grow every iteration; the C backend allocates them for at most "
                                     f"{self.LOOP_TRIPS_MAX} iterations")
        for v in node.outputs[n_c:]:
            if v.shape and isinstance(sympy.sympify(v.shape[0]), sympy.Symbol) and str(v.shape[0]) not in self.dyn:
                self.define_dim(v.shape[0], trips)
        fns: list[Function] = []
        for k in range(n_c):
            fns.append(self._copy_fn(f"{b.name}_in{k}", node.inputs[2 + k], body.inputs[2 + k], check=True))
        cond0 = self._scalar_read(C0) if C0 is not None else "1"
        start = self._control_fn(f"{b.name}_start", [C0], [], f"{it} = 0; {cv} = {cond0} ? 1 : 0;")
        start.loop_open = f"    for (;;) {{   /* {node.label()} */"
        fns.append(start)
        lines = [f"if (!{cv}) break;"]
        if M is not None:
            lines.append(f"if ({it} >= {self._scalar_read(M)}) break;")
        if growing:
            lines.append(f"if ({it} >= {trips}) {{ fz_set_error(\"{_c_str(node.label())}: more than {trips} "
                         f"iterations, the bound its loop-carried values were allocated for\"); return -1; }}")
        outs_head = []
        if body.inputs[0] is not None:
            outs_head.append(body.inputs[0])
            lines.append(f"*a.{self.cname(body.inputs[0])} = {it};")
        if len(body.inputs) > 1 and body.inputs[1] is not None:
            outs_head.append(body.inputs[1])
            lines.append(f"*a.{self.cname(body.inputs[1])} = {cv};")
        fns.append(self._control_fn(f"{b.name}_head", [M], outs_head, "\n".join(lines)))
        appends = self._loop_appends(node, n_c)
        fns.extend(self._lower_subgraph(body, f"{b.id}_body"))
        cout = body.outputs[0]
        fns.append(self._control_fn(f"{b.name}_cond", [cout], [], f"{cv} = {self._scalar_read(cout)} ? 1 : 0;"))
        for k in range(n_c):
            vin, vout = body.inputs[2 + k], body.outputs[1 + k]
            if k in appends:
                fns.append(self._append_fn(f"{b.name}_append{k}", vout, vin))
            elif vout is not vin:
                fns.append(self._copy_fn(f"{b.name}_next{k}", vout, vin, check=True))
        for j in range(n_s):
            fns.append(self._scan_fn(f"{b.name}_scan{j}", body.outputs[1 + n_c + j], node.outputs[n_c + j], it))
        nxt = self._control_fn(f"{b.name}_next", [], [], f"{it} += 1;")
        nxt.loop_close = "    }"
        fns.append(nxt)
        for k in range(n_c):
            if node.outputs[k] in outs:
                fns.append(self._copy_fn(f"{b.name}_out{k}", body.inputs[2 + k], node.outputs[k]))
        sets = [f"{self.dim_var(v.shape[0])} = {it};" if isinstance(sympy.sympify(v.shape[0]), sympy.Symbol) else
                f"if ({it} != {v.shape[0]}) {{ fz_set_error(\"{_c_str(node.label())}: stopped before its trip count; "
                f"its scan output '{_c_str(v.name)}' has {v.shape[0]} rows\"); return -1; }}"
                for v in node.outputs[n_c:] if v.shape]
        if sets:   # scan outputs hold one row per iteration run
            fns.append(self._control_fn(f"{b.name}_rows", [], [], " ".join(sets)))
        return fns

    def _loop_appends(self, node, n_c: int) -> set[int]:
        """Carried values the body only extends (`v' = Concat(v, x, axis=0)`, v read by
        nothing else): the body computes x, and the loop appends x's rows to v's buffer
        in place, instead of copying all of v twice per iteration (Concat, then back)."""
        body = node.attrs["body"]
        out = set()
        for k in range(n_c):
            vin, vout = body.inputs[2 + k], body.outputs[1 + k]
            p = vout.producer
            if p is None or p.op != "Concat" or len(p.inputs) != 2 or p.inputs[0] is not vin or \
                    p.attrs.get("axis", 0) % max(vin.rank, 1) != 0 or p.inputs[1] is vin:
                continue
            x = p.inputs[1]
            if body.consumers(vin) != [p] or vout.uses or body.outputs.count(vout) != 1 or x.rank != vin.rank \
                    or x in body.outputs or x in body.inputs or self.constval(x) is not None:
                continue
            d0 = str(vin.shape[0])
            if not d0.startswith(f"{node.name}_carried"):
                continue
            body.remove_node(p)
            body.outputs[1 + k] = x
            out.add(k)
        return out

    def _append_fn(self, name: str, src: Value, dst: Value) -> Function:
        """dst (carried, run-time rows K) gets src's rows appended at row K, in place."""
        dc = self.shape_of(dst)
        k = self.dim_var(dst.shape[0])
        msg = _c_str(f"{name}: '{src.name}' does not fit the rows of '{dst.name}' {list(dc)}")
        return self._copy_step(name, src, dst, "rows appended to a loop-carried value", dc, [
            f"const int64_t fz_have[] = {{{', '.join(self.runtime_dims(dst))}}};",
            f"if ({k} + fz_n[0] > fz_dc[0]) {{ fz_set_error(\"{msg}\"); return -1; }}",
            f"for (int q = 1; q < {len(dc)}; ++q) if (fz_n[q] != fz_have[q]) {{ fz_set_error(\"{msg}\"); return -1; }}"],
            offset=f"{k} * {int(np.prod(dc[1:])) * dst.dtype.itemsize}", after=[f"{k} += fz_n[0];"])

    def _scan_fn(self, name: str, src: Value, dst: Value, it: str) -> Function:
        """Row `it` of scan output dst = this iteration's src (padded layouts)."""
        dc = self.shape_of(dst)[1:]
        if len(dc) != len(src.shape):
            raise UnsupportedOpError(f"{name}: scan output '{dst.name}' does not have one more dim than '{src.name}'")
        return self._copy_step(name, src, dst, "row of a Loop scan output", dc,
                               [self._fits(name, src, f"a row of '{dst.name}' {list(dc)}")],
                               offset=f"{it} * {int(np.prod(dc)) * dst.dtype.itemsize}")

    def _copy_step(self, name: str, src: Value, dst: Value, schedule: str, dc, checks=(), offset=None,
                   after=()) -> Function:
        """A model_run step copying src's actual extents (its padded layout) into dst's
        layout dc (capacity), `offset` bytes into dst when given; `checks` run before
        the copy (they see fz_n, src's actual dims, and fz_dc), `after` after it."""
        self._copies = True
        bufs = self.buffers_for({self.cname(src): src}, [dst])
        fn = Function(name, bufs, [], [], [], raw_body="", schedule=schedule)
        sc = self.shape_of(src)
        to = f"a.{self.cname(dst)}" if offset is None else f"(char *)a.{self.cname(dst)} + {offset}"
        fn.run_inline = "\n".join(
            [f"static const int64_t fz_sc[] = {{{', '.join(map(str, sc)) or '0'}}};",
             f"static const int64_t fz_dc[] = {{{', '.join(map(str, dc)) or '0'}}};",
             f"const int64_t fz_n[] = {{{', '.join(self.runtime_dims(src)) or '0'}}};"]
            + list(checks)
            + [f"fz_dyn_copy({to}, a.{self.cname(src)}, {dst.dtype.itemsize}, {len(sc)}, fz_n, fz_sc, fz_dc);"]
            + list(after))
        return fn

    def _fits(self, name: str, src: Value, where: str) -> str:
        """C check: src's actual dims (fz_n) within the capacity fz_dc, else model_run fails."""
        return (f"for (int q = 0; q < {len(src.shape)}; ++q) if (fz_n[q] > fz_dc[q]) {{ fz_set_error(\"{_c_str(name)}: "
                f"'{_c_str(src.name)}' is larger than {_c_str(where)}\"); return -1; }}")

    def _scalar_read(self, v: Value) -> str:
        """C expression of a scalar input of a control step: a literal when known."""
        c = self.constval(v)
        if c is not None:
            x = np.asarray(c).reshape(-1)[0]
            return str(int(x))
        return f"(*a.{self.cname(v)})"

    def _control_fn(self, name: str, ins: list, outs: list, code: str) -> Function:
        """A step of model_run's control flow (no kernel) reading the scalars
        `ins` (see _scalar_read) and writing `outs`."""
        bufs = self.buffers_for({self.cname(v): v for v in ins if v is not None and self.constval(v) is None},
                                list(outs))
        fn = Function(name, bufs, [], [], [], raw_body="", schedule="control flow")
        fn.run_inline = code
        return fn

    def _lower_subgraph(self, sg, prefix: str) -> list[Function]:
        """An If branch or a Loop body, planned like a model of its own (keeping the
        tensors that size others stored) and lowered inside the enclosing control flow."""
        from fusion.plan import plan as make_plan
        sg.value_sources = getattr(self.graph, "value_sources", None) or {}
        sub = make_plan(sg, self.target, profile_db=False)
        fns: list[Function] = []
        self._nest += 1
        try:
            for sb in sub.blocks:
                sb.id = f"{prefix}{sb.id}"
                fns.extend(self.lower_marked(sb))
        finally:
            self._nest -= 1
        return fns

    def shape_of_deferred(self, v: Value, d: int, sg) -> int:
        """Capacity of dim d of a branch output (its run-time dims are decided
        inside the branch; bound them by lowering order: opaque kernels of the
        branch are lowered before the copy, so plain symbols may not be known
        yet: their bound comes from the kernel capacity rule then)."""
        dim = v.shape[d]
        if isinstance(dim, (int, np.integer)):
            return int(dim)
        val, missing = self._subs(dim)
        if val is not None:
            return int(val)
        # decided inside the branch: plan and size the branch's opaque nodes now
        from fusion.codegen import opaque_calls
        mod = opaque_calls.opaque_module()
        for n in sg.nodes:
            if mod is not None and mod.supported(n):
                caps = opaque_calls.capacity_output_shapes(mod, n, self.shape_of)
                for k, o in enumerate(n.outputs):
                    if o.shape is not None and k < len(caps):
                        import sympy
                        for dd, cap in zip(o.shape, caps[k]):
                            if isinstance(dd, sympy.Symbol):
                                self.define_dim(dd, int(cap))
        return self.shape_of(v)[d]

    def _copy_fn(self, name: str, src: Value, dst: Value, check: bool = False) -> Function:
        """dst = src element by element over src's actual extents, each in its
        own padded layout; dst's run-time dims take src's actual sizes (check:
        fail when they exceed dst's capacity)."""
        import sympy
        dc = self.shape_of(dst)
        checks = [self._fits(name, src, f"the capacity of '{dst.name}' {list(dc)}")] if check else []
        sets = [f"{self.dim_var(dim)} = fz_n[{d}];" for d, dim in enumerate(dst.shape)
                if not isinstance(dim, (int, np.integer)) and isinstance(sympy.sympify(dim), sympy.Symbol)]
        return self._copy_step(name, src, dst, "copy of a branch output", dc, checks, after=sets)

    def _scatter_fn(self, b: Block) -> Function:
        """ScatterElements over run-time sizes as a direct scatter: copy data, then
        one pass over the actual indices in order (the last write wins, as in
        onnxruntime), instead of the loop nest's search over all indices for
        every output element."""
        node = b.nodes[0]
        d, i, u = node.inputs
        out = node.outputs[0]
        red = node.attrs.get("reduction", "none")
        ax = node.attrs.get("axis", 0) % d.rank
        loads = {self.cname(v): v for v in (d, i, u)}
        bufs = self.buffers_for(loads, [out])
        fn = Function(b.name, bufs, [], [], [], raw_body="", schedule="direct scatter over the actual indices")
        r = d.rank
        dc, ic, uc = self.shape_of(d), self.shape_of(i), self.shape_of(u)
        if list(self.shape_of(out)) != list(dc):
            raise UnsupportedOpError(f"{node.label()}: output and data capacities differ")
        nd, ni = self.runtime_dims(d), self.runtime_dims(i)
        comb = {"none": "{o} = {v};", "add": "{o} = {o} + {v};", "mul": "{o} = {o} * {v};",
                "max": "{o} = {o} > {v} ? {o} : {v};", "min": "{o} = {o} < {v} ? {o} : {v};"}.get(red)
        if comb is None:
            raise UnsupportedOpError(f"{node.label()}: ScatterElements reduction '{red}' is not supported")
        D, I, U, O = (f"a.{self.cname(v)}" for v in (d, i, u, out))
        lines = [f"static const int64_t fz_dc[] = {{{', '.join(map(str, dc))}}};",
                 f"static const int64_t fz_ic[] = {{{', '.join(map(str, ic))}}};",
                 f"static const int64_t fz_uc[] = {{{', '.join(map(str, uc))}}};",
                 f"const int64_t fz_nd[] = {{{', '.join(nd)}}};",
                 f"const int64_t fz_ni[] = {{{', '.join(ni)}}};",
                 f"memcpy({O}, {D}, {int(np.prod(dc)) * out.dtype.itemsize});",
                 f"int64_t fz_k[{r}] = {{0}}, fz_total = 1;",
                 f"for (int q = 0; q < {r}; ++q) fz_total *= fz_ni[q];",
                 "for (int64_t e = 0; e < fz_total; ++e) {",
                 "    int64_t pi = 0, pu = 0, po = 0;",
                 f"    for (int q = 0; q < {r}; ++q) {{ pi = pi * fz_ic[q] + fz_k[q]; pu = pu * fz_uc[q] + fz_k[q]; }}",
                 f"    int64_t j = (int64_t){I}[pi];",
                 f"    if (j < 0) j += fz_nd[{ax}];",
                 f"    if (j < 0 || j >= fz_nd[{ax}]) {{ fz_set_error(\"{_c_str(node.label())}: ScatterElements "
                 f"index out of range\"); return -1; }}",
                 f"    for (int q = 0; q < {r}; ++q) po = po * fz_dc[q] + (q == {ax} ? j : fz_k[q]);",
                 "    " + comb.format(o=f"{O}[po]", v=f"{U}[pu]"),
                 f"    for (int q = {r} - 1; q >= 0; --q) {{ if (++fz_k[q] < fz_ni[q]) break; fz_k[q] = 0; }}",
                 "}"]
        fn.run_inline = "\n".join(lines)
        return fn

    def opaque_block(self, b: Block, outs: list[Value]) -> Function:
        from fusion.codegen import opaque_calls
        return opaque_calls.lower_opaque(self, b, outs)

    # ------------------------------------------------------------- the model
    def emit(self, progress=None) -> Artifact:
        t0 = time.perf_counter()
        g = self.graph
        from fusion.ir.shape_infer import resolve_value_dims
        if not hasattr(g, "value_sources"):   # not yet done before planning (driver.planned_graph)
            resolve_value_dims(g)   # sizes that are run-time values of shape arithmetic get formulas
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
            fn = self.lower_marked(b)
            if progress is not None:
                progress.step(b.name)
            for f in fn:
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
        loops, stack = [], []
        for k, (_, fn) in enumerate(fns):
            if getattr(fn, "loop_open", None):
                stack.append(k)
            if getattr(fn, "loop_close", None):
                loops.append((stack.pop(), k))
            for buf in fn.buffers:
                if buf.role == "out":
                    written.setdefault(buf.name, (k, None))
            for buf in fn.buffers:
                if buf.role == "in":
                    last_read[buf.name] = k
        # a value made before a Loop and read inside it stays live until the loop ends;
        # one first written inside and read after it (a scan output) is live from its start
        for name, k in list(last_read.items()):
            w = written.get(name, (-1, None))[0]
            for a, z in loops:
                if a < k <= z and w <= a:
                    last_read[name] = max(last_read[name], z)
                if a < w <= z and last_read[name] > z:
                    written[name] = (a, None)
        undecided = [x for x in self.dyn if x in (getattr(g, "value_sources", None) or {})
                     and x not in getattr(self, "_decided", set())]
        if undecided:
            v = g.value_sources[undecided[0]][0]
            raise UnsupportedOpError(f"value '{v.name}' (from {v.producer.label()}) is read as a size but is computed "
                                     f"inside a fused block, where model_run cannot read it; the C backend cannot "
                                     f"size what depends on it yet")
        values_by_name = dict(self.value_by_cname)
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
            if buf.name == "fz_dims":
                return "(const int64_t *)fz_dims"
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
        for var, _, bound in self.dyn_exprs.values():
            run.append(f"    int64_t {var} = {bound};")
        for decl in self.loop_vars:
            run.append(f"    {decl}")
        if self.dim_slots:
            run.append(f"    int64_t fz_dims[{len(self.dim_slots)}];")
        refresh = self._dyn_refresh()
        run.extend(refresh)
        run_ids: list[str] = []
        for b, fn in fns:
            inits = ", ".join(f".{buf.name} = {pointer(buf)}" for buf in fn.buffers)
            inits += "".join(f", .{s_} = {s_}" for s_ in sorted(FunctionPrinter(fn)._syms()))
            inline = getattr(fn, "run_inline", None)
            guards = getattr(fn, "guards", [])
            for cvar, fixed, msg in getattr(fn, "asserts", []):
                run.append(f"    if ({cvar} != {fixed}) {{ fz_set_error(\"{_c_str(msg.format('another size'))}\"); "
                           f"return -1; }}")
            if guards:   # a kernel of an If branch
                run.append("    if (" + " && ".join(f"{'' if want else '!'}(*{pointer(gb)})" for gb, want in guards)
                           + ") {")
            if inline is not None:
                run.append(f"    {{ struct {fn.name}_args a = {{ {inits} }};")
                run.extend("        " + ln for ln in inline.splitlines())
                run.append("    }")
                run.extend(refresh)   # the kernel may have decided run-time dims
            else:
                run.append(f"    {{ struct {fn.name}_args a = {{ {inits} }}; FZ_TIC; {fn.name}(&a); FZ_TOC({len(run_ids)}); }}")
                run_ids.append(fn.name)
            decides = getattr(fn, "decides", [])
            for cn, v, k, name in decides:
                buf = next(x for x in fn.buffers if x.name == cn)
                var, lo, hi = self.dim_var(name), self.dyn_lo[name], self.dyn[name]
                msg = _c_str(f"value '{v.name}' (element {k}) read as a size lies outside [{lo}, {hi}], the range "
                             f"the model's arithmetic gives it; the compiled code cannot hold what it sizes")
                run.append(f"    {var} = (int64_t)({pointer(buf)})[{k}];")
                run.append(f"    if ({var} < {lo} || {var} > {hi}) {{ fz_set_error(\"{msg}\"); return -1; }}")
            if decides:
                run.extend(refresh)
            if guards:
                run.append("    }")
            if getattr(fn, "loop_open", None):
                run.append(fn.loop_open)
            if getattr(fn, "loop_close", None):
                run.append(fn.loop_close)
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
        if self.dyn or self.dyn_exprs or self._copies:
            parts.insert(3, _DYN_HELPERS)
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


_DYN_HELPERS = """/* arithmetic of run-time dims (floor semantics, as in the shape formulas) */
static inline int64_t fz_dmin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t fz_dmax(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t fz_dfloordiv(int64_t a, int64_t b) { int64_t q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
static inline int64_t fz_dmod(int64_t a, int64_t b) { int64_t r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
/* copy the n[] elements of a padded tensor (capacity sc) into another padded layout (capacity dc) */
static void fz_dyn_copy(void *dst, const void *src, int64_t es, int rank, const int64_t *n, const int64_t *sc,
                        const int64_t *dc) {
    int64_t idx[8] = {0}, total = 1;
    if (rank == 0) { memcpy(dst, src, (size_t)es); return; }
    for (int d = 0; d < rank - 1; ++d) total *= n[d];
    if (n[rank - 1] == 0) return;
    for (int64_t k = 0; k < total; ++k) {   /* one row (the contiguous last dim) at a time */
        int64_t so = 0, dof = 0;
        for (int d = 0; d < rank; ++d) { so = so * sc[d] + idx[d]; dof = dof * dc[d] + idx[d]; }
        memcpy((char *)dst + dof * es, (const char *)src + so * es, (size_t)(es * n[rank - 1]));
        for (int d = rank - 2; d >= 0; --d) { if (++idx[d] < n[d]) break; idx[d] = 0; }
    }
}"""


def _floor(x):
    import math
    return math.floor(x)


def _ceil(x):
    import math
    return math.ceil(x)


_ROW_ANCHORS = {"MatMul": (0,), "Gemm": (0,), "Conv": (0,), "ConvTranspose": (0,), "MaxPool": (0,),
                "AveragePool": (0,), "GlobalAveragePool": (0,), "GlobalMaxPool": (0,)}


def _rows_only(b: Block, dynamic: list[Value]) -> bool:
    """The block's only run-time dim is the leading dim of its anchor's first
    input and of every value it flows to, and everything but the anchor is
    elementwise or a layout-keeping reshape: each row is computed from the
    same row only."""
    from fusion.codegen.lower import PADDED_SAFE, REORGS
    a = b.anchor
    if a is None or a.op not in _ROW_ANCHORS or not dynamic:
        return False
    if a.op == "Gemm" and a.attrs.get("transA", 0):
        return False
    if a.op == "MatMul" and (a.inputs[0].rank != 2 or a.inputs[1].rank != 2):
        return False
    sym = None
    for v in dynamic:
        lead = [d for d in v.shape if not (isinstance(d, (int, np.integer)) and int(d) == 1)]
        if not lead or isinstance(lead[0], (int, np.integer)) or \
                any(not isinstance(d, (int, np.integer)) for d in lead[1:]):
            return False
        if v.rank == 0 or isinstance(v.shape[0], (int, np.integer)):
            return False   # the run-time dim must be axis 0 itself (the rows)
        if sym is None:
            sym = str(v.shape[0])
        elif str(v.shape[0]) != sym:
            return False
    for x in a.inputs[1:]:
        if x is not None and x.shape is not None and not x.is_static:
            return False
    for n in b.nodes:
        if n is a:
            continue
        cat = n.opdef.category if n.opdef is not None else None
        if not (cat == "elementwise" or n.op in PADDED_SAFE - {"Transpose"} or n.op in REORGS):
            return False
        if n.op in REORGS:
            continue   # axis 0 stays the run-time rows (checked above for every value)
        for v in n.inputs + n.outputs:
            if v is None or v.shape is None:
                continue
            if not v.is_static and v.rank != n.outputs[0].rank:
                return False   # right-aligned broadcasting would move the rows axis
            if v.is_static and v.rank == n.outputs[0].rank and v.rank and int(v.shape[0]) != 1:
                return False   # a static operand along the rows axis: sizes must agree at run time
    return True


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
