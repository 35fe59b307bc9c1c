"""Reductions: DNNFusion's ReduceProd(Exp(A)) -> Exp(ReduceSum(A)) and its
kin, nested reductions merged, and composite reductions recognized as the
one op the table has for them (ReduceSumSquare, ReduceL1/L2, ReduceLogSum,
ReduceLogSumExp, ReduceMean)."""
from __future__ import annotations

import numpy as np

from fusion.rewrite.rule import Rule
from fusion.rewrite.rules._util import reduced_count

F = "reduce"
K = {"keepdims": "$k"}


def _ex(extra=None, shape=(2, 3)):
    ex = {"shapes": {"A": shape}, "values": {"AX": np.array([1])}, "attrs": {"$k": 1}}
    for k, v in (extra or {}).items():
        ex.setdefault(k, {}).update(v) if isinstance(v, dict) else ex.__setitem__(k, v)
    return ex


POS = {"range": {"A": (0.5, 2.0)}, "assume": {"A": {"positive": True}}}


def _merge_axes(b, m):
    """R(R(A, ax1, keepdims=1), ax2, keepdims=k) -> R(A, ax1 + ax2, keepdims=k)."""
    from fusion.ops.reduce import reduce_axes
    inner = m.root.inputs[0].producer
    axes = sorted(set(reduce_axes(inner)) | set(reduce_axes(m.root)))
    return b.op(m.root.op, m["A"], b.ints(axes), keepdims=m.root.attrs["keepdims"])


def _nested(R):
    return Rule(f"{R.lower()}-{R.lower()}", F, (R, (R, "A", "AX1", {"keepdims": 1}), "AX2", K), _merge_axes,
                consts=("AX1", "AX2"), exact=R in ("ReduceMax", "ReduceMin"),
                note="" if R in ("ReduceMax", "ReduceMin") else "summation order changes rounding",
                example={"shapes": {"A": (2, 3, 4)}, "values": {"AX1": np.array([1]), "AX2": np.array([2])},
                         "attrs": {"$k": 1}},
                doc=f"{R}({R}(A, ax1), ax2) -> {R}(A, ax1 + ax2): one pass over A")


def _mean_rule(op):
    def is_mean(m):
        n = reduced_count(m)
        c = float(np.asarray(m["C"].value).reshape(-1)[0])
        return bool(np.isclose(c, n if op == "Div" else 1.0 / n, rtol=1e-6, atol=0))
    return Rule(f"reducesum-{op.lower()}-to-mean", F, (op, ("ReduceSum", "A", "AX", K), "C"),
                ("ReduceMean", "A", "AX", K), scalars=("C",), when=is_mean, exact=False, note="1/n rounding",
                proof="numeric", example=_ex({"values": {"C": np.float32(3.0) if op == "Div" else np.float32(1 / 3)}}),
                doc=f"ReduceSum(A) {'/ n' if op == 'Div' else '* (1/n)'} -> ReduceMean(A), n = elements reduced")


def rules():
    return [
        Rule("reduceprod-exp", F, ("ReduceProd", ("Exp", "A"), "AX", K), ("Exp", ("ReduceSum", "A", "AX", K)),
             exact=False, note="overflow of the product on one side only", example=_ex(),
             doc="ReduceProd(Exp(A)) -> Exp(ReduceSum(A)) (DNNFusion): one Exp per output"),
        Rule("reducesum-log", F, ("ReduceSum", ("Log", "A"), "AX", K), ("Log", ("ReduceProd", "A", "AX", K)),
             exact=False, note="needs a > 0; the product may overflow", example=_ex(POS),
             doc="ReduceSum(Log(A)) -> Log(ReduceProd(A)): one Log per output"),
        Rule("reducesum-square", F, ("ReduceSum", ("Mul", "A", "A"), "AX", K), ("ReduceSumSquare", "A", "AX", K),
             example=_ex(), doc="ReduceSum(A*A) -> ReduceSumSquare(A)"),
        Rule("reducesum-pow2", F, ("ReduceSum", ("Pow", "A", 2.0), "AX", K), ("ReduceSumSquare", "A", "AX", K),
             example=_ex(), doc="ReduceSum(A^2) -> ReduceSumSquare(A)"),
        Rule("reducesum-abs", F, ("ReduceSum", ("Abs", "A"), "AX", K), ("ReduceL1", "A", "AX", K),
             example=_ex(), doc="ReduceSum(|A|) -> ReduceL1(A)"),
        Rule("sqrt-reducesumsquare", F, ("Sqrt", ("ReduceSumSquare", "A", "AX", K)), ("ReduceL2", "A", "AX", K),
             example=_ex(), doc="Sqrt(ReduceSumSquare(A)) -> ReduceL2(A)"),
        Rule("log-reducesum", F, ("Log", ("ReduceSum", "A", "AX", K)), ("ReduceLogSum", "A", "AX", K),
             example=_ex(POS), doc="Log(ReduceSum(A)) -> ReduceLogSum(A)"),
        Rule("log-reducesum-exp", F, ("Log", ("ReduceSum", ("Exp", "A"), "AX", K)), ("ReduceLogSumExp", "A", "AX", K),
             exact=False, note="the fused op subtracts the max first: no overflow where the original had Inf",
             example=_ex(), doc="Log(ReduceSum(Exp(A))) -> ReduceLogSumExp(A)"),
        Rule("reducel2-square", F, ("Mul", ("ReduceL2", "A", "AX", K), ("ReduceL2", "A", "AX", K)),
             ("ReduceSumSquare", "A", "AX", K), exact=False, note="sqrt then square rounds", example=_ex(),
             doc="ReduceL2(A)^2 -> ReduceSumSquare(A)"),
        Rule("reducesum-neg-sq", F, ("ReduceSumSquare", ("Neg", "A"), "AX", K), ("ReduceSumSquare", "A", "AX", K),
             example=_ex()),
        Rule("reducel1-neg", F, ("ReduceL1", ("Neg", "A"), "AX", K), ("ReduceL1", "A", "AX", K), example=_ex()),
        Rule("reducel2-neg", F, ("ReduceL2", ("Neg", "A"), "AX", K), ("ReduceL2", "A", "AX", K), example=_ex()),
        Rule("reducel1-abs", F, ("ReduceL1", ("Abs", "A"), "AX", K), ("ReduceL1", "A", "AX", K), example=_ex()),
        Rule("reducemax-reducemax-same", F, ("ReduceMax", ("ReduceMax", "A", "AX", {"keepdims": 1}), "AX", K),
             ("ReduceMax", "A", "AX", K), example=_ex(), doc="reducing an axis already of size 1"),
        _mean_rule("Div"),
        _mean_rule("Mul"),
    ] + [_nested(R) for R in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean")]
