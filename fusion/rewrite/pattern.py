"""Patterns over ops, and matching them against a graph.

A pattern is written as nested tuples, readable at a glance:

    ("Add", ("Mul", "A", "B"), ("Mul", "A", "C"))

* a tuple is an op: (op_type, *operands[, {attrs}]);
* a string is a variable: it binds a Value (the same name twice must bind the
  same Value; "_" binds anything);
* an int/float is a literal: a constant whose every element equals it;
* None matches an omitted optional input;
* in the attrs dict, a value starting with "$" binds the attribute, anything
  else must equal it; the key "@" names the op's output value (to reuse a
  whole matched sub-expression: ("Exp", "X", {"@": "E"}) then "E").

Matching is modulo commutativity for ops the op table marks commutative, and
modulo associativity (bounded: chains of at most MAX_LEAVES operands through
single-consumer nodes) for ops marked commutative and associative: the
pattern's operands are matched against any subset of the chain's operands
and, at the pattern root, the rest stay around the replacement.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from fusion.ir.graph import Value

MAX_LEAVES = 6
LITERAL_RTOL = 1e-5


@dataclass
class PNode:
    op: str
    args: list
    attrs: dict = field(default_factory=dict)
    bind: str | None = None

    def ops(self) -> set[str]:
        s = {self.op}
        for a in self.args:
            if isinstance(a, PNode):
                s |= a.ops()
        return s

    def variables(self) -> list[str]:
        out = []
        for a in self.args:
            if isinstance(a, PNode):
                out += a.variables()
            elif isinstance(a, Var) and a.name != "_":
                out.append(a.name)
        return out


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Lit:
    value: float


def compile_pattern(p) -> Any:
    if isinstance(p, tuple):
        op, *rest = p
        attrs = {}
        if rest and isinstance(rest[-1], dict):
            attrs = dict(rest[-1])
            rest = rest[:-1]
        bind = attrs.pop("@", None)
        return PNode(op, [compile_pattern(a) for a in rest], attrs, bind)
    if isinstance(p, str):
        return Var(p)
    if p is None:
        return None
    if isinstance(p, (int, float, np.floating, np.integer)):
        return Lit(float(p))
    raise TypeError(f"bad pattern element {p!r}")


def flat_list(p) -> list:
    """Pattern as a list of (op or var) tokens, for docs and hashing."""
    if isinstance(p, PNode):
        return [p.op] + [flat_list(a) for a in p.args]
    if isinstance(p, Var):
        return p.name
    if isinstance(p, Lit):
        return p.value
    return None


def fmt(p) -> str:
    if isinstance(p, PNode):
        args = ", ".join(fmt(a) for a in p.args)
        attrs = ", ".join(f"{k}={v}" for k, v in p.attrs.items())
        return f"{p.op}({args}{', ' + attrs if attrs else ''})"
    if isinstance(p, Var):
        return p.name
    if isinstance(p, Lit):
        v = p.value
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return str(int(v)) if v == int(v) else f"{v:.6g}"
    return "_"


# ---------------------------------------------------------------------------
# Matching

@dataclass
class Match:
    root: Any                       # the root Node
    binds: dict                     # var -> Value | None; "$attr" -> value
    nodes: list                     # matched nodes (root first)
    rest: list = field(default_factory=list)   # leftover operands of an associative root

    def __getitem__(self, k):
        return self.binds[k]

    def get(self, k, d=None):
        return self.binds.get(k, d)


_UNIFORM: dict = {}


def uniform_value(c: np.ndarray):
    """The one value every element of constant `c` has, else None (cached:
    constants are never mutated)."""
    hit = _UNIFORM.get(id(c))
    if hit is not None and hit[0] is c:
        return hit[1]
    u = None
    if c.size and c.dtype.kind in "fiub":
        flat = c.reshape(-1)
        if c.size == 1 or bool(np.all(flat == flat[0])):
            u = float(flat[0])
    if len(_UNIFORM) > 4096:
        _UNIFORM.clear()
    _UNIFORM[id(c)] = (c, u)
    return u


def literal_matches(v: Value | None, lit: float) -> bool:
    """A constant whose every element is `lit` (relative tolerance LITERAL_RTOL:
    exporters print sqrt(2) with fewer digits)."""
    if v is None:
        return False
    c = v.value
    if c is None or c.size == 0 or c.size > 1 << 16:
        return False
    x = uniform_value(c)
    if x is None:
        return False
    if lit == 0 or np.isinf(lit) or x != x:
        return x == lit
    return abs(x - lit) <= LITERAL_RTOL * abs(lit)


class Matcher:
    """Generates matches of one pattern at one node. `assoc_ok(op)` says whether
    associative regrouping is allowed for an op (strict_fp turns it off for
    ops whose reassociation changes rounding)."""

    def __init__(self, algebra_of, assoc_ok):
        self.algebra_of = algebra_of
        self.assoc_ok = assoc_ok

    def match(self, pat: PNode, node) -> Iterator[Match]:
        for binds, nodes, rest in self._node(pat, node, {}, [], root=True):
            yield Match(node, binds, nodes, rest)

    # Each generator yields (binds, nodes, rest) extensions.
    def _value(self, pat, v: Value | None, binds: dict, nodes: list):
        if pat is None:
            if v is None:
                yield binds, nodes
            return
        if isinstance(pat, Var):
            if pat.name == "_":
                yield binds, nodes
                return
            if pat.name in binds:
                if same_value(binds[pat.name], v):
                    yield binds, nodes
                return
            b = dict(binds)
            b[pat.name] = v
            yield b, nodes
            return
        if isinstance(pat, Lit):
            if literal_matches(v, pat.value):
                yield binds, nodes
            return
        # op pattern
        if v is None or v.producer is None:
            return
        n = v.producer
        if len(n.outputs) != 1 or n.outputs[0] is not v:
            if pat.op != n.op or n.outputs[0] is not v:
                return
        for b, ns, rest in self._node(pat, n, binds, nodes, root=False):
            yield b, ns

    def _attrs(self, pat: PNode, n, binds: dict):
        b = binds
        for k, want in pat.attrs.items():
            have = n.attrs.get(k)
            if isinstance(want, str) and want.startswith("$"):
                if want in b:
                    if not _eq(b[want], have):
                        return None
                else:
                    b = dict(b) if b is binds else b
                    b[want] = have
            elif not _eq(want, have):
                return None
        return b

    def _node(self, pat: PNode, n, binds: dict, nodes: list, root: bool):
        if n.op != pat.op or n.domain:
            return
        b0 = self._attrs(pat, n, binds)
        if b0 is None:
            return
        if pat.bind:
            if pat.bind in b0:
                if b0[pat.bind] is not n.outputs[0]:
                    return
            else:
                b0 = dict(b0)
                b0[pat.bind] = n.outputs[0]
        nodes = nodes + [n]
        alg = self.algebra_of(n.op)
        ins = list(n.inputs)
        k = len(pat.args)
        if len(ins) > k and any(x is not None for x in ins[k:]):
            return
        ins = ins + [None] * (k - len(ins))
        ins = ins[:k]
        commutative = alg is not None and alg.commutative and k == 2
        seen_direct = False
        orders = [ins, ins[::-1]] if commutative else [ins]
        for order in orders:
            for b, ns in self._seq(pat.args, order, b0, nodes):
                seen_direct = True
                yield b, ns, []
        # Associative regrouping over a flattened chain.
        if commutative and alg.associative and self.assoc_ok(n.op):
            leaves, inner = flatten(n)
            if len(leaves) > 2:
                pargs = _flatten_pattern(pat)
                if len(pargs) <= len(leaves) and (root or len(pargs) == len(leaves)):
                    for b, ns, used in self._assign(pargs, leaves, b0, nodes + inner):
                        rest = [leaves[i] for i in range(len(leaves)) if i not in used]
                        if not rest and len(pargs) == 2 and seen_direct:
                            continue
                        yield b, ns, rest
                elif len(pargs) > 2 and len(pargs) == len(leaves):
                    pass

    def _seq(self, pats, vals, binds, nodes):
        if not pats:
            yield binds, nodes
            return
        for b, ns in self._value(pats[0], vals[0], binds, nodes):
            yield from self._seq(pats[1:], vals[1:], b, ns)

    def _assign(self, pargs, leaves, binds, nodes, used=frozenset()):
        # Op patterns first: they constrain; variables take what is left.
        if not pargs:
            yield binds, nodes, used
            return
        p, rest = pargs[0], pargs[1:]
        for i, leaf in enumerate(leaves):
            if i in used:
                continue
            for b, ns in self._value(p, leaf, binds, nodes):
                yield from self._assign(rest, leaves, b, ns, used | {i})


def needed_ops(pat: PNode, ac: bool) -> frozenset:
    """Op types that must produce the root's operands (or, for an associative
    root, operands anywhere in its chain) for the pattern to match."""
    args = _flatten_pattern(pat) if ac else pat.args
    return frozenset(a.op for a in args if isinstance(a, PNode) and a.op != pat.op)


def _flatten_pattern(pat: PNode) -> list:
    out = []
    for a in pat.args:
        if isinstance(a, PNode) and a.op == pat.op and not a.attrs and not a.bind:
            out += _flatten_pattern(a)
        else:
            out.append(a)
    # constrained (op, literal) patterns first, then bound-later variables
    return sorted(out, key=lambda a: 0 if isinstance(a, PNode) else 1 if isinstance(a, Lit) else 2)


def flatten(n) -> tuple[list, list]:
    """Operands of a chain of the same binary op through single-consumer nodes
    (bounded by MAX_LEAVES), and the inner nodes of the chain."""
    leaves, inner = [], []
    stack = list(n.inputs)[::-1]
    while stack:
        v = stack.pop()
        p = v.producer if v is not None else None
        if (p is not None and p.op == n.op and len(p.inputs) == 2 and len(v.uses) == 1
                and v.graph is not None and v not in v.graph.outputs and v.dtype == n.outputs[0].dtype
                and len(leaves) + len(stack) + 2 <= MAX_LEAVES):
            inner.append(p)
            stack.extend(list(p.inputs)[::-1])
        else:
            leaves.append(v)
    return leaves, inner


def same_value(a, b) -> bool:
    """The same Value, or two small constants with equal contents."""
    if a is b:
        return True
    if a is None or b is None or a.const is None or b.const is None:
        return False
    x, y = a.const, b.const
    return x.size <= 64 and x.dtype == y.dtype and x.shape == y.shape and bool(np.array_equal(x, y))


def _eq(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        try:
            return list(a) == list(b)
        except TypeError:
            return False
    try:
        return bool(a == b)
    except Exception:
        return False
