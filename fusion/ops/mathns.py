"""Math namespaces: one scalar definition, three meanings.

An elementwise op writes its computation once as `scalar(m, *xs)`; `m` is one
of these namespaces:

* NP: numpy arrays (the reference interpreter, constant folding),
* SYM: sympy expressions (the rewriter's proofs),
* EXPR: fusion.ir.expr trees (code generation; each backend prints them).

All three offer the same names, so `lambda m, x: m.where(m.lt(x, 0), 0, x)`
means the same thing everywhere. Function names follow fusion.ir.intrinsics.
"""
from __future__ import annotations

import numpy as np
import sympy

from fusion.ir import expr as E
from fusion.ir.intrinsics import INTRINSICS


class _NumpyMath:
    name = "numpy"

    def __getattr__(self, fn):
        if fn in INTRINSICS:
            f = INTRINSICS[fn].numpy
            return lambda *a: f(*a)
        raise AttributeError(fn)

    @staticmethod
    def _dt(x):
        return x.dtype if isinstance(x, np.ndarray) or isinstance(x, np.generic) else None

    def const(self, v, like):
        dt = self._dt(like)
        return np.asarray(v, dtype=dt) if dt is not None else v

    def cast(self, x, dtype):
        return np.asarray(x).astype(dtype)

    def is_float(self, x):
        return np.asarray(x).dtype.kind == "f"

    def dtype_of(self, x):
        return np.asarray(x).dtype.name

    def max(self, a, b):
        return np.maximum(a, b)

    def min(self, a, b):
        return np.minimum(a, b)

    def where(self, c, a, b):
        return np.where(c, a, b)

    def lt(self, a, b): return np.less(a, b)
    def le(self, a, b): return np.less_equal(a, b)
    def gt(self, a, b): return np.greater(a, b)
    def ge(self, a, b): return np.greater_equal(a, b)
    def eq(self, a, b): return np.equal(a, b)
    def ne(self, a, b): return np.not_equal(a, b)
    def and_(self, a, b): return np.logical_and(a, b)
    def or_(self, a, b): return np.logical_or(a, b)
    def xor(self, a, b): return np.logical_xor(a, b)
    def not_(self, a): return np.logical_not(a)
    def bitand(self, a, b): return np.bitwise_and(a, b)
    def bitor(self, a, b): return np.bitwise_or(a, b)
    def bitxor(self, a, b): return np.bitwise_xor(a, b)
    def bitnot(self, a): return np.invert(a)
    def shl(self, a, b): return np.left_shift(a, b)
    def shr(self, a, b): return np.right_shift(a, b)

    def pow(self, a, b):
        a = np.asarray(a)
        if a.dtype.kind in "iu":
            return np.power(a.astype(np.int64), np.asarray(b).astype(np.int64)).astype(a.dtype)
        return np.power(a, np.asarray(b).astype(a.dtype))

    def div(self, a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "iu":
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
                return np.where((a < 0) != (b < 0), -q, q).astype(a.dtype)
        return np.divide(a, b)

    def mod(self, a, b):  # floor semantics (sign of divisor)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mod(a, b)

    def fmod(self, a, b):  # C semantics (sign of dividend)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.fmod(a, b)


class _SympyMath:
    name = "sympy"

    def __getattr__(self, fn):
        if fn in INTRINSICS and INTRINSICS[fn].sympy is not None:
            f = INTRINSICS[fn].sympy
            return lambda *a: f(sympy, *a)
        raise AttributeError(fn)

    def const(self, v, like):
        return sympy.nsimplify(v) if isinstance(v, float) else sympy.Integer(v) if isinstance(v, int) else v

    def cast(self, x, dtype):
        return x

    def is_float(self, x):
        return True

    def dtype_of(self, x):
        return "float32"

    def max(self, a, b): return sympy.Max(a, b)
    def min(self, a, b): return sympy.Min(a, b)
    def where(self, c, a, b): return sympy.Piecewise((a, c), (b, True))
    def lt(self, a, b): return sympy.Lt(a, b)
    def le(self, a, b): return sympy.Le(a, b)
    def gt(self, a, b): return sympy.Gt(a, b)
    def ge(self, a, b): return sympy.Ge(a, b)
    def eq(self, a, b): return sympy.Eq(a, b)
    def ne(self, a, b): return sympy.Ne(a, b)
    def and_(self, a, b): return sympy.And(a, b)
    def or_(self, a, b): return sympy.Or(a, b)
    def xor(self, a, b): return sympy.Xor(a, b)
    def not_(self, a): return sympy.Not(a)
    def pow(self, a, b): return a ** b
    def div(self, a, b): return a / b
    def mod(self, a, b): return sympy.Mod(a, b)

    def fmod(self, a, b):
        raise NotImplementedError("fmod has no sympy form")


class _ExprMath:
    name = "expr"

    def __getattr__(self, fn):
        if fn in INTRINSICS:
            return lambda *a: E.call(fn, *a)
        raise AttributeError(fn)

    def const(self, v, like):
        return E.wrap(v, like if isinstance(like, E.Expr) else None)

    def cast(self, x, dtype):
        return E.cast(x, np.dtype(dtype).name)

    def is_float(self, x):
        return E.wrap(x).dtype.startswith("float")

    def dtype_of(self, x):
        return E.wrap(x).dtype

    def isnan(self, x): return E.call("isnan", x, dtype="bool")
    def isinf(self, x): return E.call("isinf", x, dtype="bool")
    def max(self, a, b): return E.binary("max", a, b)
    def min(self, a, b): return E.binary("min", a, b)
    def where(self, c, a, b): return E.select(c, a, b)
    def lt(self, a, b): return E.binary("lt", a, b)
    def le(self, a, b): return E.binary("le", a, b)
    def gt(self, a, b): return E.binary("gt", a, b)
    def ge(self, a, b): return E.binary("ge", a, b)
    def eq(self, a, b): return E.binary("eq", a, b)
    def ne(self, a, b): return E.binary("ne", a, b)
    def and_(self, a, b): return E.binary("and", a, b)
    def or_(self, a, b): return E.binary("or", a, b)
    def xor(self, a, b): return E.binary("xor", a, b)
    def not_(self, a): return E.unary("not", a)
    def bitand(self, a, b): return E.binary("bitand", a, b)
    def bitor(self, a, b): return E.binary("bitor", a, b)
    def bitxor(self, a, b): return E.binary("bitxor", a, b)
    def bitnot(self, a): return E.unary("bitnot", a)
    def shl(self, a, b): return E.binary("shl", a, b)
    def shr(self, a, b): return E.binary("shr", a, b)
    def pow(self, a, b): return E.binary("pow", a, b)
    def div(self, a, b): return E.binary("div", a, b)
    def mod(self, a, b): return E.binary("mod", a, b)
    def fmod(self, a, b): return E.binary("fmod", a, b)


NP = _NumpyMath()
SYM = _SympyMath()
EXPR = _ExprMath()
