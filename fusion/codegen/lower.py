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
                 shape_of: Callable[[Value], tuple], dyn: "DynInfo | None" = None):
        self.inside = {id(n) for n in nodes}
        self.cname, self.literal, self.shape_of = cname, literal, shape_of
        self.memo: dict = {}
        self.loads: dict[str, Value] = {}   # buffer name -> value read from outside
        self.stop: set[int] = set()          # values treated as block inputs even if produced inside
        self.dyn = dyn                       # run-time dims of the block's values (None: all static)

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

        if self.dyn is not None and self.dyn.touches(p):
            e = self.dyn.lower(p, index, read, k)
        else:
            e = od.lower(p, index, read, k)
        want = dtype_name(v)
        return E.cast(e, want) if e.dtype != want else e


# ---------------------------------------------------------------------------
# Run-time (data-dependent) dims inside a block
#
# Values whose dims are decided at run time are laid out with their capacity's
# strides (padded), and the block is lowered over capacity shapes. An op's
# index function is then right at every valid output index when it does not
# use the size of a run-time dim as a number. The ops that do (Shape, Size,
# Gather's negative indices, Concat offsets, Slice starts, reductions over the
# dim) get their actual sizes as loads of the model's run-time dims array;
# reductions over a run-time dim skip the padding (identity element); every
# other op over a run-time dim is refused with one line naming the node.

# Reductions whose result does not use the number of terms as a value:
# masking padded terms with the identity element is exact.
MASKED_REDUCERS = {"ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                   "ReduceLogSum", "ReduceLogSumExp", "Softmax", "LogSoftmax", "ArgMax", "ArgMin", "Hardmax",
                   "MatMul", "Gemm", "CumSum"}
# Ops whose index function is right in the padded layout whatever the sizes
# (given the broadcast check below for multi-input ops).
PADDED_SAFE = {"Transpose", "Identity", "Cast", "CastLike", "ConstantOfShape", "Dropout", "Range", "EyeLike"}
REORGS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


class DynInfo:
    """The symbolic shapes of a block's values with run-time dims, and `dim(d)`:
    an expression giving the actual size `d` (a sympy expression of the run-time
    symbols) when the kernel runs."""

    def __init__(self, sym_shapes: dict[int, tuple], dim: Callable[[object], E.Expr]):
        self.sym_shapes, self._dim = sym_shapes, dim

    def touches(self, node: Node) -> bool:
        return any(v is not None and id(v) in self.sym_shapes for v in node.inputs + node.outputs)

    def sym(self, v: Value) -> tuple:
        return self.sym_shapes.get(id(v), tuple(v.shape))

    def size(self, v: Value, d: int) -> E.Expr:
        x = self.sym(v)[d]
        return E.Const(int(x)) if isinstance(x, (int, np.integer)) else self._dim(x)

    def is_dyn(self, v: Value, d: int) -> bool:
        return not isinstance(self.sym(v)[d], (int, np.integer))

    def valid(self, v: Value, idx) -> E.Expr | None:
        """idx lies inside v's actual extents (only its run-time dims are checked)."""
        if v is None or id(v) not in self.sym_shapes:
            return None
        cond = None
        for d, i in enumerate(idx):
            if self.is_dyn(v, d):
                c = E.binary("lt", i, self.size(v, d))
                cond = c if cond is None else E.binary("and", cond, c)
        return cond

    def fail(self, node: Node, why: str):
        vals = [v for v in node.inputs + node.outputs if v is not None and id(v) in self.sym_shapes]
        raise UnsupportedOpError(f"{node.label()}: {node.op} {why} ({', '.join(v.name + str(list(self.sym(v))) for v in vals[:2])}); "
                                 f"the C backend does not support it yet")

    # ------------------------------------------------------------ lowering
    def lower(self, p: Node, index: list[E.Expr], read, k: int) -> E.Expr:
        ov = getattr(self, "_lower_" + p.op, None)
        if ov is not None:
            r = ov(p, index, read, k)
            if r is not None:
                return r
        self.check(p)
        reads: list[tuple[E.Expr, E.Expr]] = []

        def rec(i, idx):
            val = read(i, idx)
            if p.inputs[i] is not None and id(p.inputs[i]) in self.sym_shapes:
                reads.append((p.inputs[i], list(idx), val))
            return val
        e = p.opdef.lower(p, index, rec, k)
        return self._mask_reductions(p, e, reads)

    def check(self, p: Node) -> None:
        op = p.op
        cat = p.opdef.category
        if op in REORGS:
            a, b = self.sym(p.inputs[0]), self.sym(p.outputs[0])
            if not (_prefix_compact(a) and _prefix_compact(b)) and not _same_groups(a, b):
                self.fail(p, "reshapes across a dimension known only at run time")
            return
        if op == "Split":
            ax = p.attrs.get("axis", 0) % max(p.inputs[0].rank, 1)
            if self.is_dyn(p.inputs[0], ax):
                self.fail(p, "splits a dimension known only at run time")
            return
        if op in PADDED_SAFE:
            return
        if op == "Slice" and not any(self.is_dyn(p.inputs[0], d) for d in range(p.inputs[0].rank)):
            return   # static input: the op's own index function clamps run-time starts with static dims
        if op == "Gather":   # along a static axis (a run-time one goes through _lower_Gather)
            return
        if op in ("Trilu", "OneHot"):   # positions compared with each other / a static depth only
            if op == "OneHot" and not isinstance(self.sym(p.outputs[0])[p.attrs.get("axis", -1) % p.outputs[0].rank],
                                                 (int, np.integer)):
                self.fail(p, "has a run-time depth")
            return
        if op == "GatherElements":
            ax = p.attrs.get("axis", 0) % max(p.inputs[0].rank, 1)
            if self.is_dyn(p.inputs[0], ax):
                self.fail(p, "indexes along a dimension known only at run time")
            return
        if op == "GatherND":
            if any(self.is_dyn(p.inputs[0], d) for d in range(p.inputs[0].rank)):
                self.fail(p, "indexes a tensor whose dims are known only at run time")
            return
        if op in ("QuantizeLinear", "DequantizeLinear"):
            cat = "elementwise"
        if op == "Tile":   # (Pad, Resize and Upsample: _lower_Pad / _lower_Resize over the actual sizes)
            if all(not self.is_dyn(p.inputs[0], d) or self._untouched_axis(p, d) for d in range(p.inputs[0].rank)):
                return   # run-time dims pass through unchanged: padded layout is right
            self.fail(p, "changes the size of a dimension known only at run time")
        if cat == "elementwise" or op == "Expand":
            out = self.sym(p.outputs[0])
            for v in p.inputs:
                if v is None or id(v) not in self.sym_shapes:
                    continue
                sh = self.sym(v)
                for d, x in zip(out[len(out) - len(sh):], sh):
                    if not isinstance(x, (int, np.integer)) and str(x) != str(d):
                        # a run-time size that may be 1 broadcast against a larger one
                        self.fail(p, "broadcasts a dimension known only at run time")
            return
        if cat in ("reduce", "linear", "pool", "nn", "norm"):
            return   # fine unless it reduces over a run-time dim: checked on the expression
        self.fail(p, "over a tensor whose shape is known only at run time")

    def _untouched_axis(self, p: Node, d: int) -> bool:
        """Axis d of a Tile input keeps its size and positions."""
        from fusion.ops.shape import const_input
        reps = const_input(p, 1)
        return reps is not None and int(np.asarray(reps).reshape(-1)[d]) == 1

    def _mask_reductions(self, p: Node, e: E.Expr, reads, allowed: bool = False) -> E.Expr:
        if not reads:
            return e
        old = set()
        for _, _, val in reads:
            old.update(id(x) for x in E.walk(val) if isinstance(x, E.Reduce))
        memo: dict[int, E.Expr] = {}

        def go(x: E.Expr) -> E.Expr:   # bottom-up: a Reduce inside another (Softmax's max in its sum) first
            r = memo.get(id(x))
            if r is not None:
                return r
            if isinstance(x, E.Reduce) and id(x) in old:
                memo[id(x)] = x
                return x
            kids = x.children()
            new = [go(c) for c in kids]
            r = x if all(a is b for a, b in zip(kids, new)) else E.rebuild(x, new)
            if isinstance(x, E.Reduce):
                inside = {id(y) for y in E.walk(x.body)}
                rv = set(x.vars)
                # reads of run-time-sized inputs at an index that moves with this reduction
                conds = [self.valid(src, idx) for src, idx, val in reads if id(val) in inside and
                         any(self.is_dyn(src, d) and E.free_vars(c) & rv for d, c in enumerate(idx))]
                if conds:
                    if p.op not in MASKED_REDUCERS and not allowed:
                        self.fail(p, "reduces over a dimension known only at run time")
                    cond = conds[0]
                    for c in conds[1:]:
                        cond = E.binary("and", cond, c)
                    ident = reduce_init(x.op, x.body.dtype) if x.op not in ("any", "all") else \
                        E.Const(x.op == "all", "bool")
                    r = E.Reduce(x.op, x.vars, E.select(cond, r.body, ident))
            memo[id(x)] = r
            return r
        return go(e)

    # ops that use the size of a run-time dim as a number
    def _lower_Shape(self, p, index, read, k):
        from fusion.ops.shape import _shape_range
        s, e = _shape_range(p)
        dims = [self.size(p.inputs[0], d) for d in range(s, e)]
        res = dims[-1] if dims else E.Const(0)
        for j in range(len(dims) - 2, -1, -1):
            res = E.select(E.binary("eq", index[0], j), dims[j], res)
        return E.cast(res, "int64")

    def _lower_ReduceMean(self, p, index, read, k):
        """The masked sum over the actual elements, divided by their actual count."""
        from fusion.ops.reduce import reduce_axes, runtime_axes
        x = p.inputs[0]
        if runtime_axes(p) or not x.dtype.name.startswith("float"):
            return None
        axes = reduce_axes(p)
        if not any(self.is_dyn(x, a) for a in axes):
            return None   # the count is static: the op's own lowering
        reads: list = []

        def rec(i, idx):
            val = read(i, idx)
            if p.inputs[i] is not None and id(p.inputs[i]) in self.sym_shapes:
                reads.append((p.inputs[i], list(idx), val))
            return val
        e = self._mask_reductions(p, p.opdef.lower(p, index, rec, k), reads, allowed=True)
        if not (isinstance(e, E.Bin) and e.op == "div" and isinstance(e.b, E.Const)):
            self.fail(p, "reduces over a dimension known only at run time")
        cnt = E.Const(1)
        for a in axes:
            cnt = cnt * self.size(x, a)
        # the mean of no elements: onnxruntime gives 0 (its sum over a count of 1)
        return E.binary("div", e.a, E.cast(E.binary("max", cnt, E.Const(1)), e.dtype))

    def _lower_Size(self, p, index, read, k):
        x = p.inputs[0]
        res = E.Const(1)
        for d in range(x.rank):
            res = res * self.size(x, d)
        return E.cast(res, "int64")

    def _lower_Gather(self, p, index, read, k):
        d, i = p.inputs
        ax = p.attrs.get("axis", 0) % max(d.rank, 1)
        if not self.is_dyn(d, ax):
            return None
        q = i.rank
        j = E.cast(read(1, list(index[ax:ax + q])), "int64")
        j = E.select(E.binary("lt", j, 0), j + self.size(d, ax), j)
        return read(0, list(index[:ax]) + [j] + list(index[ax + q:]))

    def _lower_ScatterElements(self, p, index, read, k):
        """ONNX ScatterElements with the actual sizes: updates at padded positions
        never match (masked), negative indices count from the actual end."""
        from fusion.ops.gather import _scatter_result
        d, i, _ = p.inputs
        ax = p.attrs.get("axis", 0) % max(d.rank, 1)
        reads: list = []

        def rec(j, idx):
            val = read(j, idx)
            if p.inputs[j] is not None and id(p.inputs[j]) in self.sym_shapes:
                reads.append((p.inputs[j], list(idx), val))
            return val
        valid = E.Const(True)
        for a, o in enumerate(index):
            if a != ax:
                valid = E.binary("and", valid, E.binary("lt", o, self.size(i, a)))

        def at(r):
            idx = list(index)
            idx[ax] = r[0]
            return idx

        def match(r):
            j = E.cast(rec(1, at(r)), "int64")
            j = E.select(E.binary("lt", j, 0), j + self.size(d, ax), j)
            return E.binary("and", valid, E.binary("eq", j, index[ax]))

        e = _scatter_result(p, index, rec, [int(i.shape[ax])], match, at)
        return self._mask_reductions(p, e, reads, allowed=True)

    def _lower_Concat(self, p, index, read, k):
        out = p.outputs[0]
        ax = p.attrs.get("axis", 0) % max(out.rank, 1)
        pieces = [(i, v) for i, v in enumerate(p.inputs)
                  if v is not None and not (isinstance(self.sym(v)[ax], (int, np.integer)) and int(self.sym(v)[ax]) == 0)]
        offs, o = [], E.Const(0)
        for i, v in pieces:
            offs.append(o)
            o = o + self.size(v, ax)
        res = None
        for (i, v), off in reversed(list(zip(pieces, offs))):
            idx = list(index)
            idx[ax] = index[ax] - off
            val = read(i, idx)
            res = val if res is None else E.select(E.binary("lt", index[ax], off + self.size(v, ax)), val, res)
        return res

    def _lower_Resize(self, p, index, read, k):
        """Resize/Upsample over actual sizes: ONNX's scale from `sizes` is out/in of
        the actual extents (not the capacities), and taps clamp to the actual
        input, so the padding is never read."""
        from fusion.ops.movement import resize_lower_with
        x, y = p.inputs[0], p.outputs[0]
        if not any(self.is_dyn(x, d) or self.is_dyn(y, d) for d in range(x.rank)):
            return None
        return resize_lower_with(p, index, read, dims=([self.size(x, d) for d in range(x.rank)],
                                                       [self.size(y, d) for d in range(y.rank)]))

    _lower_Upsample = _lower_Resize

    def _lower_Pad(self, p, index, read, k):
        """Pad over actual sizes: a padded element is one outside the actual input
        (edge/wrap/reflect fold into it), and the output's run-time extents are
        formulas of the input's and the pads."""
        from fusion.ops.movement import pad_lower_with
        x, y = p.inputs[0], p.outputs[0]
        if not any(self.is_dyn(x, d) or self.is_dyn(y, d) for d in range(x.rank)):
            return None
        return pad_lower_with(p, index, read, dims=[self.size(x, d) for d in range(x.rank)])

    def _lower_Slice(self, p, index, read, k):
        from fusion.ops.shape import _slice_runtime, slice_geometry, slice_start_formula, const_input
        x = p.inputs[0]
        if _slice_runtime(p):
            if not any(self.is_dyn(x, d) for d in range(x.rank)):
                return None
            return self._slice_runtime_args(p, index, read)
        geo = slice_geometry(p)           # on capacity shapes: right for the static axes
        starts = np.asarray(const_input(p, 1)).reshape(-1)
        axes = const_input(p, 3)
        axes = list(range(len(starts))) if axes is None else [int(a) % x.rank for a in np.asarray(axes).reshape(-1)]
        steps = const_input(p, 4)
        steps = [1] * len(starts) if steps is None else [int(t) for t in np.asarray(steps).reshape(-1)]
        first = {a: (int(s0), st) for s0, a, st in zip(starts, axes, steps)}
        idx = []
        for d, (o, (s0, st, _)) in enumerate(zip(index, geo)):
            if self.is_dyn(x, d) and d in first:
                s_, st_ = first[d]
                start = self._dim(slice_start_formula(s_, st_, self.sym(x)[d]))
                idx.append(start + o * st_)
            else:
                idx.append(o * st + s0)
        return read(0, idx)

    def _slice_runtime_args(self, p, index, read):
        """Slice whose starts/steps (and axes) are read at run time, on a tensor with
        run-time dims: the clamped start per axis uses the actual size."""
        from fusion.ops.shape import _slice_lower_runtime
        return _slice_lower_runtime(p, index, read, dim_of=lambda d: self.size(p.inputs[0], d))


def _prefix_compact(shape) -> bool:
    """The padded layout's valid elements are the compact row-major prefix:
    only the first non-1 dim may be a run-time size."""
    seen = False
    for d in shape:
        if not isinstance(d, (int, np.integer)):
            if seen:
                return False
            seen = True
        elif int(d) != 1:
            seen = True
    return True


def _same_groups(a, b) -> bool:
    """Same run-time dims in the same order, with equal static products
    between them: the reshape maps padded layouts onto each other."""
    def groups(sh):
        out, prod_ = [], 1
        for d in sh:
            if isinstance(d, (int, np.integer)):
                prod_ *= int(d)
            else:
                out.append(prod_)
                out.append(str(d))
                prod_ = 1
        return out + [prod_]
    ga, gb = groups(a), groups(b)
    return ga == gb


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
                dyn_extents: list | None = None, dyn: DynInfo | None = None) -> Function:
    """The plain loop nest of a block: iterate the first output's index space;
    every output element is computed from the composed expression."""
    comp = Composer(nodes, cname, literal, shape_of, dyn)
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
        # ... but keep at least 64 outer points to thread over: a squeeze-excite scale
        # [1, 1152, 7, 7] merged into one 56448-long inner loop ran on one thread
        while m < len(space) - 1 and int(np.prod(space[-m:])) < 64 and int(np.prod(space[:-(m + 1)])) >= 64:
            m += 1
        P = int(np.prod(space[-m:]))
        fvar = E.Var("f", P)
        vars_ = [E.Var(f"i{d}", n) for d, n in enumerate(space[:-m])]
        flat = E.linearize(vars_, space[:-m]) * P + fvar if vars_ else fvar
        full = vars_ + E.delinearize(fvar, space[-m:])
        comp = Composer(nodes, cname, literal, shape_of, dyn)
        roots = []
        for v in outputs:
            s = tuple(int(d) for d in shape_of(v))
            roots.append((v, comp.value(v, full if s == space else E.delinearize(flat, s))))
        vars_ = vars_ + [fvar]
        merged = [int(d) for d in space[:-m]] + [P]
    # Reduction loops named by their place in this block, not by how many the
    # process made before: the same model gives the same C in any process.
    roots = list(zip([v for v, _ in roots], E.number_reduce_vars([e for _, e in roots])))
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
