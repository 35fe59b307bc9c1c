"""Division and subtraction by constants become multiplication and addition:
a normal form (multiplication is cheaper on every target and constants then
meet in Mul/Add chains). Exact when the constant is a power of two."""
from __future__ import annotations

import numpy as np

from fusion.rewrite.rule import Rule

F = "division"


def _pow2(m):
    c = m["C"].value.astype(np.float64)
    if not np.all(np.isfinite(c)) or np.any(c == 0):
        return False
    mant, _ = np.frexp(np.abs(c))
    return bool(np.all(mant == 0.5))


def _nonzero(m):
    c = m["C"].value
    return bool(np.all(c != 0)) and bool(np.all(np.isfinite(c)))


def rules():
    ex = {"range": {"C": (0.5, 2.0)}}
    return [
        Rule("div-const-pow2", F, ("Div", "A", "C"), ("Mul", "A", ("Reciprocal", "C")), consts=("C",), when=_pow2,
             canonical=True, example={"values": {"C": np.float32(4.0)}},
             doc="A / 2^k -> A * 2^-k (exact)"),
        Rule("div-const", F, ("Div", "A", "C"), ("Mul", "A", ("Reciprocal", "C")), consts=("C",), when=_nonzero,
             canonical=True, exact=False, note="1/c is rounded once: results may differ in the last bit",
             example=ex, doc="A / c -> A * (1/c)"),
        Rule("sub-const", F, ("Sub", "A", "C"), ("Add", "A", ("Neg", "C")), consts=("C",), canonical=True,
             doc="A - c -> A + (-c) (exact)"),
        Rule("div-neg-one", F, ("Div", "A", -1.0), ("Neg", "A")),
        Rule("div-self-mul", F, ("Div", "A", ("Mul", "A", "B")), ("Reciprocal", "B"), exact=False,
             note="a = 0 or Inf gives NaN on the left", example={"range": {"A": (0.5, 2.0), "B": (0.5, 2.0)}}),
        Rule("div-div-num", F, ("Div", ("Div", "A", "B"), "A"), ("Reciprocal", "B"), exact=False,
             note="a = 0 or Inf gives NaN on the left", example={"range": {"A": (0.5, 2.0), "B": (0.5, 2.0)}}),
        Rule("mul-div-num", F, ("Mul", "A", ("Div", "B", "A")), "B", exact=False,
             note="a = 0 or Inf gives NaN on the left", example={"range": {"A": (0.5, 2.0)}}),
        Rule("div-div-den", F, ("Div", "A", ("Div", "A", "B")), "B", exact=False,
             note="a = 0 or Inf gives NaN on the left", example={"range": {"A": (0.5, 2.0), "B": (0.5, 2.0)}}),
    ]
