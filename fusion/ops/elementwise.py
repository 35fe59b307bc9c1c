"""Elementwise ops: each is one scalar function; everything else derives from it."""
from __future__ import annotations

import math

import numpy as np

from fusion.errors import ShapeError, UnsupportedOpError
from fusion.ir import expr as E
from fusion.ops.mathns import EXPR, NP
from fusion.ops.table import (REQUIRED, Algebra, AttrSpec, Mapping, OpDef, broadcast_shapes,
                              register)


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def elementwise_mapping(node) -> Mapping:
    out = node.outputs[0].shape
    ins = [v for v in node.inputs if v is not None]
    if all(tuple(v.shape) == tuple(out) for v in ins):
        return Mapping.O2O
    if any(_size(v.shape) != _size(out) for v in ins):
        return Mapping.O2M  # broadcasting: one input element feeds many outputs
    return Mapping.REORG    # only leading unit dims differ: same elements, new shape


def _size(shape):
    try:
        return int(_prod(shape))
    except TypeError:  # symbolic dims
        return _prod(shape)


def _make_infer(out_dtype):
    def infer(node):
        ins = [v for v in node.inputs if v is not None]
        shape = broadcast_shapes(*[v.shape for v in ins], who=f"{node.label()}: ")
        return [(out_dtype(node, ins), shape)]
    return infer


def _make_reference(scalar, out_dtype):
    def reference(node, args):
        xs = list(args)
        while xs and xs[-1] is None:
            xs.pop()
        with np.errstate(all="ignore"):
            y = scalar(NP, *xs, **_attr_kwargs(node))
        ins = [v for v in node.inputs if v is not None]
        dt = out_dtype(node, ins)
        y = np.asarray(y)
        shape = np.broadcast_shapes(*[np.shape(x) for x in xs if x is not None])
        if y.shape != shape:
            y = np.broadcast_to(y, shape)
        # (np.ascontiguousarray would turn a 0-d result into shape [1])
        return [np.array(y, dtype=dt, order="C", copy=None) if y.ndim else np.array(y, dtype=dt)]
    return reference


def _make_lower(scalar):
    def lower(node, out, read, k=0):
        xs = [read(i, E.broadcast_index(out, v.shape)) if v is not None else None
              for i, v in enumerate(node.inputs)]
        while xs and xs[-1] is None:
            xs.pop()
        y = scalar(EXPR, *xs, **_attr_kwargs(node))
        dt = node.outputs[0].dtype.name
        return E.cast(y, dt)
    return lower


def _attr_kwargs(node):
    # Elementwise scalars that need attributes (alpha, beta...) take them as kwargs.
    return node.attrs


def same_dtype(node, ins):
    return ins[0].dtype


def bool_dtype(node, ins):
    return np.dtype(np.bool_)


def _legacy_broadcast(node, graph, opset):
    """Before opset 7 a binary op broadcast only with `broadcast=1`, B being a
    run of A's dims that starts at `axis` (default: A's trailing dims). From 7 on
    broadcasting aligns from the right, so B gets trailing 1s for the dims after
    its run."""
    bc = node.attrs.pop("broadcast", None)
    axis = node.attrs.pop("axis", None)
    if not bc or axis is None or len(node.inputs) < 2:
        return
    a, b = node.inputs[0], node.inputs[1]
    if a is None or b is None or a.shape is None or b.shape is None:
        raise ShapeError(f"{node.label()}: broadcast with axis={axis} needs both input shapes")
    ra, rb = len(a.shape), len(b.shape)
    ax = int(axis) + ra if int(axis) < 0 else int(axis)
    trail = ra - ax - rb
    if trail < 0 or ax < 0:
        raise ShapeError(f"{node.label()}: B {list(b.shape)} does not fit in A {list(a.shape)} at axis {axis}")
    if trail == 0:
        return
    if b.const is None:
        raise UnsupportedOpError(f"{node.label()}: legacy broadcast (opset {opset}) of a computed B at axis {axis} "
                                 f"is not supported; re-export the model at opset 7 or later")
    graph.set_input(node, 1, graph.const(np.asarray(b.const).reshape(tuple(b.shape) + (1,) * trail),
                                         b.name + "_aligned"))


def elementwise(name: str, arity: int | str, scalar, *, algebra: Algebra = Algebra(), flops: float = 1,
                out_dtype=same_dtype, attrs: dict | None = None, since: int = 1, doc: str = "",
                inputs: tuple[str, ...] | None = None, normalize=None, export_opset: int = 0) -> OpDef:
    """Register an elementwise op from its scalar function `scalar(m, *xs, **attrs)`.

    The kwargs of `scalar` are the op's attributes (all of them, defaults filled)."""
    if inputs is None:
        inputs = ("data_0*",) if arity == "*" else tuple("ABCDEFGH"[:arity])
    if normalize is None and arity == 2:
        normalize = _legacy_broadcast

    def fl(node, _f=flops):
        return int(math.ceil(_f * _prod(node.outputs[0].shape)))

    return register(OpDef(
        name=name, since=since, inputs=inputs, outputs=("Y",), attrs=dict(attrs or {}),
        mapping=elementwise_mapping, infer=_make_infer(out_dtype), reference=_make_reference(scalar, out_dtype),
        lower=_make_lower(scalar), scalar=scalar, flops=fl, algebra=algebra, doc=doc, category="elementwise",
        normalize=normalize, export_opset=export_opset,
    ))


def _k(**attrs):
    return {k: AttrSpec(*v) if isinstance(v, tuple) else AttrSpec("float", v) for k, v in attrs.items()}


# ---------------------------------------------------------------------------
# Arithmetic

def _div_scalar(m, a, b):
    return m.div(a, b)


def _mod_scalar(m, a, b, fmod=0):
    return m.fmod(a, b) if fmod else m.mod(a, b)


elementwise("Add", 2, lambda m, a, b: a + b,
            algebra=Algebra(commutative=True, associative=True, identity=0, float_exact=False))
elementwise("Sub", 2, lambda m, a, b: a - b, algebra=Algebra(identity=0))
elementwise("Mul", 2, lambda m, a, b: a * b,
            algebra=Algebra(commutative=True, associative=True, identity=1, absorbing=0,
                            distributes_over=("Add", "Sub"), float_exact=False))
elementwise("Div", 2, _div_scalar, algebra=Algebra(identity=1), flops=1)
elementwise("Pow", 2, lambda m, a, b: m.pow(a, b), flops=10)
elementwise("Mod", 2, _mod_scalar, attrs={"fmod": AttrSpec("int", 0)})
elementwise("Max", "*", lambda m, *xs: _fold(m.max, xs),
            algebra=Algebra(commutative=True, associative=True, idempotent=True, identity=-math.inf))
elementwise("Min", "*", lambda m, *xs: _fold(m.min, xs),
            algebra=Algebra(commutative=True, associative=True, idempotent=True, identity=math.inf))
elementwise("Sum", "*", lambda m, *xs: _fold(lambda a, b: a + b, xs),
            algebra=Algebra(commutative=True, associative=True, identity=0, float_exact=False))
elementwise("Mean", "*", lambda m, *xs: _fold(lambda a, b: a + b, xs) / m.const(float(len(xs)), xs[0]),
            algebra=Algebra(commutative=True))


def _fold(f, xs):
    acc = xs[0]
    for x in xs[1:]:
        acc = f(acc, x)
    return acc


# ---------------------------------------------------------------------------
# Unary math

elementwise("Neg", 1, lambda m, x: -x, algebra=Algebra(involution=True))
elementwise("Abs", 1, lambda m, x: m.abs(x) if m.is_float(x) else m.where(m.lt(x, m.const(0, x)), -x, x),
            algebra=Algebra(idempotent=True))
elementwise("Reciprocal", 1, lambda m, x: m.const(1.0, x) / x, algebra=Algebra(involution=True))
elementwise("Sqrt", 1, lambda m, x: m.sqrt(x), flops=4)
elementwise("Exp", 1, lambda m, x: m.exp(x), flops=8)
elementwise("Log", 1, lambda m, x: m.log(x), flops=8)
elementwise("Tanh", 1, lambda m, x: m.tanh(x), flops=10)
elementwise("Erf", 1, lambda m, x: m.erf(x), flops=10)
elementwise("Floor", 1, lambda m, x: m.floor(x), algebra=Algebra(idempotent=True))
elementwise("Ceil", 1, lambda m, x: m.ceil(x), algebra=Algebra(idempotent=True))
elementwise("Round", 1, lambda m, x: m.round(x), algebra=Algebra(idempotent=True))
elementwise("Sign", 1, lambda m, x: m.where(m.gt(x, m.const(0, x)), m.const(1, x),
                                             m.where(m.lt(x, m.const(0, x)), m.const(-1, x), m.const(0, x))),
            algebra=Algebra(idempotent=True))
for _n, _f in [("Sin", "sin"), ("Cos", "cos"), ("Tan", "tan"), ("Asin", "asin"), ("Acos", "acos"),
               ("Atan", "atan"), ("Sinh", "sinh"), ("Cosh", "cosh"), ("Asinh", "asinh"),
               ("Acosh", "acosh"), ("Atanh", "atanh")]:
    elementwise(_n, 1, (lambda f: lambda m, x: getattr(m, f)(x))(_f), flops=10)


# ---------------------------------------------------------------------------
# Activations

def _sigmoid(m, x):
    one = m.const(1.0, x)
    return one / (one + m.exp(-x))


elementwise("Relu", 1, lambda m, x: m.max(x, m.const(0, x)), algebra=Algebra(idempotent=True))
elementwise("Sigmoid", 1, _sigmoid, flops=10)
elementwise("HardSigmoid", 1, lambda m, x, alpha=0.2, beta=0.5:
            m.max(m.const(0.0, x), m.min(m.const(1.0, x), m.const(alpha, x) * x + m.const(beta, x))),
            attrs=_k(alpha=0.2, beta=0.5), flops=4)
elementwise("HardSwish", 1, lambda m, x:
            x * m.max(m.const(0.0, x), m.min(m.const(1.0, x), m.const(1 / 6, x) * x + m.const(0.5, x))), flops=5)
elementwise("LeakyRelu", 1, lambda m, x, alpha=0.01: m.where(m.lt(x, m.const(0, x)), m.const(alpha, x) * x, x),
            attrs=_k(alpha=0.01), flops=2)
elementwise("Elu", 1, lambda m, x, alpha=1.0:
            m.where(m.lt(x, m.const(0, x)), m.const(alpha, x) * (m.exp(x) - m.const(1.0, x)), x),
            attrs=_k(alpha=1.0), flops=10)
elementwise("Selu", 1, lambda m, x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875:
            m.const(gamma, x) * m.where(m.gt(x, m.const(0, x)), x,
                                         m.const(alpha, x) * m.exp(x) - m.const(alpha, x)),
            attrs=_k(alpha=1.67326319217681884765625, gamma=1.05070102214813232421875), flops=10)
elementwise("Celu", 1, lambda m, x, alpha=1.0:
            m.max(m.const(0, x), x) + m.min(m.const(0, x), m.const(alpha, x) * (m.exp(x / m.const(alpha, x)) - m.const(1.0, x))),
            attrs=_k(alpha=1.0), flops=12)
elementwise("ThresholdedRelu", 1, lambda m, x, alpha=1.0: m.where(m.gt(x, m.const(alpha, x)), x, m.const(0, x)),
            attrs=_k(alpha=1.0))
elementwise("Softplus", 1, lambda m, x: m.log(m.exp(x) + m.const(1.0, x)), flops=16)
elementwise("Softsign", 1, lambda m, x: x / (m.const(1.0, x) + m.abs(x)), flops=3)
elementwise("Mish", 1, lambda m, x: x * m.tanh(m.log(m.exp(x) + m.const(1.0, x))), flops=28, since=18)
elementwise("Gelu", 1, lambda m, x, approximate="none":
            (m.const(0.5, x) * x * (m.const(1.0, x) + m.tanh(m.const(math.sqrt(2 / math.pi), x) *
                                                               (x + m.const(0.044715, x) * x * x * x))))
            if approximate == "tanh" else
            (m.const(0.5, x) * x * (m.const(1.0, x) + m.erf(x * m.const(1 / math.sqrt(2), x)))),
            attrs={"approximate": AttrSpec("string", "none")}, flops=14, since=20, export_opset=20)


def _clip_scalar(m, x, lo=None, hi=None):
    if lo is not None:
        x = m.max(x, lo)
    if hi is not None:
        x = m.min(x, hi)
    return x


def _clip_normalize(node, graph, opset):
    # Clip < 11 takes min/max attributes; 11+ takes them as optional inputs.
    if opset < 11:
        dt = node.inputs[0].dtype
        lo = node.attrs.pop("min", None)
        hi = node.attrs.pop("max", None)
        ins = [node.inputs[0],
               graph.const(np.array(lo if lo is not None else -np.inf, dtype=dt), "clip_min"),
               graph.const(np.array(hi if hi is not None else np.inf, dtype=dt), "clip_max")]
        for i in range(len(node.inputs)):
            graph.set_input(node, i, None)
        node.inputs = []
        for i, v in enumerate(ins):
            node.inputs.append(None)
            graph.set_input(node, i, v)


def _clip(m, x, lo=None, hi=None):
    return _clip_scalar(m, x, lo, hi)


register_clip = elementwise("Clip", 3, _clip, inputs=("input", "min?", "max?"), normalize=_clip_normalize,
                            algebra=Algebra(idempotent=True), flops=2)


def _prelu(m, x, slope):
    return m.where(m.lt(x, m.const(0, x)), slope * x, x)


elementwise("PRelu", 2, _prelu, flops=2)
elementwise("Where", 3, lambda m, c, a, b: m.where(c, a, b), inputs=("condition", "X", "Y"),
            out_dtype=lambda node, ins: ins[1].dtype)


# ---------------------------------------------------------------------------
# Comparison and logic

elementwise("Equal", 2, lambda m, a, b: m.eq(a, b), out_dtype=bool_dtype, algebra=Algebra(commutative=True))
elementwise("Less", 2, lambda m, a, b: m.lt(a, b), out_dtype=bool_dtype)
elementwise("LessOrEqual", 2, lambda m, a, b: m.le(a, b), out_dtype=bool_dtype)
elementwise("Greater", 2, lambda m, a, b: m.gt(a, b), out_dtype=bool_dtype)
elementwise("GreaterOrEqual", 2, lambda m, a, b: m.ge(a, b), out_dtype=bool_dtype)
elementwise("And", 2, lambda m, a, b: m.and_(a, b), out_dtype=bool_dtype,
            algebra=Algebra(commutative=True, associative=True, identity=True, absorbing=False, idempotent=True))
elementwise("Or", 2, lambda m, a, b: m.or_(a, b), out_dtype=bool_dtype,
            algebra=Algebra(commutative=True, associative=True, identity=False, absorbing=True, idempotent=True))
elementwise("Xor", 2, lambda m, a, b: m.xor(a, b), out_dtype=bool_dtype,
            algebra=Algebra(commutative=True, associative=True, identity=False))
elementwise("Not", 1, lambda m, a: m.not_(a), out_dtype=bool_dtype, algebra=Algebra(involution=True))
elementwise("IsNaN", 1, lambda m, x: m.isnan(x), out_dtype=bool_dtype)
elementwise("IsInf", 1, lambda m, x, detect_negative=1, detect_positive=1:
            m.and_(m.isinf(x), m.or_(m.and_(m.const(bool(detect_positive), True), m.gt(x, m.const(0, x))),
                                      m.and_(m.const(bool(detect_negative), True), m.lt(x, m.const(0, x))))),
            out_dtype=bool_dtype, attrs={"detect_negative": AttrSpec("int", 1), "detect_positive": AttrSpec("int", 1)})
elementwise("BitwiseAnd", 2, lambda m, a, b: m.bitand(a, b), algebra=Algebra(commutative=True, associative=True, idempotent=True), since=18)
elementwise("BitwiseOr", 2, lambda m, a, b: m.bitor(a, b), algebra=Algebra(commutative=True, associative=True, idempotent=True), since=18)
elementwise("BitwiseXor", 2, lambda m, a, b: m.bitxor(a, b), algebra=Algebra(commutative=True, associative=True), since=18)
elementwise("BitwiseNot", 1, lambda m, a: m.bitnot(a), algebra=Algebra(involution=True), since=18)
elementwise("BitShift", 2, lambda m, a, b, direction="LEFT": m.shl(a, b) if direction == "LEFT" else m.shr(a, b),
            attrs={"direction": AttrSpec("string", REQUIRED)})


# ---------------------------------------------------------------------------
# Type conversion

def _cast_dtype(node, ins):
    from fusion.ir.dtypes import to_numpy
    return to_numpy(node.attrs["to"])


def _cast_scalar(m, x, to=1, saturate=1, round_mode="up"):
    from fusion.ir.dtypes import to_numpy
    dt = to_numpy(to)
    if dt.kind == "b":
        return m.ne(x, m.const(0, x))
    return m.cast(x, dt)


elementwise("Cast", 1, _cast_scalar, out_dtype=_cast_dtype, attrs={"to": AttrSpec("int", REQUIRED),
            "saturate": AttrSpec("int", 1), "round_mode": AttrSpec("string", "up")}, inputs=("input",), flops=0)
# CastLike reads only its first input; the second gives the type. Not a
# broadcasting elementwise op: the output has the first input's shape.
def _castlike_lower(node, out, read, k=0):
    to = node.inputs[1].dtype
    x = read(0, list(out))
    return E.binary("ne", x, E.Const(0, x.dtype)) if to == np.bool_ else E.cast(x, to.name)


register(OpDef(
    "CastLike", since=15, inputs=("input", "target_type"), outputs=("output",),
    attrs={"saturate": AttrSpec("int", 1), "round_mode": AttrSpec("string", "up")},
    mapping=Mapping.O2O, infer=lambda node: [(node.inputs[1].dtype, node.inputs[0].shape)],
    reference=lambda node, a: [(a[0] != 0) if a[1].dtype == np.bool_ else a[0].astype(a[1].dtype)],
    lower=_castlike_lower, category="elementwise", flops=lambda node: 0,
))
elementwise("Identity", 1, lambda m, x: x, flops=0, algebra=Algebra(idempotent=True))
