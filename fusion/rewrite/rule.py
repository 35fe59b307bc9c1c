"""A rewrite rule is data: a pattern, a replacement, its conditions, its proof.

    Rule("mul-factor", "distributive",
         lhs=("Add", ("Mul", "A", "B"), ("Mul", "A", "C")),
         rhs=("Mul", "A", ("Add", "B", "C")))

* `rhs` is a pattern over the same variables (literals become scalar
  constants of the root's dtype), or a function `rhs(b, m) -> Value` using a
  Builder `b` and the Match `m` (for computed constants and attributes).
* `consts` / `scalars`: variables that must be compile-time constants
  (scalars: one element); `when(m) -> bool` for anything else.
* `exact`: False when the rewrite is exact only in real arithmetic
  (reassociation changes rounding) or changes results with NaN/Inf/overflow;
  `note` says which. `strict_fp` disables inexact rules.
* `dtypes`: dtype kinds the root may have ("f" float by default).
* `requires`: ops that must exist in the op table (rules for ops being added
  are enabled when the op exists).
* `example`: how the proof and the numeric check instantiate it: shapes,
  attrs, value ranges, sympy assumptions per variable.
* `proof`: "sympy" (both sides simplified equal over symbols), or "numeric"
  with `note` saying why sympy cannot decide it (then only the random-tensor
  check backs it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fusion.ir.graph import Value
from fusion.rewrite.pattern import PNode, Var, compile_pattern, fmt


@dataclass
class Rule:
    name: str
    family: str
    lhs: Any
    rhs: Any
    consts: tuple = ()
    scalars: tuple = ()
    when: Callable | None = None
    exact: bool = True
    note: str = ""
    dtypes: str = "f"
    requires: tuple = ()
    example: dict = field(default_factory=dict)
    proof: str = "sympy"
    doc: str = ""
    canonical: bool = False      # apply even at zero gain: a normal form other rules build on
    fuses: bool | None = None    # replaces several ops by one: worth it for fewer nodes and bytes
                                 # even when the table's FLOP count of the fused op is a bit higher

    def __post_init__(self):
        self.pattern: PNode = compile_pattern(self.lhs)
        self.rhs_pattern = compile_pattern(self.rhs) if isinstance(self.rhs, (tuple, str)) else None
        self.consts = tuple(self.consts) + tuple(s for s in self.scalars if s not in self.consts)
        if self.fuses is None:
            self.fuses = self.family == "recognize"

    @property
    def root_op(self) -> str:
        return self.pattern.op

    def ops(self) -> set[str]:
        s = self.pattern.ops()
        if self.rhs_pattern is not None and isinstance(self.rhs_pattern, PNode):
            s |= self.rhs_pattern.ops()
        return s

    def available(self) -> bool:
        from fusion.ops import get_op
        return all(get_op(o) is not None for o in set(self.requires) | self.pattern.ops())

    def lhs_text(self) -> str:
        return fmt(self.pattern)

    def rhs_text(self) -> str:
        if self.rhs_pattern is not None:
            return fmt(self.rhs_pattern)
        return self.doc or getattr(self.rhs, "__doc__", None) or "(computed)"

    def variables(self) -> list[str]:
        seen = []
        for v in self.pattern.variables():
            if v not in seen:
                seen.append(v)
        return seen

    def check(self, m) -> bool:
        """The rule's conditions on a match (dtype is checked by the engine)."""
        for name in self.consts:
            v = m.get(name)
            if v is None or v.value is None:
                return False
            if name in self.scalars and v.value.size != 1:
                return False
        if self.when is not None:
            try:
                return bool(self.when(m))
            except Exception:
                return False
        return True

    def build(self, b, m):
        if self.rhs_pattern is not None:
            return build_pattern(self.rhs_pattern, b, m)
        return self.rhs(b, m)


def build_pattern(p, b, m):
    if isinstance(p, Var):
        return m.binds[p.name]
    if p is None:
        return None
    if isinstance(p, PNode):
        args = [build_pattern(a, b, m) for a in p.args]
        attrs = {k: (m.binds[v] if isinstance(v, str) and v.startswith("$") else v) for k, v in p.attrs.items()}
        like = next((a for a in args if isinstance(a, Value) and a.dtype is not None and a.dtype.kind != "b"),
                    m.root.outputs[0])
        args = [b.lit(a.value, like) if _is_lit(a) else a for a in args]
        return b.op(p.op, *args, **attrs)
    return _LitMarker(p.value)


class _LitMarker:
    def __init__(self, value):
        self.value = value


def _is_lit(a) -> bool:
    return isinstance(a, _LitMarker)
