"""Symbolic semantics of any op with an index function: evaluate the op
table's `lower` (the expression codegen compiles) at every output position,
with sympy values for tensor elements and Python ints for indices. Proofs of
rules over Conv, LayerNormalization, BatchNormalization, Gemm, ... therefore
check the same definition the compiler uses."""
from __future__ import annotations

import itertools
import operator

import numpy as np
import sympy

from fusion.ir import expr as E
from fusion.ir.intrinsics import INTRINSICS


def _num(v):
    return isinstance(v, (int, bool, np.integer, np.bool_))


_BIN = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "pow": operator.pow,
}


def _bin(op, a, b, dtype):
    if op in _BIN:
        return _BIN[op](a, b)
    if op == "div":
        if _num(a) and _num(b) and not dtype.startswith("float"):
            q = abs(int(a)) // abs(int(b))
            return -q if (a < 0) != (b < 0) else q
        return sympy.Rational(a, b) if _num(a) and _num(b) else sympy.sympify(a) / b
    if op == "floordiv":
        return a // b
    if op == "mod":
        return a % b
    if op in ("max", "min"):
        if _num(a) and _num(b):
            return max(a, b) if op == "max" else min(a, b)
        return (sympy.Max if op == "max" else sympy.Min)(a, b)
    rel = {"lt": sympy.Lt, "le": sympy.Le, "gt": sympy.Gt, "ge": sympy.Ge, "eq": sympy.Eq, "ne": sympy.Ne}
    if op in rel:
        if _num(a) and _num(b):
            return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b}[op]
        return rel[op](a, b)
    if op in ("and", "or", "xor"):
        if isinstance(a, bool) and isinstance(b, bool):
            return {"and": a and b, "or": a or b, "xor": a != b}[op]
        return {"and": sympy.And, "or": sympy.Or, "xor": sympy.Xor}[op](a, b)
    raise NotImplementedError(f"binary op {op} in a symbolic lowering")


def evaluate(e: E.Expr, env: dict, load):
    def go(x):
        if isinstance(x, E.Const):
            if x.dtype == "bool":
                return bool(x.value)
            if isinstance(x.value, int):
                return int(x.value)
            v = x.value
            return sympy.nsimplify(v) if np.isfinite(v) else (sympy.oo if v > 0 else -sympy.oo)
        if isinstance(x, E.Var):
            return env[x]
        if isinstance(x, E.Bin):
            return _bin(x.op, go(x.a), go(x.b), x.a.dtype)
        if isinstance(x, E.Un):
            a = go(x.a)
            if x.op == "neg":
                return -a
            if x.op == "not":
                return (not a) if isinstance(a, bool) else sympy.Not(a)
            raise NotImplementedError(x.op)
        if isinstance(x, E.Call):
            f = INTRINSICS[x.fn].sympy
            if f is None:
                raise NotImplementedError(f"{x.fn} has no sympy form")
            return f(sympy, *[go(a) for a in x.args])
        if isinstance(x, E.Select):
            c = go(x.cond)
            if isinstance(c, (bool, np.bool_)):
                return go(x.a) if c else go(x.b)
            return sympy.Piecewise((go(x.a), c), (go(x.b), True))
        if isinstance(x, E.Cast):
            return go(x.a)
        if isinstance(x, E.Load):
            return load(x.slot, [int(go(i)) for i in x.index])
        if isinstance(x, E.Reduce):
            vals = []
            for combo in itertools.product(*[range(v.extent) for v in x.vars]):
                for v, c in zip(x.vars, combo):
                    env[v] = c
                vals.append(go(x.body))
            for v in x.vars:
                env.pop(v, None)
            if x.op == "sum":
                return sympy.Add(*vals)
            if x.op == "prod":
                return sympy.Mul(*vals)
            if x.op == "max":
                return sympy.Max(*vals)
            if x.op == "min":
                return sympy.Min(*vals)
            raise NotImplementedError(f"reduction {x.op}")
        raise TypeError(type(x))
    return go(e)


def run_lower(node, args) -> list[np.ndarray]:
    """Outputs of `node` over object arrays `args` (sympy elements)."""
    od = node.opdef
    outs = []
    for k, ov in enumerate(node.outputs):
        shape = tuple(int(d) for d in ov.shape)
        res = np.empty(shape, dtype=object)

        def read(i, index, _node=node):
            return E.load(i, list(index), _node.inputs[i].dtype.name if _node.inputs[i].dtype is not None else "float32")

        def load(slot, idx):
            a = args[slot]
            return a[tuple(idx)] if np.ndim(a) else a.item() if hasattr(a, "item") else a
        for idx in np.ndindex(shape):
            e = od.lower(node, [E.Const(i) for i in idx], read, k)
            v = evaluate(e, {}, load)
            res[idx] = v
        outs.append(res)
        if k == 0:
            break  # rules only use the first output of multi-output ops
    return outs
