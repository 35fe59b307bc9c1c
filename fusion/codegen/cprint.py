"""The C printer: loop-nest Functions and expressions as portable C (gnu11).

Spelling only: every decision (what to compute, where, in which loop) was
made by lowering. Integer division and modulo follow the expression
language's floor semantics through helpers in fz_runtime.h, except where
value ranges prove both sides non-negative (then plain C `/` and `%`).

Float exp, log, log1p, tanh and erf print as fz_runtime.h's inline versions
(fz_expf ...), which vectorize, where the printer knows the text is C that
includes fz_runtime.h: FunctionPrinter's own loop nests, and whatever is
printed inside `with fast_math():` (the GEMM kernels wrap their prologue and
epilogue callbacks in it); there Mish's tanh(log(exp(y) + 1)) is one call,
fz_tanh_softplusf(y). Everywhere else the libm names stay, because OpenCL
reuses this printer for anchor epilogues and maps libm names to its builtins.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator

import numpy as np

from fusion.ir import expr as E
from fusion.ir.intrinsics import INTRINSICS
from fusion.codegen.loops import (Decl, Function, Let, Loop, Raw, Store, Sym, Temp, Update)

C_TYPES = {
    "float32": "float", "float64": "double", "float16": "_Float16",
    "int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
    "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t",
    "bool": "uint8_t",
}
# Suffix of the typed helpers in fz_runtime.h (fz_max_f32 ...).
SUFFIX = {"float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
          "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "u8", "float16": "f32"}

_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_BIT = {"bitand": "&", "bitor": "|", "bitxor": "^", "shl": "<<", "shr": ">>"}


def ctype(dtype: str) -> str:
    try:
        return C_TYPES[dtype]
    except KeyError:
        from fusion.errors import UnsupportedOpError
        raise UnsupportedOpError(f"element type {dtype} is not supported by the C backend") from None


def is_float(dtype: str) -> bool:
    return dtype.startswith("float")


def c_const(value, dtype: str) -> str:
    if dtype == "bool":
        return "1" if value else "0"
    if is_float(dtype):
        v = float(value)
        suf = "f" if dtype != "float64" else ""
        if math.isnan(v):
            return "NAN" if dtype != "float64" else "((double)NAN)"
        if math.isinf(v):
            s = "INFINITY" if dtype != "float64" else "((double)INFINITY)"
            return s if v > 0 else f"(-{s})"
        r = repr(v)
        if "e" not in r and "." not in r:
            r += ".0"
        return f"{r}{suf}" if v >= 0 else f"({r}{suf})"
    v = int(value)
    ct = C_TYPES.get(dtype, "int64_t")
    if dtype == "int64" or dtype == "uint64":
        if -2**31 < v < 2**31:
            return str(v) if v >= 0 else f"({v})"
        if dtype == "int64":
            if v == -2**63:
                return "INT64_MIN"
            return f"INT64_C({v})" if v >= 0 else f"(-INT64_C({-v}))"
        return f"UINT64_C({v})"
    return f"(({ct}){v})"


_FAST_MATH = contextvars.ContextVar("fusion_c_fast_math", default=False)


@contextlib.contextmanager
def fast_math(on: bool = True) -> Iterator[None]:
    """Within this block, ExprPrinters without an explicit setting spell float
    math with fz_runtime.h's vectorizable functions."""
    token = _FAST_MATH.set(on)
    try:
        yield
    finally:
        _FAST_MATH.reset(token)


def fold_divmod(e: E.Expr) -> E.Expr:
    """(a // k) * k + a % k -> a in an affine sum: what splitting a flat
    index into dims and linearizing it again leaves behind."""
    aff = E._affine(e) if e.dtype == E.INDEX else None
    if aff is None:
        return e
    terms, c = aff
    changed = True
    while changed:
        changed = False
        for t, coef in list(terms.items()):
            if isinstance(t, E.Bin) and t.op == "floordiv" and isinstance(t.b, E.Const) and t.b.value > 0:
                k = t.b.value
                rem = E.Bin("mod", t.a, t.b, t.dtype)
                if coef % k == 0 and terms.get(rem) == coef // k:
                    del terms[t], terms[rem]
                    for u, cu in (E._affine(t.a) or ({t.a: 1}, 0))[0].items():
                        terms[u] = terms.get(u, 0) + cu * (coef // k)
                    c += (E._affine(t.a) or ({}, 0))[1] * (coef // k)
                    terms = {u: cu for u, cu in terms.items() if cu}
                    changed = True
                    break
    return E._from_affine(terms, c, e.dtype)


def _softplus_arg(e: E.Expr) -> E.Expr | None:
    """y when e is log(exp(y) + 1) (either operand order), else None."""
    if not (isinstance(e, E.Call) and e.fn == "log" and isinstance(e.args[0], E.Bin) and e.args[0].op == "add"):
        return None
    a, b = e.args[0].a, e.args[0].b
    for x, one in ((a, b), (b, a)):
        if isinstance(x, E.Call) and x.fn == "exp" and isinstance(one, E.Const) and one.value == 1.0:
            return x.args[0]
    return None


class ExprPrinter:
    """Expressions -> C. `load(name, flat_index_c, dtype)` spells a buffer read;
    `var(name)` a loop variable; `shapes[name]` gives each buffer's shape.
    `fast`: spell float math with fz_runtime.h's functions (None: as the
    enclosing `fast_math()` block says, else libm)."""

    def __init__(self, shapes: dict[str, tuple], load: Callable[[str, str], str] | None = None,
                 var: Callable[[str], str] | None = None, sym: Callable[[str], str] | None = None,
                 fast: bool | None = None):
        self.shapes = shapes
        self.fast = fast
        self.load = load or (lambda name, idx: f"{name}[{idx}]")
        self.var = var or (lambda name: name)
        self.sym = sym or (lambda name: name)

    def flat(self, name: str, index) -> E.Expr:
        return fold_divmod(E.linearize(list(index), self.shapes[name]))

    def p(self, e: E.Expr) -> str:
        if isinstance(e, E.Const):
            return c_const(e.value, e.dtype)
        if isinstance(e, E.Var):
            return self.var(e.name)
        if isinstance(e, Temp):
            return e.name
        if isinstance(e, Sym):
            return self.sym(e.name)
        if isinstance(e, E.Load):
            return self.load(e.slot, self.p(self.flat(e.slot, e.index)))
        if isinstance(e, E.Bin):
            return self.bin(e)
        if isinstance(e, E.Un):
            a = self.p(e.a)
            return {"neg": f"(-{a})", "not": f"(!{a})", "bitnot": f"(~{a})"}[e.op]
        if isinstance(e, E.Call):
            return self.call(e)
        if isinstance(e, E.Select):
            return f"({self.p(e.cond)} ? {self.p(e.a)} : {self.p(e.b)})"
        if isinstance(e, E.Cast):
            a = self.p(e.a)
            if e.dtype == "bool":
                return f"((uint8_t)({a} != 0))"
            if is_float(e.a.dtype) and not is_float(e.dtype):
                return f"fz_f2{SUFFIX[e.dtype]}({a})"
            return f"(({ctype(e.dtype)}){a})"
        if isinstance(e, E.Reduce):
            raise AssertionError("reductions are scheduled into loops before printing")
        raise TypeError(f"cannot print {type(e).__name__}")

    def bin(self, e: E.Bin) -> str:
        op, a, b = e.op, self.p(e.a), self.p(e.b)
        dt = e.a.dtype
        if op in ("add", "sub", "mul"):
            return f"({a} {'+-*'[('add', 'sub', 'mul').index(op)]} {b})"
        if op in _CMP:
            return f"({a} {_CMP[op]} {b})"
        if op == "and":
            return f"({a} && {b})"
        if op == "or":
            return f"({a} || {b})"
        if op == "xor":
            return f"((!!{a}) != (!!{b}))"
        if op in ("shl", "shr"):
            # a shift by the type's width or more is 0 in ONNX, undefined in C
            return f"fz_{op}_{SUFFIX.get(dt, 'i64')}({a}, {b})"
        if op in _BIT:
            return f"({a} {_BIT[op]} {b})"
        s = SUFFIX.get(dt, "i64")
        if op in ("max", "min"):
            return f"fz_{op}_{s}({a}, {b})"
        if is_float(dt):
            if op == "div":
                return f"({a} / {b})"
            if op == "floordiv":
                return f"{'floorf' if dt != 'float64' else 'floor'}({a} / {b})"
            if op == "mod":
                return f"fz_mod_{s}({a}, {b})"
            if op == "fmod":
                return f"{'fmodf' if dt != 'float64' else 'fmod'}({a}, {b})"
            if op == "pow":
                return f"{'powf' if dt != 'float64' else 'pow'}({a}, {b})"
        else:
            nonneg = E.bounds(e.a)[0] >= 0 and isinstance(e.b, E.Const) and e.b.value > 0
            if op in ("floordiv", "div") and nonneg:
                return f"({a} / {b})"
            if op == "mod" and nonneg:
                return f"({a} % {b})"
            if op == "div":
                return f"fz_div_{s}({a}, {b})"
            if op == "floordiv":
                return f"fz_floordiv_{s}({a}, {b})"
            if op == "mod":
                return f"fz_mod_{s}({a}, {b})"
            if op == "fmod":
                return f"fz_div_rem_{s}({a}, {b})"
            if op == "pow":
                return f"fz_pow_{s}({a}, {b})"
        raise TypeError(f"cannot print binary op {op} on {dt}")

    def call(self, e: E.Call) -> str:
        args = ", ".join(self.p(x) for x in e.args)
        if e.fn in ("isnan", "isinf"):
            return f"((uint8_t){e.fn}({args}))"
        intr = INTRINSICS[e.fn]
        dt = e.args[0].dtype
        if not is_float(dt):
            if e.fn == "abs":
                return f"fz_abs_{SUFFIX[dt]}({args})"
            return f"(({ctype(e.dtype)}){intr.c_double}((double){args}))"
        if dt == "float64":
            return f"{intr.c_double}({args})"
        fast = self.fast if self.fast is not None else _FAST_MATH.get()
        if fast and e.fn == "tanh" and dt == "float32":
            y = _softplus_arg(e.args[0])
            if y is not None:
                # Mish's tanh(log(exp(y) + 1)): one exp instead of three calls
                return f"fz_tanh_softplusf({self.p(y)})"
        return f"{(intr.c_fast if fast else '') or intr.c_float}({args})"


class FunctionPrinter:
    """A Function -> its args struct, a range worker and the block function."""

    def __init__(self, fn: Function, vectorize: bool = True):
        self.fn = fn
        self.vectorize = vectorize
        shapes = {b.name: b.shape for b in fn.buffers}
        # Generated C always includes fz_runtime.h (OpenCL's subclass replaces this printer).
        self.ep = ExprPrinter(shapes, sym=lambda n: f"A->{n}", fast=True)
        self.lines: list[str] = []

    def struct(self) -> str:
        fn = self.fn
        out = [f"struct {fn.name}_args {{"]
        for b in fn.buffers:
            const = "const " if b.role != "out" else ""
            out.append(f"    {const}{ctype(b.dtype)} *{b.name};  /* {b.role} {b.value} {list(b.shape)} */")
        for s in sorted(self._syms()):
            out.append(f"    int64_t {s};")
        if len(out) == 1:
            out.append("    char unused;")
        out.append("};")
        return "\n".join(out)

    def _syms(self) -> set[str]:
        found = set()
        for ext in self.fn.outer_extents:
            if isinstance(ext, Sym):
                found.add(ext.name)

        def visit(stmts):
            for s in stmts:
                if isinstance(s, Loop):
                    if isinstance(s.extent, Sym):
                        found.add(s.extent.name)
                    visit(s.body)
        visit(self.fn.body)
        return found

    def emit(self, s, ind: str) -> None:
        L = self.lines
        p = self.ep.p
        if isinstance(s, Let):
            L.append(f"{ind}const {ctype(s.temp.dtype)} {s.temp.name} = {p(s.value)};")
        elif isinstance(s, Decl):
            L.append(f"{ind}{ctype(s.temp.dtype)} {s.temp.name} = {p(s.init)};")
        elif isinstance(s, Update):
            t, v = s.temp.name, p(s.value)
            sfx = SUFFIX.get(s.temp.dtype, "i64")
            if s.op == "sum":
                L.append(f"{ind}{t} += {v};")
            elif s.op == "prod":
                L.append(f"{ind}{t} *= {v};")
            elif s.op in ("max", "min"):
                L.append(f"{ind}{t} = fz_{s.op}_{sfx}({t}, {v});")
            elif s.op == "any":
                L.append(f"{ind}{t} = {t} || {v};")
            elif s.op == "all":
                L.append(f"{ind}{t} = {t} && {v};")
            elif s.op in ("argmax", "argmin"):
                cmp = ">" if s.op == "argmax" else "<"
                L.append(f"{ind}{{ const {ctype(s.temp.dtype)} v_ = {v}; "
                         f"if (v_ {cmp} {t}) {{ {t} = v_; {s.pos_temp.name} = {p(s.pos)}; }} }}")
            else:
                raise TypeError(s.op)
        elif isinstance(s, Store):
            store = f"{s.buffer}[{p(s.index)}] = ({ctype(s.dtype)})({p(s.value)});"
            if s.cond is not None and not (isinstance(s.cond, E.Const) and s.cond.value):
                store = f"if ({p(s.cond)}) {store}"
            L.append(ind + store)
        elif isinstance(s, Loop):
            ext = p(E.wrap(s.extent)) if not isinstance(s.extent, int) else str(s.extent)
            innermost = not any(isinstance(x, Loop) for x in s.body)
            pragma = self._pragma(s) if innermost and self.vectorize else ""
            if pragma:
                L.append(f"{ind}{pragma}")
            L.append(f"{ind}for (int64_t {s.var.name} = 0; {s.var.name} < {ext}; ++{s.var.name}) {{")
            for x in s.body:
                self.emit(x, ind + "    ")
            L.append(f"{ind}}}")
        elif isinstance(s, Raw):
            L.extend(ind + line for line in s.text.splitlines())
        else:
            raise TypeError(type(s))

    # max/min reductions over floats use the combiners declared in fz_runtime.h,
    # which keep NaN (OpenMP's built-in max/min drop it)
    _NAN_REDUCTIONS = {("max", "float32"): "fz_maxf", ("min", "float32"): "fz_minf",
                       ("max", "float64"): "fz_maxd", ("min", "float64"): "fz_mind"}

    def _pragma(self, loop: Loop) -> str:
        # Reductions over floats only vectorize when the compiler may
        # reassociate; say so explicitly (onnxruntime reassociates too).
        ups = [x for x in loop.body if isinstance(x, Update)]
        if any(u.op in ("argmax", "argmin", "any", "all") for u in ups):
            return ""
        if ups:
            clauses = []
            for u in ups:
                op = {"sum": "+", "prod": "*"}.get(u.op, u.op)
                if (u.op, u.temp.dtype) in self._NAN_REDUCTIONS:
                    op = self._NAN_REDUCTIONS[(u.op, u.temp.dtype)]
                elif u.op in ("max", "min") and u.temp.dtype.startswith("float"):
                    return ""   # no NaN-keeping combiner for this float type: stay scalar
                clauses.append(f"reduction({op}:{u.temp.name})")
            return "#pragma omp simd " + " ".join(clauses)
        return "#pragma omp simd"

    def function(self) -> str:
        fn = self.fn
        self.lines = []
        L = self.lines
        if fn.functions:
            L.append(fn.functions)
        if fn.raw_body is not None:
            L.append(f"static void {fn.name}(const struct {fn.name}_args *A) {{")
            L.extend("    " + ln for ln in fn.raw_body.splitlines())
            L.append("}")
            return "\n".join(L)
        L.append(f"static void {fn.name}_range(const struct {fn.name}_args *A, int64_t begin, int64_t end) {{")
        for b in fn.buffers:
            const = "const " if b.role != "out" else ""
            L.append(f"    {const}{ctype(b.dtype)} *restrict {b.name} = A->{b.name};")
        L.append("    (void)A;")
        for s in fn.prelude:
            self.emit(s, "    ")
        exts = fn.outer_extents
        L.append("    for (int64_t p_ = begin; p_ < end; ++p_) {")
        # Strides of the flattened outer range (run-time extents print as A->fz_dyn_*).
        strides: list[str] = []
        const, dyn = 1, []
        for ext in reversed(exts):
            strides.append(" * ".join(([str(const)] if const != 1 or not dyn else []) + dyn) or "1")
            if isinstance(ext, int):
                const *= ext
            else:
                dyn.append(self.ep.p(ext))
        strides.reverse()
        for k, (v, ext, st) in enumerate(zip(fn.outer, exts, strides)):
            q = "p_" if st == "1" else f"(p_ / ({st}))"
            if k > 0:
                q = f"({q} % {self.ep.p(E.wrap(ext))})"
            L.append(f"        const int64_t {v.name} = {q};")
        for s in fn.body:
            self.emit(s, "        ")
        L.append("    }")
        L.append("}")
        n = 1
        dyn = []
        for ext in exts:
            if isinstance(ext, int):
                n *= ext
            else:
                dyn.append(self.ep.p(ext))
        total = " * ".join([str(n)] + dyn)
        if fn.parallel:
            L.append(f"static void {fn.name}_task(void *arg, int64_t begin, int64_t end) {{")
            L.append(f"    {fn.name}_range((const struct {fn.name}_args *)arg, begin, end);")
            L.append("}")
            L.append(f"static void {fn.name}(const struct {fn.name}_args *A) {{")
            L.append(f"    fz_parallel_for({total}, {fn.name}_task, (void *)A);")
        else:
            L.append(f"static void {fn.name}(const struct {fn.name}_args *A) {{")
            L.append(f"    {fn.name}_range(A, 0, {total});")
        L.append("}")
        return "\n".join(L)
