"""The OpenCL C printer: one `__kernel` per loop-nest Function.

Same program as the C printer (fusion/codegen/cprint.py), other spelling:
the flattened outer range becomes the NDRange (one work-item per outer
point, global size rounded up to the work-group size, so a bounds guard
comes first); buffers are typed pointers at fixed byte offsets into a few
storage arguments (weights, arena, graph inputs and outputs), which keeps the
argument count small whatever the block reads.
"""
from __future__ import annotations

from dataclasses import dataclass

from fusion.errors import UnsupportedOpError
from fusion.ir import expr as E
from fusion.ir.intrinsics import INTRINSICS
from fusion.codegen.cprint import SUFFIX, ExprPrinter, FunctionPrinter, is_float
from fusion.codegen.loops import Decl, Function, Let, Loop, Store, Sym, Update

# OpenCL C spells the fixed-width C names differently; the helpers mirror
# fz_runtime.h (floor division, NaN-propagating max/min, saturating casts).
PRELUDE = r"""
typedef char int8_t; typedef short int16_t; typedef int int32_t; typedef long int64_t;
typedef uchar uint8_t; typedef ushort uint16_t; typedef uint uint32_t; typedef ulong uint64_t;
#define INT64_C(x) (x##L)
#define UINT64_C(x) (x##UL)
#define INT64_MIN LONG_MIN
#define floorf floor
#define fmodf fmod
#define powf pow
#ifdef FZ_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double fz_wide;
#else
typedef float fz_wide;
#endif
#ifdef FZ_FP16
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#endif
#define FZ_INT_HELPERS(S, T) \
    static inline T fz_max_##S(T a, T b) { return a > b ? a : b; } \
    static inline T fz_min_##S(T a, T b) { return a < b ? a : b; } \
    static inline T fz_div_##S(T a, T b) { return b == 0 ? 0 : (T)(a / b); } \
    static inline T fz_div_rem_##S(T a, T b) { return b == 0 ? 0 : (T)(a % b); } \
    static inline T fz_floordiv_##S(T a, T b) { if (b == 0) return 0; T q = (T)(a / b); \
        return ((a % b) != 0 && ((a < 0) != (b < 0))) ? (T)(q - 1) : q; } \
    static inline T fz_mod_##S(T a, T b) { if (b == 0) return 0; T r = (T)(a % b); \
        return (r != 0 && ((r < 0) != (b < 0))) ? (T)(r + b) : r; } \
    static inline T fz_pow_##S(T a, T b) { T r = 1; if (b < 0) return (a == 1) ? 1 : 0; \
        while (b) { if (b & 1) r = (T)(r * a); a = (T)(a * a); b >>= 1; } return r; } \
    static inline T fz_abs_##S(T a) { return a < 0 ? (T)-a : a; } \
    static inline T fz_f2##S(fz_wide x) { return x != x ? (T)0 : (T)x; }
FZ_INT_HELPERS(i8, char)
FZ_INT_HELPERS(i16, short)
FZ_INT_HELPERS(i32, int)
FZ_INT_HELPERS(i64, long)
FZ_INT_HELPERS(u8, uchar)
FZ_INT_HELPERS(u16, ushort)
FZ_INT_HELPERS(u32, uint)
FZ_INT_HELPERS(u64, ulong)
static inline float fz_max_f32(float a, float b) { return (a > b || a != a) ? a : b; }
static inline float fz_min_f32(float a, float b) { return (a < b || a != a) ? a : b; }
static inline float fz_mod_f32(float a, float b) { float r = fmod(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
#ifdef FZ_FP64
static inline double fz_max_f64(double a, double b) { return (a > b || a != a) ? a : b; }
static inline double fz_min_f64(double a, double b) { return (a < b || a != a) ? a : b; }
static inline double fz_mod_f64(double a, double b) { double r = fmod(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
#endif
"""

def intrinsic_defines() -> str:
    """The C printer's libm names (expf, tanhf...) -> OpenCL builtins, for C
    text printed by shared code (the anchor prologue/epilogue)."""
    out = []
    for intr in INTRINSICS.values():
        for c in (intr.c_float, intr.c_double):
            if c and c != intr.opencl and c not in ("floorf", "fmodf", "powf") and intr.opencl:
                out.append(f"#define {c} {intr.opencl}")
    return "\n".join(sorted(set(out)))


CL_TYPES = {
    "float32": "float", "float64": "double", "float16": "half",
    "int8": "char", "int16": "short", "int32": "int", "int64": "long",
    "uint8": "uchar", "uint16": "ushort", "uint32": "uint", "uint64": "ulong", "bool": "uchar",
}


def cltype(dtype: str, fp16: bool = False) -> str:
    if fp16 and dtype == "float32":
        return "half"
    try:
        return CL_TYPES[dtype]
    except KeyError:
        raise UnsupportedOpError(f"element type {dtype} is not supported by the OpenCL backend") from None


@dataclass
class Place:
    """Where a buffer lives: storage argument + byte offset."""
    storage: str      # W | M | in0.. | out0..
    offset: int


class CLExprPrinter(ExprPrinter):
    def call(self, e: E.Call) -> str:
        args = ", ".join(self.p(x) for x in e.args)
        if e.fn in ("isnan", "isinf"):
            return f"((uchar)({e.fn}({args}) != 0))"
        intr = INTRINSICS[e.fn]
        dt = e.args[0].dtype
        if not is_float(dt):
            if e.fn == "abs":
                return f"fz_abs_{SUFFIX[dt]}({args})"
            return f"(({cltype(e.dtype)}){intr.opencl}((fz_wide){args}))"
        return f"{intr.opencl}({args})"


class KernelPrinter(FunctionPrinter):
    """A Function (plain loop nest) -> one OpenCL kernel."""

    def __init__(self, fn: Function, places: dict[str, Place], kname: str, fp16: bool = False,
                 fp16_arith: bool = False):
        super().__init__(fn, vectorize=False)
        self.places, self.kname = places, kname
        # fp16: float32 weights and intermediates are stored as half (vload_half/
        # vstore_half are core OpenCL); arithmetic in half only with cl_khr_fp16.
        self.fp16_arith = fp16 and fp16_arith
        self.half_store = {b.name for b in fn.buffers
                           if fp16 and b.dtype == "float32" and places[b.name].storage in ("W", "M")}
        shapes = {b.name: b.shape for b in fn.buffers}
        # 32-bit index arithmetic when every buffer fits: mobile GPUs emulate 64-bit integers.
        small = all(_elements(b.shape) < 2**31 - 1 for b in fn.buffers)
        self.idx = "int" if small and self.total() < 2**31 - 1 else "long"
        half = self.half_store
        self.ep = CLExprPrinter(shapes, load=lambda n, i: f"vload_half({i}, {n})" if n in half else f"{n}[{i}]")

    def storages(self) -> list[str]:
        return sorted({self.places[b.name].storage for b in self.fn.buffers}, key=storage_order)

    def sym_args(self) -> list[str]:
        return sorted(self._syms())

    def total(self) -> int:
        """Work-items: the outer range at capacity (run-time extents at their bound)."""
        n = 1
        for ext in self.fn.outer_extents:
            n *= ext.bound if isinstance(ext, Sym) else int(ext)
        return n

    def emit(self, s, ind: str) -> None:
        L, p = self.lines, self.ep.p
        T = lambda dt: cltype(dt, self.fp16_arith)
        if isinstance(s, Let):
            L.append(f"{ind}const {T(s.temp.dtype)} {s.temp.name} = {p(s.value)};")
        elif isinstance(s, Decl):
            L.append(f"{ind}{T(s.temp.dtype)} {s.temp.name} = {p(s.init)};")
        elif isinstance(s, Update):
            t, v = s.temp.name, p(s.value)
            sfx = SUFFIX.get(s.temp.dtype, "i64")
            if s.op in ("argmax", "argmin"):
                cmp = ">" if s.op == "argmax" else "<"
                L.append(f"{ind}{{ const {T(s.temp.dtype)} v_ = {v}; "
                         f"if (v_ {cmp} {t}) {{ {t} = v_; {s.pos_temp.name} = {p(s.pos)}; }} }}")
            else:
                L.append(ind + {"sum": f"{t} += {v};", "prod": f"{t} *= {v};",
                                "max": f"{t} = fz_max_{sfx}({t}, {v});", "min": f"{t} = fz_min_{sfx}({t}, {v});",
                                "any": f"{t} = {t} || {v};", "all": f"{t} = {t} && {v};"}[s.op])
        elif isinstance(s, Store):
            if s.buffer in self.half_store:
                L.append(f"{ind}vstore_half((float)({p(s.value)}), {p(s.index)}, {s.buffer});")
            else:
                L.append(f"{ind}{s.buffer}[{p(s.index)}] = ({T(s.dtype)})({p(s.value)});")
        elif isinstance(s, Loop):
            ext = str(s.extent) if isinstance(s.extent, int) else p(E.wrap(s.extent))
            L.append(f"{ind}for ({self.idx} {s.var.name} = 0; {s.var.name} < {ext}; ++{s.var.name}) {{")
            for x in s.body:
                self.emit(x, ind + "    ")
            L.append(f"{ind}}}")
        else:
            raise UnsupportedOpError(f"block {self.fn.name}: statement {type(s).__name__} has no OpenCL spelling")

    def kernel(self) -> str:
        fn = self.fn
        self.lines = []
        L = self.lines
        written = {b.name for b in fn.buffers if b.role == "out"}
        out_storages = {self.places[n].storage for n in written}
        params = []
        for st in self.storages():
            const = "" if st in out_storages else "const "
            params.append(f"__global {const}char *{st}")
        params += [f"const long {s_}" for s_ in self.sym_args()]
        L.append(f"/* block {fn.name}: {fn.comment or ''}{fn.schedule} */")
        L.append(f"__kernel void {self.kname}({', '.join(params)}) {{")
        n = self.total()
        L.append("    const long p_ = (long)get_global_id(0);")
        L.append(f"    if (p_ >= {n}L) return;   /* global size is rounded up to the work-group size */")
        for b in fn.buffers:
            pl = self.places[b.name]
            const = "" if b.name in written else "const "
            t = "half" if b.name in self.half_store else cltype(b.dtype)
            L.append(f"    __global {const}{t} *restrict {b.name} = (__global {const}{t} *)({pl.storage} + {pl.offset});")
        for s in fn.prelude:
            self.emit(s, "    ")
        exts = [x.bound if isinstance(x, Sym) else int(x) for x in fn.outer_extents]
        stride = 1
        strides = []
        for ext in reversed(exts):
            strides.append(stride)
            stride *= ext
        strides.reverse()
        for k, (v, ext, st) in enumerate(zip(fn.outer, exts, strides)):
            q = "p_" if st == 1 else f"(p_ / {st}L)"
            if k > 0:
                q = f"({q} % {ext}L)"
            L.append(f"    const {self.idx} {v.name} = ({self.idx}){q};")
            if isinstance(fn.outer_extents[k], Sym):   # past the run-time size: nothing to do
                L.append(f"    if ({v.name} >= {fn.outer_extents[k].name}) return;")
        for s in fn.body:
            self.emit(s, "    ")
        L.append("}")
        return "\n".join(L)


def _elements(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def storage_order(st: str):
    return ({"W": 0, "M": 1}.get(st, 2), len(st), st)
