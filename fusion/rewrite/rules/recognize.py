"""Recognition: decomposed sub-graphs exporters produce become the one op the
table defines for them (GELU, Softmax, LogSoftmax, LayerNormalization,
Sigmoid, Softplus, Softsign, HardSigmoid, HardSwish, LeakyRelu, Relu). Fewer
nodes, one kernel, and the fused op's numerically stable form."""
from __future__ import annotations

import math

import numpy as np

from fusion.rewrite.rule import Rule
from fusion.rewrite.rules._util import val

F = "recognize"
SQRT2 = math.sqrt(2.0)
INV_SQRT2 = 1.0 / math.sqrt(2.0)
SQRT_2_PI = math.sqrt(2.0 / math.pi)
RED1 = {"keepdims": 1}


def _axis1(m, name="AX"):
    a = val(m, name)
    return a is not None and a.size == 1


def _softmax(op):
    def rhs(b, m):
        return b.op(op, m["X"], axis=int(np.asarray(val(m, "AX")).reshape(-1)[0]))
    rhs.__doc__ = op
    return rhs


def _last_axes(m):
    a = val(m, "AX")
    if a is None:
        return None
    r = m["X"].rank
    axes = sorted(int(x) % r for x in np.asarray(a).reshape(-1))
    return axes[0] if axes == list(range(axes[0], r)) else None


def _ln_ok(m, affine=True):
    ax = _last_axes(m)
    if ax is None:
        return False
    n = int(np.prod(m["X"].shape[ax:]))
    if val(m, "EPS") is None or val(m, "EPS").size != 1:
        return False
    if affine:
        for k in ("G", "BETA"):
            v = m[k]
            if int(np.prod(v.shape)) != n or v.rank > m["X"].rank - ax and any(d != 1 for d in v.shape[:v.rank - (m["X"].rank - ax)]):
                return False
    return True


def _layer_norm(affine):
    def rhs(b, m):
        x = m["X"]
        ax = _last_axes(m)
        shape = list(x.shape[ax:])
        eps = float(np.asarray(val(m, "EPS")).reshape(-1)[0])
        if affine:
            g = b.op("Reshape", m["G"], b.ints(shape))
            beta = b.op("Reshape", m["BETA"], b.ints(shape))
        else:
            g = b.const(np.ones(shape, dtype=x.dtype))
            beta = b.const(np.zeros(shape, dtype=x.dtype))
        return b.op("LayerNormalization", x, g, beta, axis=ax, epsilon=eps)
    rhs.__doc__ = "LayerNormalization(X, G, BETA, axis, epsilon)"
    return rhs


def _ln_pattern(square, affine):
    d = ("Sub", "X", ("ReduceMean", "X", "AX", RED1), {"@": "D"})
    sq = ("Pow", "D", 2.0) if square == "pow" else ("Mul", "D", "D")
    norm = ("Div", d, ("Sqrt", ("Add", ("ReduceMean", sq, "AX", RED1), "EPS")))
    return ("Add", ("Mul", norm, "G"), "BETA") if affine else norm


def _hsig(b, m):
    return b.op("HardSigmoid", m["X"], alpha=float(val(m, "AL").reshape(-1)[0]), beta=float(val(m, "BE").reshape(-1)[0]))


def _hswish_ok(m):
    return math.isclose(float(m["$al"]), 1 / 6, rel_tol=1e-5) and math.isclose(float(m["$be"]), 0.5, rel_tol=1e-6)


def _leaky_ok(m):
    a = val(m, "AL")
    return a is not None and a.size == 1 and 0 < float(a.reshape(-1)[0]) < 1


def _leaky(b, m):
    return b.op("LeakyRelu", m["X"], alpha=float(val(m, "AL").reshape(-1)[0]))


SM_EX = {"shapes": {"X": (2, 3)}, "values": {"AX": np.array([1])}}
LN_EX = {"shapes": {"X": (2, 3), "G": (3,), "BETA": (3,)}, "consts": ("G", "BETA"),
         "values": {"AX": np.array([-1]), "EPS": np.float32(1e-5)}}


def rules():
    gelu = ("Gelu", "X")
    gelu_t = ("Gelu", "X", {"approximate": "tanh"})
    half_x = ("Mul", "X", 0.5)

    def tanh_form(cube):
        inner = ("Mul", ("Add", "X", ("Mul", cube, 0.044715)), SQRT_2_PI)
        return ("Mul", half_x, ("Add", ("Tanh", inner), 1.0))
    return [
        Rule("gelu-erf-div", F, ("Mul", half_x, ("Add", ("Erf", ("Div", "X", SQRT2)), 1.0)), gelu, exact=False,
             note="one fused evaluation rounds differently", doc="x*0.5*(1+erf(x/sqrt2)) -> Gelu(x)"),
        Rule("gelu-erf-mul", F, ("Mul", half_x, ("Add", ("Erf", ("Mul", "X", INV_SQRT2)), 1.0)), gelu, exact=False,
             note="one fused evaluation rounds differently", doc="x*0.5*(1+erf(x*0.7071)) -> Gelu(x)"),
        Rule("gelu-tanh-pow", F, tanh_form(("Pow", "X", 3.0)), gelu_t, exact=False,
             note="one fused evaluation rounds differently", doc="0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))) -> Gelu(tanh)"),
        Rule("gelu-tanh-mul", F, tanh_form(("Mul", ("Mul", "X", "X"), "X")), gelu_t, exact=False,
             note="one fused evaluation rounds differently", doc="same with x*x*x"),
        Rule("softmax-stable", F, ("Div", ("Exp", ("Sub", "X", ("ReduceMax", "X", "AX", RED1)), {"@": "E"}),
                                   ("ReduceSum", "E", "AX", RED1)), _softmax("Softmax"), when=_axis1,
             exact=False, note="one fused evaluation rounds differently", example=SM_EX,
             doc="exp(x-max)/sum(exp(x-max)) -> Softmax(x, axis)"),
        Rule("softmax-plain", F, ("Div", ("Exp", "X", {"@": "E"}), ("ReduceSum", "E", "AX", RED1)),
             _softmax("Softmax"), when=_axis1, exact=False,
             note="Softmax subtracts the max: no overflow where exp(x) was Inf", example=SM_EX,
             doc="exp(x)/sum(exp(x)) -> Softmax(x, axis)"),
        Rule("softmax-recip", F, ("Mul", ("Exp", "X", {"@": "E"}), ("Reciprocal", ("ReduceSum", "E", "AX", RED1))),
             _softmax("Softmax"), when=_axis1, exact=False,
             note="Softmax subtracts the max: no overflow where exp(x) was Inf", example=SM_EX,
             doc="exp(x)*(1/sum(exp(x))) -> Softmax(x, axis)"),
        Rule("logsoftmax-stable", F, ("Sub", ("Sub", "X", ("ReduceMax", "X", "AX", RED1), {"@": "D"}),
                                      ("Log", ("ReduceSum", ("Exp", "D"), "AX", RED1))),
             _softmax("LogSoftmax"), when=_axis1, exact=False, note="one fused evaluation rounds differently",
             example=SM_EX, doc="(x-max) - log(sum(exp(x-max))) -> LogSoftmax(x, axis)"),
        Rule("log-softmax", F, ("Log", ("Softmax", "X", {"axis": "$a"})), ("LogSoftmax", "X", {"axis": "$a"}),
             exact=False, note="LogSoftmax has no log(0) = -Inf where softmax underflows",
             example={"shapes": {"X": (2, 4)}, "attrs": {"$a": -1}}, doc="Log(Softmax(x)) -> LogSoftmax(x)"),
        Rule("layernorm-pow", F, _ln_pattern("pow", True), _layer_norm(True), when=_ln_ok,
             requires=("LayerNormalization",), exact=False, note="one fused evaluation rounds differently",
             example=LN_EX, doc="mean/var/normalize/scale/shift chain -> LayerNormalization"),
        Rule("layernorm-mul", F, _ln_pattern("mul", True), _layer_norm(True), when=_ln_ok,
             requires=("LayerNormalization",), exact=False, note="one fused evaluation rounds differently",
             example=LN_EX, doc="same, variance as (x-mean)*(x-mean)"),
        Rule("layernorm-pow-noaffine", F, _ln_pattern("pow", False), _layer_norm(False),
             when=lambda m: _ln_ok(m, False), requires=("LayerNormalization",), exact=False,
             note="one fused evaluation rounds differently", example=LN_EX,
             doc="normalization without scale/shift -> LayerNormalization(scale 1, bias 0)"),
        Rule("layernorm-mul-noaffine", F, _ln_pattern("mul", False), _layer_norm(False),
             when=lambda m: _ln_ok(m, False), requires=("LayerNormalization",), exact=False,
             note="one fused evaluation rounds differently", example=LN_EX,
             doc="same, variance as (x-mean)*(x-mean)"),
        Rule("sigmoid-recip", F, ("Reciprocal", ("Add", ("Exp", ("Neg", "X")), 1.0)), ("Sigmoid", "X"),
             exact=False, note="rounding", doc="1/(1+exp(-x)) -> Sigmoid(x)"),
        Rule("sigmoid-div", F, ("Div", 1.0, ("Add", ("Exp", ("Neg", "X")), 1.0)), ("Sigmoid", "X"),
             exact=False, note="rounding", doc="1/(1+exp(-x)) -> Sigmoid(x)"),
        Rule("softplus", F, ("Log", ("Add", ("Exp", "X"), 1.0)), ("Softplus", "X"), exact=False,
             note="rounding", doc="log(exp(x)+1) -> Softplus(x)"),
        Rule("softsign", F, ("Div", "X", ("Add", ("Abs", "X"), 1.0)), ("Softsign", "X"), doc="x/(1+|x|) -> Softsign(x)"),
        Rule("hardsigmoid-clip", F, ("Clip", ("Add", ("Mul", "X", "AL"), "BE"), 0.0, 1.0), _hsig, scalars=("AL", "BE"),
             exact=False, note="alpha*x+beta rounds once", proof="numeric",
             example={"values": {"AL": np.float32(0.2), "BE": np.float32(0.5)}},
             doc="clip(alpha*x+beta, 0, 1) -> HardSigmoid(x)"),
        Rule("hardswish", F, ("Mul", "X", ("HardSigmoid", "X", {"alpha": "$al", "beta": "$be"})), ("HardSwish", "X"),
             when=_hswish_ok, exact=False, note="rounding", proof="numeric",
             example={"attrs": {"$al": 1 / 6, "$be": 0.5}}, doc="x*HardSigmoid(x, 1/6, 1/2) -> HardSwish(x)"),
        Rule("hardswish-relu6", F, ("Mul", ("Mul", "X", ("Clip", ("Add", "X", 3.0), 0.0, 6.0)), 1 / 6),
             ("HardSwish", "X"), exact=False, note="rounding; nested clip: sympy cannot split the cases", proof="numeric",
             doc="x*relu6(x+3)/6 -> HardSwish(x)"),
        Rule("hardswish-relu6-div", F, ("Div", ("Mul", "X", ("Clip", ("Add", "X", 3.0), 0.0, 6.0)), 6.0),
             ("HardSwish", "X"), exact=False, note="rounding; nested clip: sympy cannot split the cases", proof="numeric",
             doc="x*relu6(x+3)/6 -> HardSwish(x)"),
        Rule("leakyrelu-max", F, ("Max", "X", ("Mul", "X", "AL")), _leaky, scalars=("AL",), when=_leaky_ok,
             proof="numeric", note="needs 0 < alpha < 1 (checked)", example={"values": {"AL": np.float32(0.1)}},
             doc="max(x, alpha*x) -> LeakyRelu(x)"),
        Rule("relu-where", F, ("Where", ("Greater", "X", 0.0), "X", 0.0), ("Relu", "X"), dtypes="f",
             doc="where(x > 0, x, 0) -> Relu(x)"),
    ]
