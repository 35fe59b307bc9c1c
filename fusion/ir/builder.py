"""GraphBuilder: write graphs in Python with one method per op of the op table.

    b = GraphBuilder("mlp")
    x = b.input("x", "float32", [1, 64])
    y = b.relu(b.add(b.matmul(x, w), bias))
    b.output(y)
    g = b.build()

Methods are not written per op: any op table entry is reachable by its
snake_case name (`b.reduce_sum`, `b.batch_normalization`, `b.conv`) or by
`b.op("Name", ...)`. Arrays and Python scalars become constants; a scalar
takes the dtype of the first tensor operand. An attribute of an older opset
that is an input in the op table (`b.reduce_sum(x, axes=[1])`, Squeeze axes,
Split split, Pad pads, Clip min/max, Resize scales) becomes that input; any
other attribute the op does not define is an error.
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
        from fusion.ops import get_op
        od = get_op(op_type, domain)
        if od is not None:
            inputs, attrs = self._attrs_to_inputs(od, list(inputs), attrs)
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
        node = self.graph.add_node(op_type, vals, attrs, n_outputs=outputs, name=name, domain=domain, infer=False)
        if od is not None:
            from fusion.ir.shape_infer import infer_node
            from fusion.ops.pool import check_window_node
            check_window_node(node)   # before the shape rule, which would divide by a zero stride
            infer_node(node)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def _attrs_to_inputs(self, od, inputs: list, attrs: dict) -> tuple[list, dict]:
        """The graph holds each op in the op table's form (the newest opset's), where
        many old attributes are inputs (ReduceSum/Squeeze/Unsqueeze axes, Split split,
        Pad pads, Clip min/max, Resize scales, TopK k, ...). Such an attribute becomes
        that input; kept as an attribute it would be ignored (ReduceSum would reduce
        every axis). Any other attribute the op does not define is refused."""
        slots = {n.rstrip("?*").lower(): i for i, n in enumerate(od.inputs)}
        kept = {}
        for k, v in attrs.items():
            if k in od.attrs:
                kept[k] = v
                continue
            i = slots.get(k.lower())
            if i is None or (od.variadic_input and i == len(od.inputs) - 1):
                ins = ", ".join(n.rstrip("?*") for n in od.inputs) or "none"
                raise FusionError(f"GraphBuilder: {od.name} has no attribute '{k}' (attributes: "
                                  f"{', '.join(sorted(od.attrs)) or 'none'}; inputs: {ins})")
            if i < len(inputs) and inputs[i] is not None:
                raise FusionError(f"GraphBuilder: {od.name} got '{k}' both as input {i} and as an attribute")
            if v is None:
                continue
            first = inputs[0] if inputs and isinstance(inputs[0], Value) else None
            dt = self._input_dtype(od, od.inputs[i].rstrip("?*"), v, first)
            inputs.extend([None] * (i + 1 - len(inputs)))
            inputs[i] = self.graph.const(np.asarray(v, dtype=dt), k)
        return inputs, kept

    def _input_dtype(self, od, formal: str, value, first: Value | None) -> np.dtype:
        """The dtype onnx's schema gives the input `formal` at this graph's opset:
        a fixed type (axes: int64), the type of input 0 (Clip min/max, Pad's
        constant_value), or the constraint's type that fits the Python value."""
        import onnx
        from fusion.ir import dtypes
        is_int = np.asarray(value).dtype.kind in "iub"
        try:
            schema = onnx.defs.get_schema(od.name, self.graph.opset.get(od.domain, 21), od.domain)
            params = {p.name.lower(): p.type_str for p in schema.inputs}
            ts = params[formal.lower()]
        except Exception:   # no schema at this opset: by the value
            return np.dtype(np.int64) if is_int else (first.dtype if first is not None and first.dtype.kind == "f"
                                                      else np.dtype(np.float32))
        if first is not None and schema.inputs and ts == schema.inputs[0].type_str:
            return first.dtype
        allowed = [ts] if ts.startswith("tensor(") else next(
            (list(c.allowed_type_strs) for c in schema.type_constraints if c.type_param_str == ts), [])
        for want in (("tensor(int64)", "tensor(int32)") if is_int else ("tensor(float)", "tensor(double)")):
            if want in allowed:
                return np.dtype(np.int64 if want == "tensor(int64)" else np.int32 if want == "tensor(int32)"
                                else np.float32 if want == "tensor(float)" else np.float64)
        for t in allowed:
            try:
                return np.dtype(dtypes.to_numpy(getattr(onnx.TensorProto, t[len("tensor("):-1].upper())))
            except Exception:
                continue
        return np.dtype(np.int64) if is_int else np.dtype(np.float32)

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
