"""The op table: every operator described once.

An `OpDef` holds everything any pass needs to know about an op:

* ONNX identity (name, domain, first opset) and attributes with defaults;
* `normalize`: rewrites older opsets' spellings (attribute-vs-input forms)
  into the one form this table describes, at import;
* `infer`: the shape/dtype rule;
* `reference`: numpy semantics (interpreter, constant folding);
* `mapping`: DNNFusion's mapping type (declared; the planner checks it
  against the type derived from `lower`);
* `lower`: the index function + scalar computation: one output element as
  an expression over `read(i, index)` of input elements (None: opaque);
* `scalar`: for elementwise ops, the computation over a math namespace
  (numpy / sympy / expr), from which reference, lower and proofs derive;
* `flops`: the FLOP count of one application;
* `algebra`: commutative, associative, identity, absorbing element,
  idempotent, involution, distributes-over; what the rewriter reasons with.

Conventions for `lower(node, out, read, k)`: `out` is the output index (one
Expr per output dim), `k` the output number, `read(i, index)` returns input
i's element. Reductions use `expr.reduce`; data-dependent indices (Gather) are
just reads used as indices. An op whose output depends on loads in a way no
index function can say (NMS, TopK, control flow) sets lower=None: opaque.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from fusion.errors import FusionError, ShapeError


class Mapping(str, enum.Enum):
    O2O = "One-to-One"
    O2M = "One-to-Many"
    M2M = "Many-to-Many"
    REORG = "Reorganize"
    SHUFFLE = "Shuffle"
    OPAQUE = "Opaque"   # not expressible as a loop nest (NMS, TopK, control flow): never fused

    @property
    def short(self) -> str:
        return {"One-to-One": "O2O", "One-to-Many": "O2M", "Many-to-Many": "M2M",
                "Reorganize": "Reorg", "Shuffle": "Shuffle", "Opaque": "Opaque"}[self.value]


@dataclass(frozen=True)
class Algebra:
    commutative: bool = False
    associative: bool = False
    identity: Any = None          # x op e == x
    absorbing: Any = None         # x op z == z
    idempotent: bool = False      # binary: x op x == x; unary: f(f(x)) == f(x)
    involution: bool = False      # unary: f(f(x)) == x
    distributes_over: tuple[str, ...] = ()   # a*(b+c) == a*b + a*c: Mul.distributes_over = ("Add", "Sub")
    float_exact: bool = True      # False: reassociation changes float rounding


REQUIRED = object()


@dataclass(frozen=True)
class AttrSpec:
    kind: str            # int, float, string, ints, floats, strings, tensor, graph, graphs
    default: Any = None  # REQUIRED: must be given


def _ints(v):
    return [int(x) for x in v]


@dataclass
class OpDef:
    name: str
    domain: str = ""
    since: int = 1
    inputs: tuple[str, ...] = ()      # "X", "B?" optional, "inputs*" variadic
    outputs: tuple[str, ...] = ("Y",)
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    mapping: Mapping | Callable[[Any], Mapping] = Mapping.OPAQUE
    infer: Callable | None = None         # infer(node) -> [(dtype, shape), ...]
    reference: Callable | None = None     # reference(node, [arrays]) -> [arrays]
    lower: Callable | None = None         # lower(node, out_index, read, k) -> Expr
    scalar: Callable | None = None        # scalar(m, *xs) for elementwise ops
    flops: Callable = lambda node: 0
    algebra: Algebra = Algebra()
    normalize: Callable | None = None     # normalize(node, graph, opset_version) -> None
    export_opset: int = 0                 # lowest opset at which the normalized form exists
    fold: Callable | None = None          # fold(node) -> [array|None]: compile-time value from shapes alone (Shape, Size)
    needs_env: bool = False               # reference(node, args, env=...) gets the interpreter env (control flow)
    doc: str = ""
    category: str = "misc"               # elementwise, reduce, linear, shape, nn, ...

    # -- derived ----------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.name)

    @property
    def default_outputs(self) -> int:
        return len([o for o in self.outputs if not o.endswith("?") and not o.endswith("*")]) or 1

    @property
    def opaque(self) -> bool:
        return self.lower is None

    @property
    def variadic_input(self) -> bool:
        return bool(self.inputs) and self.inputs[-1].endswith("*")

    def min_inputs(self) -> int:
        return len([i for i in self.inputs if not i.endswith("?") and not i.endswith("*")])

    def max_inputs(self) -> int:
        return 10 ** 6 if self.variadic_input else len(self.inputs)

    def mapping_of(self, node) -> Mapping:
        m = self.mapping
        if not callable(m) or isinstance(m, Mapping):
            return m
        try:
            return m(node)
        except TypeError:
            # A per-node rule that counts elements cannot decide over sizes known only
            # at run time (sympy symbols); One-to-Many is the conservative class there
            # (it never fuses into a Many-to-Many consumer).
            if any(v is not None and v.shape is not None and not all(isinstance(d, int) for d in v.shape)
                   for v in list(node.inputs) + list(node.outputs)):
                return Mapping.O2M
            raise

    def fill_attrs(self, given: dict) -> dict:
        out = {}
        for k, spec in self.attrs.items():
            if k in given:
                out[k] = given[k]
            elif spec.default is REQUIRED:
                raise FusionError(f"{self.name}: required attribute '{k}' is missing")
            else:
                d = spec.default
                out[k] = list(d) if isinstance(d, (list, tuple)) else d
        for k, v in given.items():
            if k not in out:
                out[k] = v  # unknown attributes never get here: import and the builder refuse them
        return out


OPS: dict[tuple[str, str], OpDef] = {}
_DOMAIN_ALIASES = {"ai.onnx": ""}


def register(opdef: OpDef) -> OpDef:
    if opdef.key in OPS:
        raise ValueError(f"op {opdef.key} described twice")
    OPS[opdef.key] = opdef
    return opdef


def get_op(name: str, domain: str = "") -> OpDef | None:
    return OPS.get((_DOMAIN_ALIASES.get(domain, domain), name))


def all_ops() -> list[OpDef]:
    return sorted(OPS.values(), key=lambda o: (o.domain, o.name))


# ---------------------------------------------------------------------------
# Shape helpers shared by shape rules

def broadcast_shapes(*shapes: Sequence, who: str = "") -> tuple:
    """Numpy (multidirectional) broadcasting, allowing symbolic dims."""
    r = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(r):
        dims = [s[len(s) - r + k] for s in shapes if len(s) - r + k >= 0]
        cur = 1
        for d in dims:
            if _eq(d, 1):
                continue
            if _eq(cur, 1):
                cur = d
            elif not _eq(cur, d):
                if isinstance(cur, int) and isinstance(d, int):
                    raise ShapeError(f"{who}shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")
                # symbolic: assume equal (the user binds them later)
        out.append(cur)
    return tuple(out)


def _eq(a, b) -> bool:
    try:
        return bool(a == b)
    except TypeError:
        return False


def norm_axis(axis: int, rank: int, node=None) -> int:
    a = int(axis)
    if a < -rank or a >= max(rank, 1):
        where = f"{node.label()}: " if node is not None else ""
        raise ShapeError(f"{where}axis {axis} is out of range for rank {rank}")
    return a + rank if a < 0 else a


def prod(xs) -> Any:
    p = 1
    for x in xs:
        p = p * x
    return p


def const_input(node, i: int, what: str = "") -> np.ndarray | None:
    """Compile-time value of input i (constant or known from shape inference)."""
    v = node.input(i)
    if v is None:
        return None
    return v.value


def require_const(node, i: int, what: str) -> np.ndarray:
    a = const_input(node, i)
    if a is None:
        v = node.input(i)
        raise ShapeError(f"{node.label()}: input {i} ('{what}', value '{v.name if v else '?'}') must be known "
                         f"at compile time to resolve shapes; bind the model's open dimensions with --shape")
    return a


def out_like(node, i: int = 0):
    v = node.inputs[i]
    return [(v.dtype, v.shape)]


# ---------------------------------------------------------------------------
# Helpers shared by op modules

def attr_to_input(node, graph, attr: str, index: int, dtype=np.int64, name: str = "") -> None:
    """Older opsets' attribute form -> the input form this table describes:
    attribute `attr` becomes constant input `index` (absent stays absent)."""
    val = node.attrs.pop(attr, None)
    if val is None:
        return
    while len(node.inputs) <= index:
        node.inputs.append(None)
    # always 1-D: the input forms are vectors (TopK's K too: shape [1])
    graph.set_input(node, index, graph.const(np.atleast_1d(np.array(val, dtype=dtype)), name or attr))


def same_shape_or(mapping: Mapping):
    """Class function: One-to-One when output 0 has input 0's shape, else `mapping`
    (a Reshape/Squeeze/Flatten that changes nothing is a plain copy)."""
    def f(node):
        x, y = node.inputs[0], node.outputs[0]
        return Mapping.O2O if tuple(x.shape) == tuple(y.shape) or empty_outputs(node) else mapping
    return f


def empty_outputs(node) -> bool:
    """Every output has no elements: nothing is read, a (trivial) One-to-One."""
    try:
        return all(int(prod(v.shape)) == 0 for v in node.outputs)
    except TypeError:   # symbolic sizes
        return False


def static_ints(shape) -> list[int]:
    return [int(d) for d in shape]


def open_dims(node, rank: int, what: str = "d") -> tuple:
    """Symbolic dims for an output whose shape depends on run-time values (a
    shape-like input that is not a constant): the interpreter computes it; the
    node stays static when onnx's own inference already knew the shape."""
    import sympy
    return tuple(sympy.Symbol(f"{node.name}_{what}{i}", integer=True, nonnegative=True) for i in range(int(rank)))


def vec(a) -> list[int]:
    """A small integer tensor (run-time argument) as a list of ints."""
    return [int(v) for v in np.asarray(a).reshape(-1)]


def reduction_class(node, extent) -> Mapping:
    """Class of an anchor (MatMul, Conv, ...) whose reduction has `extent` terms:
    with one term nothing is summed; it is then a scaled broadcast (outer
    product, 1x1 single-channel conv) or a plain elementwise product."""
    try:
        if int(extent) > 1:
            return Mapping.M2M
        out = int(prod(node.outputs[0].shape))
        if any(v is not None and int(prod(v.shape)) < out for v in node.inputs):
            return Mapping.O2M
        return Mapping.O2O
    except TypeError:  # symbolic dims
        return Mapping.M2M
