"""Associative family (DNNFusion): regroup chains so constants meet and
repeated factors cancel. Reassociating float Add/Mul changes rounding: those
rules are exact only in real arithmetic (strict_fp turns them off)."""
from __future__ import annotations

from fusion.ops import all_ops
from fusion.rewrite.rule import Rule

F = "associative"
REAL = "reassociation changes float rounding"


def rules():
    out = []
    # Constants meet: (A op C1) op C2 -> A op (C1 op C2), for every op the table
    # marks associative and commutative (matching regroups longer chains too).
    for od in all_ops():
        a = od.algebra
        if od.category == "elementwise" and a.associative and a.commutative and od.name not in ("Sum",) \
                and (len(od.inputs) == 2 or od.variadic_input):
            kinds = "b" if od.name in ("And", "Or", "Xor") else "iu" if od.name.startswith("Bitwise") else "f"
            out.append(Rule(f"{od.name.lower()}-const-assoc", F, (od.name, (od.name, "A", "C1"), "C2"),
                            (od.name, "A", (od.name, "C1", "C2")), consts=("C1", "C2"), dtypes=kinds,
                            exact=a.float_exact or kinds != "f",
                            note="bitwise: sympy has no bit operations (checked numerically)" if kinds == "iu"
                            else "" if a.float_exact else REAL, proof="numeric" if kinds == "iu" else "sympy",
                            doc="two constants in a chain fold into one"))
    c2 = dict(consts=("C1", "C2"), exact=False, note=REAL)
    out += [
        Rule("add-sub-const", F, ("Add", ("Sub", "A", "C1"), "C2"), ("Add", "A", ("Sub", "C2", "C1")), **c2),
        Rule("sub-add-const", F, ("Sub", ("Add", "A", "C1"), "C2"), ("Add", "A", ("Sub", "C1", "C2")), **c2),
        Rule("sub-sub-const", F, ("Sub", ("Sub", "A", "C1"), "C2"), ("Sub", "A", ("Add", "C1", "C2")), **c2),
        Rule("const-sub-sub", F, ("Sub", "C1", ("Sub", "C2", "A")), ("Add", "A", ("Sub", "C1", "C2")), **c2),
        Rule("const-sub-const", F, ("Sub", ("Sub", "C1", "A"), "C2"), ("Sub", ("Sub", "C1", "C2"), "A"), **c2),
        Rule("add-const-sub", F, ("Add", ("Sub", "C1", "A"), "C2"), ("Sub", ("Add", "C1", "C2"), "A"), **c2),
        Rule("const-sub-add", F, ("Sub", "C1", ("Add", "A", "C2")), ("Sub", ("Sub", "C1", "C2"), "A"), **c2),
        Rule("div-mul-const", F, ("Div", ("Mul", "A", "C1"), "C2"), ("Mul", "A", ("Div", "C1", "C2")), **c2),
        Rule("mul-div-const", F, ("Mul", ("Div", "A", "C1"), "C2"), ("Mul", "A", ("Div", "C2", "C1")), **c2),
        Rule("div-div-const", F, ("Div", ("Div", "A", "C1"), "C2"), ("Div", "A", ("Mul", "C1", "C2")), **c2),
        Rule("const-div-div", F, ("Div", "C1", ("Div", "C2", "A")), ("Mul", "A", ("Div", "C1", "C2")), **c2),
        Rule("const-div-const", F, ("Div", ("Div", "C1", "A"), "C2"), ("Div", ("Div", "C1", "C2"), "A"), **c2),
        Rule("mul-const-div", F, ("Mul", ("Div", "C1", "A"), "C2"), ("Div", ("Mul", "C1", "C2"), "A"), **c2),
        Rule("const-div-mul", F, ("Div", "C1", ("Mul", "A", "C2")), ("Div", ("Div", "C1", "C2"), "A"), **c2),
        # DNNFusion's example, and the general form it rests on (found anywhere in a Mul chain).
        Rule("mul-sqrt-pair", F, ("Mul", ("Mul", "A", ("Sqrt", "B")), ("Mul", ("Sqrt", "B"), "C")),
             ("Mul", ("Mul", "A", "B"), "C"), exact=False, note="sqrt(b)^2 rounds; NaN for b < 0 disappears",
             example={"range": {"B": (0.5, 2.0)}}, doc="(A*sqrt(B))*(sqrt(B)*C) -> A*B*C"),
        Rule("sqrt-square", F, ("Mul", ("Sqrt", "A"), ("Sqrt", "A")), "A", exact=False,
             note="sqrt(a)^2 rounds; NaN for a < 0 disappears", example={"range": {"A": (0.5, 2.0)}}),
        Rule("recip-recip-mul", F, ("Mul", ("Reciprocal", "A"), ("Reciprocal", ("Mul", "A", "B"))),
             ("Reciprocal", ("Mul", ("Mul", "A", "A"), "B")), exact=False, note=REAL,
             example={"range": {"A": (0.5, 2.0), "B": (0.5, 2.0)}},
             doc="Recip(A)*Recip(A*B) -> Recip(A*A*B) (DNNFusion: Square(Recip(A))*Recip(B))"),
        Rule("recip-mul", F, ("Mul", ("Reciprocal", "A"), ("Reciprocal", "B")), ("Reciprocal", ("Mul", "A", "B")),
             exact=False, note=REAL + "; overflow of a*b", example={"range": {"A": (0.5, 2.0), "B": (0.5, 2.0)}}),
        Rule("mul-div-cancel", F, ("Mul", ("Div", "A", "B"), "B"), "A", exact=False,
             note="b = 0 or Inf gives NaN on the left", example={"range": {"B": (0.5, 2.0)}}),
        Rule("div-mul-cancel", F, ("Div", ("Mul", "A", "B"), "B"), "A", exact=False,
             note="b = 0 or Inf gives NaN on the left", example={"range": {"B": (0.5, 2.0)}}),
        Rule("div-mul-common", F, ("Div", ("Mul", "A", "B"), ("Mul", "A", "C")), ("Div", "B", "C"), exact=False,
             note="a = 0 or Inf gives NaN on the left", example={"range": {"A": (0.5, 2.0), "C": (0.5, 2.0)}}),
        Rule("add-sub-cancel", F, ("Sub", ("Add", "A", "B"), "B"), "A", exact=False, note=REAL + "; Inf - Inf"),
        Rule("sub-add-cancel", F, ("Add", ("Sub", "A", "B"), "B"), "A", exact=False, note=REAL + "; Inf - Inf"),
    ]
    return out
