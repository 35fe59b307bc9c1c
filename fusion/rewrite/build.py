"""Building replacements: detached nodes first, graph edits only when chosen.

A rule's replacement is built with a `Builder`: `b.op("Mul", x, y)`,
`b.const(array)`, `b.lit(0.5, like=x)`. Nodes are *detached* (typed by the op
table's shape rule, not yet in the graph) so the engine can price a
replacement (FLOPs, nodes, bytes) before deciding; `materialize` then
inserts them. Operations whose inputs are all constants are folded at once
(through the op's reference semantics, below a size cap).

`SymBuilder` runs the same replacement over small tensors of sympy symbols:
the rule's proof evaluates both sides with it.
"""
from __future__ import annotations

import itertools

import numpy as np
import sympy

from fusion.errors import FusionError
from fusion.ir.graph import Node, Value
from fusion.ops import get_op

# Constants created by folding stay below this many elements, unless they
# replace a constant at least as big (folding a scale into a weight).
FOLD_LIMIT = 1 << 20

_tmp = itertools.count()


class BuildError(Exception):
    """The replacement does not type-check here (shape/dtype): skip the match."""


def detached_value(dtype, shape, const=None) -> Value:
    v = Value(f"_rw{next(_tmp)}", dtype, shape, const=const)
    return v


class Builder:
    def __init__(self, fold: bool = True):
        self.nodes: list[Node] = []
        self.consts: list[Value] = []
        self.fold = fold

    # -- constants -------------------------------------------------------
    def const(self, array, dtype=None) -> Value:
        a = np.asarray(array, dtype=dtype)
        v = detached_value(a.dtype, a.shape, const=a)
        self.consts.append(v)
        return v

    def lit(self, x, like: Value, shape=()) -> Value:
        return self.const(np.full(shape, x, dtype=like.dtype))

    def ints(self, xs) -> Value:
        return self.const(np.asarray(xs, dtype=np.int64))

    # -- ops -------------------------------------------------------------
    def op(self, op_type: str, *inputs, n_outputs: int | None = None, **attrs):
        od = get_op(op_type)
        if od is None:
            raise BuildError(f"op {op_type} is not in the op table")
        ins = list(inputs)
        while ins and ins[-1] is None:
            ins.pop()
        k = n_outputs or od.default_outputs
        outs = [detached_value(None, None) for _ in range(k)]
        node = Node(op_type, ins, outs, od.fill_attrs(attrs), name="")
        try:
            types = od.infer(node)
        except Exception as e:
            raise BuildError(str(e)) from None
        for v, (dt, sh) in zip(outs, types):
            v.dtype = np.dtype(dt) if dt is not None else None
            v.shape = tuple(sh) if sh is not None else None
            v.producer = node
        folded = self._try_fold(node, od)
        if folded is not None:
            return folded[0] if len(folded) == 1 else tuple(folded)
        self.nodes.append(node)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _try_fold(self, node, od):
        if not self.fold or od.reference is None or od.category == "random":
            return None
        args = []
        for v in node.inputs:
            if v is None:
                args.append(None)
            elif v.const is None:
                return None
            else:
                args.append(v.const)
        biggest = max([a.size for a in args if a is not None] + [0])
        for v in node.outputs:
            if v.shape is None or not all(isinstance(d, int) for d in v.shape):
                return None
            n = int(np.prod(v.shape))
            if n > FOLD_LIMIT or (n > 4096 and n > biggest):
                return None
        try:
            with np.errstate(all="ignore"):
                outs = od.reference(node, args)
        except Exception:
            return None
        res = []
        for v, a in zip(node.outputs, outs):
            a = np.asarray(a)
            if v.dtype is not None and a.dtype != v.dtype:
                a = a.astype(v.dtype)
            res.append(self.const(a))
        return res

    # -- pricing -----------------------------------------------------------
    def flops(self) -> int:
        return sum(node_flops(n) for n in self.nodes)

    def out_bytes(self) -> int:
        return sum(value_bytes(v) for n in self.nodes for v in n.outputs)

    # -- commit ------------------------------------------------------------
    def materialize(self, graph, before: Node, used: list[Value]) -> None:
        """Insert the nodes (just before `before`) and the constants they use."""
        live = _reachable(used)
        for v in self.consts:
            if id(v) in live:
                v.name = graph._unique("const")
                v.graph = graph
                graph.values[v.name] = v
        for n in self.nodes:
            if id(n) not in live:
                continue
            n.name = graph._unique_node_name(n.op)
            for o in n.outputs:
                o.name = graph._unique(n.name)
                o.producer = None
            graph._attach(n, before)


def _reachable(vals) -> set:
    seen = set()
    stack = [v for v in vals if v is not None]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        p = v.producer
        if p is not None and p.graph is None:
            if id(p) not in seen:
                seen.add(id(p))
                stack.extend(x for x in p.inputs if x is not None)
    return seen


def node_flops(n) -> int:
    od = get_op(n.op, n.domain)
    try:
        return int(od.flops(n)) if od is not None else 0
    except Exception:
        return 0


def value_bytes(v) -> int:
    try:
        return v.nbytes if v.shape is not None and v.dtype is not None else 0
    except Exception:
        return 0


# ---------------------------------------------------------------------------
# Symbolic evaluation (proofs)

class SymBuilder(Builder):
    """Evaluates ops over numpy object arrays of sympy expressions. Values are
    detached; `sym[id(value)]` holds the symbolic tensor."""

    def __init__(self):
        super().__init__(fold=False)
        self.sym: dict[int, np.ndarray] = {}

    def symbols(self, name: str, shape, dtype="float32", **assume) -> Value:
        v = detached_value(np.dtype(dtype), tuple(shape))
        n = int(np.prod(shape)) if shape else 1
        if shape:
            syms = [sympy.Symbol(f"{name}{i}", real=True, **assume) for i in range(n)]
        else:
            syms = [sympy.Symbol(name, real=True, **assume)]
        self.sym[id(v)] = np.array(syms, dtype=object).reshape(shape)
        return v

    def const(self, array, dtype=None) -> Value:
        v = super().const(array, dtype)
        a = v.const
        if a.dtype.kind == "f":
            obj = np.empty(a.shape, dtype=object)
            for idx in np.ndindex(a.shape):
                obj[idx] = sympy.nsimplify(float(a[idx])) if np.isfinite(a[idx]) else (
                    sympy.oo if a[idx] > 0 else -sympy.oo if a[idx] < 0 else sympy.nan)
            self.sym[id(v)] = obj
        else:
            self.sym[id(v)] = a
        return v

    def lit(self, x, like: Value, shape=()) -> Value:
        # Exact literal (float64): 1.4142135623730951 must become sqrt(2) as in the op's own scalar.
        v = Builder.const(self, np.full(shape, x, dtype=np.float64))
        v.dtype = like.dtype if like.dtype.kind == "f" else v.dtype
        obj = np.empty(shape, dtype=object)
        for idx in np.ndindex(shape):
            obj[idx] = sympy.nsimplify(float(x)) if np.isfinite(x) else (sympy.oo if x > 0 else -sympy.oo)
        self.sym[id(v)] = obj
        return v

    def value_of(self, v: Value):
        return self.sym[id(v)]

    def op(self, op_type: str, *inputs, n_outputs: int | None = None, **attrs):
        out = super().op(op_type, *inputs, n_outputs=n_outputs, **attrs)
        node = self.nodes[-1]
        args = [self.sym[id(v)] if v is not None else None for v in node.inputs]
        res = sym_eval(node, args)
        for v, a in zip(node.outputs, res):
            self.sym[id(v)] = a
        return out


def sym_eval(node, args) -> list[np.ndarray]:
    od = node.opdef
    if od.scalar is not None:
        xs = list(args)
        while xs and xs[-1] is None:
            xs.pop()
        from fusion.ops.mathns import SYM
        arrs = [np.asarray(x, dtype=object) if x is not None else None for x in xs]
        shape = np.broadcast_shapes(*[a.shape for a in arrs if a is not None])
        b = [np.broadcast_to(a, shape) if a is not None else None for a in arrs]
        out = np.empty(shape, dtype=object)
        for idx in np.ndindex(shape):
            out[idx] = od.scalar(SYM, *[a[idx] if a is not None else None for a in b], **node.attrs)
        return [out]
    if node.op in ("ReduceMax", "ReduceMin"):
        from fusion.ops.reduce import reduce_axes
        f = sympy.Max if node.op == "ReduceMax" else sympy.Min
        a = args[0]
        for ax in sorted(reduce_axes(node), reverse=True):
            a = np.apply_along_axis(lambda r: f(*r), ax, a)
            if node.attrs["keepdims"]:
                a = np.expand_dims(a, ax)
        return [np.asarray(a, dtype=object)]
    if node.op in ("Softmax", "LogSoftmax"):
        x = args[0]
        ax = node.attrs["axis"]
        e = np.vectorize(sympy.exp, otypes=[object])(x)
        s = np.sum(e, axis=ax, keepdims=True)
        if node.op == "Softmax":
            return [e / s]
        return [x - np.vectorize(sympy.log, otypes=[object])(s)]
    if od.lower is not None:
        from fusion.rewrite.symlower import run_lower
        try:
            return run_lower(node, args)
        except NotImplementedError:
            pass
    try:
        return [np.asarray(a, dtype=object) for a in od.reference(node, args)]
    except Exception as e:
        raise FusionError(f"{node.op}: no symbolic semantics ({type(e).__name__}: {e})") from None
