"""Lowering: one planned block -> one loop-nest Function.

DNNFusion's data-flow tree, built backwards from the block's outputs: the
value of an output element is the op table's index function (`OpDef.lower`)
of its producer, whose reads are in turn the producers' expressions at the
read index, down to the block's inputs (buffer loads). Reshape, Transpose,
Slice, Concat and Split therefore cost index arithmetic only; producers of
the anchor are inlined into its reads; consumers are applied at its store.

The expression DAG is then scheduled into statements (`schedule`): every
reduction becomes an accumulator loop placed at the outermost loop level it
depends on (so Softmax's max and sum run once per row, not per element),
and a subexpression used more than once becomes one `Let` (CSE by the
expression language's structural hashing).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from fusion.errors import UnsupportedOpError
from fusion.ir import expr as E
from fusion.ir.graph import Node, Value
from fusion.codegen.loops import (Buffer, Decl, Function, Let, Loop, Store, Temp, Update)


def dtype_name(v: Value) -> str:
    return np.dtype(v.dtype).name


class Composer:
    """Builds the expression of any value inside a block at a given index."""

    def __init__(self, nodes: list[Node], cname: Callable[[Value], str], literal: Callable[[Value], E.Expr | None],
                 shape_of: Callable[[Value], tuple]):
        self.inside = {id(n) for n in nodes}
        self.cname, self.literal, self.shape_of = cname, literal, shape_of
        self.memo: dict = {}
        self.loads: dict[str, Value] = {}   # buffer name -> value read from outside
        self.stop: set[int] = set()          # values treated as block inputs even if produced inside

    def value(self, v: Value, index: list[E.Expr]) -> E.Expr:
        key = (id(v), tuple(index))
        r = self.memo.get(key)
        if r is None:
            r = self._value(v, list(index))
            self.memo[key] = r
        return r

    def _value(self, v: Value, index: list[E.Expr]) -> E.Expr:
        p = v.producer
        if p is None or id(p) not in self.inside or id(v) in self.stop:
            lit = self.literal(v)
            if lit is not None:
                return lit
            name = self.cname(v)
            self.loads[name] = v
            shape = self.shape_of(v)
            # Keep every load inside its buffer: reads on the untaken side of a
            # Select (Concat, padding) are then harmless when computed eagerly.
            safe = [E.binary("min", E.binary("max", i, 0), max(int(d) - 1, 0)) for i, d in zip(index, shape)]
            return E.load(name, safe, dtype_name(v))
        od = p.opdef
        if od is None or od.lower is None:
            raise UnsupportedOpError(f"{p.label()}: op '{p.op}' has no index function and cannot be fused "
                                     f"into a loop nest")
        k = p.outputs.index(v)

        def read(i, idx):
            src = p.inputs[i]
            return self.value(src, list(idx))

        e = od.lower(p, index, read, k)
        want = dtype_name(v)
        return E.cast(e, want) if e.dtype != want else e


# ---------------------------------------------------------------------------
# Scheduling an expression DAG into statements

_REDUCE_INIT = {"sum": 0, "prod": 1, "any": False, "all": True}


def reduce_init(op: str, dtype: str) -> E.Expr:
    if op in _REDUCE_INIT:
        return E.Const(_REDUCE_INIT[op], dtype if op not in ("any", "all") else "bool")
    big = op in ("min", "argmin")
    if dtype.startswith("float"):
        return E.Const(float("inf") if big else float("-inf"), dtype)
    if dtype == "bool":
        return E.Const(big, "bool")
    info = np.iinfo(np.dtype(dtype))
    return E.Const(info.max if big else info.min, dtype)


class Scope:
    __slots__ = ("vars", "stmts", "memo")

    def __init__(self, vars_=()):
        self.vars = set(vars_)
        self.stmts: list = []
        self.memo: dict = {}


class Scheduler:
    """Turns expressions into statements with hoisting and CSE."""

    def __init__(self, prefix: str = "t"):
        self.n = 0
        self.prefix = prefix
        self.uses: Counter = Counter()
        self.fv_memo: dict[int, tuple] = {}

    def count_uses(self, roots: list[E.Expr]) -> None:
        seen: set = set()
        stack = list(roots)
        for r in roots:
            self.uses[r] += 1
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            for c in x.children():
                self.uses[c] += 1
                stack.append(c)

    def temp(self, dtype: str) -> Temp:
        self.n += 1
        return Temp(f"{self.prefix}{self.n}", dtype)

    def free(self, e: E.Expr) -> frozenset:
        k = id(e)
        hit = self.fv_memo.get(k)
        if hit is not None:
            return hit[0]
        if isinstance(e, E.Var):
            r = frozenset([e])
        elif isinstance(e, E.Reduce):
            r = self.free(e.body) - frozenset(e.vars)
        else:
            r = frozenset()
            for c in e.children():
                r = r | self.free(c)
        self.fv_memo[k] = (r, e)   # keeping e alive keeps its id valid
        return r

    @staticmethod
    def level(fv: frozenset, stack: list[Scope]) -> int:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].vars & fv:
                return i
        return 0

    def _worth_a_let(self, e: E.Expr, invariant: bool = False) -> bool:
        """Used twice (CSE), or invariant in the loop it sits in (hoisting)."""
        if isinstance(e, (E.Const, E.Var, Temp)):
            return False
        if self.uses[e] < 2 and not invariant:
            return False
        # Pure index arithmetic is cheap and the C compiler strength-reduces it.
        return any(isinstance(x, (E.Load, E.Call, E.Reduce)) or (x.dtype.startswith("float"))
                   for x in E.walk(e))

    def emit(self, e: E.Expr, stack: list[Scope]) -> E.Expr:
        if isinstance(e, (E.Const, E.Var, Temp)) or not e.children() and not isinstance(e, E.Reduce):
            return e
        for s in reversed(stack):
            t = s.memo.get(e)
            if t is not None:
                return t
        if isinstance(e, E.Reduce):
            return self._emit_reduce(e, stack)
        kids = [self.emit(c, stack) for c in e.children()]
        r = E.rebuild(e, kids)
        lv = self.level(self.free(e), stack)
        if self._worth_a_let(e, invariant=lv < len(stack) - 1 and not isinstance(r, Temp)):
            t = self.temp(r.dtype)
            stack[lv].stmts.append(Let(t, r))
            stack[lv].memo[e] = t
            return t
        return r

    def _emit_reduce(self, e: E.Reduce, stack: list[Scope]) -> E.Expr:
        lv = self.level(self.free(e), stack)
        outer = stack[:lv + 1]
        inner = [Scope([v]) for v in e.vars]
        body = self.emit(e.body, outer + inner)
        acc = self.temp(e.body.dtype if e.op not in ("any", "all") else "bool")
        upd = Update(acc, e.op, body)
        result: E.Expr = acc
        decls = [Decl(acc, reduce_init(e.op, e.body.dtype))]
        if e.op in ("argmax", "argmin"):
            pos = self.temp(E.INDEX)
            upd.pos_temp = pos
            upd.pos = E.linearize(list(e.vars), [v.extent for v in e.vars])
            decls.append(Decl(pos, E.Const(0)))
            result = pos
        inner[-1].stmts.append(upd)
        loop = None
        for sc, v in zip(reversed(inner), reversed(e.vars)):
            body_stmts = sc.stmts + ([loop] if loop is not None else [])
            loop = Loop(v, v.extent, body_stmts)
        stack[lv].stmts.extend(decls)
        stack[lv].stmts.append(loop)
        stack[lv].memo[e] = result
        return result


# ---------------------------------------------------------------------------
# Block -> Function

def output_space(outputs: list[Value], shape_of) -> tuple[int, ...]:
    return tuple(int(d) for d in shape_of(outputs[0]))


def choose_outer(shape: tuple[int, ...]) -> int:
    """How many leading dims form the (parallel) outer range: all but the
    innermost, which stays a loop the C compiler can vectorize; all of them
    when the innermost is too short to be worth its own loop."""
    if not shape:
        return 0
    if len(shape) == 1:
        return 1
    return len(shape) if shape[-1] < 8 else len(shape) - 1


def lower_block(name: str, nodes: list[Node], outputs: list[Value], *, cname, literal, shape_of,
                buffers_for: Callable[[dict, list[Value]], list[Buffer]], parallel_threshold: int = 1 << 15,
                dyn_extents: list | None = None) -> Function:
    """The plain loop nest of a block: iterate the first output's index space;
    every output element is computed from the composed expression."""
    comp = Composer(nodes, cname, literal, shape_of)
    space = output_space(outputs, shape_of)
    n_space = int(np.prod(space)) if space else 1
    for v in outputs:   # every output is stored at the same flat position
        if int(np.prod(shape_of(v))) != n_space:
            raise AssertionError(f"block {name}: outputs of different sizes in one loop nest")
    vars_ = [E.Var(f"i{d}", n) for d, n in enumerate(space)]
    flat = E.linearize(vars_, space)
    roots = []
    for v in outputs:
        s = tuple(int(d) for d in shape_of(v))
        idx = list(vars_) if s == space else E.delinearize(flat, s)
        roots.append((v, comp.value(v, idx)))
    sch = Scheduler()
    merged = None
    if not dyn_extents and len(space) >= 2 and space[-1] < 8 and \
            reduction_vars([e for _, e in roots], sch) is None:
        # Short innermost dims (7x7 maps, [n, 4] boxes): one flat inner loop over
        # the trailing dims, long enough to vectorize.
        m = 2
        while m < len(space) - 1 and int(np.prod(space[-m:])) < 64:
            m += 1
        P = int(np.prod(space[-m:]))
        fvar = E.Var("f", P)
        vars_ = [E.Var(f"i{d}", n) for d, n in enumerate(space[:-m])]
        flat = E.linearize(vars_, space[:-m]) * P + fvar if vars_ else fvar
        full = vars_ + E.delinearize(fvar, space[-m:])
        comp = Composer(nodes, cname, literal, shape_of)
        roots = []
        for v in outputs:
            s = tuple(int(d) for d in shape_of(v))
            roots.append((v, comp.value(v, full if s == space else E.delinearize(flat, s))))
        vars_ = vars_ + [fvar]
        merged = [int(d) for d in space[:-m]] + [P]
    sch.count_uses([e for _, e in roots])
    # Loop order: dims the reductions depend on outside, the others inside, so a
    # reduction runs once per point of its own dims (Softmax over a middle axis,
    # a squeeze-excite scale broadcast over H x W); without reductions, row-major.
    dep = reduction_vars([e for _, e in roots], sch)
    if dep is None:
        order = list(range(len(vars_)))
        k = len(vars_) - 1 if merged is not None else choose_outer(space)
    else:
        outer = [d for d, v in enumerate(vars_) if v in dep or v.extent == 1]
        order = outer + [d for d in range(len(vars_)) if d not in outer]
        k = max(1, len(outer)) if vars_ else 0
    loop_vars = [vars_[d] for d in order]
    outer_vars, inner_vars = loop_vars[:k], loop_vars[k:]
    # scope 0: once per thread's chunk (reductions that depend on no loop var);
    # scope 1: once per point of the (parallel) outer range; then one per inner loop.
    glob = Scope()
    stack = [glob, Scope(outer_vars)] + [Scope([v]) for v in inner_vars]
    for v, e in roots:
        val = sch.emit(e, stack)
        stack[-1].stmts.append(Store(cname(v), flat, val, dtype_name(v)))
    stack = stack[1:]
    # Run-time extents (data-dependent dims) where given; the Var keeps the bound.
    ext_d = [(dyn_extents[d] if dyn_extents and dyn_extents[d] is not None else v.extent) for d, v in enumerate(vars_)]
    ext = [ext_d[d] for d in order]
    body = None
    for sc, v, x in zip(reversed(stack[1:]), reversed(inner_vars), reversed(ext[k:])):
        stmts = sc.stmts + ([body] if body is not None else [])
        body = Loop(v, x, stmts)
    top = stack[0].stmts + ([body] if body is not None else [])
    work = int(np.prod(space)) if space else 1
    work *= 1 + _reduce_work(e for _, e in roots)
    outer_n = int(np.prod([v.extent for v in outer_vars])) if outer_vars else 1
    fn = Function(name, buffers_for(comp.loads, outputs), outer_vars, ext[:k], top,
                  parallel=work >= parallel_threshold and outer_n > 1, prelude=glob.stmts)
    fn.schedule = (f"loop nest over {list(space)}" + (f", threads over {outer_n} outer points" if fn.parallel else "")
                   )
    return fn


def reduction_vars(roots, sch: "Scheduler") -> set | None:
    """The loop vars (of extent > 1) any reduction depends on; None without reductions."""
    dep = None
    seen: set = set()
    for r in roots:
        for x in E.walk(r, seen):
            if isinstance(x, E.Reduce):
                fv = {v for v in sch.free(x) if v.extent != 1}
                dep = fv if dep is None else dep | fv
    return dep


def _reduce_work(exprs) -> int:
    best = 0
    for e in exprs:
        for x in E.walk(e):
            if isinstance(x, E.Reduce):
                best = max(best, int(np.prod([v.extent for v in x.vars])))
    return best
