"""Commutative family (DNNFusion): ops that commute or absorb each other -
sign moves, unary ops that make another redundant, monotone functions
through max/min reductions, scalings through sums."""
from __future__ import annotations

import numpy as np

from fusion.rewrite.rule import Rule
from fusion.rewrite.rules._util import nonneg_const, positive

F = "commutative"
POS = {"range": {"A": (0.5, 2.0)}, "assume": {"A": {"positive": True}}}

# Non-decreasing on their whole domain: f(max(x)) == max(f(x)), f(min(x)) == min(f(x)).
MONOTONE = ("Exp", "Log", "Sqrt", "Relu", "Sigmoid", "Tanh", "Erf", "Floor", "Ceil", "Softplus", "Atan", "Asinh")


def _red(extra=None):
    ex = {"shapes": {"A": (2, 3)}, "values": {"AX": np.array([1])}, "attrs": {"$k": 1}}
    if extra:
        ex.update(extra)
    return ex


def rules():
    out = [
        Rule("neg-mul-neg", F, ("Mul", ("Neg", "A"), ("Neg", "B")), ("Mul", "A", "B")),
        Rule("neg-div-neg", F, ("Div", ("Neg", "A"), ("Neg", "B")), ("Div", "A", "B"), example={"range": {"B": (0.5, 2)}}),
        Rule("neg-sub-swap", F, ("Neg", ("Sub", "A", "B")), ("Sub", "B", "A"), note="sign of zero"),
        Rule("add-neg", F, ("Add", "A", ("Neg", "B")), ("Sub", "A", "B")),
        Rule("sub-neg", F, ("Sub", "A", ("Neg", "B")), ("Add", "A", "B")),
        Rule("sub-from-zero", F, ("Sub", 0.0, "A"), ("Neg", "A"), note="sign of zero"),
        Rule("mul-minus-one", F, ("Mul", "A", -1.0), ("Neg", "A")),
        Rule("neg-mul-const", F, ("Neg", ("Mul", "A", "C")), ("Mul", "A", ("Neg", "C")), consts=("C",)),
        Rule("neg-div-const", F, ("Neg", ("Div", "A", "C")), ("Div", "A", ("Neg", "C")), consts=("C",),
             example={"range": {"C": (0.5, 2)}}),
        Rule("neg-const-div", F, ("Neg", ("Div", "C", "A")), ("Div", ("Neg", "C"), "A"), consts=("C",),
             example={"range": {"A": (0.5, 2)}}),
        Rule("mul-neg-const", F, ("Mul", ("Neg", "A"), "C"), ("Mul", "A", ("Neg", "C")), consts=("C",)),
        Rule("div-neg-const", F, ("Div", ("Neg", "A"), "C"), ("Div", "A", ("Neg", "C")), consts=("C",),
             example={"range": {"C": (0.5, 2)}}),
        Rule("sub-neg-left", F, ("Sub", ("Neg", "A"), "C"), ("Sub", ("Neg", "C"), "A"), consts=("C",)),
        Rule("abs-neg", F, ("Abs", ("Neg", "A")), ("Abs", "A")),
        Rule("abs-relu", F, ("Abs", ("Relu", "A")), ("Relu", "A")),
        Rule("relu-abs", F, ("Relu", ("Abs", "A")), ("Abs", "A")),
        Rule("abs-exp", F, ("Abs", ("Exp", "A")), ("Exp", "A")),
        Rule("relu-exp", F, ("Relu", ("Exp", "A")), ("Exp", "A")),
        Rule("abs-sqrt", F, ("Abs", ("Sqrt", "A")), ("Sqrt", "A"), example=POS, note="NaN stays NaN"),
        Rule("relu-sqrt", F, ("Relu", ("Sqrt", "A")), ("Sqrt", "A"), example=POS, exact=False,
             note="Relu(NaN) may be 0 in some backends"),
        Rule("relu-sigmoid", F, ("Relu", ("Sigmoid", "A")), ("Sigmoid", "A")),
        Rule("abs-sigmoid", F, ("Abs", ("Sigmoid", "A")), ("Sigmoid", "A")),
        Rule("abs-mul-self", F, ("Abs", ("Mul", "A", "A")), ("Mul", "A", "A")),
        Rule("relu-mul-self", F, ("Relu", ("Mul", "A", "A")), ("Mul", "A", "A")),
        Rule("abs-abs-mul", F, ("Mul", ("Abs", "A"), ("Abs", "A")), ("Mul", "A", "A")),
        Rule("floor-ceil", F, ("Floor", ("Ceil", "A")), ("Ceil", "A")),
        Rule("ceil-floor", F, ("Ceil", ("Floor", "A")), ("Floor", "A")),
        Rule("round-floor", F, ("Round", ("Floor", "A")), ("Floor", "A"), proof="numeric", note="sympy has no round-half-even"),
        Rule("round-ceil", F, ("Round", ("Ceil", "A")), ("Ceil", "A"), proof="numeric", note="sympy has no round-half-even"),
        Rule("floor-round", F, ("Floor", ("Round", "A")), ("Round", "A"), proof="numeric", note="sympy has no round-half-even"),
        Rule("ceil-round", F, ("Ceil", ("Round", "A")), ("Round", "A"), proof="numeric", note="sympy has no round-half-even"),
        Rule("max-neg-self", F, ("Max", "A", ("Neg", "A")), ("Abs", "A")),
        Rule("max-zero", F, ("Max", "A", 0.0), ("Relu", "A"), doc="max(A, 0) -> Relu(A)"),
        Rule("relu-minus-relu-neg", F, ("Sub", ("Relu", "A"), ("Relu", ("Neg", "A"))), "A",
             doc="Relu(A) - Relu(-A) -> A"),
        Rule("relu-plus-relu-neg", F, ("Add", ("Relu", "A"), ("Relu", ("Neg", "A"))), ("Abs", "A"),
             doc="Relu(A) + Relu(-A) -> |A|"),
        Rule("min-max-clip", F, ("Min", ("Max", "A", "L"), "H"), ("Clip", "A", "L", "H"), scalars=("L", "H"),
             when=_lo_le_hi, proof="numeric", note="needs L <= H (checked on the constants)",
             example={"values": {"L": np.float32(-0.5), "H": np.float32(0.5)}}),
        Rule("max-min-clip", F, ("Max", ("Min", "A", "H"), "L"), ("Clip", "A", "L", "H"), scalars=("L", "H"),
             when=_lo_le_hi, proof="numeric", note="needs L <= H (checked on the constants)",
             example={"values": {"L": np.float32(-0.5), "H": np.float32(0.5)}}),
        Rule("clip-clip", F, ("Clip", ("Clip", "A", "L1", "H1"), "L2", "H2"),
             ("Clip", "A", ("Max", "L1", "L2"), ("Min", "H1", "H2")), scalars=("L1", "H1", "L2", "H2"),
             when=_ranges_overlap, proof="numeric", note="needs the two ranges to overlap (checked)",
             example={"values": {"L1": np.float32(-1), "H1": np.float32(1), "L2": np.float32(-0.5),
                                 "H2": np.float32(2)}}),
        Rule("relu-clip", F, ("Relu", ("Clip", "A", "L", "H")), ("Clip", "A", "L", "H"), scalars=("L",),
             when=nonneg_const("L"), proof="numeric", note="needs L >= 0 (checked)",
             example={"values": {"L": np.float32(0.0), "H": np.float32(6.0)}}),
        Rule("clip-relu", F, ("Clip", ("Relu", "A"), "L", "H"), ("Clip", "A", "L", "H"), scalars=("L",),
             when=nonneg_const("L"), proof="numeric", note="needs L >= 0 (checked)",
             example={"values": {"L": np.float32(0.0), "H": np.float32(6.0)}}),
    ]
    # A scalar scale moves towards the producer through reshaping and
    # transposing (same cost), where it can fold into a MatMul/Conv weight.
    out += [
        Rule("transpose-mul-scalar", F, ("Mul", ("Transpose", "A", {"perm": "$p"}), "C"),
             ("Transpose", ("Mul", "A", "C"), {"perm": "$p"}), scalars=("C",), canonical=True,
             example={"shapes": {"A": (2, 3)}, "attrs": {"$p": [1, 0]}},
             doc="Transpose(A)*c -> Transpose(A*c): the scale moves towards a foldable producer"),
        Rule("reshape-mul-scalar", F, ("Mul", ("Reshape", "A", "S", {"allowzero": "$z"}), "C"),
             ("Reshape", ("Mul", "A", "C"), "S", {"allowzero": "$z"}), scalars=("C",), consts=("S",), canonical=True,
             example={"shapes": {"A": (2, 3)}, "values": {"S": np.array([3, 2])}, "attrs": {"$z": 0}},
             doc="Reshape(A)*c -> Reshape(A*c)"),
    ]
    # Sums and means commute with sign and with constant scaling.
    for R in ("ReduceSum", "ReduceMean"):
        r = R.lower()
        out += [
            Rule(f"{r}-neg", F, (R, ("Neg", "A"), "AX", {"keepdims": "$k"}), ("Neg", (R, "A", "AX", {"keepdims": "$k"})),
                 example=_red(), doc=f"{R}(-A) -> -{R}(A): the Neg runs on the reduced tensor"),
            Rule(f"{r}-mul-scalar", F, (R, ("Mul", "A", "C"), "AX", {"keepdims": "$k"}),
                 ("Mul", (R, "A", "AX", {"keepdims": "$k"}), "C"), scalars=("C",), exact=False,
                 note="scaling before or after the sum rounds differently",
                 example=_red(), doc=f"{R}(A*c) -> {R}(A)*c"),
            Rule(f"{r}-div-scalar", F, (R, ("Div", "A", "C"), "AX", {"keepdims": "$k"}),
                 ("Div", (R, "A", "AX", {"keepdims": "$k"}), "C"), scalars=("C",), exact=False,
                 note="scaling before or after the sum rounds differently",
                 example=_red({"range": {"C": (0.5, 2)}}), doc=f"{R}(A/c) -> {R}(A)/c"),
        ]
    out.append(Rule("reducemean-add-scalar", F, ("ReduceMean", ("Add", "A", "C"), "AX", {"keepdims": "$k"}),
                    ("Add", ("ReduceMean", "A", "AX", {"keepdims": "$k"}), "C"), scalars=("C",), exact=False,
                    note="rounding", example=_red(), doc="ReduceMean(A+c) -> ReduceMean(A)+c"))
    for R, other in (("ReduceMax", "ReduceMin"), ("ReduceMin", "ReduceMax")):
        r = R.lower()
        out += [
            Rule(f"{r}-neg", F, (R, ("Neg", "A"), "AX", {"keepdims": "$k"}), ("Neg", (other, "A", "AX", {"keepdims": "$k"})),
                 example=_red()),
            Rule(f"{r}-add-scalar", F, (R, ("Add", "A", "C"), "AX", {"keepdims": "$k"}),
                 ("Add", (R, "A", "AX", {"keepdims": "$k"}), "C"), scalars=("C",), example=_red(),
                 doc="exact: float rounding is monotone"),
            Rule(f"{r}-mul-pos", F, (R, ("Mul", "A", "C"), "AX", {"keepdims": "$k"}),
                 ("Mul", (R, "A", "AX", {"keepdims": "$k"}), "C"), scalars=("C",), when=positive("C"),
                 example=_red({"range": {"C": (0.5, 2)}}), proof="numeric", note="needs c > 0 (checked)"),
        ]
        for U in MONOTONE:
            dom = {"range": {"A": (0.5, 2.0)}} if U in ("Log", "Sqrt") else {}
            out.append(Rule(f"{r}-{U.lower()}", F, (R, (U, "A"), "AX", {"keepdims": "$k"}),
                            (U, (R, "A", "AX", {"keepdims": "$k"})), example=_red(dom),
                            # sympy settles Max/Min through Relu (it is Max itself), not through exp, tanh...
                            proof="sympy" if U == "Relu" else "numeric",
                            note=f"{U} is non-decreasing, so it commutes with {R}",
                            doc=f"{R}({U}(A)) -> {U}({R}(A)): {U} runs on the reduced tensor"))
    return out


def _lo_le_hi(m):
    return float(m["L"].value.reshape(-1)[0]) <= float(m["H"].value.reshape(-1)[0])


def _ranges_overlap(m):
    f = lambda k: float(m[k].value.reshape(-1)[0])  # noqa: E731
    return max(f("L1"), f("L2")) <= min(f("H1"), f("H2"))
