"""Graph -> ONNX ModelProto that onnx.checker accepts and onnxruntime runs.

Any intermediate graph can be exported, so onnxruntime can check every pass.
Nodes are written in the op table's normalized form, so the opset is at least
the highest `export_opset` among the ops used (and at least 18, where all
attribute-to-input moves the table assumes exist).
"""
from __future__ import annotations

import numpy as np
import onnx
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


def _attr(name: str, val, opset_graph: int | None = None):
    if isinstance(val, Graph):
        return helper.make_attribute(name, to_onnx_graph(val, opset=opset_graph))
    if isinstance(val, list) and val and isinstance(val[0], Graph):
        return helper.make_attribute(name, [to_onnx_graph(x, opset=opset_graph) for x in val])
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


def _is_default(od, k, v) -> bool:
    if od is None or k not in od.attrs:
        return False
    d = od.attrs[k].default
    try:
        return not isinstance(v, np.ndarray) and (v == d or (isinstance(d, (list, tuple)) and list(v) == list(d)))
    except Exception:
        return False


# Cast's saturate only means something for float8 targets and round_mode only for
# float8e8m0; onnxruntime refuses to load a Cast to any other type that carries them.
_FLOAT8 = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
           TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT8E8M0}


def _cast_target(n: Node):
    if n.op == "Cast":
        return n.attrs.get("to")
    v = n.inputs[1] if len(n.inputs) > 1 else None
    try:
        return dtypes.from_numpy(v.dtype) if v is not None and v.dtype is not None else None
    except Exception:
        return None


def _written_attrs(n: Node) -> dict:
    """n's attributes that can matter to a consumer of the exported model: no None
    (absent), no fusion-internal "_" annotations, no Cast flags for other targets."""
    a = {k: v for k, v in n.attrs.items() if v is not None and not k.startswith("_")}
    if n.op in ("Cast", "CastLike") and not n.domain:
        to = _cast_target(n)
        if to is not None and to not in _FLOAT8:
            a.pop("saturate", None)
        if to is not None and to != TensorProto.FLOAT8E8M0:
            a.pop("round_mode", None)
    return a


def _input_slot(schema, k: str) -> int | None:
    """Position of the schema's input named k (the attribute moved to an input:
    Reduce*/Squeeze/Unsqueeze axes, Split split, Pad pads, Clip min/max)."""
    if schema is None:
        return None
    for i, p in enumerate(schema.inputs):
        if p.name == k:
            return i
    return None


def _moved_attrs(n: Node, schema) -> dict[int, tuple[str, np.ndarray]]:
    """Attributes n holds that the export opset's schema takes as inputs instead:
    {input position: (attribute name, constant array)}. A graph built in Python (or
    by a pass) may still carry the old attribute spelling; writing it as an
    attribute would make onnx.checker and onnxruntime reject the model."""
    out = {}
    if schema is None:
        return out
    for k, v in _written_attrs(n).items():
        i = _input_slot(schema, k)
        if k in schema.attributes or i is None:
            continue
        if i < len(n.inputs) and n.inputs[i] is not None:
            continue   # the input is set already; the stale attribute is dropped below
        p = schema.inputs[i]
        allowed = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
        like = n.inputs[0].dtype if n.inputs and n.inputs[0] is not None else None
        if p.type_str == "tensor(int64)" or "tensor(int64)" in allowed.get(p.type_str, []) and \
                p.type_str != schema.inputs[0].type_str:
            dt = np.int64
        elif p.type_str == "tensor(float)":
            dt = np.float32
        else:
            dt = like if like is not None else np.float32
        out[i] = (k, np.asarray(v, dtype=dt))
    return out


def _node_attrs(n: Node, schema=None, opset: int | None = None):
    """Attributes worth writing: drop None, empty-list defaults ONNX would reject,
    default values of attributes the exported opset's schema does not know
    (Cast's round_mode at opset 21: the default is what that opset does anyway),
    and attributes the schema takes as inputs (written as initializers instead)."""
    od = n.opdef
    out = []
    for k, v in _written_attrs(n).items():
        if schema is not None and k not in schema.attributes and \
                (_is_default(od, k, v) or _input_slot(schema, k) is not None):
            continue
        if isinstance(v, list) and not v:
            if od is not None and k in od.attrs and od.attrs[k].default == []:
                continue  # empty default: omit
            kind = od.attrs[k].kind if od is not None and k in od.attrs else "ints"
            out.append(helper.make_attribute(k, [], attr_type=_attr_type(kind)))
            continue
        out.append(_attr(k, v, opset))
    return out


def _upsample_as_resize(n: Node) -> onnx.NodeProto:
    """Upsample(X, scales) is Resize with asymmetric coordinates (and floor rounding for nearest)."""
    mode = n.attrs.get("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode    # opset-7 models spell it both ways
    ins = [n.inputs[0].name, "", n.inputs[1].name if len(n.inputs) > 1 and n.inputs[1] is not None else ""]
    extra = {"nearest_mode": "floor"} if mode == "nearest" else {}
    return helper.make_node("Resize", ins, [v.name for v in n.outputs], name=n.name, mode=mode,
                            coordinate_transformation_mode="asymmetric", **extra)


def _schema(op: str, domain: str, opset: int):
    try:
        return onnx.defs.get_schema(op, opset, domain)
    except Exception:
        return None


def node_opset(n: Node, lo: int) -> int:
    """Lowest default-domain opset >= lo whose schema of n's op knows every
    attribute n sets to a non-default value (onnxruntime lags onnx: stay low)."""
    need = [k for k, v in _written_attrs(n).items() if not _is_default(n.opdef, k, v)]
    top = onnx.defs.onnx_opset_version()
    if n.op in ("Scatter", "Upsample") and not n.domain:
        return lo            # written as ScatterElements / Resize, which every opset >= 11 has
    if n.op == "Mod" and not n.attrs.get("fmod") and n.inputs[0].dtype is not None and n.inputs[0].dtype.kind == "f":
        # Floor-mod of floats is legal only from opset 28 on; no attribute says so.
        # (Better as a per-node OpDef.export_opset in the op table.)
        lo = max(lo, 28)
    for v in range(lo, top + 1):
        s = _schema(n.op, "", v)
        n_in = max([len(n.inputs)] + [i + 1 for i in _moved_attrs(n, s)]) if s is not None else 0
        if s is not None and not s.deprecated and all(k in s.attributes or _input_slot(s, k) is not None
                                                      for k in need) \
                and s.min_input <= n_in <= s.max_input and _types_allowed(s, n):
            return v
    return top


def _type_str(v: Value) -> str | None:
    if v is None or v.dtype is None:
        return None
    try:
        return "tensor(" + helper.tensor_dtype_to_string(dtypes.from_numpy(v.dtype)).split(".")[-1].lower() + ")"
    except Exception:
        return None


def _types_allowed(s, n: Node) -> bool:
    """The schema's type constraints admit n's input element types."""
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in s.type_constraints}
    for i, v in enumerate(n.inputs):
        if v is None or not s.inputs:
            continue
        p = s.inputs[min(i, len(s.inputs) - 1)]
        t = _type_str(v)
        if t is None:
            continue
        ok = t in allowed[p.type_str] if p.type_str in allowed else t == p.type_str  # a fixed type: tensor(float)
        if not ok:
            return False
    return True


def to_onnx_graph(g: Graph, *, with_value_info: bool = True, opset: int | None = None) -> onnx.GraphProto:
    nodes = []
    moved = []                      # initializers for attributes written as inputs
    taken = set(g.values)
    for n in g.nodes:
        if n.op == "Upsample" and not n.domain:
            nodes.append(_upsample_as_resize(n))  # Upsample is deprecated from opset 10 on
            continue
        op = "ScatterElements" if n.op == "Scatter" and not n.domain else n.op   # Scatter: deprecated name
        p = helper.make_node(op, [v.name if v is not None else "" for v in n.inputs],
                             [v.name for v in n.outputs], name=n.name, domain=n.domain or None)
        schema = _schema(n.op, n.domain, opset if not n.domain else g.opset.get(n.domain, 1)) if opset else None
        for i, (k, arr) in sorted(_moved_attrs(n, schema).items()):
            name, j = f"{n.name or n.outputs[0].name}_{k}", 0
            while name in taken:
                j += 1
                name = f"{n.name or n.outputs[0].name}_{k}_{j}"
            taken.add(name)
            moved.append(numpy_helper.from_array(arr, name))
            while len(p.input) <= i:
                p.input.append("")
            p.input[i] = name
        p.attribute.extend(_node_attrs(n, schema, opset))
        nodes.append(p)
    used = {}
    for n in g.nodes:
        for v in n.all_inputs():
            if v.const is not None and v.graph is g:
                used[v.name] = v
    for v in g.outputs:
        if v.const is not None:
            used[v.name] = v
    inits = [_tensor(v) for v in used.values()] + moved
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
    """The default-domain opset to declare: the lowest at which every node's
    normalized form (op table `export_opset`, its attributes) exists, and at
    least BASE_OPSET."""
    from fusion.ops import get_op
    need = BASE_OPSET

    def visit(h: Graph):
        nonlocal need
        for n in h.nodes:
            od = get_op(n.op, n.domain)
            if not n.domain:
                need = max(need, od.export_opset if od is not None else 0, node_opset(n, need))
            for sg in n.subgraphs():
                visit(sg)
    visit(g)
    return min(need, onnx.defs.onnx_opset_version())


def to_onnx(g: Graph, *, opset: int | None = None, with_value_info: bool = True) -> onnx.ModelProto:
    opset = opset or export_opset(g)
    gp = to_onnx_graph(g, with_value_info=with_value_info, opset=opset)
    ops = [helper.make_opsetid("", opset)]
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
