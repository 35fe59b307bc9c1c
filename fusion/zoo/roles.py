"""What each learned tensor is, read off the graph, and how to fill it.

A stripped initializer gets a `Recipe` from how the graph uses it: a Conv or
MatMul weight is He-normal over its fan-in, a bias is small, BatchNorm's
running variance is positive, LayerNorm's gamma is near 1, an embedding table
is N(0, 0.02). Two structural rules keep deep random networks healthy:

* residual branches: a layer whose output (through its bias / BatchNorm)
  meets another activation in an Add is scaled down, so that a stack of
  residual blocks does not double its variance per block (torchvision's
  zero_init_residual idea, softened so the branch still contributes);
* decision heads: the last learned layer before a Sigmoid/Softmax/Exp whose
  result reaches a decision (NonMaxSuppression, TopK, a comparison) starts
  small, so scores sit in the sigmoid's linear range with distinct values: a
  saturated score of exactly 1.0 would make box selection depend on
  summation order (optimized vs unoptimized onnxruntime pick different boxes).
  A layer feeding Exp (box-size decoding) is a head too: exp of a large
  random logit overflows.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

HE_GAIN = 2.0          # variance gain for layers followed by ReLU-like activations
RESIDUAL_GAIN = 0.25   # variance gain of the last layer of a residual branch
HEAD_GAIN = 0.01       # variance gain of a decision head (scores / box deltas)
BIAS_STD = 0.02
EMBED_STD = 0.02

# Ops a tensor passes through unchanged in meaning (layout, selection, bias, BN)
# when looking downstream from a layer for its residual Add or its head activation.
_THROUGH = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Slice", "Split",
            "Identity", "Cast", "Gather", "BatchNormalization", "Add", "Sub", "Expand", "Tile"}
_SQUASH = {"Sigmoid", "Softmax", "LogSoftmax", "Exp"}
_DECISION = {"NonMaxSuppression", "TopK", "ArgMax", "ArgMin", "Greater", "Less", "GreaterOrEqual",
             "LessOrEqual", "NonZero"}
_LAYERS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


@dataclass(frozen=True)
class Recipe:
    kind: str            # "normal" | "uniform"
    a: float             # normal: mean; uniform: low
    b: float             # normal: std;  uniform: high
    role: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "a": self.a, "b": self.b, "role": self.role}


def _normal(mean, std, role):
    return Recipe("normal", float(mean), float(std), role)


def _uniform(lo, hi, role):
    return Recipe("uniform", float(lo), float(hi), role)


class _Uses:
    """Consumers of every value in a graph and its subgraphs."""

    def __init__(self, graph: onnx.GraphProto):
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        self.producer: dict[str, onnx.NodeProto] = {}
        self._visit(graph)

    def _visit(self, g: onnx.GraphProto):
        for n in g.node:
            for i, name in enumerate(n.input):
                if name:
                    self.consumers[name].append((n, i))
            for o in n.output:
                self.producer[o] = n
            for a in n.attribute:
                if a.HasField("g"):
                    self._visit(a.g)
                for sg in a.graphs:
                    self._visit(sg)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _downstream(uses: _Uses, value: str, depth: int):
    """Nodes reached from `value` through _THROUGH ops (the first non-through node ends a path)."""
    seen, frontier, out = set(), [value], []
    for _ in range(depth):
        nxt = []
        for v in frontier:
            for n, _i in uses.consumers.get(v, []):
                if id(n) in seen:
                    continue
                seen.add(id(n))
                out.append(n)
                if n.op_type in _THROUGH:
                    nxt.extend(o for o in n.output if o)
        frontier = nxt
    return out


def _reaches(uses: _Uses, value: str, targets: set, depth: int) -> bool:
    seen, frontier = set(), [value]
    for _ in range(depth):
        nxt = []
        for v in frontier:
            for n, _i in uses.consumers.get(v, []):
                if n.op_type in targets:
                    return True
                if id(n) not in seen:
                    seen.add(id(n))
                    nxt.extend(o for o in n.output if o)
        frontier = nxt
        if not frontier:
            break
    return False


def _is_activation(uses: _Uses, name: str, consts: set) -> bool:
    return bool(name) and name not in consts and name in uses.producer


def _layer_gain(uses: _Uses, layer: onnx.NodeProto, consts: set) -> tuple[float, str]:
    out = layer.output[0]
    reached = _downstream(uses, out, depth=6)
    for n in reached:
        if n.op_type in _SQUASH:
            # Exp decodes box sizes: large inputs overflow whatever follows.
            if n.op_type == "Exp" or _reaches(uses, n.output[0], _DECISION, depth=40):
                return HEAD_GAIN, "head"
    # A residual Add: an Add reached through bias/BN whose two inputs are both activations
    # computed by different paths.
    for n in _downstream(uses, out, depth=3):
        if n.op_type == "Add" and len(n.input) == 2 and all(_is_activation(uses, x, consts) for x in n.input):
            p0, p1 = uses.producer.get(n.input[0]), uses.producer.get(n.input[1])
            if p0 is not None and p1 is not None and (p0.op_type in _LAYERS | {"BatchNormalization", "Add"}
                                                      or p1.op_type in _LAYERS | {"BatchNormalization", "Add"}):
                return RESIDUAL_GAIN, "residual"
    return HE_GAIN, ""


def _through_layout(uses: _Uses, name: str, shape: list[int]):
    """Follow a weight through Transpose/Identity/Cast to the op that uses it; yields (node, input, shape)."""
    for n, i in uses.consumers.get(name, []):
        if n.op_type in ("Identity", "Cast"):
            yield from _through_layout(uses, n.output[0], shape)
        elif n.op_type == "Transpose":
            perm = _attr(n, "perm") or list(reversed(range(len(shape))))
            yield from _through_layout(uses, n.output[0], [shape[p] for p in perm])
        else:
            yield n, i, shape


def plan_recipes(model: onnx.ModelProto, names: list[str]) -> dict[str, Recipe]:
    """A Recipe for each named initializer of `model` (the stripped ones)."""
    g = model.graph
    uses = _Uses(g)
    inits = {t.name: t for t in g.initializer}
    consts = set(inits) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    out = {}
    for name in names:
        shape = [int(d) for d in inits[name].dims]
        out[name] = _recipe(uses, name, shape, consts)
    return out


def _fan_in_layer(n, i, shape) -> int | None:
    op = n.op_type
    if op == "Conv" and i == 1:
        return int(np.prod(shape[1:]))
    if op == "ConvTranspose" and i == 1:
        strides = _attr(n, "strides") or [1] * (len(shape) - 2)
        return max(1, int(shape[0] * np.prod(shape[2:]) // max(1, int(np.prod(strides)))))
    if op == "MatMul":
        return shape[-2] if i == 1 and len(shape) >= 2 else shape[-1]
    if op == "Gemm" and i in (0, 1):
        trans = _attr(n, "transB" if i == 1 else "transA", 0)
        k_axis = (1 if trans else 0) if i == 1 else (0 if trans else 1)
        return shape[k_axis] if len(shape) == 2 else None
    return None


def _recipe(uses: _Uses, name: str, shape: list[int], consts: set) -> Recipe:
    for n, i, sh in _through_layout(uses, name, shape):
        op = n.op_type
        fan_in = _fan_in_layer(n, i, sh)
        if fan_in:
            gain, why = _layer_gain(uses, n, consts)
            role = f"{op.lower()} weight" + (f" ({why})" if why else "")
            return _normal(0.0, np.sqrt(gain / fan_in), role)
        if op in ("Conv", "ConvTranspose", "Gemm") and i == 2:
            gain, why = _layer_gain(uses, n, consts)
            return _normal(0.0, 0.0 if why == "head" else BIAS_STD, f"{op.lower()} bias")
        if op == "BatchNormalization":
            role = {1: "bn gamma", 2: "bn beta", 3: "bn mean", 4: "bn var"}.get(i)
            if i == 4:
                return _uniform(0.5, 1.5, role)
            if i == 1:
                return _uniform(0.8, 1.2, role)
            if i in (2, 3):
                return _normal(0.0, 0.05, role)
        if op in ("LayerNormalization", "SkipLayerNormalization", "InstanceNormalization",
                  "GroupNormalization"):
            if i == 1:
                return _normal(1.0, 0.02, "norm gamma")
            if i == 2:
                return _normal(0.0, 0.02, "norm beta")
        if op == "Gather" and i == 0:
            return _normal(0.0, EMBED_STD, "embedding")
        if op in ("Add", "Sub"):
            other = n.input[1 - i] if len(n.input) == 2 else ""
            p = uses.producer.get(other)
            gain, why = _layer_gain(uses, p, consts) if p is not None and p.op_type in _LAYERS else (0, "")
            return _normal(0.0, 0.0 if why == "head" else BIAS_STD, "bias")
        if op in ("Mul", "Div"):
            return _normal(1.0, 0.02, "scale")
        if op == "PRelu" and i == 1:
            return _uniform(0.05, 0.3, "prelu slope")
    return _normal(0.0, EMBED_STD, "other")
