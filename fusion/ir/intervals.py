"""Value-range (interval) analysis: compile-time bounds [lo, hi] on the data of
every value, for integers that become run-time sizes (box coordinates cast to
int64 and used as Resize sizes, ConstantOfShape shapes, Slice starts...).

    r = value_ranges(graph)
    r.of(value) -> (lo, hi) float64 arrays, or None

Forward abstract interpretation over `graph.nodes` (topological order),
descending into control-flow bodies:

* Representation. A value with a static shape of at most `limit` elements is
  tracked elementwise (lo/hi have the value's shape); any other value gets one
  0-d interval bounding all its elements. Bounds may be +-inf on one side;
  `of()` returns None only when nothing is known (every element (-inf, inf));
  an unknown narrow integer (int32, uint8, bool...) reports its dtype's range.
  A value with static size 0 has empty arrays of its shape; lo > hi on a 0-d
  interval means the value can hold no element.
* Sources: constants and data known from shape inference (exact), Shape/Size
  (static dims exact, run-time dims as below), ConstantOfShape, graph inputs
  (unknown, except what the dtype implies: bool [0,1], uint8 [0,255], ...).
* Run-time dims: `dim_range(dim)` when the caller gives it and it answers;
  else a dim expression is bounded from its structure (Min/Max/+/*/floor)
  with each symbol in [0, inf), except that a symbol shape inference invented
  for a node's output (`Slice_12_d0`, `NonZero_count`, `Resize_3167_d2`...)
  gets a range from that node's data: ConstantOfShape/Reshape/Expand shape
  values, Resize sizes or scales, Slice/NonZero/Tile/TopK/Range extents, Loop
  scan lengths (<= trip count), If branch dims. Those derived ranges (narrowed
  by `dim_range`) are in `Ranges.dims` / `Ranges.dim(symbol)`.
* Loop: the iteration number is in [0, hi(trip count) - 1] ([0, inf) without
  a trip count); a loop-carried body input keeps its initial value's range if
  the body's carried output stays inside it (an invariant), else it is
  widened to unknown and the body analysed again (each carried value widens
  at most once, so at most carried+1 passes). A carried value whose shape
  changes between iterations is one 0-d interval. If: the union of both
  branches (only the taken branch when the condition is known). Any other op
  with a body (Scan): the body is analysed with unknown inputs, the outputs
  are unknown. Body values read outer-scope Values directly, so they see the
  outer ranges; every body value can be queried with `of()`.
* Ops without a transfer function give unknown. Nothing is guessed.

Soundness against the compiled code:

* Floats are computed in float32 with fused multiply-add and fast math, the
  analysis in float64: every rounded float result (Add, Sub, Mul, Div, Sqrt,
  Exp, Sigmoid, Sum, Mean, linear Resize, Range, Cast to a float type) is
  widened outward by 1e-5 * |bound| + 1e-6 (float16: 4 eps relative), so a
  later Floor or Cast cannot truncate to an integer outside the range.
  Copies and exact ops (Gather, Reshape, Concat, Max, Clip, Floor, Cast of
  integers the mantissa holds...) are not widened.
* Integer results are exact; a result that may leave its dtype (wrap-around)
  or exceeds 2**53 in magnitude (not exact in float64) becomes the dtype's
  full range (int64: unknown).
* NaN: each value carries a "may be NaN" flag. Float graph inputs may be NaN;
  constants may if they hold one; Add/Sub (inf - inf), Mul (0 * inf), Div
  (0/0, inf/inf, any divisor range containing 0), Sqrt (negative input) and
  Softmax (infinite input) create it, and every other float op propagates it.
  The choice made: Clip with a finite bound, and Max/Min with a NaN-free
  finite operand, are treated as removing NaN (the C code's fmaxf/fminf
  return the non-NaN operand); their range then also covers the case where the
  NaN operand was dropped. A Cast to an integer type of a value that may be
  NaN is unknown (its dtype's range). (The numpy reference propagates NaN
  through Clip; the ranges are not claimed for inputs that hold NaN.)
* Integer Div is bounded for both truncating and flooring division; a divisor
  range of integers that contains 0 is split around it (division by zero is
  an error at run time), a float divisor range containing 0 gives unknown.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import sympy

INF = float("inf")
_REL, _ABS = 1e-5, 1e-6
_EXACT_INT = float(2 ** 53)

Interval = tuple  # (lo: np.ndarray, hi: np.ndarray)


class Ranges:
    """The result of `value_ranges`: bounds per Value (keyed by identity)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._r: dict[int, tuple] = {}
        self._nan: dict[int, bool] = {}
        self._keep: dict[int, object] = {}   # keeps ids stable for the Ranges' lifetime
        self.dims: dict = {}                 # run-time dim symbol -> (lo, hi) derived from data

    def of(self, value) -> tuple[np.ndarray, np.ndarray] | None:
        r = self._r.get(id(value))
        if r is None:
            return None
        lo, hi = r
        if lo.size and np.all(lo == -INF) and np.all(hi == INF):
            return None
        return lo.copy(), hi.copy()

    def dim(self, d) -> tuple[float, float] | None:
        """The range a run-time dim symbol got from the data that sets it (a
        ConstantOfShape's shape, a Resize's sizes, a Slice's input extent...),
        narrowed by the caller's dim_range; None if the analysis learnt nothing."""
        return self.dims.get(d)

    def may_be_nan(self, value) -> bool:
        return self._nan.get(id(value), True)

    def __contains__(self, value) -> bool:
        return id(value) in self._r


def value_ranges(graph, dim_range: Callable | None = None, limit: int = 64) -> Ranges:
    """Bounds on the data of every value of `graph` and its subgraphs.
    `dim_range(dim) -> (lo, hi) | None` bounds a run-time dim (a sympy symbol or
    expression); without it (or when it answers None) a dim expression is
    bounded from its structure (Min/Max/+/*/floor...) with every symbol in
    [0, inf)."""
    a = _Analysis(Ranges(limit), dim_range)
    a.walk(graph)
    return a.res


# --------------------------------------------------------------------- helpers

def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _hull(r: Interval) -> Interval:
    lo, hi = r
    if lo.size == 0:
        return _arr(INF), _arr(-INF)
    return _arr(lo.min()), _arr(hi.max())


def _union(a: Interval, b: Interval) -> Interval:
    try:
        return np.minimum(a[0], b[0]), np.maximum(a[1], b[1])
    except ValueError:
        (al, ah), (bl, bh) = _hull(a), _hull(b)
        return np.minimum(al, bl), np.maximum(ah, bh)


def _widen(lo, hi, dtype=None):
    rel = _REL
    if dtype is not None and np.dtype(dtype).kind == "f":
        rel = max(_REL, 4 * float(np.finfo(dtype).eps))   # float16 rounds far more coarsely
    return lo - (np.abs(lo) * rel + _ABS), hi + (np.abs(hi) * rel + _ABS)


def formula_range(e, symbol: Callable, other: Callable | None = None) -> tuple[float, float]:
    """Interval arithmetic of a sympy formula of size symbols (Add, Mul, Min, Max,
    floor, ceiling, Abs, Pow, Mod, Piecewise: the hull of its pieces): sound for
    formulas that are not monotone in each symbol. symbol(s) gives a symbol's
    (lo, hi); other(e) the range of anything else (default: ValueError)."""
    if e.is_Number:
        return float(e), float(e)
    if e in (sympy.true, sympy.false):
        return (float(bool(e)),) * 2
    if e.is_Symbol:
        return symbol(e)
    if isinstance(e, sympy.Piecewise):
        rs = [formula_range(val, symbol, other) for val, _ in e.args]
        return min(r[0] for r in rs), max(r[1] for r in rs)
    known = (sympy.Add, sympy.Mul, sympy.Min, sympy.Max, sympy.floor, sympy.ceiling, sympy.Abs, sympy.Pow,
             sympy.Mod)
    if not isinstance(e, known) or isinstance(e, sympy.Pow) and not (e.exp.is_Integer and int(e.exp) >= 0):
        if other is None:
            raise ValueError(f"no range for '{e}'")
        return other(e)
    args = [formula_range(a, symbol, other) for a in e.args]
    if isinstance(e, sympy.Add):
        return sum(a[0] for a in args), sum(a[1] for a in args)
    if isinstance(e, sympy.Mul):
        lo, hi = args[0]
        for a, b in args[1:]:
            with np.errstate(all="ignore"):
                p = [x * y for x in (lo, hi) for y in (a, b)]
            p = [0.0 if math.isnan(x) else x for x in p]
            lo, hi = min(p), max(p)
        return lo, hi
    if isinstance(e, sympy.Min):
        return min(a[0] for a in args), min(a[1] for a in args)
    if isinstance(e, sympy.Max):
        return max(a[0] for a in args), max(a[1] for a in args)
    if isinstance(e, (sympy.floor, sympy.ceiling)):
        f = math.floor if isinstance(e, sympy.floor) else math.ceil
        return tuple(f(x) if abs(x) < INF else x for x in args[0])
    if isinstance(e, sympy.Abs):
        lo, hi = args[0]
        return (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi))
    if isinstance(e, sympy.Pow):
        lo, hi = args[0]
        n = int(e.exp)
        c = [lo ** n, hi ** n]
        return (0.0 if lo <= 0 <= hi and n % 2 == 0 else min(c)), max(c)
    # Mod
    if args[1][0] > 0:
        return 0.0, args[1][1] - 1
    if other is None:
        raise ValueError(f"no range for '{e}'")
    return other(e)


def _dtype_range(dtype) -> Interval:
    dt = np.dtype(dtype) if dtype is not None else None
    if dt is None or dt.kind in "fcO":
        return _arr(-INF), _arr(INF)
    if dt.kind == "b":
        return _arr(0.0), _arr(1.0)
    ii = np.iinfo(dt)
    lo = float(ii.min) if -float(ii.min) <= _EXACT_INT else -INF
    hi = float(ii.max) if float(ii.max) <= _EXACT_INT else INF
    return _arr(lo), _arr(hi)


def _is_float(v) -> bool:
    return v is not None and v.dtype is not None and v.dtype.kind in "fc"


def _contains0(r):
    return (r[0] <= 0) & (r[1] >= 0)


def _has_inf(r):
    return (r[0] == -INF) | (r[1] == INF)


def _definite(r):
    """(certainly true, certainly false) for a bool/number interval."""
    return (r[0] > 0) | (r[1] < 0), (r[0] == 0) & (r[1] == 0)


# ------------------------------------------------------------------- analysis

class _Analysis:
    def __init__(self, res: Ranges, dim_range):
        self.res = res
        self.R = res._r
        self.N = res._nan
        self.limit = res.limit
        self.user_dim = dim_range
        self._dims: dict = {}

    # -- representation ----------------------------------------------------
    def small(self, v) -> bool:
        return v is not None and v.shape is not None and v.is_static and v.size <= self.limit

    def elementwise(self, v, r) -> bool:
        return self.small(v) and r is not None and r[0].shape == tuple(v.shape)

    def same(self, r, v) -> bool:
        return r is not None and v.shape is not None and r[0].shape == tuple(v.shape)

    def fit(self, r: Interval, v) -> Interval:
        if self.small(v):
            if r[0].shape == tuple(v.shape):
                return r
            try:
                return (np.broadcast_to(r[0], v.shape).copy(), np.broadcast_to(r[1], v.shape).copy())
            except ValueError:
                pass
            lo, hi = _hull(r)
            return np.full(v.shape, lo), np.full(v.shape, hi)
        return _hull(r)

    def source(self, v) -> Interval | None:
        """Range of a value no node of the analysed graphs produces."""
        a = v.value
        if a is not None:
            a = np.asarray(a)
            if a.dtype != object:
                a = a.astype(np.float64)
                if a.dtype.kind == "f":
                    nan = bool(np.isnan(a).any())
                    self.N[id(v)] = nan
                    if nan:
                        a = None
                if a is not None:
                    r = (a, a.copy())
                    if not (self.small(v) and a.shape == tuple(v.shape)):
                        r = _hull(r)
                    return self.fit(r, v) if self.small(v) else r
        self.N[id(v)] = _is_float(v)
        return self.unknown(v)

    def unknown(self, v) -> Interval:
        lo, hi = _dtype_range(v.dtype)
        return self.fit((lo, hi), v)

    def get(self, v) -> Interval | None:
        if v is None:
            return None
        r = self.R.get(id(v))
        if r is None:
            r = self.source(v)
            self.R[id(v)] = r
            self.res._keep[id(v)] = v
        return r

    def nan(self, v) -> bool:
        if v is None or not _is_float(v):
            return False
        if id(v) not in self.N:
            self.get(v)
        return self.N.get(id(v), True)

    def put(self, v, r: Interval | None, nan: bool = False, widen: bool = False) -> None:
        if v is None:
            return
        self.res._keep[id(v)] = v
        isf = _is_float(v)
        self.N[id(v)] = bool(nan) if isf else False
        if r is None:
            self.R[id(v)] = self.unknown(v)
            return
        lo, hi = (np.array(x, dtype=np.float64) for x in r)
        lo = np.where(np.isnan(lo), -INF, lo)
        hi = np.where(np.isnan(hi), INF, hi)
        if v.dtype is not None and not isf:
            dlo, dhi = _dtype_range(v.dtype)
            lo, hi = np.ceil(lo), np.floor(hi)
            bad = (lo < dlo) | (hi > dhi)
            if np.any(bad):  # may wrap around: anything the dtype holds
                lo = np.where(bad, dlo, lo)
                hi = np.where(bad, dhi, hi)
        elif widen:
            lo, hi = _widen(lo, hi, v.dtype)
        if v.shape is not None and v.is_static and v.size == 0:
            self.R[id(v)] = (np.zeros(v.shape), np.zeros(v.shape))
            return
        self.R[id(v)] = self.fit((lo, hi), v)

    # -- dims ----------------------------------------------------------------
    def dim(self, d) -> tuple[float, float]:
        if isinstance(d, (int, np.integer)):
            return float(d), float(d)
        key = d
        if key in self._dims:
            return self._dims[key]
        r = None
        e = sympy.sympify(d)
        if e.is_Symbol:
            r = self.symbol(e, d)
        else:
            if self.user_dim is not None:
                r = self.user_dim(d)
            if r is None:
                r = self._dim_expr(e)
        lo, hi = float(r[0]), float(r[1])
        r = (max(lo, 0.0), hi)
        self._dims[key] = r
        return r

    def symbol(self, s, orig=None) -> tuple[float, float]:
        """A bare symbol: the caller's range, narrowed by what its producer implies."""
        got = self.res.dims.get(s)
        if got is not None:
            return got      # already narrowed by the caller's range
        r = self.user_dim(orig if orig is not None else s) if self.user_dim is not None else None
        return (max(float(r[0]), 0.0), float(r[1])) if r is not None else (0.0, INF)

    def derive_dims(self, n) -> None:
        """Ranges for the symbols shape inference invented for this node's output
        dims (sizes read from data at run time), from the ranges of that data."""
        for k, o in enumerate(n.outputs):
            if o.shape is None:
                continue
            for ax, d in enumerate(o.shape):
                if isinstance(d, sympy.Symbol) and str(d).startswith(f"{n.name}_") and d not in self.res.dims:
                    try:
                        r = _dim_rule(self, n, k, ax)
                    except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError, OverflowError):
                        r = None
                    if r is not None and not (math.isnan(r[0]) or math.isnan(r[1])):
                        lo, hi = max(float(r[0]), 0.0), float(r[1])
                        if lo > hi:   # the node cannot run (or never produces data): keep it sound
                            lo = 0.0
                        lo, hi = float(np.ceil(lo)), float(np.floor(hi)) if hi < INF else INF
                        u = self.user_dim(d) if self.user_dim is not None else None
                        if u is not None:
                            lo, hi = max(lo, float(u[0])), min(hi, float(u[1]))
                        self.res.dims[d] = (lo, hi)

    def _dim_expr(self, e) -> tuple[float, float]:
        return formula_range(e, self.symbol, lambda _: (0.0, INF))   # a size: at least 0

    # -- walking ---------------------------------------------------------------
    def walk(self, g) -> None:
        for v in g.inputs:
            if id(v) not in self.R:
                self.get(v)
        for n in g.nodes:
            self.node(n)

    def node(self, n) -> None:
        op = n.op if n.domain in ("", "ai.onnx") else None
        if op == "Loop":
            self.loop(n)
            return self.derive_dims(n)
        if op == "If":
            self.if_(n)
            return self.derive_dims(n)
        subs = n.subgraphs()
        if subs:
            for sg in subs:
                for v in sg.inputs:
                    self.put(v, None, nan=True)
                self.walk(sg)
            for o in n.outputs:
                self.put(o, None, nan=True)
            return
        h = _HANDLERS.get(op)
        outs = None
        if h is not None:
            ins = [self.get(v) for v in n.inputs]
            with np.errstate(all="ignore"):
                try:
                    outs = h(self, n, ins)
                except (ValueError, IndexError, TypeError, OverflowError, KeyError, ZeroDivisionError):
                    outs = None   # an input shape or value the rule cannot follow: unknown
        for k, o in enumerate(n.outputs):
            e = outs[k] if outs is not None and k < len(outs) else None
            if o.value is not None and o.value.dtype != object:
                self.put(o, self.source(o), nan=self.N.get(id(o), False))   # exact, from shape inference
            elif e is None:
                self.put(o, None, nan=_is_float(o))
            else:
                r, nan, widen = e
                self.put(o, r, nan=nan, widen=widen)
        if h is not None:
            self.derive_dims(n)

    def loop(self, n) -> None:
        body = n.attrs["body"]
        m = n.input(0)
        trips = self.get(m) if m is not None else None
        hi = _hull(trips)[1] if trips is not None and trips[0].size else _arr(INF)
        it = (_arr(0.0), np.maximum(hi - 1, 0.0))
        n_carried = len(n.inputs) - 2
        init = [self.get(v) for v in n.inputs[2:]]
        init_nan = [self.nan(v) for v in n.inputs[2:]]
        bins = body.inputs

        dims_before = dict(self.res.dims)

        def run(carried, carried_nan):
            # dims derived on an earlier pass assumed carried ranges that did not hold
            self.res.dims.clear()
            self.res.dims.update(dims_before)
            self._dims.clear()
            self.put(bins[0], it)
            if len(bins) > 1:
                self.put(bins[1], (_arr(0.0), _arr(1.0)))
            for v, r, nn, o, iv in zip(bins[2:], carried, carried_nan, body.outputs[1:], n.inputs[2:]):
                if v.shape == o.shape == iv.shape:
                    self.put(v, r, nan=nn)
                else:
                    # a carried value whose shape may change between iterations (its declared
                    # body shape is the initial one): one interval, never elementwise
                    self.put(v, None, nan=nn)
                    self.R[id(v)] = _hull(r) if r is not None else _dtype_range(v.dtype)
            self.walk(body)

        # Carried ranges that the body keeps inside themselves are loop invariants; any
        # other one is widened to unknown and the body analysed again (each widens once).
        carried, carried_nan = list(init), list(init_nan)
        outs = body.outputs[1:1 + n_carried]
        for _ in range(n_carried + 1):
            run(carried, carried_nan)
            grow = []
            for k, (o, r0, nn) in enumerate(zip(outs, carried, carried_nan)):
                if r0 is None:
                    continue
                r1 = self.get(o)
                if r1[0].shape == r0[0].shape:
                    inside = bool(np.all(r1[0] >= r0[0]) and np.all(r1[1] <= r0[1]))
                else:
                    (l1, h1), (l0, h0) = _hull(r1), _hull(r0)
                    inside = bool(l1 >= l0 and h1 <= h0)
                if not inside or (self.nan(o) and not nn):
                    grow.append(k)
            if not grow:
                break
            for k in grow:
                carried[k], carried_nan[k] = None, _is_float(bins[2 + k])
        for k, o in enumerate(n.outputs):
            if k < n_carried:
                bo = outs[k]
                r0, r1 = init[k], self.get(bo)
                if not (self.same(r0, o) and self.same(r1, o)):
                    r0, r1 = _hull(r0), _hull(r1)
                r = _union(r0, r1)
                self.put(o, r, nan=init_nan[k] or self.nan(bo))
            else:
                bo = body.outputs[1 + k]
                self.put(o, _hull(self.get(bo)), nan=self.nan(bo))

    def if_(self, n) -> None:
        t, e = n.attrs["then_branch"], n.attrs["else_branch"]
        self.walk(t)
        self.walk(e)
        c = self.get(n.input(0))
        yes, no = _definite(_hull(c)) if c is not None else (False, False)
        for k, o in enumerate(n.outputs):
            vs = [b.outputs[k] for b, take in ((t, not no), (e, not yes)) if take and k < len(b.outputs)]
            if not vs:
                self.put(o, None, nan=True)
                continue
            r = None
            for v in vs:
                rv = self.get(v)
                rv = self.fit(rv, o) if self.small(o) and rv[0].shape == tuple(o.shape) else _hull(rv)
                r = rv if r is None else _union(r, rv)
            self.put(o, r, nan=any(self.nan(v) for v in vs))


# ------------------------------------------------------------ transfer rules
# A rule returns, per output, (interval, may_be_nan, widen) or None (unknown).

_HANDLERS: dict[str, Callable] = {}


def _rule(*ops):
    def deco(f):
        for o in ops:
            _HANDLERS[o] = f
        return f
    return deco


def _const(a: "_Analysis", v):
    x = v.value if v is not None else None
    return None if x is None else np.asarray(x)


@_rule("Identity")
def _identity(a, n, ins):
    return [(ins[0], a.nan(n.inputs[0]), False)]


@_rule("Cast", "CastLike")
def _cast(a, n, ins):
    x, o = n.inputs[0], n.outputs[0]
    r = ins[0]
    if o.dtype is None:
        return None
    if o.dtype.kind == "b":
        yes, no = _definite(r)
        if a.nan(x):
            no = no & False
        return [((np.where(yes, 1.0, 0.0), np.where(no, 0.0, 1.0)), False, False)]
    if o.dtype.kind in "iu":
        if _is_float(x):
            if a.nan(x):
                return None
            return [((np.trunc(r[0]), np.trunc(r[1])), False, False)]
        return [(r, False, False)]
    # to a float type: exact for a narrower float, and for integers the mantissa holds
    if x.dtype is not None and x.dtype.kind == "f":
        exact = x.dtype.itemsize <= o.dtype.itemsize
    else:
        m = {2: 2.0 ** 11, 4: 2.0 ** 24}.get(o.dtype.itemsize, _EXACT_INT)
        exact = bool(np.all(r[0] >= -m) and np.all(r[1] <= m))
    return [(r, a.nan(x), not exact)]


@_rule("Reshape", "Squeeze", "Unsqueeze", "Flatten")
def _reshape(a, n, ins):
    x, o = n.inputs[0], n.outputs[0]
    r = ins[0]
    if a.elementwise(x, r) and a.small(o) and x.size == o.size:
        r = (r[0].reshape(o.shape), r[1].reshape(o.shape))
    else:
        r = _hull(r)
    return [(r, a.nan(x), False)]


@_rule("Gather")
def _gather(a, n, ins):
    x, o = n.inputs[0], n.outputs[0]
    r = ins[0]
    idx = _const(a, n.input(1))
    if idx is not None and a.elementwise(x, r) and a.small(o) and x.rank > 0:
        ax = int(n.attrs.get("axis", 0)) % x.rank
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + x.shape[ax], idx)
        r = (np.take(r[0], idx, axis=ax), np.take(r[1], idx, axis=ax))
    else:
        r = _hull(r)
    return [(r, a.nan(x), False)]


@_rule("Slice")
def _slice(a, n, ins):
    x, o = n.inputs[0], n.outputs[0]
    r = ins[0]
    st, en = _const(a, n.input(1)), _const(a, n.input(2))
    axes = _const(a, n.input(3)) if n.input(3) is not None else None
    steps = _const(a, n.input(4)) if n.input(4) is not None else None
    ok = st is not None and en is not None and (n.input(3) is None or axes is not None) \
        and (n.input(4) is None or steps is not None)
    if ok and a.elementwise(x, r) and a.small(o) and x.rank > 0:
        st, en = st.reshape(-1).astype(np.int64), en.reshape(-1).astype(np.int64)
        axes = np.arange(len(st)) if axes is None else axes.reshape(-1).astype(np.int64)
        steps = np.ones(len(st), np.int64) if steps is None else steps.reshape(-1).astype(np.int64)
        sl = [slice(None)] * x.rank
        for s, e, ax, k in zip(st, en, axes, steps):
            sl[int(ax) % x.rank] = slice(int(s), int(e), int(k))
        lo, hi = r[0][tuple(sl)], r[1][tuple(sl)]
        if lo.shape == tuple(o.shape):
            return [((lo, hi), a.nan(x), False)]
    return [(_hull(r), a.nan(x), False)]


@_rule("Concat")
def _concat(a, n, ins):
    o = n.outputs[0]
    vs = [(v, r) for v, r in zip(n.inputs, ins) if v is not None]
    nan = any(a.nan(v) for v, _ in vs)
    if a.small(o) and all(a.elementwise(v, r) for v, r in vs):
        ax = int(n.attrs.get("axis", 0)) % o.rank
        lo = np.concatenate([r[0] for _, r in vs], axis=ax)
        hi = np.concatenate([r[1] for _, r in vs], axis=ax)
        return [((lo, hi), nan, False)]
    r = None
    for _, rv in vs:
        h = _hull(rv)
        r = h if r is None else _union(r, h)
    return [(r, nan, False)]


@_rule("Transpose")
def _transpose(a, n, ins):
    x, o = n.inputs[0], n.outputs[0]
    r = ins[0]
    perm = n.attrs.get("perm")
    if a.elementwise(x, r) and a.small(o):
        perm = list(perm) if perm else list(range(x.rank))[::-1]
        return [((np.transpose(r[0], perm), np.transpose(r[1], perm)), a.nan(x), False)]
    return [(_hull(r), a.nan(x), False)]


@_rule("Expand")
def _expand(a, n, ins):
    # fit() broadcasts an elementwise input to a small static output
    return [(ins[0] if a.elementwise(n.inputs[0], ins[0]) else _hull(ins[0]), a.nan(n.inputs[0]), False)]


@_rule("Tile", "GatherElements", "GatherND", "MaxPool", "Split", "ReverseSequence", "DepthToSpace",
       "SpaceToDepth")
def _copy_hull(a, n, ins):
    x = n.inputs[0]
    e = (_hull(ins[0]), a.nan(x), False)
    if n.op == "MaxPool":
        return [e, None]   # the Indices output is not bounded here
    return [e] * len(n.outputs)


@_rule("TopK")
def _topk(a, n, ins):
    x = n.inputs[0]
    ax = int(n.attrs.get("axis", -1)) % x.rank
    d = a.dim(x.shape[ax])
    return [(_hull(ins[0]), a.nan(x), False), ((_arr(0.0), _arr(max(d[1] - 1, 0.0))), False, False)]


@_rule("ArgMax", "ArgMin")
def _argmax(a, n, ins):
    x = n.inputs[0]
    ax = int(n.attrs.get("axis", 0)) % max(x.rank, 1)
    d = a.dim(x.shape[ax]) if x.rank else (1.0, 1.0)
    return [((_arr(0.0), _arr(max(d[1] - 1, 0.0))), False, False)]


@_rule("NonZero")
def _nonzero(a, n, ins):
    x = n.inputs[0]
    his = [a.dim(d)[1] for d in x.shape] or [1.0]
    return [((_arr(0.0), _arr(max(max(his) - 1, 0.0))), False, False)]


@_rule("NonMaxSuppression")
def _nms(a, n, ins):
    b, s = n.inputs[0], n.inputs[1]
    his = [a.dim(d)[1] for d in (b.shape[0], b.shape[1], s.shape[1])]
    return [((_arr(0.0), _arr(max(max(his) - 1, 0.0))), False, False)]


@_rule("ReduceMax", "ReduceMin")
def _reduce_extreme(a, n, ins):
    x, o = n.inputs[0], n.outputs[0]
    r = ins[0]
    is_max = n.op == "ReduceMax"
    if n.input(1) is not None:
        axes = _const(a, n.input(1))
        axes = None if axes is None else [int(v) for v in axes.reshape(-1)]
    else:
        axes = n.attrs.get("axes")
        axes = list(axes) if axes else []
    if axes == [] and n.attrs.get("noop_with_empty_axes"):
        return [(r, a.nan(x), False)]
    keep = bool(n.attrs.get("keepdims", 1))
    dlo, dhi = _dtype_range(x.dtype)
    extreme = float(dlo if is_max else dhi)   # a reduction over nothing
    rank = x.rank
    if axes is None:
        red = None                       # axes read at run time: only the hull is sound
    else:
        red = [int(v) % rank for v in axes] if axes else list(range(rank))
    if red is not None and a.elementwise(x, r):
        f = np.max if is_max else np.min
        if all(x.shape[i] > 0 for i in red):
            return [((f(r[0], axis=tuple(red), keepdims=keep), f(r[1], axis=tuple(red), keepdims=keep)),
                     a.nan(x), False)]
    dims = [x.shape[i] for i in (red if red is not None else range(rank))]
    lo_d = [a.dim(d)[0] for d in dims]
    h = _hull(r)
    if any(d <= 0 for d in lo_d):
        h = _union(h, (_arr(extreme), _arr(extreme)))
    return [(h, a.nan(x), False)]


@_rule("Resize", "Upsample")
def _resize(a, n, ins):
    x = n.inputs[0]
    mode = n.attrs.get("mode", "nearest")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("nearest", "linear", "bilinear", "trilinear"):
        return None
    h = _hull(ins[0])
    if n.attrs.get("coordinate_transformation_mode") in ("tf_crop_and_resize", b"tf_crop_and_resize"):
        ev = float(n.attrs.get("extrapolation_value", 0.0))
        h = _union(h, (_arr(ev), _arr(ev)))
    nan = a.nan(x) or (mode != "nearest" and bool(np.any(_has_inf(h))))
    return [(h, nan, mode != "nearest" and _is_float(x))]


@_rule("Pad")
def _pad(a, n, ins):
    x = n.inputs[0]
    h = _hull(ins[0])
    mode = n.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    nan = a.nan(x)
    if mode == "constant":
        # opset < 11 keeps the fill value as an attribute unless the importer moved it
        fill = _arr(float(n.attrs.get("value") or 0.0))
        pv = ins[2] if len(ins) > 2 and ins[2] is not None else (fill, fill)
        h = _union(h, _hull(pv))
        nan = nan or (len(ins) > 2 and a.nan(n.inputs[2]))
    return [(h, nan, False)]


def _add(x, y):
    lo, hi = x[0] + y[0], x[1] + y[1]
    nan = np.any(((x[1] == INF) & (y[0] == -INF)) | ((x[0] == -INF) & (y[1] == INF)))
    return (lo, hi), bool(nan)


def _neg(x):
    return -x[1], -x[0]


def _mul(x, y):
    p = [x[i] * y[j] for i in (0, 1) for j in (0, 1)]
    lo, hi = np.fmin.reduce(p), np.fmax.reduce(p)
    nan = np.any((_contains0(x) & _has_inf(y)) | (_contains0(y) & _has_inf(x)))
    return (lo, hi), bool(nan)


def _quot(x, y):
    p = [x[i] / y[j] for i in (0, 1) for j in (0, 1)]
    return np.fmin.reduce(p), np.fmax.reduce(p)


def _is_int(v):
    return v is not None and v.dtype is not None and v.dtype.kind in "iub"


@_rule("Add", "Sub", "Mul", "Div", "Sum", "Mean")
def _arith(a, n, ins):
    o = n.outputs[0]
    vs = [(v, r) for v, r in zip(n.inputs, ins) if v is not None]
    nan = any(a.nan(v) for v, _ in vs)
    isint = _is_int(o)
    if n.op in ("Sum", "Mean"):
        r = vs[0][1]
        for _, y in vs[1:]:
            r, nn = _add(r, y)
            nan = nan or nn
        if n.op == "Mean":
            r = (r[0] / len(vs), r[1] / len(vs))
        return [(r, nan, not isint)]
    x, y = vs[0][1], vs[1][1]
    if n.op == "Add":
        r, nn = _add(x, y)
    elif n.op == "Sub":
        r, nn = _add(x, _neg(y))
    elif n.op == "Mul":
        r, nn = _mul(x, y)
    else:
        if isint:
            # integer divisors: split around the (impossible) 0
            plo, phi = np.maximum(y[0], 1.0), y[1]
            nlo, nhi = y[0], np.minimum(y[1], -1.0)
            pv, nv = plo <= phi, nlo <= nhi
            if not np.all(pv | nv):
                return None
            qp, qn = _quot(x, (plo, phi)), _quot(x, (nlo, nhi))
            lo = np.minimum(np.where(pv, qp[0], INF), np.where(nv, qn[0], INF))
            hi = np.maximum(np.where(pv, qp[1], -INF), np.where(nv, qn[1], -INF))
            # bounds for truncating and for flooring division alike
            return [((np.floor(lo), np.where(hi < 0, np.ceil(hi), np.floor(hi))), False, False)]
        if np.any(_contains0(y)):
            return None
        r = _quot(x, y)
        nn = bool(np.any(_has_inf(x) & _has_inf(y)))
    return [(r, nan or nn, not isint)]


@_rule("Neg")
def _negr(a, n, ins):
    return [(_neg(ins[0]), a.nan(n.inputs[0]), False)]


@_rule("Abs")
def _abs(a, n, ins):
    lo, hi = ins[0]
    alo = np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0.0))
    ahi = np.maximum(np.abs(lo), np.abs(hi))
    return [((alo, ahi), a.nan(n.inputs[0]), False)]


def _finite_clean(a, v, r):
    # v None: a bound given as an attribute
    return not (v is not None and a.nan(v)) and bool(np.all(np.isfinite(r[0]) & np.isfinite(r[1])))


def _fold(f, xs):
    """f over arrays of different (broadcastable) shapes."""
    return functools.reduce(f, xs)


@_rule("Max", "Min")
def _maxmin(a, n, ins):
    vs = [(v, r) for v, r in zip(n.inputs, ins) if v is not None]
    clean = [r for v, r in vs if not a.nan(v)]
    # A NaN operand may be dropped (fmaxf): only NaN-free operands bound the result
    # from the inner side; without one, any operand may be the survivor.
    inner = clean if clean else [r for _, r in vs]
    if n.op == "Max":
        lo = _fold(np.maximum, [r[0] for r in clean]) if clean else _fold(np.minimum, [r[0] for r in inner])
        hi = _fold(np.maximum, [r[1] for _, r in vs])
    else:
        lo = _fold(np.minimum, [r[0] for _, r in vs])
        hi = _fold(np.minimum, [r[1] for r in clean]) if clean else _fold(np.maximum, [r[1] for r in inner])
    nan = not any(_finite_clean(a, v, r) for v, r in vs) and any(a.nan(v) for v, _ in vs)
    return [((lo, hi), nan, False)]


@_rule("Clip")
def _clip(a, n, ins):
    x = n.inputs[0]
    lo, hi = ins[0]
    mn = ins[1] if len(ins) > 1 and ins[1] is not None else None
    mx = ins[2] if len(ins) > 2 and ins[2] is not None else None
    # opset < 11 bounds, if a graph was built without the importer's normalization
    if mn is None and n.attrs.get("min") is not None:
        mn = (_arr(n.attrs["min"]), _arr(n.attrs["min"]))
    if mx is None and n.attrs.get("max") is not None:
        mx = (_arr(n.attrs["max"]), _arr(n.attrs["max"]))
    xnan = a.nan(x)
    if mn is not None:
        lo, hi = np.maximum(lo, mn[0]), np.maximum(hi, mn[0])
    if mx is not None:
        lo, hi = np.minimum(lo, mx[1]), np.minimum(hi, mx[1])
    finite = (mn is not None and _finite_clean(a, n.input(1), mn)) or \
             (mx is not None and _finite_clean(a, n.input(2), mx))
    if xnan and finite:
        # a NaN input comes out as a bound: the bounds' range covers it
        blo = mn[0] if mn is not None else (mx[0] if mx is not None else -INF)
        bhi = mx[1] if mx is not None else (mn[1] if mn is not None else INF)
        lo, hi = np.minimum(lo, blo), np.maximum(hi, bhi)
    return [((lo, hi), xnan and not finite, False)]


@_rule("Relu")
def _relu(a, n, ins):
    lo, hi = ins[0]
    return [((np.maximum(lo, 0.0), np.maximum(hi, 0.0)), a.nan(n.inputs[0]), False)]


def _monotone(f, widen):
    def rule(a, n, ins):
        lo, hi = ins[0]
        return [((f(lo), f(hi)), a.nan(n.inputs[0]), widen and _is_float(n.outputs[0]))]
    return rule


_HANDLERS["Floor"] = _monotone(np.floor, False)
_HANDLERS["Ceil"] = _monotone(np.ceil, False)
_HANDLERS["Round"] = _monotone(np.round, False)
_HANDLERS["Exp"] = _monotone(np.exp, True)


@_rule("Sqrt")
def _sqrt(a, n, ins):
    lo, hi = ins[0]
    nan = a.nan(n.inputs[0]) or bool(np.any(lo < 0))
    return [((np.sqrt(np.maximum(lo, 0.0)), np.sqrt(np.maximum(hi, 0.0))), nan, True)]


@_rule("Sigmoid")
def _sigmoid(a, n, ins):
    lo, hi = ins[0]
    s = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    lo, hi = _widen(s(lo), s(hi))
    return [((np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)), a.nan(n.inputs[0]), False)]


@_rule("Softmax")
def _softmax(a, n, ins):
    x = n.inputs[0]
    nan = a.nan(x) or bool(np.any(_has_inf(ins[0])))
    return [((_arr(0.0), _arr(1.0)), nan, False)]


@_rule("Where")
def _where(a, n, ins):
    c, x, y = ins
    yes, no = _definite(c)
    lo = np.where(yes, x[0], np.where(no, y[0], np.minimum(x[0], y[0])))
    hi = np.where(yes, x[1], np.where(no, y[1], np.maximum(x[1], y[1])))
    return [((lo, hi), a.nan(n.inputs[1]) or a.nan(n.inputs[2]), False)]


@_rule("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual")
def _compare(a, n, ins):
    x, y = ins[0], ins[1]
    if n.op in ("Greater", "GreaterOrEqual"):
        x, y = y, x
    clean = not (a.nan(n.inputs[0]) or a.nan(n.inputs[1]))
    if n.op == "Equal":
        yes = (x[0] == x[1]) & (y[0] == y[1]) & (x[0] == y[0]) & clean
        no = (x[1] < y[0]) | (y[1] < x[0])
    elif n.op in ("Less", "Greater"):
        yes = (x[1] < y[0]) & clean
        no = x[0] >= y[1]
    else:
        yes = (x[1] <= y[0]) & clean
        no = x[0] > y[1]
    return [((np.where(yes, 1.0, 0.0), np.where(no, 0.0, 1.0)), False, False)]


@_rule("Not")
def _not(a, n, ins):
    lo, hi = ins[0]
    return [((1.0 - hi, 1.0 - lo), False, False)]


@_rule("And", "Or", "Xor", "IsNaN", "IsInf")
def _bool(a, n, ins):
    return [((_arr(0.0), _arr(1.0)), False, False)]


@_rule("Range")
def _range(a, n, ins):
    s, lim = _hull(ins[0]), _hull(ins[1])
    nan = any(a.nan(v) for v in n.inputs)
    return [(_union(s, lim), nan, _is_float(n.outputs[0]))]


@_rule("Shape")
def _shape(a, n, ins):
    from fusion.ops.shape import _shape_range
    x = n.inputs[0]
    s, e = _shape_range(n)
    ds = [a.dim(d) for d in x.shape[s:e]]
    return [((_arr([d[0] for d in ds]).reshape(len(ds)), _arr([d[1] for d in ds]).reshape(len(ds))), False, False)]


@_rule("Size")
def _size(a, n, ins):
    lo, hi = 1.0, 1.0
    for d in n.inputs[0].shape:
        dl, dh = a.dim(d)
        lo, hi = lo * dl, (0.0 if hi == 0 or dh == 0 else hi * dh)
    return [((_arr(lo), _arr(hi)), False, False)]


@_rule("ConstantOfShape")
def _cos(a, n, ins):
    v = n.attrs.get("value")
    x = 0.0 if v is None else np.asarray(v, dtype=np.float64).reshape(-1)[0]
    return [((_arr(x), _arr(x)), bool(np.isnan(x)), False)]


# ----------------------------------------------------- dims set by run-time data

def _elem(a, v, k):
    """(lo, hi) of element k of a small 1-D value, or None."""
    r = a.get(v) if v is not None else None
    if r is None or not a.elementwise(v, r) or v.rank != 1:
        return None
    return float(r[0][k]), float(r[1][k])


def _dim_rule(a, n, k, ax):
    op = n.op
    x = n.input(0)
    if op == "Slice":
        return 0.0, a.dim(x.shape[ax])[1]
    if op == "ConstantOfShape":
        return _elem(a, x, ax)
    if op == "Expand":
        off = len(n.outputs[0].shape) - x.rank
        e = _elem(a, n.input(1), ax - (len(n.outputs[0].shape) - n.input(1).shape[0]))
        if e is None:
            return None
        if ax - off >= 0:
            d = a.dim(x.shape[ax - off])
            return min(e[0], d[0]), max(e[1], d[1])
        return e
    if op == "Reshape":
        e = _elem(a, n.input(1), ax)
        return e if e is not None and e[0] >= 1 else None
    if op in ("Resize", "Upsample"):
        if n.attrs.get("axes") or n.attrs.get("keep_aspect_ratio_policy", "stretch") not in ("stretch", b"stretch"):
            return None
        if n.input(3) is not None:
            return _elem(a, n.input(3), ax)
        sc = _elem(a, n.input(2), ax) if n.input(2) is not None else None
        if sc is None or sc[0] <= 0:
            return None
        d = a.dim(x.shape[ax])
        return math.floor(d[0] * sc[0]) if math.isfinite(d[0] * sc[0]) else 0.0, d[1] * sc[1]
    if op == "Tile":
        e = _elem(a, n.input(1), ax)
        d = a.dim(x.shape[ax])
        return None if e is None else (d[0] * max(e[0], 0.0), d[1] * e[1] if d[1] else 0.0)
    if op == "NonZero":
        hi = 1.0
        for d in x.shape:
            dh = a.dim(d)[1]
            hi = 0.0 if hi == 0 or dh == 0 else hi * dh
        return 0.0, hi
    if op == "TopK":
        kk = a.get(n.input(1))
        return None if kk is None else (float(_hull(kk)[0]), float(_hull(kk)[1]))
    if op == "Range":
        s, lim, de = (_hull(a.get(v)) for v in n.inputs)
        slack = 1 if _is_float(x) else 0     # a float count is computed from rounded values
        if de[0] == de[1] and de[0] > 0:
            return 0.0, max(math.ceil((float(lim[1]) - float(s[0])) / float(de[0])), 0) + slack
        if de[0] == de[1] and de[0] < 0:
            return 0.0, max(math.ceil((float(lim[0]) - float(s[1])) / float(de[0])), 0) + slack
        return None
    if op == "Loop":
        body = n.attrs["body"]
        n_carried = len(n.inputs) - 2
        if k >= n_carried and ax == 0:       # a scan output: one slice per iteration
            bo = body.outputs[1 + k]
            m = a.get(n.input(0)) if n.input(0) is not None else None
            if m is None or bo.shape is None or bo.rank != len(n.outputs[k].shape) - 1:
                return None
            return 0.0, float(_hull(m)[1])
        return None
    if op == "If":
        rs = []
        for b in (n.attrs["then_branch"], n.attrs["else_branch"]):
            bo = b.outputs[k]
            if bo.shape is None or len(bo.shape) != len(n.outputs[k].shape):
                return None
            rs.append(a.dim(bo.shape[ax]))
        return min(r[0] for r in rs), max(r[1] for r in rs)
    return None
