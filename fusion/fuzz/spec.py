"""GraphSpec: a random test graph as plain data (nodes, inputs, constants,
outputs, and the shape of every value), which the generator writes, the
shrinker edits and `to_model` turns into ONNX. Several specs merge into one
model under name prefixes so one compiled library checks many graphs."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 21


@dataclass
class NodeSpec:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class GraphSpec:
    seed: int = 0
    inputs: list[str] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    nodes: list[NodeSpec] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    shapes: dict[str, tuple] = field(default_factory=dict)   # every value's shape (all float32 unless in dtypes)
    dtypes: dict[str, int] = field(default_factory=dict)     # ONNX elem type of non-float values

    def copy(self) -> "GraphSpec":
        return copy.deepcopy(self)

    def dtype(self, name: str) -> int:
        return self.dtypes.get(name, onnx.TensorProto.FLOAT)

    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    def prune(self) -> "GraphSpec":
        """Drop nodes, inputs and constants no output depends on."""
        live = set(self.outputs)
        keep = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                keep.append(n)
                live.update(i for i in n.inputs if i)
        self.nodes = keep[::-1]
        self.inputs = [i for i in self.inputs if i in live]
        self.consts = {k: v for k, v in self.consts.items() if k in live}
        return self

    # -- ONNX ---------------------------------------------------------------
    def onnx_parts(self, prefix: str = ""):
        p = lambda n: (prefix + n) if n else ""   # noqa: E731  (optional inputs stay "")
        vi = lambda n: helper.make_tensor_value_info(p(n), self.dtype(n), list(self.shapes[n]))  # noqa: E731
        nodes = [helper.make_node(n.op, [p(i) for i in n.inputs], [p(o) for o in n.outputs],
                                  name=p(f"n{k}_{n.op}"), **n.attrs) for k, n in enumerate(self.nodes)]
        inits = [numpy_helper.from_array(v, p(k)) for k, v in self.consts.items()]
        return nodes, [vi(i) for i in self.inputs], [vi(o) for o in self.outputs], inits

    def to_model(self) -> onnx.ModelProto:
        return merge([self], prefixes=[""])

    def random_feeds(self, prefix: str = "") -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed + 7919)
        return {prefix + i: rng.standard_normal(self.shapes[i]).astype(np.float32) for i in self.inputs}


def merge(specs: list[GraphSpec], prefixes: list[str] | None = None) -> onnx.ModelProto:
    prefixes = prefixes if prefixes is not None else [f"g{k}_" for k in range(len(specs))]
    nodes, ins, outs, inits = [], [], [], []
    for s, pre in zip(specs, prefixes):
        a, b, c, d = s.onnx_parts(pre)
        nodes += a
        ins += b
        outs += c
        inits += d
    g = helper.make_graph(nodes, "fuzz", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fusion.fuzz")
    m.ir_version = 10
    return m
