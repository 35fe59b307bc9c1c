"""Evaluate expressions with numpy, vectorized over every output position.

Used to check that each op's `lower` (what codegen compiles) computes what its
`reference` computes, and to derive mapping types from observed accesses.
Loads under a Select may carry out-of-range indices on the branch not taken;
here they are clamped (the value is discarded by the Select).
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

from fusion.ir import expr as E
from fusion.ir.intrinsics import INTRINSICS


def _np_dtype(name: str):
    return np.dtype(np.bool_) if name == "bool" else np.dtype(name)


def evaluate(e: E.Expr, env: dict, load: Callable[[object, list[np.ndarray]], np.ndarray]) -> np.ndarray:
    memo: dict[int, np.ndarray] = {}

    def go(x: E.Expr):
        k = id(x)
        if k in memo:
            return memo[k]
        r = _eval(x)
        if not isinstance(x, E.Reduce) and not _depends_on_bound(x):
            memo[k] = r
        return r

    bound_stack: list[set] = []

    def _depends_on_bound(x):
        # Memoizing under a reduction would freeze the reduction variable.
        return bool(bound_stack)

    def _eval(x: E.Expr):
        if isinstance(x, E.Const):
            return np.asarray(x.value, dtype=_np_dtype(x.dtype))
        if isinstance(x, E.Var):
            return env[x]
        if isinstance(x, E.Bin):
            return _bin(x.op, go(x.a), go(x.b), x.a.dtype)
        if isinstance(x, E.Un):
            a = go(x.a)
            if x.op == "neg":
                return -a
            if x.op == "not":
                return np.logical_not(a)
            return np.invert(a)
        if isinstance(x, E.Call):
            args = [go(a) for a in x.args]
            with np.errstate(all="ignore"):
                r = INTRINSICS[x.fn].numpy(*args)
            return np.asarray(r).astype(_np_dtype(x.dtype), copy=False)
        if isinstance(x, E.Select):
            return np.where(go(x.cond), go(x.a), go(x.b))
        if isinstance(x, E.Cast):
            a = go(x.a)
            with np.errstate(all="ignore"):
                if x.dtype == "bool":
                    return a != 0
                return np.asarray(a).astype(_np_dtype(x.dtype))
        if isinstance(x, E.Load):
            idx = [np.asarray(go(i)).astype(np.int64) for i in x.index]
            return load(x.slot, idx)
        if isinstance(x, E.Reduce):
            return _reduce(x)
        raise TypeError(type(x))

    def _reduce(x: E.Reduce):
        exts = [v.extent for v in x.vars]
        acc = None
        best = None
        pos = 0
        bound_stack.append(set(x.vars))
        try:
            for combo in itertools.product(*[range(n) for n in exts]):
                for v, c in zip(x.vars, combo):
                    env[v] = np.asarray(c, dtype=np.int64)
                val = np.asarray(go(x.body))
                if acc is None:
                    acc = val.copy()
                    if x.op in ("argmax", "argmin"):
                        best = np.zeros(val.shape, dtype=np.int64)
                elif x.op == "sum":
                    acc = acc + val
                elif x.op == "prod":
                    acc = acc * val
                elif x.op == "max":
                    acc = np.maximum(acc, val)
                elif x.op == "min":
                    acc = np.minimum(acc, val)
                elif x.op == "any":
                    acc = acc | val
                elif x.op == "all":
                    acc = acc & val
                elif x.op in ("argmax", "argmin"):
                    better = val > acc if x.op == "argmax" else val < acc
                    acc = np.where(better, val, acc)
                    best = np.where(better, pos, best)
                pos += 1
        finally:
            bound_stack.pop()
            for v in x.vars:
                env.pop(v, None)
        if acc is None:  # empty reduction
            if x.op in ("argmax", "argmin"):
                return np.asarray(0, dtype=np.int64)
            return np.asarray(_empty_init(x.op, _np_dtype(x.body.dtype)))
        if x.op in ("argmax", "argmin"):
            return best
        return acc.astype(_np_dtype(x.dtype), copy=False)

    return go(e)


def _bin(op, a, b, dtype):
    isint = dtype.startswith("int") or dtype.startswith("uint")
    with np.errstate(all="ignore"):
        if op == "add": return a + b
        if op == "sub": return a - b
        if op == "mul": return a * b
        if op == "div":
            if isint:
                bb = np.where(b == 0, 1, b)
                q = np.abs(a) // np.abs(bb)
                return np.where((a < 0) != (bb < 0), -q, q).astype(np.result_type(a, b))
            return a / b
        if op == "floordiv": return a // np.where(b == 0, 1, b) if isint else np.floor(a / b)
        if op == "mod": return np.mod(a, np.where(b == 0, 1, b)) if isint else np.mod(a, b)
        if op == "fmod": return np.fmod(a, np.where(b == 0, 1, b)) if isint else np.fmod(a, b)
        if op == "pow":
            if isint:
                return np.power(a.astype(np.int64), np.asarray(b).astype(np.int64)).astype(a.dtype)
            return np.power(a, b)
        if op == "max": return np.maximum(a, b) if isint else np.where(np.isnan(a) | np.isnan(b), np.nan, np.maximum(a, b)).astype(np.result_type(a, b))
        if op == "min": return np.minimum(a, b) if isint else np.where(np.isnan(a) | np.isnan(b), np.nan, np.minimum(a, b)).astype(np.result_type(a, b))
        if op == "lt": return a < b
        if op == "le": return a <= b
        if op == "gt": return a > b
        if op == "ge": return a >= b
        if op == "eq": return a == b
        if op == "ne": return a != b
        if op == "and": return np.logical_and(a, b)
        if op == "or": return np.logical_or(a, b)
        if op == "xor": return np.logical_xor(a, b)
        if op == "bitand": return a & b
        if op == "bitor": return a | b
        if op == "bitxor": return a ^ b
        if op == "shl": return np.left_shift(a, b)
        if op == "shr": return np.right_shift(a, b)
    raise ValueError(op)


def output_vars(shape: Sequence[int], prefix: str = "o") -> list[E.Var]:
    return [E.Var(f"{prefix}{i}", int(d)) for i, d in enumerate(shape)]


def run_lowered(node, args: list[np.ndarray | None], k: int = 0) -> np.ndarray:
    """Compute output k of `node` by evaluating its `lower` over all positions."""
    out_shape = tuple(int(d) for d in node.outputs[k].shape)
    vs = output_vars(out_shape)
    grids = np.indices(out_shape, dtype=np.int64) if out_shape else []
    env = {v: grids[i] for i, v in enumerate(vs)}

    def read(i, index):
        v = node.inputs[i]
        return E.load(i, index, v.dtype.name if v.dtype != np.bool_ else "bool")

    e = node.opdef.lower(node, vs, read, k)

    def load(slot, idx):
        a = args[slot]
        if a.ndim == 0:
            return a
        idx = [np.clip(ix, 0, max(d - 1, 0)) for ix, d in zip(idx, a.shape)]
        return a[tuple(idx)]

    r = evaluate(e, env, load)
    want = node.outputs[k].dtype
    return np.broadcast_to(np.asarray(r), out_shape).astype(want, copy=False)


def _empty_init(op: str, dt: np.dtype):
    """The identity of a reduction over nothing, in the body's dtype (an
    integer or bool max/min has no infinity: it starts at the type's extreme)."""
    dt = np.dtype(dt)
    if op in ("max", "min"):
        if dt == np.bool_:
            return np.bool_(op == "min")
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            return dt.type(info.min if op == "max" else info.max)
        return dt.type(-np.inf if op == "max" else np.inf)
    init = {"sum": 0, "prod": 1, "any": False, "all": True}.get(op, 0)
    return np.asarray(init).astype(dt)
