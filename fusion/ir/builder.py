"""GraphBuilder: write graphs in Python with one method per op of the op table.

    b = GraphBuilder("mlp")
    x = b.input("x", "float32", [1, 64])
    y = b.relu(b.add(b.matmul(x, w), bias))
    b.output(y)
    g = b.build()

Methods are not written per op: any op table entry is reachable by its
snake_case name (`b.reduce_sum`, `b.batch_normalization`, `b.conv`) or by
`b.op("Name", ...)`. Arrays and Python scalars become constants; a scalar
takes the dtype of the first tensor operand.
"""
from __future__ import annotations

import re

import numpy as np

from fusion.errors import FusionError
from fusion.ir.graph import Graph, Value


def snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def _method_map() -> dict[str, tuple[str, str]]:
    from fusion.ops import all_ops
    out = {}
    for od in all_ops():
        out.setdefault(snake(od.name), (od.name, od.domain))
        out.setdefault(od.name.lower(), (od.name, od.domain))
    return out


class GraphBuilder:
    def __init__(self, name: str = "graph", opset: int = 21):
        self.graph = Graph(name, {"": opset})
        self._methods = _method_map()

    def input(self, name: str, dtype, shape) -> Value:
        return self.graph.add_input(name, np.dtype(dtype), tuple(shape))

    def const(self, array, name: str = "", dtype=None) -> Value:
        return self.graph.const(np.asarray(array, dtype=dtype), name)

    def output(self, *values: Value, names: list[str] | None = None) -> None:
        for k, v in enumerate(values):
            if names:
                self._rename(v, names[k])
            self.graph.outputs.append(v)

    def _rename(self, v: Value, name: str) -> None:
        g = self.graph
        if name in g.values and g.values[name] is not v:
            raise FusionError(f"value name '{name}' is already used")
        g.values.pop(v.name, None)
        v.name = name
        g.values[name] = v

    def op(self, op_type: str, *inputs, domain: str = "", outputs: int | None = None, name: str = "", **attrs):
        dtype = next((v.dtype for v in inputs if isinstance(v, Value)), np.dtype(np.float32))
        vals = []
        for x in inputs:
            if x is None or isinstance(x, Value):
                vals.append(x)
            elif isinstance(x, np.ndarray):
                vals.append(self.graph.const(x))
            elif isinstance(x, (list, tuple)):
                vals.append(self.graph.const(np.asarray(x, dtype=np.int64)))
            else:
                vals.append(self.graph.const(np.asarray(x, dtype=dtype)))
        node = self.graph.add_node(op_type, vals, attrs, n_outputs=outputs, name=name, domain=domain)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        methods = self.__dict__.get("_methods") or {}
        if attr not in methods:
            raise AttributeError(f"GraphBuilder has no op '{attr}' (see `fusion ops` for the op table)")
        op_type, domain = methods[attr]

        def call(*inputs, **attrs):
            return self.op(op_type, *inputs, domain=domain, **attrs)
        call.__name__ = attr
        call.__doc__ = f"Add a {op_type} node (see the op table)."
        return call

    def __dir__(self):
        return list(super().__dir__()) + list(self._methods)

    def build(self, verify: bool = True) -> Graph:
        if verify:
            self.graph.verify()
        return self.graph
