"""Math functions an expression may call, described once for every consumer.

Each entry says how numpy (reference/interpreter), sympy (rewrite proofs), C
(float and double spellings, libm, and the vectorizable float version in
fz_runtime.h where there is one), OpenCL C and LLVM compute it. Backends read
this table; they keep no private list of functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Intrinsic:
    name: str
    arity: int
    numpy: Callable
    sympy: Callable | None   # f(sympy_module, *args) -> sympy expr; None: not provable
    c_float: str             # C spelling for float (libm); "" -> expanded by the backend
    c_double: str
    opencl: str              # OpenCL C builtin
    llvm: str = ""           # LLVM intrinsic base name (e.g. "llvm.exp"), "" -> libm call
    c_fast: str = ""         # inline float version in fz_runtime.h (vectorizes; libm's calls do
                             # not), "" -> c_float. Only the C printer's generated code has it.


def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[np.float64])(x).astype(np.asarray(x).dtype)


def _round_half_even(x):
    return np.round(x)


INTRINSICS: dict[str, Intrinsic] = {}


def _add(name, arity, numpy, sympy, c_float, c_double, opencl, llvm="", c_fast=""):
    INTRINSICS[name] = Intrinsic(name, arity, numpy, sympy, c_float, c_double, opencl, llvm, c_fast)


_add("exp", 1, np.exp, lambda s, x: s.exp(x), "expf", "exp", "exp", "llvm.exp", c_fast="fz_expf")
_add("log", 1, np.log, lambda s, x: s.log(x), "logf", "log", "log", "llvm.log", c_fast="fz_logf")
_add("sqrt", 1, np.sqrt, lambda s, x: s.sqrt(x), "sqrtf", "sqrt", "sqrt", "llvm.sqrt")
_add("tanh", 1, np.tanh, lambda s, x: s.tanh(x), "tanhf", "tanh", "tanh", c_fast="fz_tanhf")
_add("erf", 1, _erf, lambda s, x: s.erf(x), "erff", "erf", "erf", c_fast="fz_erff")
_add("abs", 1, np.abs, lambda s, x: s.Abs(x), "fabsf", "fabs", "fabs", "llvm.fabs")
_add("floor", 1, np.floor, lambda s, x: s.floor(x), "floorf", "floor", "floor", "llvm.floor")
_add("ceil", 1, np.ceil, lambda s, x: s.ceiling(x), "ceilf", "ceil", "ceil", "llvm.ceil")
_add("round", 1, _round_half_even, None, "nearbyintf", "nearbyint", "rint", "llvm.rint")
_add("sin", 1, np.sin, lambda s, x: s.sin(x), "sinf", "sin", "sin", "llvm.sin")
_add("cos", 1, np.cos, lambda s, x: s.cos(x), "cosf", "cos", "cos", "llvm.cos")
_add("tan", 1, np.tan, lambda s, x: s.tan(x), "tanf", "tan", "tan")
_add("asin", 1, np.arcsin, lambda s, x: s.asin(x), "asinf", "asin", "asin")
_add("acos", 1, np.arccos, lambda s, x: s.acos(x), "acosf", "acos", "acos")
_add("atan", 1, np.arctan, lambda s, x: s.atan(x), "atanf", "atan", "atan")
_add("sinh", 1, np.sinh, lambda s, x: s.sinh(x), "sinhf", "sinh", "sinh")
_add("cosh", 1, np.cosh, lambda s, x: s.cosh(x), "coshf", "cosh", "cosh")
_add("asinh", 1, np.arcsinh, lambda s, x: s.asinh(x), "asinhf", "asinh", "asinh")
_add("acosh", 1, np.arccosh, lambda s, x: s.acosh(x), "acoshf", "acosh", "acosh")
_add("atanh", 1, np.arctanh, lambda s, x: s.atanh(x), "atanhf", "atanh", "atanh")
_add("log1p", 1, np.log1p, lambda s, x: s.log(1 + x), "log1pf", "log1p", "log1p", c_fast="fz_log1pf")
_add("expm1", 1, np.expm1, lambda s, x: s.exp(x) - 1, "expm1f", "expm1", "expm1")
_add("isnan", 1, np.isnan, None, "isnan", "isnan", "isnan")
_add("isinf", 1, np.isinf, None, "isinf", "isinf", "isinf")
_add("atan2", 2, np.arctan2, lambda s, y, x: s.atan2(y, x), "atan2f", "atan2", "atan2")


def get(name: str) -> Intrinsic:
    return INTRINSICS[name]
