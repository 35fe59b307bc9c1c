"""Scalar and index expressions: the language of the op table's index functions.

Every op that can become a loop describes, once, how one output element is
computed from input elements: `lower(node, out_index, read, m) -> Expr`.
`read(i, index)` stands for "element `index` of input i"; the caller decides
what that means (a buffer load in a kernel, the producer's own expression when
it is inlined, a recorded access when the planner derives mapping types).

Expressions are immutable trees with structural equality and cached hashes, so
codegen can find common subexpressions with a dict. Construction simplifies
eagerly (constants, identities, floor-div/mod of affine sums using the value
ranges of loop variables): composing Reshape/Transpose/Slice index functions
then yields plain affine indices instead of towers of // and %.

Why our own and not sympy: codegen builds millions of these for a big model and
needs dtypes and loads; sympy is far too slow there. Proofs use sympy through
`to_sympy`.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

INDEX = "int64"  # dtype of index arithmetic (ONNX shapes are int64)

# Binary operators. Comparisons and logic return bool.
ARITH = ("add", "sub", "mul", "div", "floordiv", "mod", "fmod", "pow", "max", "min")
COMPARE = ("lt", "le", "gt", "ge", "eq", "ne")
LOGIC = ("and", "or", "xor")
BITWISE = ("bitand", "bitor", "bitxor", "shl", "shr")
BINARY = ARITH + COMPARE + LOGIC + BITWISE
UNARY = ("neg", "not", "bitnot")
REDUCE = ("sum", "prod", "max", "min", "argmax", "argmin", "any", "all")


def _is_float(dtype: str) -> bool:
    return dtype.startswith("float") or dtype == "bfloat16"


def _is_int(dtype: str) -> bool:
    return dtype.startswith("int") or dtype.startswith("uint")


class Expr:
    __slots__ = ("dtype", "_hash")

    # Structural identity: subclasses define _key().
    def _key(self) -> tuple:
        raise NotImplementedError

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash((type(self).__name__,) + self._key())
            self._hash = h
        return h

    def __eq__(self, other) -> bool:  # structural, not elementwise
        if self is other:
            return True
        if type(self) is not type(other) or hash(self) != hash(other):
            return False
        return self._key() == other._key()

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    # Arithmetic sugar for index functions and scalar computations.
    def __add__(self, o): return binary("add", self, o)
    def __radd__(self, o): return binary("add", o, self)
    def __sub__(self, o): return binary("sub", self, o)
    def __rsub__(self, o): return binary("sub", o, self)
    def __mul__(self, o): return binary("mul", self, o)
    def __rmul__(self, o): return binary("mul", o, self)
    def __truediv__(self, o): return binary("div", self, o)
    def __rtruediv__(self, o): return binary("div", o, self)
    def __floordiv__(self, o): return binary("floordiv", self, o)
    def __rfloordiv__(self, o): return binary("floordiv", o, self)
    def __mod__(self, o): return binary("mod", self, o)
    def __rmod__(self, o): return binary("mod", o, self)
    def __pow__(self, o): return binary("pow", self, o)
    def __rpow__(self, o): return binary("pow", o, self)
    def __neg__(self): return unary("neg", self)

    def children(self) -> tuple["Expr", ...]:
        return ()

    def __repr__(self) -> str:
        return to_str(self)


class Const(Expr):
    __slots__ = ("value",)

    def __init__(self, value, dtype: str | None = None):
        if dtype is None:
            if isinstance(value, (bool, np.bool_)):
                dtype = "bool"
            elif isinstance(value, (int, np.integer)):
                dtype = INDEX
            else:
                dtype = "float32"
        self.dtype = dtype
        if dtype == "bool":
            value = bool(value)
        elif _is_int(dtype):
            value = int(value)
        else:
            value = float(value)
        self.value = value
        self._hash = None

    def _key(self):
        # repr keeps -0.0 and nan distinct from 0.0 and equal to itself
        return (repr(self.value), self.dtype)


class Var(Expr):
    """A loop/index variable ranging over [0, extent)."""
    __slots__ = ("name", "extent")

    def __init__(self, name: str, extent: int | None = None):
        self.name = name
        self.extent = extent
        self.dtype = INDEX
        self._hash = None

    def _key(self):
        return (self.name, self.extent)


class Bin(Expr):
    __slots__ = ("op", "a", "b")

    def __init__(self, op: str, a: Expr, b: Expr, dtype: str):
        self.op, self.a, self.b, self.dtype = op, a, b, dtype
        self._hash = None

    def _key(self):
        return (self.op, self.a, self.b)

    def children(self):
        return (self.a, self.b)


class Un(Expr):
    __slots__ = ("op", "a")

    def __init__(self, op: str, a: Expr):
        self.op, self.a = op, a
        self.dtype = "bool" if op == "not" else a.dtype
        self._hash = None

    def _key(self):
        return (self.op, self.a)

    def children(self):
        return (self.a,)


class Call(Expr):
    """An intrinsic math function (see fusion.ir.intrinsics)."""
    __slots__ = ("fn", "args")

    def __init__(self, fn: str, args: tuple[Expr, ...], dtype: str):
        self.fn, self.args, self.dtype = fn, tuple(args), dtype
        self._hash = None

    def _key(self):
        return (self.fn, self.args)

    def children(self):
        return self.args


class Select(Expr):
    __slots__ = ("cond", "a", "b")

    def __init__(self, cond: Expr, a: Expr, b: Expr):
        self.cond, self.a, self.b = cond, a, b
        self.dtype = a.dtype
        self._hash = None

    def _key(self):
        return (self.cond, self.a, self.b)

    def children(self):
        return (self.cond, self.a, self.b)


class Cast(Expr):
    __slots__ = ("a",)

    def __init__(self, a: Expr, dtype: str):
        self.a, self.dtype = a, dtype
        self._hash = None

    def _key(self):
        return (self.a, self.dtype)

    def children(self):
        return (self.a,)


class Load(Expr):
    """Element `index` of a tensor. `slot` names the tensor for whoever built
    the expression (an input number in `lower`, a buffer in codegen)."""
    __slots__ = ("slot", "index")

    def __init__(self, slot, index: tuple[Expr, ...], dtype: str):
        self.slot, self.index, self.dtype = slot, tuple(index), dtype
        self._hash = None

    def _key(self):
        return (self.slot, self.index)

    def children(self):
        return self.index


class Reduce(Expr):
    """op over `vars` (each ranging over its extent) of `body`.

    For argmax/argmin the result is the flat (row-major over `vars`) position
    of the first extreme element, as int64."""
    __slots__ = ("op", "vars", "body")

    def __init__(self, op: str, vars: tuple[Var, ...], body: Expr):
        self.op, self.vars, self.body = op, tuple(vars), body
        self.dtype = INDEX if op in ("argmax", "argmin") else ("bool" if op in ("any", "all") else body.dtype)
        self._hash = None

    def _key(self):
        return (self.op, self.vars, self.body)

    def children(self):
        return (self.body,)


# ----------------------------------------------------------------------------
# Construction with simplification

def const(value, dtype: str | None = None) -> Const:
    return Const(value, dtype)


def wrap(x, like: Expr | None = None) -> Expr:
    if isinstance(x, Expr):
        return x
    if like is not None and not (like.dtype == "bool" and not isinstance(x, (bool, np.bool_))):
        return Const(x, like.dtype)
    return Const(x)


def _result_dtype(op: str, a: Expr, b: Expr) -> str:
    if op in COMPARE or op in LOGIC:
        return "bool"
    return a.dtype


def _fold(op: str, x, y, dtype: str):
    if op == "add": return x + y
    if op == "sub": return x - y
    if op == "mul": return x * y
    if op == "div":
        if _is_int(dtype):
            if y == 0:
                return None
            q = abs(x) // abs(y)
            return q if (x >= 0) == (y >= 0) else -q
        return x / y if y != 0 else None
    if op == "floordiv": return x // y if y != 0 else None
    if op == "mod":
        if y == 0:
            return None
        return x % y  # floor semantics, as numpy.mod
    if op == "fmod": return math.fmod(x, y) if y != 0 else None
    if op == "pow":
        try:
            return x ** y
        except (OverflowError, ZeroDivisionError):
            return None
    if op == "max": return max(x, y)
    if op == "min": return min(x, y)
    if op == "lt": return x < y
    if op == "le": return x <= y
    if op == "gt": return x > y
    if op == "ge": return x >= y
    if op == "eq": return x == y
    if op == "ne": return x != y
    if op == "and": return bool(x) and bool(y)
    if op == "or": return bool(x) or bool(y)
    if op == "xor": return bool(x) != bool(y)
    if op == "bitand": return x & y
    if op == "bitor": return x | y
    if op == "bitxor": return x ^ y
    return None


def _is_const(e: Expr, v=None) -> bool:
    return isinstance(e, Const) and (v is None or e.value == v)


# --- affine normal form for integer index arithmetic -------------------------

def _affine(e: Expr) -> tuple[dict[Expr, int], int] | None:
    """e as {term: coeff} + constant, if e is an integer sum of scaled terms."""
    if not _is_int(e.dtype):
        return None
    if isinstance(e, Const):
        return {}, e.value
    if isinstance(e, Bin) and e.op in ("add", "sub"):
        a, b = _affine(e.a), _affine(e.b)
        if a is None or b is None:
            return None
        s = -1 if e.op == "sub" else 1
        terms = dict(a[0])
        for t, c in b[0].items():
            terms[t] = terms.get(t, 0) + s * c
        return {t: c for t, c in terms.items() if c != 0}, a[1] + s * b[1]
    if isinstance(e, Bin) and e.op == "mul" and isinstance(e.b, Const):
        a = _affine(e.a)
        if a is None:
            return None
        k = e.b.value
        return {t: c * k for t, c in a[0].items() if c * k != 0}, a[1] * k
    return {e: 1}, 0


def _order(t: Expr):
    # Stable order for canonical sums: variables by name first, then the rest.
    return (0, t.name) if isinstance(t, Var) else (1, to_str(t))


def _from_affine(terms: dict[Expr, int], c: int, dtype: str) -> Expr:
    out: Expr | None = None
    for t in sorted(terms, key=_order):
        k = terms[t]
        if k == 0:
            continue
        part = t if k == 1 else Bin("mul", t, Const(k, dtype), dtype) if k > 0 else None
        if part is None:  # negative coefficient
            part = t if k == -1 else Bin("mul", t, Const(-k, dtype), dtype)
            out = Bin("sub", out if out is not None else Const(0, dtype), part, dtype)
            continue
        out = part if out is None else Bin("add", out, part, dtype)
    if out is None:
        return Const(c, dtype)
    if c > 0:
        out = Bin("add", out, Const(c, dtype), dtype)
    elif c < 0:
        out = Bin("sub", out, Const(-c, dtype), dtype)
    return out


def bounds(e: Expr) -> tuple[float, float]:
    """Interval [lo, hi] containing every value of integer expression e."""
    inf = math.inf
    if isinstance(e, Const):
        return (e.value, e.value) if not isinstance(e.value, bool) else (int(e.value), int(e.value))
    if isinstance(e, Var):
        return (0, e.extent - 1) if e.extent is not None else (-inf, inf)
    if isinstance(e, Bin):
        if e.op in COMPARE or e.op in LOGIC:
            return (0, 1)
        (al, ah), (bl, bh) = bounds(e.a), bounds(e.b)
        if e.op == "add":
            return (al + bl, ah + bh)
        if e.op == "sub":
            return (al - bh, ah - bl)
        if e.op == "mul":
            cands = [x * y for x in (al, ah) for y in (bl, bh) if not (math.isinf(x) and y == 0 or math.isinf(y) and x == 0)]
            return (min(cands), max(cands)) if cands else (-inf, inf)
        if e.op == "floordiv" and isinstance(e.b, Const) and e.b.value > 0:
            k = e.b.value
            return (al // k if not math.isinf(al) else al, ah // k if not math.isinf(ah) else ah)
        if e.op == "mod" and isinstance(e.b, Const) and e.b.value > 0:
            if al >= 0 and ah < e.b.value:
                return (al, ah)
            return (0, e.b.value - 1)
        if e.op == "max":
            return (max(al, bl), max(ah, bh))
        if e.op == "min":
            return (min(al, bl), min(ah, bh))
        return (-inf, inf)
    if isinstance(e, Select):
        (al, ah), (bl, bh) = bounds(e.a), bounds(e.b)
        return (min(al, bl), max(ah, bh))
    if isinstance(e, Cast) and _is_int(e.dtype) and _is_int(e.a.dtype):
        return bounds(e.a)
    return (-inf, inf)


def _divmod_affine(op: str, a: Expr, k: int) -> Expr | None:
    """Simplify a // k or a % k (k > 0, floor semantics) for affine a."""
    aff = _affine(a)
    if aff is None:
        return None
    terms, c = aff
    outer = {t: v // k for t, v in terms.items() if v % k == 0}
    inner = {t: v for t, v in terms.items() if v % k != 0}
    c_out, c_in = divmod(c, k)
    rest = _from_affine(inner, c_in, a.dtype)
    lo, hi = bounds(rest)
    if op == "floordiv":
        if 0 <= lo and hi < k:  # remainder part contributes nothing
            return _from_affine(outer, c_out, a.dtype)
        if not outer and c_out == 0:
            return None
        return binary("add", _from_affine(outer, c_out, a.dtype), Bin("floordiv", rest, Const(k, a.dtype), a.dtype))
    # mod: multiples of k vanish
    if 0 <= lo and hi < k:
        return rest
    if not outer and c_out == 0 and c_in == c:
        return None
    return Bin("mod", rest, Const(k, a.dtype), a.dtype)


def binary(op: str, a, b) -> Expr:
    if not isinstance(a, Expr) and not isinstance(b, Expr):
        a = Const(a)
    a = wrap(a, b if isinstance(b, Expr) else None)
    b = wrap(b, a)
    dtype = _result_dtype(op, a, b)
    if isinstance(a, Const) and isinstance(b, Const):
        v = _fold(op, a.value, b.value, a.dtype)
        if v is not None and not (isinstance(v, float) and (math.isinf(v) or math.isnan(v))):
            return Const(v, dtype)
    isint = _is_int(a.dtype)
    # Identities that hold in IEEE arithmetic too (x+0 is not x for x=-0.0 only
    # when adding +0.0 to -0.0; that sign difference is harmless for us).
    if op == "add":
        if _is_const(b, 0): return a
        if _is_const(a, 0): return b
    elif op == "sub":
        if _is_const(b, 0): return a
    elif op == "mul":
        if _is_const(b, 1): return a
        if _is_const(a, 1): return b
        if isint and (_is_const(a, 0) or _is_const(b, 0)): return Const(0, dtype)
    elif op in ("div", "floordiv"):
        if _is_const(b, 1): return a
    elif op == "mod" and isint:
        if _is_const(b, 1): return Const(0, dtype)
    elif op in ("max", "min") and isint:
        (al, ah), (bl, bh) = bounds(a), bounds(b)
        if op == "max":
            if al >= bh: return a
            if bl >= ah: return b
        else:
            if ah <= bl: return a
            if bh <= al: return b
    elif op in ("and",) and a.dtype == "bool":
        if _is_const(a, True): return b
        if _is_const(b, True): return a
        if _is_const(a, False) or _is_const(b, False): return Const(False)
    elif op in ("or",) and a.dtype == "bool":
        if _is_const(a, False): return b
        if _is_const(b, False): return a
        if _is_const(a, True) or _is_const(b, True): return Const(True)
    if isint:
        if op in ("add", "sub") or (op == "mul" and (isinstance(a, Const) or isinstance(b, Const))):
            if op == "mul" and isinstance(a, Const):
                a, b = b, a
            e = Bin(op, a, b, dtype)
            aff = _affine(e)
            if aff is not None:
                return _from_affine(aff[0], aff[1], dtype)
            return e
        if op in ("floordiv", "mod") and isinstance(b, Const) and b.value > 0:
            s = _divmod_affine(op, a, b.value)
            if s is not None:
                return s
        if op in COMPARE:
            (al, ah), (bl, bh) = bounds(a), bounds(b)
            decided = {
                "lt": (ah < bl, al >= bh), "le": (ah <= bl, al > bh),
                "gt": (al > bh, ah <= bl), "ge": (al >= bh, ah < bl),
            }.get(op)
            if decided is not None:
                if decided[0]: return Const(True)
                if decided[1]: return Const(False)
    return Bin(op, a, b, dtype)


def unary(op: str, a) -> Expr:
    a = wrap(a)
    if isinstance(a, Const):
        if op == "neg":
            return Const(-a.value, a.dtype)
        if op == "not":
            return Const(not a.value, "bool")
    if op == "neg" and isinstance(a, Un) and a.op == "neg":
        return a.a
    if op == "not" and isinstance(a, Un) and a.op == "not":
        return a.a
    return Un(op, a)


def call(fn: str, *args, dtype: str | None = None) -> Expr:
    args = tuple(wrap(x) for x in args)
    return Call(fn, args, dtype or args[0].dtype)


def select(cond, a, b) -> Expr:
    cond = wrap(cond)
    a = wrap(a, b if isinstance(b, Expr) else None)
    b = wrap(b, a)
    if isinstance(cond, Const):
        return a if cond.value else b
    if a == b:
        return a
    return Select(cond, a, b)


def cast(a, dtype: str) -> Expr:
    a = wrap(a)
    if a.dtype == dtype:
        return a
    if isinstance(a, Const):
        v = a.value
        if dtype == "bool":
            return Const(bool(v), "bool")
        if _is_int(dtype):
            if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
                return Cast(a, dtype)
            return Const(int(np.array(v).astype(dtype)), dtype)
        return Const(float(np.array(v).astype(dtype)), dtype)
    return Cast(a, dtype)


def load(slot, index: Sequence, dtype: str) -> Load:
    return Load(slot, tuple(wrap(i) for i in index), dtype)


_fresh_counter = [0]


def fresh_vars(extents: Sequence[int], prefix: str = "r") -> list[Var]:
    """New reduction variables with unique names."""
    out = []
    for ext in extents:
        _fresh_counter[0] += 1
        out.append(Var(f"{prefix}{_fresh_counter[0]}", int(ext)))
    return out


def reduce(op: str, extents: Sequence[int], body: Callable[[list[Var]], Expr], prefix: str = "r") -> Expr:
    """op over a fresh index space of the given extents of body(vars)."""
    vs = fresh_vars(extents, prefix)
    return Reduce(op, tuple(vs), wrap(body(vs)))


# ----------------------------------------------------------------------------
# Index helpers used by many index functions

def linearize(index: Sequence[Expr], shape: Sequence[int]) -> Expr:
    flat: Expr = Const(0)
    for i, d in zip(index, shape):
        flat = flat * int(d) + i
    return flat


def delinearize(flat: Expr, shape: Sequence[int]) -> list[Expr]:
    out: list[Expr] = []
    stride = 1
    strides = []
    for d in reversed(shape):
        strides.append(stride)
        stride *= int(d)
    strides.reverse()
    for d, s in zip(shape, strides):
        if int(d) == 1:
            out.append(Const(0))
        else:
            out.append((flat // s) % int(d) if s > 1 else flat % int(d))
    return out


def broadcast_index(out_index: Sequence[Expr], in_shape: Sequence[int]) -> list[Expr]:
    """Numpy broadcasting: the input element read by an output element."""
    r = len(in_shape)
    tail = list(out_index)[len(out_index) - r:] if r else []
    return [Const(0) if int(d) == 1 else i for i, d in zip(tail, in_shape)]


# ----------------------------------------------------------------------------
# Traversal

def walk(e: Expr, seen: set | None = None) -> Iterable[Expr]:
    """Pre-order over distinct subexpressions."""
    seen = set() if seen is None else seen
    stack = [e]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        stack.extend(reversed(x.children()))


def substitute(e: Expr, mapping: dict[Expr, Expr]) -> Expr:
    """Replace subexpressions (e.g. Vars or Loads), rebuilding with simplification."""
    memo: dict[int, Expr] = {}

    def go(x: Expr) -> Expr:
        if x in mapping:
            return mapping[x]
        k = id(x)
        if k in memo:
            return memo[k]
        r = rebuild(x, [go(c) for c in x.children()])
        memo[k] = r
        return r

    return go(e)


def rebuild(x: Expr, kids: list[Expr]) -> Expr:
    """x with new children, re-simplified."""
    if not kids:
        return x
    if all(a is b for a, b in zip(kids, x.children())):
        return x
    if isinstance(x, Bin):
        return binary(x.op, kids[0], kids[1])
    if isinstance(x, Un):
        return unary(x.op, kids[0])
    if isinstance(x, Call):
        return Call(x.fn, tuple(kids), x.dtype)
    if isinstance(x, Select):
        return select(*kids)
    if isinstance(x, Cast):
        return cast(kids[0], x.dtype)
    if isinstance(x, Load):
        return Load(x.slot, tuple(kids), x.dtype)
    if isinstance(x, Reduce):
        return Reduce(x.op, x.vars, kids[0])
    raise TypeError(type(x))


def map_loads(e: Expr, fn: Callable[[Load, tuple[Expr, ...]], Expr]) -> Expr:
    """Rebuild e with every Load replaced by fn(load, rewritten_index)."""
    memo: dict[int, Expr] = {}

    def go(x: Expr) -> Expr:
        k = id(x)
        if k in memo:
            return memo[k]
        kids = [go(c) for c in x.children()]
        r = fn(x, tuple(kids)) if isinstance(x, Load) else rebuild(x, kids)
        memo[k] = r
        return r

    return go(e)


def number_reduce_vars(roots: Sequence[Expr]) -> list[Expr]:
    """roots with every reduction variable renamed by its place in them (pre-order,
    outer reductions first): <prefix>1, <prefix>2, ...

    fresh_vars numbers variables with a process-wide counter, so the names of a
    block's loops would otherwise depend on what the process built before (a
    second compile of the same model would give other C, and another cache key)."""
    names: dict[Var, Var] = {}
    memo: dict[int, Expr] = {}
    taken = {v.name for e in roots for v in free_vars(e)}   # the loop variables keep theirs
    n = [0]

    def fresh(v: Var) -> Var:
        prefix = v.name.rstrip("0123456789") or "r"
        while True:
            n[0] += 1
            if f"{prefix}{n[0]}" not in taken:
                return Var(f"{prefix}{n[0]}", v.extent)

    def go(x: Expr) -> Expr:
        k = id(x)
        r = memo.get(k)
        if r is not None:
            return r
        if isinstance(x, Var):
            r = names.get(x, x)
        elif isinstance(x, Reduce):
            for v in x.vars:
                if v not in names:
                    names[v] = fresh(v)
            body = go(x.body)
            new_vars = tuple(names[v] for v in x.vars)
            r = x if body is x.body and all(a is b for a, b in zip(new_vars, x.vars)) else Reduce(x.op, new_vars, body)
        else:
            r = rebuild(x, [go(c) for c in x.children()])
        memo[k] = r   # ids stay valid: the caller's roots keep every x alive
        return r

    return [go(e) for e in roots]


def free_vars(e: Expr) -> set[Var]:
    bound: set[Var] = set()
    out: set[Var] = set()
    for x in walk(e):
        if isinstance(x, Reduce):
            bound.update(x.vars)
        elif isinstance(x, Var):
            out.add(x)
    return out - bound


# ----------------------------------------------------------------------------
# Printing (debug form; backends have their own printers)

_SYM = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
        "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
        "and": "&&", "or": "||", "bitand": "&", "bitor": "|", "bitxor": "^", "shl": "<<", "shr": ">>"}


def to_str(e: Expr) -> str:
    if isinstance(e, Const):
        return repr(e.value) if e.dtype in (INDEX, "bool", "float32") else f"{e.value!r}:{e.dtype}"
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Bin):
        if e.op in _SYM:
            return f"({to_str(e.a)} {_SYM[e.op]} {to_str(e.b)})"
        return f"{e.op}({to_str(e.a)}, {to_str(e.b)})"
    if isinstance(e, Un):
        return {"neg": "-", "not": "!", "bitnot": "~"}[e.op] + to_str(e.a)
    if isinstance(e, Call):
        return f"{e.fn}({', '.join(to_str(a) for a in e.args)})"
    if isinstance(e, Select):
        return f"({to_str(e.cond)} ? {to_str(e.a)} : {to_str(e.b)})"
    if isinstance(e, Cast):
        return f"{e.dtype}({to_str(e.a)})"
    if isinstance(e, Load):
        return f"{e.slot}[{', '.join(to_str(i) for i in e.index)}]"
    if isinstance(e, Reduce):
        vs = ", ".join(f"{v.name}<{v.extent}" for v in e.vars)
        return f"{e.op}[{vs}]({to_str(e.body)})"
    # Leaves defined elsewhere (codegen's Temp and Sym): their name, never the
    # object's address -- canonical sums order their terms by this text, and an
    # address would make the generated code differ from one process to the next.
    name = getattr(e, "name", None)
    if isinstance(name, str):
        return name
    return f"{type(e).__name__}{e._key()!r}"
