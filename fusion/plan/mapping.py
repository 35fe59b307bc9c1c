"""Mapping types (DNNFusion's operator classes), derived from the op table.

Two ways to know an op's class:

* declared: `OpDef.mapping` (a Mapping, or a function of the node);
* derived: run the op's index function `lower` on a small concrete node and
  record, for every output element, which input elements it reads
  (`derive_mapping`). Tests check derived == declared for every op; the
  planner falls back to deriving when an op with a `lower` declares nothing.

The rules for deriving, from the recorded read relation:

* an input element read many times inside a reduction, per output element
  -> Many-to-Many (Conv, MatMul, Reduce*, Softmax);
* otherwise, a data-dependent read (an index computed from loaded data, as in
  Gather), an input element feeding several outputs (broadcast, Expand,
  nearest Resize) or a small fixed stencil outside reductions (linear Resize)
  -> One-to-Many;
* otherwise every output reads at most one element of each input and no
  input element is read twice: a bijection that keeps row-major order but
  changes the shape -> Reorganize, a bijection that permutes -> Shuffle,
  anything else (same shape, Slice, Concat, Pad, Where) -> One-to-One.

The planner's class of a node (`node_class`) is the declared one with one
refinement: an elementwise op whose broadcasting comes only from constant
inputs (a bias [C,1,1], Clip's scalar bounds) is One-to-One, because constants
are block inputs, not fusion edges: reading a small constant with a
broadcast index costs nothing extra.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from fusion.ir import expr as E
from fusion.ir.expr_eval import evaluate, output_vars
from fusion.ops import get_op
from fusion.ops.table import Mapping

# Lattice used to combine classes (multi-output ops, whole blocks):
# O2O < Shuffle < Reorg < O2M < M2M. The fusion table's result column follows it.
RANK = {Mapping.O2O: 0, Mapping.SHUFFLE: 1, Mapping.REORG: 2, Mapping.O2M: 3, Mapping.M2M: 4, Mapping.OPAQUE: 5}

# Deriving evaluates `lower` at every output position (and every reduction
# step): only for small nodes.
DERIVE_BUDGET = 200_000


def join(a: Mapping, b: Mapping) -> Mapping:
    return a if RANK[a] >= RANK[b] else b


# ---------------------------------------------------------------------------
# Recording reads

class _Reads:
    """Pairs (flat output position, flat input position) for one input slot."""

    def __init__(self, size: int):
        self.size = size
        self.pairs: list[np.ndarray] = []         # (2, n) arrays
        self.reduce_pairs: list[np.ndarray] = []  # reads inside a reduction
        self.data_dependent = False

    def add(self, out_flat, in_flat, reduced: bool) -> None:
        p = np.stack([out_flat, in_flat])
        (self.reduce_pairs if reduced else self.pairs).append(p)

    @staticmethod
    def _distinct(ps: list[np.ndarray]) -> np.ndarray:
        if not ps:
            return np.zeros((2, 0), np.int64)
        return np.unique(np.concatenate(ps, axis=1), axis=1)

    def stats(self) -> dict:
        allp = self._distinct(self.pairs + self.reduce_pairs)
        redp = self._distinct(self.reduce_pairs)

        def max_count(a):
            return int(np.bincount(a).max()) if a.size else 0

        return {
            "reads": allp.shape[1],
            "fan_in": max_count(allp[0]),            # distinct elements one output reads
            "fan_in_reduce": max_count(redp[0]),     # ... inside reductions
            "fan_out": max_count(allp[1]),           # distinct outputs one element feeds
            "covered": np.unique(allp[1]).size,      # input elements read at all
            "identity": bool(allp.size and np.array_equal(allp[0], allp[1])),
            "data_dependent": self.data_dependent,
        }


def _has_load(e: E.Expr) -> bool:
    return any(isinstance(x, E.Load) for x in E.walk(e))


def _sample_input(v, rng) -> np.ndarray:
    shape = tuple(int(d) for d in v.shape)
    if v.const is not None:
        return np.asarray(v.const)
    if v.known is not None:
        return np.asarray(v.known)
    k = v.dtype.kind
    if k == "b":
        return rng.random(shape) < 0.5
    if k in "iu":
        # Small non-negative ints: valid indices along any axis of size >= 2.
        return rng.integers(0, 2, size=shape).astype(v.dtype)
    return rng.standard_normal(shape).astype(v.dtype)


def record_reads(node, k: int = 0, seed: int = 0) -> dict[int, dict]:
    """For output k of a (small, static) node: read statistics per input slot."""
    od = node.opdef
    out_shape = tuple(int(d) for d in node.outputs[k].shape)
    rng = np.random.default_rng(seed)
    data = [_sample_input(v, rng) if v is not None else None for v in node.inputs]
    vs = output_vars(out_shape)
    grids = np.indices(out_shape, dtype=np.int64) if out_shape else []
    env: dict = {v: grids[i] for i, v in enumerate(vs)}
    out_flat = np.arange(int(np.prod(out_shape, dtype=np.int64))).reshape(out_shape)

    def read(i, index):
        v = node.inputs[i]
        return E.load(i, index, "bool" if v.dtype == np.bool_ else v.dtype.name)

    e = od.lower(node, vs, read, k)

    def load(slot, idx):
        a = data[slot]
        if a.ndim == 0:
            return a
        idx = [np.clip(ix, 0, max(d - 1, 0)) for ix, d in zip(idx, a.shape)]
        return a[tuple(idx)]

    reads = {i: _Reads(int(np.prod(v.shape, dtype=np.int64))) for i, v in enumerate(node.inputs) if v is not None}

    def note(x: E.Load, mask, reduced: bool):
        v = node.inputs[x.slot]
        in_shape = tuple(int(d) for d in v.shape)
        idx = [np.broadcast_to(np.asarray(evaluate(i, env, load)).astype(np.int64), out_shape) for i in x.index]
        m = np.broadcast_to(np.asarray(mask, dtype=bool), out_shape)
        ok = m.copy()
        for ix, d in zip(idx, in_shape):
            ok &= (ix >= 0) & (ix < d)
        flat = np.ravel_multi_index([ix[ok] for ix in idx], in_shape) if in_shape else np.zeros(int(ok.sum()), np.int64)
        r = reads[x.slot]
        r.add(out_flat[ok], flat, reduced)
        if any(_has_load(i) for i in x.index):
            r.data_dependent = True

    alive = []  # keep masks alive: the memo is keyed by their id

    def visit(x: E.Expr, mask, reduced: bool, memo: set):
        alive.append(mask)
        key = (id(x), id(mask))
        if key in memo:
            return
        memo.add(key)
        if isinstance(x, E.Load):
            note(x, mask, reduced)
            for i in x.index:
                visit(i, mask, reduced, memo)
        elif isinstance(x, E.Select) and _has_load(x.cond):
            # A data-dependent choice (Where, Relu as a select): either branch
            # may be read at any position.
            for c in x.children():
                visit(c, mask, reduced, memo)
        elif isinstance(x, E.Select):
            c = np.asarray(evaluate(x.cond, env, load)).astype(bool)
            visit(x.cond, mask, reduced, memo)
            visit(x.a, mask & c, reduced, memo)
            visit(x.b, mask & ~c, reduced, memo)
        elif isinstance(x, E.Reduce):
            for combo in itertools.product(*[range(v.extent) for v in x.vars]):
                for v, c in zip(x.vars, combo):
                    env[v] = np.asarray(c, dtype=np.int64)
                visit(x.body, mask, True, set())
            for v in x.vars:
                env.pop(v, None)
        else:
            for c in x.children():
                visit(c, mask, reduced, memo)

    visit(e, np.ones(out_shape, dtype=bool), False, set())
    return {i: r.stats() for i, r in reads.items()}


def classify_reads(node, stats_by_output: list[dict[int, dict]], slots: Sequence[int] | None = None) -> Mapping:
    """The class of a node from recorded reads (see the module doc)."""
    result = Mapping.O2O
    for k, stats in enumerate(stats_by_output):
        out_v = node.outputs[k]
        out_size = int(np.prod([int(d) for d in out_v.shape], dtype=np.int64))
        sel = {i: s for i, s in stats.items() if (slots is None or i in slots) and s["reads"]}
        if any(s["fan_in_reduce"] > 1 for s in sel.values()):
            cls = Mapping.M2M
        elif any(s["data_dependent"] or s["fan_out"] > 1 or s["fan_in"] > 1 for s in sel.values()):
            cls = Mapping.O2M
        else:
            bij = [s for i, s in sel.items()
                   if s["reads"] == out_size == node.inputs[i].size and s["covered"] == out_size]
            if sel and len(bij) == len(sel):
                same_shape = all(tuple(node.inputs[i].shape) == tuple(out_v.shape) for i in sel)
                if all(s["identity"] for s in bij):
                    cls = Mapping.O2O if same_shape else Mapping.REORG
                else:
                    cls = Mapping.SHUFFLE
            else:
                cls = Mapping.O2O
        result = join(result, cls)
    return result


def derive_mapping(node, slots: Sequence[int] | None = None) -> Mapping | None:
    """The class of `node` derived from its index function; None when the
    op has no `lower` (opaque) or the node is not static and small."""
    od = node.opdef
    if od is None or od.lower is None:
        return None
    if not all(v is None or v.is_static for v in node.inputs + node.outputs):
        return None
    if sum(v.size for v in node.outputs) * max(1, _reduce_extent(node)) > DERIVE_BUDGET:
        return None
    stats = [record_reads(node, k) for k in range(len(node.outputs))]
    return classify_reads(node, stats, slots)


def _reduce_extent(node) -> int:
    """Largest product of reduction extents in output 0's expression."""
    c = reads_per_output(node)
    return int(max(c.values(), default=1))


# ---------------------------------------------------------------------------
# Symbolic read counts (cheap, any size): loads of each input per output element

_READS_CACHE: dict = {}


def _signature(node) -> tuple:
    def attr(v):
        if isinstance(v, np.ndarray):
            return ("nd", v.shape, v.tobytes()[:64])
        if isinstance(v, list):
            return tuple(attr(x) for x in v)
        return v if isinstance(v, (int, float, str, bytes, type(None))) else repr(v)
    return (node.op, node.domain, tuple(sorted((k, attr(v)) for k, v in node.attrs.items())),
            tuple((tuple(v.shape), str(v.dtype), v.const is not None and v.size <= 16 and v.const.tobytes())
                  if v is not None else None for v in node.inputs))


def reads_per_output(node, k: int = 0) -> dict[int, float]:
    """{input slot: loads per output element of output k}, counting every load
    occurrence times the extents of the reductions around it (loads under a
    Select count fully: an upper bound, e.g. Conv's padding)."""
    od = node.opdef
    if od is None or od.lower is None or not all(v is None or v.is_static for v in node.inputs + node.outputs):
        return {}
    key = (_signature(node), k)
    hit = _READS_CACHE.get(key)
    if hit is not None:
        return hit
    vs = output_vars([int(d) for d in node.outputs[k].shape])

    def read(i, index):
        v = node.inputs[i]
        return E.load(i, index, "bool" if v.dtype == np.bool_ else v.dtype.name)

    try:
        e = od.lower(node, vs, read, k)
    except Exception:  # an index function that cannot be built for this node
        _READS_CACHE[key] = {}
        return {}
    counts: dict[int, float] = {}
    memo: set = set()

    def go(x: E.Expr, mult: float):
        key2 = (id(x), mult)
        if key2 in memo:
            return
        memo.add(key2)
        if isinstance(x, E.Load):
            counts[x.slot] = counts.get(x.slot, 0.0) + mult
        if isinstance(x, E.Reduce):
            m = mult
            for v in x.vars:
                m *= v.extent
            go(x.body, m)
            return
        for c in x.children():
            go(c, mult)

    go(e, 1.0)
    _READS_CACHE[key] = counts
    return counts


# ---------------------------------------------------------------------------
# The planner's class of a node

def declared_mapping(node) -> Mapping:
    od = get_op(node.op, node.domain)
    if od is None or od.lower is None:
        return Mapping.OPAQUE
    return od.mapping_of(node)


def node_class(node) -> tuple[Mapping, str]:
    """(class, source) used by the planner. Source says where it came from:
    'declared', 'derived', 'constant broadcast', 'opaque', ..."""
    od = get_op(node.op, node.domain)
    if od is None:
        return Mapping.OPAQUE, "not in the op table"
    if od.lower is None:
        return Mapping.OPAQUE, "no index function (opaque op)"
    if node.subgraphs():
        return Mapping.OPAQUE, "control flow"
    try:
        m = od.mapping_of(node)
    except Exception:
        m = Mapping.OPAQUE
    src = "declared"
    if m == Mapping.OPAQUE:
        # An op with an index function that declares no class: derive it.
        d = derive_mapping(node)
        if d is None:
            return Mapping.M2M, "undeclared and too large to derive: treated as Many-to-Many"
        m, src = d, "derived"
    if m == Mapping.O2M and od.scalar is not None:
        out = tuple(node.outputs[0].shape)
        if all(v is None or v.const is not None or tuple(v.shape) == out for v in node.inputs):
            return Mapping.O2O, "constant broadcast"
    return m, src
