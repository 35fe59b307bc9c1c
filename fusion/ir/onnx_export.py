"""Graph -> ONNX ModelProto that onnx.checker accepts and onnxruntime runs.

Any intermediate graph can be exported, so onnxruntime can check every pass.
Nodes are written in the op table's normalized form, so the opset is at least
the highest `export_opset` among the ops used (and at least 18, where all
attribute-to-input moves the table assumes exist).
"""
from __future__ import annotations

import numpy as np
import onnx
import sympy
from onnx import TensorProto, helper, numpy_helper

from fusion.ir import dtypes
from fusion.ir.graph import Graph, Node, Value

BASE_OPSET = 18
# Highest opset onnxruntime runs for every op we export (ORT lags onnx).
MAX_EXPORT_OPSET = 22


def _value_info(v: Value) -> onnx.ValueInfoProto:
    shape = None
    if v.shape is not None:
        shape = [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in v.shape]
    elem = dtypes.from_numpy(v.dtype) if v.dtype is not None else TensorProto.UNDEFINED
    return helper.make_tensor_value_info(v.name, elem, shape)


def _attr(name: str, val, opset_graph):
    if isinstance(val, Graph):
        return helper.make_attribute(name, to_onnx_graph(val))
    if isinstance(val, list) and val and isinstance(val[0], Graph):
        return helper.make_attribute(name, [to_onnx_graph(x) for x in val])
    if isinstance(val, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(val))
    if isinstance(val, list) and val and isinstance(val[0], np.ndarray):
        return helper.make_attribute(name, [numpy_helper.from_array(x) for x in val])
    if isinstance(val, onnx.TypeProto):
        a = onnx.AttributeProto()
        a.name, a.type = name, onnx.AttributeProto.TYPE_PROTO
        a.tp.CopyFrom(val)
        return a
    return helper.make_attribute(name, val)


def _attr_type(spec_kind: str):
    return {"int": onnx.AttributeProto.INT, "float": onnx.AttributeProto.FLOAT,
            "string": onnx.AttributeProto.STRING, "ints": onnx.AttributeProto.INTS,
            "floats": onnx.AttributeProto.FLOATS, "strings": onnx.AttributeProto.STRINGS,
            "tensor": onnx.AttributeProto.TENSOR}.get(spec_kind)


def _node_attrs(n: Node):
    """Attributes worth writing: drop None and empty-list defaults ONNX would reject."""
    od = n.opdef
    out = []
    for k, v in n.attrs.items():
        if v is None:
            continue
        if isinstance(v, list) and not v:
            if od is not None and k in od.attrs and od.attrs[k].default == []:
                continue  # empty default: omit
            kind = od.attrs[k].kind if od is not None and k in od.attrs else "ints"
            out.append(helper.make_attribute(k, [], attr_type=_attr_type(kind)))
            continue
        if k.startswith("_"):
            continue  # fusion-internal annotations
        out.append(_attr(k, v, None))
    return out


def to_onnx_graph(g: Graph, *, with_value_info: bool = True) -> onnx.GraphProto:
    nodes = []
    for n in g.nodes:
        p = helper.make_node(n.op, [v.name if v is not None else "" for v in n.inputs],
                             [v.name for v in n.outputs], name=n.name, domain=n.domain or None)
        p.attribute.extend(_node_attrs(n))
        nodes.append(p)
    used = {}
    for n in g.nodes:
        for v in n.all_inputs():
            if v.const is not None and v.graph is g:
                used[v.name] = v
    for v in g.outputs:
        if v.const is not None:
            used[v.name] = v
    inits = [_tensor(v) for v in used.values()]
    vinfo = []
    if with_value_info:
        for n in g.nodes:
            for v in n.outputs:
                if v.dtype is not None and v.shape is not None and v not in g.outputs:
                    vinfo.append(_value_info(v))
    outputs = [_value_info(v) for v in g.outputs]
    gp = helper.make_graph(nodes, g.name or "graph", [_value_info(v) for v in g.inputs], outputs,
                           initializer=inits, value_info=vinfo)
    gp.doc_string = g.doc or ""
    return gp


def _tensor(v: Value) -> onnx.TensorProto:
    a = v.const
    if a.dtype == object:
        return helper.make_tensor(v.name, TensorProto.STRING, a.shape, [str(x).encode() for x in a.ravel()])
    return numpy_helper.from_array(a if a.flags.c_contiguous else a.copy(order="C"), v.name)


def export_opset(g: Graph) -> int:
    from fusion.ops import get_op
    need = max(BASE_OPSET, g.opset.get("", BASE_OPSET))

    def visit(h: Graph):
        nonlocal need
        for n in h.nodes:
            od = get_op(n.op, n.domain)
            if od is not None and not n.domain:
                need = max(need, od.export_opset, od.since)
            for sg in n.subgraphs():
                visit(sg)
    visit(g)
    return min(need, onnx.defs.onnx_opset_version())


def to_onnx(g: Graph, *, opset: int | None = None, with_value_info: bool = True) -> onnx.ModelProto:
    gp = to_onnx_graph(g, with_value_info=with_value_info)
    ops = [helper.make_opsetid("", opset or export_opset(g))]
    for d, v in g.opset.items():
        if d not in ("", "ai.onnx"):
            ops.append(helper.make_opsetid(d, v))
    m = helper.make_model(gp, opset_imports=ops, producer_name="fusion")
    # Keep the IR version onnxruntime accepts for this opset.
    m.ir_version = min(m.ir_version, 10)
    for k, v in g.metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    return m


def save(g: Graph, path: str, **kw) -> None:
    m = to_onnx(g, **kw)
    if m.ByteSize() > 2_000_000_000:
        onnx.save_model(m, path, save_as_external_data=True, location=path.split("/")[-1] + ".data")
    else:
        onnx.save_model(m, path)
