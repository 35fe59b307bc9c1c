"""Constants folded into linear ops (Conv, MatMul, Gemm): a per-channel scale
becomes part of the weights, a per-channel shift part of the bias, a
BatchNormalization after a Conv disappears; MatMuls sharing an operand share
the work; Transposes fold into MatMul/Gemm operands."""
from __future__ import annotations

import numpy as np

from fusion.rewrite.rule import Rule

F = "linear"
SCALE = "scaling the weights instead of the output rounds differently"


def per_channel(c, out_rank: int, axis: int, n) -> bool:
    """c broadcasts over an output of rank `out_rank` along `axis` only."""
    if c is None or c.shape is None or len(c.shape) > out_rank:
        return False
    off = out_rank - len(c.shape)
    for j, d in enumerate(c.shape):
        if d != 1 and not (j + off == axis and d == n):
            return False
    return True


def _conv_pc(m):
    w = m["W"]
    return per_channel(m["C"], m["Y"].rank, 1, w.shape[0])


def _vec(b, c):
    return b.op("Reshape", c, b.ints([-1]))


def _conv(b, m, w, bias):
    return b.op("Conv", m["X"], w, bias, **dict(m["Y"].producer.attrs))


def _conv_mul(b, m):
    w = m["W"]
    c = _vec(b, m["C"])
    w2 = b.op("Mul", w, b.op("Reshape", c, b.ints([-1] + [1] * (w.rank - 1))))
    bias = b.op("Mul", m["B"], c) if m.get("B") is not None else None
    return _conv(b, m, w2, bias)


def _conv_div(b, m):
    w = m["W"]
    c = _vec(b, m["C"])
    w2 = b.op("Div", w, b.op("Reshape", c, b.ints([-1] + [1] * (w.rank - 1))))
    bias = b.op("Div", m["B"], c) if m.get("B") is not None else None
    return _conv(b, m, w2, bias)


def _bias0(b, m):
    if m.get("B") is not None:
        return m["B"]
    return b.const(np.zeros(m["W"].shape[0], dtype=m["W"].dtype))


def _conv_add(b, m):
    return _conv(b, m, m["W"], b.op("Add", _bias0(b, m), _vec(b, m["C"])))


def _conv_sub(b, m):
    return _conv(b, m, m["W"], b.op("Sub", _bias0(b, m), _vec(b, m["C"])))


def _conv_bn(b, m):
    bn = m.root
    w = m["W"]
    eps = b.lit(float(bn.attrs.get("epsilon", 1e-5)), w)
    s = b.op("Div", m["S"], b.op("Sqrt", b.op("Add", m["VAR"], eps)))
    w2 = b.op("Mul", w, b.op("Reshape", s, b.ints([-1] + [1] * (w.rank - 1))))
    bias = b.op("Add", b.op("Mul", b.op("Sub", _bias0(b, m), m["MU"]), s), m["BB"])
    return _conv(b, m, w2, bias)


def _bn_ok(m):
    bn = m.root
    return len(bn.outputs) == 1 and not bn.attrs.get("training_mode", 0)


def _conv_conv_ok(m):
    y1, y2 = m["Y"].producer, m["Y2"].producer
    return y1.attrs == y2.attrs and m["W"].shape == m["W2"].shape


def _conv_conv(b, m):
    bias = None
    if m.get("B") is not None or m.get("B2") is not None:
        bias = b.op("Add", _bias0(b, m), m["B2"] if m.get("B2") is not None else
                    b.const(np.zeros(m["W"].shape[0], dtype=m["W"].dtype)))
    return _conv(b, m, b.op("Add", m["W"], m["W2"]), bias)


def _conv_in_ok(m):
    # A scale per input channel commutes with zero padding (0*s = 0); groups
    # would need the scale split per group, so only group=1 or a scalar.
    x, w = m["X"], m["W"]
    conv = m.root
    return (x.rank == w.rank and per_channel(m["S"], x.rank, 1, x.shape[1])
            and (int(conv.attrs.get("group", 1)) == 1 or int(np.prod(m["S"].shape)) == 1))


def _conv_in_scale(b, m):
    w = m["W"]
    s = b.op("Reshape", m["S"], b.ints([1, -1] + [1] * (w.rank - 2)))
    return b.op("Conv", m["X"], b.op("Mul", w, s), m.get("B"), **dict(m.root.attrs))


def _mm_pc(m):
    w = m["W"]
    return w.rank >= 2 and per_channel(m["C"], m["Y"].rank, m["Y"].rank - 1, w.shape[-1])


def _mm_mul(b, m):
    return b.op("MatMul", m["A"], b.op("Mul", m["W"], _vec(b, m["C"])))


def _mm_div(b, m):
    return b.op("MatMul", m["A"], b.op("Div", m["W"], _vec(b, m["C"])))


def _mm_bias_ok(m):
    return _mm_pc(m) and per_channel(m["B"], m["Y"].rank, m["Y"].rank - 1, m["W"].shape[-1])


def _mm_bias_mul(b, m):
    c = _vec(b, m["C"])
    return b.op("Add", b.op("MatMul", m["A"], b.op("Mul", m["W"], c)), b.op("Mul", m["B"], m["C"]))


def _gemm_pc(m):
    return m["Y"].rank == 2 and per_channel(m["D"], 2, 1, m["Y"].shape[-1])


def _gemm_mul(b, m):
    g = m["Y"].producer
    d = _vec(b, m["D"])
    w = m["W"]
    # Output columns are W's columns, or its rows when transB=1.
    wd = b.op("Reshape", d, b.ints([-1, 1])) if g.attrs.get("transB", 0) else d
    c = b.op("Mul", m["C"], d) if m.get("C") is not None else None
    return b.op("Gemm", m["A"], b.op("Mul", w, wd), c, **dict(g.attrs))


def _gemm_add(b, m):
    g = m["Y"].producer
    beta = float(g.attrs.get("beta", 1.0))
    d = _vec(b, m["D"])
    if beta != 1.0:
        d = b.op("Mul", d, b.lit(1.0 / beta, m["D"]))
    c = b.op("Add", m["C"], d) if m.get("C") is not None else d
    attrs = dict(g.attrs)
    if m.get("C") is None:
        attrs["beta"] = 1.0
    return b.op("Gemm", m["A"], m["W"], c, **attrs)


def _swap_last(p, rank):
    return list(p) == list(range(rank - 2)) + [rank - 1, rank - 2]


def _tt_ok(m):
    a, bb = m["A"], m["B"]
    return a.rank == bb.rank >= 2 and _swap_last(m["$p"], a.rank) and _swap_last(m["$q"], bb.rank)


def _gemm_t(which):
    def rhs(b, m):
        g = m.root
        attrs = dict(g.attrs)
        attrs[which] = 1 - int(attrs.get(which, 0))
        ins = list(g.inputs)
        k = 0 if which == "transA" else 1
        ins[k] = m["X"]
        return b.op("Gemm", *ins, **attrs)
    return rhs


def _gemm_bias_ok(m):
    if m["A"].rank != 2 or m["B"].rank != 2:
        return False
    c = m["C"]
    out = m["Y"].shape
    return len(c.shape) <= 2 and all(d == 1 or d == o for d, o in zip(c.shape[::-1], out[::-1]))


CONV_EX = {"shapes": {"X": (1, 2, 5, 5), "W": (3, 2, 3, 3), "B": (3,), "C": (3, 1, 1)},
           "consts": ("W", "B", "C"), "attrs": {}}


def _ex(**over):
    ex = {k: (dict(v) if isinstance(v, dict) else v) for k, v in CONV_EX.items()}
    for k, v in over.items():
        if isinstance(v, dict):
            ex.setdefault(k, {}).update(v)
        else:
            ex[k] = v
    return ex


MM_EX = {"shapes": {"A": (2, 3, 4), "W": (4, 5), "C": (5,)}, "consts": ("W", "C")}


def rules():
    conv = ("Conv", "X", "W", "B", {"@": "Y"})
    mm = ("MatMul", "A", "W", {"@": "Y"})
    out = [
        Rule("conv-mul", F, ("Mul", conv, "C"), _conv_mul, consts=("W", "C"), when=_conv_pc, exact=False, note=SCALE,
             example=_ex(), doc="Conv(X,W,B)*c -> Conv(X, W*c, B*c), c per output channel or scalar"),
        Rule("conv-div", F, ("Div", conv, "C"), _conv_div, consts=("W", "C"), when=_conv_pc, exact=False, note=SCALE,
             example=_ex(range={"C": (0.5, 2.0)}), doc="Conv(X,W,B)/c -> Conv(X, W/c, B/c)"),
        Rule("conv-add", F, ("Add", conv, "C"), _conv_add, consts=("C",), when=_conv_pc, exact=False,
             note="the bias is added in a different order", example=_ex(), doc="Conv(X,W,B)+c -> Conv(X, W, B+c)"),
        Rule("conv-sub", F, ("Sub", conv, "C"), _conv_sub, consts=("C",), when=_conv_pc, exact=False,
             note="the bias is added in a different order", example=_ex(), doc="Conv(X,W,B)-c -> Conv(X, W, B-c)"),
        Rule("conv-input-scale", F, ("Conv", ("Mul", "X", "S"), "W", "B"), _conv_in_scale, consts=("W", "S"),
             when=_conv_in_ok, exact=False, note=SCALE,
             example=_ex(shapes={"S": (2, 1, 1)}, consts=("W", "B", "S")),
             doc="Conv(X*s, W, B) -> Conv(X, W*s, B), s per input channel (input normalization)"),
        Rule("conv-batchnorm", F, ("BatchNormalization", conv, "S", "BB", "MU", "VAR"), _conv_bn,
             consts=("W", "S", "BB", "MU", "VAR"), when=_bn_ok, requires=("BatchNormalization",), exact=False,
             note=SCALE, example=_ex(shapes={"S": (3,), "BB": (3,), "MU": (3,), "VAR": (3,)},
                                     consts=("W", "B", "S", "BB", "MU", "VAR"), range={"VAR": (0.5, 2.0)}),
             doc="BatchNormalization(Conv(X,W,B)) -> Conv(X, W*s, (B-mean)*s + beta), s = gamma/sqrt(var+eps)"),
        Rule("conv-add-conv", F, ("Add", conv, ("Conv", "X", "W2", "B2", {"@": "Y2"})), _conv_conv,
             consts=("W", "W2"), when=_conv_conv_ok, exact=False, note="the sum of weights rounds",
             example=_ex(shapes={"W2": (3, 2, 3, 3), "B2": (3,)}, consts=("W", "B", "W2", "B2")),
             doc="Conv(X,W1)+Conv(X,W2) -> Conv(X, W1+W2): one Conv shared"),
        Rule("matmul-mul", F, ("Mul", mm, "C"), _mm_mul, consts=("W", "C"), when=_mm_pc, exact=False, note=SCALE,
             example=dict(MM_EX), doc="MatMul(A,W)*c -> MatMul(A, W*c), c per output column or scalar"),
        Rule("matmul-div", F, ("Div", mm, "C"), _mm_div, consts=("W", "C"), when=_mm_pc, exact=False, note=SCALE,
             example=dict(MM_EX, range={"C": (0.5, 2.0)}), doc="MatMul(A,W)/c -> MatMul(A, W/c)"),
        Rule("matmul-bias-mul", F, ("Mul", ("Add", mm, "B"), "C"), _mm_bias_mul, consts=("W", "B", "C"),
             when=_mm_bias_ok, exact=False, note=SCALE,
             example={"shapes": {"A": (2, 3, 4), "W": (4, 5), "B": (5,), "C": (5,)}, "consts": ("W", "B", "C")},
             doc="(MatMul(A,W)+b)*c -> MatMul(A, W*c) + b*c: the scale disappears into the weights"),
        Rule("matmul-scale-left", F, ("Mul", ("MatMul", "A", "B"), "C"), ("MatMul", ("Mul", "A", "C"), "B"),
             scalars=("C",), exact=False, note=SCALE,
             example={"shapes": {"A": (2, 6, 2), "B": (2, 6), "C": ()}},
             doc="MatMul(A,B)*c -> MatMul(A*c, B) when A is smaller than the product (attention scores)"),
        Rule("matmul-scale-right", F, ("Mul", ("MatMul", "A", "B"), "C"), ("MatMul", "A", ("Mul", "B", "C")),
             scalars=("C",), exact=False, note=SCALE,
             example={"shapes": {"A": (6, 2), "B": (2, 2, 6), "C": ()}},
             doc="MatMul(A,B)*c -> MatMul(A, B*c) when B is smaller than the product"),
        Rule("matmul-transpose-both", F, ("MatMul", ("Transpose", "A", {"perm": "$p"}), ("Transpose", "B", {"perm": "$q"})),
             ("Transpose", ("MatMul", "B", "A"), {"perm": "$p"}), when=_tt_ok,
             example={"shapes": {"A": (3, 2), "B": (4, 3)}, "attrs": {"$p": [1, 0], "$q": [1, 0]}},
             doc="MatMul(A^T, B^T) -> (B A)^T: one Transpose instead of two"),
        Rule("gemm-mul", F, ("Mul", ("Gemm", "A", "W", "C", {"@": "Y"}), "D"), _gemm_mul, consts=("W", "D"),
             when=_gemm_pc, requires=("Gemm",), exact=False, note=SCALE,
             example={"shapes": {"A": (2, 3), "W": (3, 4), "C": (4,), "D": (4,)}, "consts": ("W", "C", "D")},
             doc="Gemm(A,W,C)*d -> Gemm(A, W*d, C*d), d per output column or scalar"),
        Rule("gemm-add", F, ("Add", ("Gemm", "A", "W", "C", {"@": "Y"}), "D"), _gemm_add, consts=("D",),
             when=_gemm_pc, requires=("Gemm",), exact=False, note="the bias is added in a different order",
             example={"shapes": {"A": (2, 3), "W": (3, 4), "C": (4,), "D": (4,)}, "consts": ("W", "C", "D")},
             doc="Gemm(A,W,C)+d -> Gemm(A, W, C + d/beta)"),
        Rule("gemm-transpose-a", F, ("Gemm", ("Transpose", "X", {"perm": [1, 0]}), "B", "C"), _gemm_t("transA"),
             requires=("Gemm",), example={"shapes": {"X": (3, 2), "B": (3, 4), "C": (4,)}},
             doc="Gemm(X^T, B) -> Gemm(X, B, transA=1)"),
        Rule("gemm-transpose-b", F, ("Gemm", "A", ("Transpose", "X", {"perm": [1, 0]}), "C"), _gemm_t("transB"),
             requires=("Gemm",), example={"shapes": {"A": (2, 3), "X": (4, 3), "C": (4,)}},
             doc="Gemm(A, X^T) -> Gemm(A, X, transB=1)"),
        Rule("matmul-add-gemm", F, ("Add", ("MatMul", "A", "B", {"@": "Y"}), "C"), ("Gemm", "A", "B", "C"),
             when=_gemm_bias_ok, requires=("Gemm",), fuses=True, exact=False, note="the bias is added in a different order",
             example={"shapes": {"A": (2, 3), "B": (3, 4), "C": (4,)}, "consts": ("B", "C")},
             doc="MatMul(A,B)+c (2-D) -> Gemm(A,B,c)"),
        Rule("gemm-transpose-ab", F, ("Gemm", ("Transpose", "X", {"perm": [1, 0]}), ("Transpose", "Z", {"perm": [1, 0]}), "C"),
             lambda b, m: b.op("Gemm", m["X"], m["Z"], m["C"], **_flip(m.root.attrs)),
             requires=("Gemm",), example={"shapes": {"X": (3, 2), "Z": (4, 3), "C": (4,)}},
             doc="Gemm(X^T, Z^T) -> Gemm(X, Z, transA=1, transB=1)"),
    ]
    return out


def _flip(attrs):
    a = dict(attrs)
    a["transA"] = 1 - int(a.get("transA", 0))
    a["transB"] = 1 - int(a.get("transB", 0))
    return a
