"""Every rule's proof, and its numeric check.

* `prove(rule)`: both sides are evaluated over sympy symbols (scalars for
  elementwise rules, small symbolic tensors for reductions and linear ops,
  built by the same Builder code the engine uses) and `simplify(lhs - rhs)`
  must be 0 for every element. Variables listed in the rule's example
  `assume` get sympy assumptions (positive=True for domain-restricted rules).
* `check_numeric(rule)`: builds the rule's left side as a real graph
  (random float32 inputs and constants), runs the engine with that one rule,
  and requires (1) that it fired, (2) `graph.verify()`, and (3) that the
  reference interpreter's outputs before and after agree within
  `fusion.oracle` float32 tolerances (atol 1e-4, rtol 1e-3).
"""
from __future__ import annotations

import signal
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import sympy

from fusion.ops import get_op
from fusion.rewrite.build import SymBuilder
from fusion.rewrite.pattern import Lit, Match, PNode, Var

PROOF_SECONDS = 20


@dataclass
class ProofResult:
    rule: str
    status: str          # "proved", "numeric-only", "failed", "unavailable"
    detail: str = ""


def elementwise_only(rule) -> bool:
    ops = rule.pattern.ops()
    if rule.rhs_pattern is not None and isinstance(rule.rhs_pattern, PNode):
        ops |= rule.rhs_pattern.ops()
    elif rule.rhs_pattern is None:
        return False
    return all(get_op(o) is not None and get_op(o).scalar is not None for o in ops)


def instantiate(rule, b, leaf):
    """Build the rule's left side with builder `b`; leaves come from leaf(name)."""
    ex = rule.example
    binds: dict = {k: v for k, v in ex.get("attrs", {}).items()}
    lit_shape = tuple(ex.get("lit_shape", ()))

    def go(p):
        if p is None:
            return None
        if isinstance(p, Var):
            if p.name not in binds:
                binds[p.name] = leaf(p.name)
            return binds[p.name]
        if isinstance(p, Lit):
            return p
        args = [go(a) for a in p.args]
        vals = [a for a in args if a is not None and not isinstance(a, Lit)]
        like = next((a for a in vals if a.dtype is not None and a.dtype.kind != "b"), vals[0] if vals else None)
        args = [b.lit(a.value, like, lit_shape) if isinstance(a, Lit) and like is not None else
                b.const(np.full(lit_shape, a.value, np.float32)) if isinstance(a, Lit) else a for a in args]
        attrs = {k: (binds[v] if isinstance(v, str) and v.startswith("$") else v) for k, v in p.attrs.items()}
        out = b.op(p.op, *args, **attrs)
        if p.bind:
            binds[p.bind] = out
        return out
    root = go(rule.pattern)
    return root, binds


def _shape(rule, name, scalar_proof):
    ex = rule.example
    if scalar_proof or name in rule.scalars:
        return ()
    return tuple(ex.get("shapes", {}).get(name, (2, 3)))


def prove(rule) -> ProofResult:
    if not rule.available():
        return ProofResult(rule.name, "unavailable", "an op it needs is not in the op table")
    if rule.proof != "sympy":
        return ProofResult(rule.name, "numeric-only", rule.note)
    scalar = elementwise_only(rule)
    b = SymBuilder()
    assume = rule.example.get("assume", {})
    values = rule.example.get("values", {})

    def leaf(name):
        if name in values:
            return b.const(np.asarray(values[name]))
        return b.symbols(name, _shape(rule, name, scalar), **assume.get(name, {}))
    try:
        root, binds = instantiate(rule, b, leaf)
        m = Match(root.producer, binds, [root.producer])
        rhs = rule.build(b, m)
        if rhs is None:
            return ProofResult(rule.name, "failed", "the replacement refused the symbolic match")
        lhs_v, rhs_v = b.value_of(root), b.value_of(rhs)
    except (AttributeError, NotImplementedError) as e:
        # The math namespace has no sympy form for a function (bitwise ops, round).
        return ProofResult(rule.name, "numeric-only", f"sympy cannot express it ({e})")
    except Exception as e:  # noqa: BLE001 - reported as a failed proof
        return ProofResult(rule.name, "failed", f"{type(e).__name__}: {e}")
    if lhs_v.shape != rhs_v.shape:
        return ProofResult(rule.name, "failed", f"shapes differ: {lhs_v.shape} vs {rhs_v.shape}")
    for idx in np.ndindex(lhs_v.shape):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ok, why = _equal(lhs_v[idx], rhs_v[idx])
        except Exception as e:  # noqa: BLE001 - sympy gave up: not a proof
            ok, why = False, f"sympy failed: {type(e).__name__}: {e}"
        if not ok:
            return ProofResult(rule.name, "failed", f"at {idx}: {why}")
    return ProofResult(rule.name, "proved", f"{int(np.prod(lhs_v.shape)) if lhs_v.shape else 1} element(s)")


def _is_logic(x) -> bool:
    from sympy.logic.boolalg import BooleanAtom, BooleanFunction
    from sympy.core.relational import Relational
    return isinstance(x, (BooleanFunction, BooleanAtom, Relational))


def _max_to_abs(e):
    # max(a, b) = (a + b + |a - b|) / 2: turns order into algebra sympy can cancel.
    def mx(*a):
        acc = a[0]
        for x in a[1:]:
            acc = (acc + x + sympy.Abs(acc - x)) / 2
        return acc

    def mn(*a):
        acc = a[0]
        for x in a[1:]:
            acc = (acc + x - sympy.Abs(acc - x)) / 2
        return acc
    return e.replace(sympy.Max, mx).replace(sympy.Min, mn)


def _zero(d) -> bool:
    if d == 0 or sympy.expand(d) == 0:
        return True
    s = sympy.simplify(d)
    if s == 0:
        return True
    s = sympy.simplify(sympy.expand(sympy.powsimp(sympy.expand_log(s, force=True), force=True)))
    return s == 0


def _equal(l, r):
    l, r = sympy.sympify(l), sympy.sympify(r)
    if l == r:
        return True, ""
    if _is_logic(l) or _is_logic(r):
        ok = sympy.simplify_logic(sympy.Xor(l, r)) == sympy.false
        return ok, "" if ok else f"{l} != {r}"
    d = l - r
    with _time_limit(PROOF_SECONDS):
        try:
            if _zero(d):
                return True, ""
            if d.has(sympy.Max, sympy.Min, sympy.Abs, sympy.Piecewise):
                if d.has(sympy.Piecewise) and _zero(sympy.piecewise_fold(d.rewrite(sympy.Piecewise))):
                    return True, ""
                d2 = _max_to_abs(sympy.piecewise_fold(d))
                if _zero(d2):
                    return True, ""
                # Split on the sign of each |e|: equal in every case -> equal.
                absv = sorted(d2.atoms(sympy.Abs), key=sympy.default_sort_key)
                if 0 < len(absv) <= 4:
                    import itertools
                    if all(_zero(d2.xreplace({a: sg * a.args[0] for a, sg in zip(absv, signs)}))
                           for signs in itertools.product((1, -1), repeat=len(absv))):
                        return True, ""
        except _Timeout:
            return False, "sympy timed out"
    return False, f"lhs - rhs does not simplify to 0: {sympy.simplify(d)}"


class _Timeout(Exception):
    pass


class _time_limit:
    def __init__(self, seconds):
        self.seconds = seconds
        self.main = threading.current_thread() is threading.main_thread()

    def _raise(self, *a):
        raise _Timeout()

    def __enter__(self):
        if self.main:
            self.old = signal.signal(signal.SIGALRM, self._raise)
            signal.alarm(self.seconds)

    def __exit__(self, *a):
        if self.main:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self.old)
        return False


# ---------------------------------------------------------------------------
# Numeric check

class GraphAdapter:
    """Builder interface over a real Graph (for numeric checks and golden tests)."""

    def __init__(self, graph):
        self.g = graph

    def op(self, op_type, *inputs, **attrs):
        ins = list(inputs)
        while ins and ins[-1] is None:
            ins.pop()
        return self.g.add_node(op_type, ins, attrs).outputs[0]

    def const(self, array, dtype=None):
        return self.g.const(np.asarray(array, dtype=dtype))

    def lit(self, x, like, shape=()):
        return self.g.const(np.full(shape, x, dtype=like.dtype))


def _dtype(rule):
    k = rule.dtypes[0]
    return np.dtype({"f": "float32", "b": "bool", "i": "int32", "u": "uint32"}[k])


@dataclass
class NumericResult:
    rule: str
    ok: bool
    fired: int
    detail: str = ""


def build_example(rule, seed: int = 0):
    """The rule's left side as a Graph, with feeds for its inputs."""
    from fusion.ir.graph import Graph
    g = Graph(f"rule_{rule.name}")
    rng = np.random.default_rng(seed)
    ex = rule.example
    dt = _dtype(rule)
    consts = set(rule.consts) | set(ex.get("consts", ()))
    values = ex.get("values", {})
    feeds = {}

    def data(name, shape):
        lo, hi = ex.get("range", {}).get(name, (-2.0, 2.0))
        if dt.kind == "b":
            return rng.random(shape) < 0.5
        if dt.kind in "iu":
            return rng.integers(0, 7, shape).astype(dt)
        return rng.uniform(lo, hi, shape).astype(dt)

    def leaf(name):
        if name in values:
            v = np.asarray(values[name])
            return g.const(v.astype(dt) if v.dtype.kind == "f" else v, name)
        shape = _shape(rule, name, False)
        if name in consts:
            return g.const(data(name, shape), name)
        feeds[name] = data(name, shape)
        return g.add_input(name, dt, shape)
    root, _ = instantiate(rule, GraphAdapter(g), leaf)
    g.outputs.append(root)
    return g, feeds


def check_numeric(rule, seed: int = 0) -> NumericResult:
    from fusion.ir.interpreter import run
    from fusion.oracle import compare
    from fusion.rewrite.engine import Engine
    if not rule.available():
        return NumericResult(rule.name, True, 0, "unavailable")
    g, feeds = build_example(rule, seed)
    g.verify()
    before = run(g, feeds)
    eng = Engine([rule])
    eng.run(g)
    g.remove_dead()
    g.verify()
    fired = eng.fired[rule.name]
    after = run(g, feeds)
    rep = compare(after, before)
    if not fired:
        return NumericResult(rule.name, False, 0, "did not fire on its own example")
    return NumericResult(rule.name, rep.ok, fired, str(rep))
