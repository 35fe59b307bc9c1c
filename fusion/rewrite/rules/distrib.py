"""Distributive family (DNNFusion): factor out a common operand. Generated
from the op table's `distributes_over` (Mul over Add and Sub), plus division
by a common denominator, Neg, Max/Min and reductions."""
from __future__ import annotations

from fusion.ops import all_ops
from fusion.rewrite.rule import Rule
from fusion.rewrite.rules._util import positive, same_shape

F = "distributive"
REAL = "factoring changes float rounding"


def rules():
    out = []
    for od in all_ops():
        for s in od.algebra.distributes_over:
            M, S = od.name, s
            lm, ls = M.lower(), S.lower()
            out += [
                Rule(f"{lm}-{ls}-factor", F, (S, (M, "A", "B"), (M, "A", "C")), (M, "A", (S, "B", "C")),
                     exact=False, note=REAL, doc=f"A*B {S} A*C -> A*(B {S} C): one {M} less"),
                Rule(f"{lm}-{ls}-factor-one", F, (S, "A", (M, "A", "B")), (M, "A", (S, 1.0, "B")),
                     consts=("B",), exact=False, note=REAL, doc=f"A {S} A*B -> A*(1 {S} B), B constant"),
                Rule(f"{lm}-{ls}-factor-one-right", F, (S, (M, "A", "B"), "A"), (M, "A", (S, "B", 1.0)),
                     consts=("B",), exact=False, note=REAL, doc=f"A*B {S} A -> A*(B {S} 1), B constant"),
            ]
    for S in ("Add", "Sub"):
        ls = S.lower()
        out += [
            Rule(f"div-{ls}-common", F, (S, ("Div", "A", "C"), ("Div", "B", "C")), ("Div", (S, "A", "B"), "C"),
                 exact=False, note=REAL, example={"range": {"C": (0.5, 2.0)}}, doc=f"A/C {S} B/C -> (A {S} B)/C"),
            Rule(f"matmul-{ls}-left", F, (S, ("MatMul", "A", "B"), ("MatMul", "A", "C")),
                 ("MatMul", "A", (S, "B", "C")), when=same_shape("B", "C"), exact=False, note=REAL,
                 example={"shapes": {"A": (2, 3), "B": (3, 4), "C": (3, 4)}},
                 doc=f"MatMul(A,B) {S} MatMul(A,C) -> MatMul(A, B {S} C): one MatMul shared"),
            Rule(f"matmul-{ls}-right", F, (S, ("MatMul", "A", "C"), ("MatMul", "B", "C")),
                 ("MatMul", (S, "A", "B"), "C"), when=same_shape("A", "B"), exact=False, note=REAL,
                 example={"shapes": {"A": (2, 3), "B": (2, 3), "C": (3, 4)}},
                 doc=f"MatMul(A,C) {S} MatMul(B,C) -> MatMul(A {S} B, C)"),
            Rule(f"reducesum-{ls}", F, (S, ("ReduceSum", "A", "AX", {"keepdims": "$k"}),
                                        ("ReduceSum", "B", "AX", {"keepdims": "$k"})),
                 ("ReduceSum", (S, "A", "B"), "AX", {"keepdims": "$k"}), when=same_shape("A", "B"),
                 exact=False, note=REAL, example=_red(), doc=f"ReduceSum(A) {S} ReduceSum(B) -> ReduceSum(A {S} B)"),
            Rule(f"reducemean-{ls}", F, (S, ("ReduceMean", "A", "AX", {"keepdims": "$k"}),
                                         ("ReduceMean", "B", "AX", {"keepdims": "$k"})),
                 ("ReduceMean", (S, "A", "B"), "AX", {"keepdims": "$k"}), when=same_shape("A", "B"),
                 exact=False, note=REAL, example=_red(), doc=f"ReduceMean(A) {S} ReduceMean(B) -> ReduceMean(A {S} B)"),
        ]
    out += [
        Rule("neg-add", F, ("Add", ("Neg", "A"), ("Neg", "B")), ("Neg", ("Add", "A", "B")), doc="-A + -B -> -(A+B)"),
        Rule("neg-sub", F, ("Sub", ("Neg", "A"), ("Neg", "B")), ("Sub", "B", "A"), doc="-A - -B -> B - A"),
        Rule("max-add-common", F, ("Max", ("Add", "A", "C"), ("Add", "B", "C")), ("Add", ("Max", "A", "B"), "C"),
             doc="max(A+C, B+C) -> max(A,B)+C (rounding is monotone: exact)"),
        Rule("min-add-common", F, ("Min", ("Add", "A", "C"), ("Add", "B", "C")), ("Add", ("Min", "A", "B"), "C"),
             doc="min(A+C, B+C) -> min(A,B)+C"),
        Rule("max-mul-pos", F, ("Max", ("Mul", "A", "C"), ("Mul", "B", "C")), ("Mul", ("Max", "A", "B"), "C"),
             consts=("C",), when=positive("C"), proof="numeric", note="needs C > 0 (checked on the constant)",
             example={"range": {"C": (0.5, 2.0)}},
             doc="max(A*C, B*C) -> max(A,B)*C for constant C > 0"),
        Rule("min-mul-pos", F, ("Min", ("Mul", "A", "C"), ("Mul", "B", "C")), ("Mul", ("Min", "A", "B"), "C"),
             consts=("C",), when=positive("C"), proof="numeric", note="needs C > 0 (checked on the constant)",
             example={"range": {"C": (0.5, 2.0)}},
             doc="min(A*C, B*C) -> min(A,B)*C for constant C > 0"),
        Rule("reducemax-max", F, ("Max", ("ReduceMax", "A", "AX", {"keepdims": "$k"}),
                                  ("ReduceMax", "B", "AX", {"keepdims": "$k"})),
             ("ReduceMax", ("Max", "A", "B"), "AX", {"keepdims": "$k"}), when=same_shape("A", "B"), example=_red(),
             doc="max(ReduceMax(A), ReduceMax(B)) -> ReduceMax(max(A,B))"),
        Rule("reducemin-min", F, ("Min", ("ReduceMin", "A", "AX", {"keepdims": "$k"}),
                                  ("ReduceMin", "B", "AX", {"keepdims": "$k"})),
             ("ReduceMin", ("Min", "A", "B"), "AX", {"keepdims": "$k"}), when=same_shape("A", "B"), example=_red(),
             doc="min(ReduceMin(A), ReduceMin(B)) -> ReduceMin(min(A,B))"),
    ]
    return out


def _red():
    import numpy as np
    return {"shapes": {"A": (2, 3), "B": (2, 3)}, "values": {"AX": np.array([1])}, "attrs": {"$k": 1}}
