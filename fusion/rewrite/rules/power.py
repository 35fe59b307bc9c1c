"""Power, exp, log, sqrt and reciprocal identities. Most need a domain (a > 0)
or change overflow behaviour: they say so and strict_fp leaves them out."""
from __future__ import annotations

from fusion.rewrite.rule import Rule

F = "power"
POS = {"range": {"A": (0.5, 2.0), "B": (0.5, 2.0)}, "assume": {"A": {"positive": True}, "B": {"positive": True}}}
DOM = "needs a > 0 (NaN/Inf for other inputs on one side only)"
OVF = "overflow: exp/pow of large inputs is Inf on one side only"


def rules():
    return [
        Rule("pow-one", F, ("Pow", "A", 1.0), "A"),
        Rule("pow-two", F, ("Pow", "A", 2.0), ("Mul", "A", "A"), doc="a^2 -> a*a: one multiply instead of pow"),
        Rule("pow-three", F, ("Pow", "A", 3.0), ("Mul", ("Mul", "A", "A"), "A"), exact=False, note="rounding"),
        Rule("pow-half", F, ("Pow", "A", 0.5), ("Sqrt", "A"), example=POS, note="pow(-0, .5) = 0 = sqrt(-0)"),
        Rule("pow-minus-one", F, ("Pow", "A", -1.0), ("Reciprocal", "A"), example=POS),
        Rule("pow-minus-half", F, ("Pow", "A", -0.5), ("Reciprocal", ("Sqrt", "A")), exact=False, note="rounding",
             example=POS),
        Rule("pow-minus-two", F, ("Pow", "A", -2.0), ("Reciprocal", ("Mul", "A", "A")), exact=False, note="rounding",
             example=POS),
        Rule("pow-pow", F, ("Pow", ("Pow", "A", "C1"), "C2"), ("Pow", "A", ("Mul", "C1", "C2")), consts=("C1", "C2"),
             exact=False, note=DOM, example=POS),
        Rule("mul-pow-pow", F, ("Mul", ("Pow", "A", "C1"), ("Pow", "A", "C2")), ("Pow", "A", ("Add", "C1", "C2")),
             consts=("C1", "C2"), exact=False, note=DOM, example=POS),
        Rule("div-pow-pow", F, ("Div", ("Pow", "A", "C1"), ("Pow", "A", "C2")), ("Pow", "A", ("Sub", "C1", "C2")),
             consts=("C1", "C2"), exact=False, note=DOM, example=POS),
        Rule("mul-pow-self", F, ("Mul", ("Pow", "A", "C"), "A"), ("Pow", "A", ("Add", "C", 1.0)), consts=("C",),
             exact=False, note=DOM, example=POS),
        Rule("div-pow-self", F, ("Div", ("Pow", "A", "C"), "A"), ("Pow", "A", ("Sub", "C", 1.0)), consts=("C",),
             exact=False, note=DOM, example=POS),
        Rule("recip-pow", F, ("Reciprocal", ("Pow", "A", "C")), ("Pow", "A", ("Neg", "C")), consts=("C",),
             exact=False, note=DOM, example=POS),
        Rule("pow-sqrt", F, ("Pow", ("Sqrt", "A"), "C"), ("Pow", "A", ("Mul", "C", 0.5)), consts=("C",),
             exact=False, note=DOM, example=POS),
        Rule("sqrt-pow", F, ("Sqrt", ("Pow", "A", "C")), ("Pow", "A", ("Mul", "C", 0.5)), consts=("C",),
             exact=False, note=DOM, example=POS),
        Rule("sqrt-mul-self", F, ("Sqrt", ("Mul", "A", "A")), ("Abs", "A"), exact=False, note="a*a may overflow"),
        Rule("sqrt-sqrt-mul", F, ("Mul", ("Sqrt", "A"), ("Sqrt", "B")), ("Sqrt", ("Mul", "A", "B")), exact=False,
             note=DOM, example=POS),
        Rule("sqrt-sqrt-div", F, ("Div", ("Sqrt", "A"), ("Sqrt", "B")), ("Sqrt", ("Div", "A", "B")), exact=False,
             note=DOM, example=POS),
        Rule("div-sqrt-self", F, ("Div", "A", ("Sqrt", "A")), ("Sqrt", "A"), exact=False, note=DOM, example=POS),
        Rule("exp-log", F, ("Exp", ("Log", "A")), "A", exact=False, note=DOM, example=POS),
        Rule("log-exp", F, ("Log", ("Exp", "A")), "A", exact=False, note=OVF),
        Rule("exp-mul", F, ("Mul", ("Exp", "A"), ("Exp", "B")), ("Exp", ("Add", "A", "B")), exact=False, note=OVF),
        Rule("exp-div", F, ("Div", ("Exp", "A"), ("Exp", "B")), ("Exp", ("Sub", "A", "B")), exact=False, note=OVF),
        Rule("log-add", F, ("Add", ("Log", "A"), ("Log", "B")), ("Log", ("Mul", "A", "B")), exact=False,
             note=DOM + "; a*b may overflow", example=POS),
        Rule("log-sub", F, ("Sub", ("Log", "A"), ("Log", "B")), ("Log", ("Div", "A", "B")), exact=False,
             note=DOM, example=POS),
        Rule("log-pow", F, ("Log", ("Pow", "A", "C")), ("Mul", ("Log", "A"), "C"), consts=("C",), exact=False,
             note=DOM, example=POS),
        Rule("log-sqrt", F, ("Log", ("Sqrt", "A")), ("Mul", ("Log", "A"), 0.5), exact=False, note=DOM, example=POS),
        Rule("pow-exp", F, ("Pow", ("Exp", "A"), "C"), ("Exp", ("Mul", "A", "C")), consts=("C",), exact=False, note=OVF),
        Rule("exp-mul-log", F, ("Exp", ("Mul", ("Log", "A"), "C")), ("Pow", "A", "C"), consts=("C",), exact=False,
             note=DOM, example=POS),
        Rule("sqrt-exp", F, ("Sqrt", ("Exp", "A")), ("Exp", ("Mul", "A", 0.5)), exact=False, note=OVF),
        Rule("recip-div", F, ("Reciprocal", ("Div", "A", "B")), ("Div", "B", "A"), exact=False,
             note="rounds once instead of twice", example=POS),
        Rule("div-recip", F, ("Div", "A", ("Reciprocal", "B")), ("Mul", "A", "B"), exact=False,
             note="rounds once instead of twice", example=POS),
        Rule("mul-recip", F, ("Mul", "A", ("Reciprocal", "B")), ("Div", "A", "B"), exact=False,
             note="rounds once instead of twice", example=POS),
        Rule("one-div", F, ("Div", 1.0, "A"), ("Reciprocal", "A"), example=POS),
        Rule("recip-sqrt-mul", F, ("Mul", "A", ("Reciprocal", ("Sqrt", "A"))), ("Sqrt", "A"), exact=False,
             note=DOM, example=POS),
    ]
