"""ONNX -> Graph.

Steps: read the file (clear errors for missing / non-ONNX / truncated files),
load external data (refusing paths outside the model's folder), inline
model-local functions (onnx.inliner), bind the user's shapes, run onnx's shape
inference, then build the Graph node by node: an attribute the op does not
define at the model's opset (onnx's schema, or the op table's) is refused, as
onnx.checker and onnxruntime do; each node's attributes are normalized by its
op's `normalize` and filled with defaults; sliding-window geometry (strides,
kernel_shape, dilations, pads) is checked; and outputs that onnx left without
a complete type get one from the op table's shape rule.
"""
from __future__ import annotations

import functools
import os
import stat
from typing import Mapping as TMapping, Sequence

import numpy as np
import onnx
import sympy
from onnx import AttributeProto, TensorProto, numpy_helper

from fusion.errors import FusionError, ModelFileError, ShapeError, UnsupportedOpError
from fusion.ir.graph import Graph, Node, Value
from fusion.ir import dtypes

# Opsets 1-6 spell few ops differently from 7 and each op's `normalize`
# handles its own old forms, so they are accepted too.
MIN_OPSET = 1


def max_opset() -> int:
    return onnx.defs.onnx_opset_version()


# ---------------------------------------------------------------------------
# Reading

def read_model(path: str) -> onnx.ModelProto:
    """Parse an ONNX file without its external data, with user-facing errors."""
    if not isinstance(path, (str, os.PathLike)):
        raise ModelFileError(f"expected a path to an .onnx file, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, not an ONNX file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read: {e.strerror}") from e
    return parse_model(data, path)


def parse_model(data: bytes, where: str = "<bytes>") -> onnx.ModelProto:
    if not data:
        raise ModelFileError(f"{where}: empty file, not an ONNX model")
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as e:  # protobuf DecodeError and friends
        # An ONNX file starts with field 1 (ir_version, tag byte 0x08): if it does,
        # the file was an ONNX model that got cut or damaged.
        if data[:1] == b"\x08":
            raise ModelFileError(f"{where}: truncated or corrupted ONNX file ({len(data)} bytes); "
                                 f"download or export it again") from None
        raise ModelFileError(f"{where}: not an ONNX model (cannot parse it as an ONNX ModelProto)") from None
    if not m.HasField("graph") or (not m.opset_import and m.ir_version == 0):
        raise ModelFileError(f"{where}: not an ONNX model (no graph or opset information)")
    # A message cut at a field boundary parses; catch what it leaves out.
    g = m.graph
    if len(data) > 16 and not g.node and not g.output:
        raise ModelFileError(f"{where}: the model has no nodes and no outputs (truncated file?)")
    return m


def load_external_data(model: onnx.ModelProto, base_dir: str | None, where: str) -> None:
    """Fill externally stored tensors, refusing locations outside base_dir."""
    tensors = list(_all_tensors(model))
    ext = [t for t in tensors if t.data_location == TensorProto.EXTERNAL]
    if not ext:
        return
    if base_dir is None:
        raise ModelFileError(f"{where}: the model keeps tensors in external files; load it from its path, not from bytes")
    root = os.path.realpath(base_dir)
    for t in ext:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if not loc:
            raise ModelFileError(f"{where}: initializer '{t.name}' is external but names no file")
        if os.path.isabs(loc):
            raise ModelFileError(f"{where}: initializer '{t.name}' points at an absolute path '{loc}'; "
                                 f"external data must live in the model's folder")
        full = os.path.realpath(os.path.join(root, loc))
        if os.path.commonpath([full, root]) != root:
            raise ModelFileError(f"{where}: initializer '{t.name}' points outside the model's folder ('{loc}'); refusing to read it")
        if not os.path.exists(full):
            raise ModelFileError(f"{where}: external data file '{loc}' for initializer '{t.name}' is missing")
        st = os.stat(full)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{where}: external data '{loc}' for initializer '{t.name}' is not a regular file")
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        elem = _elem_size(t)
        want = int(np.prod(t.dims, dtype=np.int64)) * elem if elem else None
        n = int(length) if length else (want if want is not None else st.st_size - offset)
        if offset < 0 or offset + n > st.st_size:
            raise ModelFileError(f"{where}: external data for '{t.name}' ({n} bytes at offset {offset}) runs past the end of '{loc}'")
        if want is not None and n != want:
            raise ModelFileError(f"{where}: external data for '{t.name}' has {n} bytes, its shape needs {want}")
        with open(full, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(n)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def _elem_size(t: TensorProto) -> int | None:
    try:
        return dtypes.to_numpy(t.data_type).itemsize
    except Exception:
        return None


def _all_tensors(model: onnx.ModelProto):
    def from_graph(g):
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    yield from from_graph(a.g)
                for sg in a.graphs:
                    yield from from_graph(sg)
    yield from from_graph(model.graph)


# ---------------------------------------------------------------------------
# Shapes the user binds

def bind_shapes(model: onnx.ModelProto, shapes: TMapping[str, Sequence[int] | int] | None, where: str) -> None:
    """Apply {input_name: dims} and {dim_param: int} bindings to graph inputs."""
    if not shapes:
        return
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = {i.name: i for i in g.input if i.name not in inits}
    params = set()
    for i in inputs.values():
        for d in i.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                params.add(d.dim_param)
    by_param = {}
    for k, v in shapes.items():
        if k in inputs:
            dims = [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
            t = inputs[k].type.tensor_type
            if t.HasField("shape") and len(t.shape.dim) != len(dims):
                raise ShapeError(f"{where}: input '{k}' has rank {len(t.shape.dim)}, --shape gave {len(dims)} dims ({'x'.join(map(str, dims))})")
            for j, d in enumerate(dims):
                if d < 0:
                    raise ShapeError(f"{where}: --shape {k}: dimension {j} must not be negative, got {d}")
                if t.HasField("shape") and t.shape.dim[j].HasField("dim_value") and t.shape.dim[j].dim_value != d:
                    raise ShapeError(f"{where}: input '{k}' has fixed dim {j} = {t.shape.dim[j].dim_value}, --shape gave {d}")
            t.shape.Clear()
            for d in dims:
                t.shape.dim.add().dim_value = d
        elif k in params:
            by_param[k] = int(v if not isinstance(v, (list, tuple)) else v[0])
        else:
            raise ShapeError(f"{where}: --shape names '{k}', which is neither an input ({', '.join(inputs) or 'none'}) "
                             f"nor a named dimension ({', '.join(sorted(params)) or 'none'})")
    if by_param:
        for i in inputs.values():
            for d in i.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in by_param:
                    d.dim_value = by_param[d.dim_param]


# ---------------------------------------------------------------------------
# Attributes

def attr_value(a: AttributeProto, import_graph, where: str):
    t = a.type
    if t == AttributeProto.INT:
        return int(a.i)
    if t == AttributeProto.FLOAT:
        return float(a.f)
    if t == AttributeProto.STRING:
        return a.s.decode("utf-8", errors="replace")
    if t == AttributeProto.INTS:
        return [int(x) for x in a.ints]
    if t == AttributeProto.FLOATS:
        return [float(x) for x in a.floats]
    if t == AttributeProto.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if t == AttributeProto.TENSOR:
        return tensor_to_numpy(a.t, where)
    if t == AttributeProto.TENSORS:
        return [tensor_to_numpy(x, where) for x in a.tensors]
    if t == AttributeProto.GRAPH:
        return import_graph(a.g)
    if t == AttributeProto.GRAPHS:
        return [import_graph(g) for g in a.graphs]
    if t == AttributeProto.SPARSE_TENSOR:
        raise UnsupportedOpError(f"{where}: sparse tensor attributes are not supported")
    if t == AttributeProto.TYPE_PROTO:
        return a.tp
    # Untyped attribute from an old exporter: guess by which field is set.
    for field, conv in (("i", int), ("f", float), ("s", lambda s: s.decode()), ("t", None)):
        if a.HasField(field):
            return tensor_to_numpy(a.t, where) if field == "t" else conv(getattr(a, field))
    if a.ints:
        return list(a.ints)
    if a.floats:
        return list(a.floats)
    raise FusionError(f"{where}: attribute '{a.name}' has no value")


def tensor_to_numpy(t: TensorProto, where: str) -> np.ndarray:
    if t.data_type == TensorProto.BFLOAT16:
        raise UnsupportedOpError(f"{where}: tensor '{t.name}' is bfloat16, which fusion does not support; convert the model to float32")
    if t.data_type == TensorProto.STRING:
        return np.array([s for s in t.string_data], dtype=object).reshape(tuple(t.dims))
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelFileError(f"{where}: tensor '{t.name}' is malformed: {e}") from None
    if a.dtype.kind not in "fiub" and a.dtype != object:
        raise UnsupportedOpError(f"{where}: tensor '{t.name}' has element type {a.dtype}, not supported")
    return a if a.flags.c_contiguous else a.copy(order="C")  # ascontiguousarray would make a 0-d tensor 1-d


def _dim(d, fresh) -> int | sympy.Symbol:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        return sympy.Symbol(d.dim_param, integer=True, positive=True)
    return fresh()


def _type_of(tp: onnx.TypeProto, fresh):
    if not tp.HasField("tensor_type"):
        return None, None
    tt = tp.tensor_type
    dt = None
    if tt.elem_type:
        try:
            dt = dtypes.to_numpy(tt.elem_type)
        except Exception:
            dt = None
    shape = tuple(_dim(d, fresh) for d in tt.shape.dim) if tt.HasField("shape") else None
    return dt, shape


# ---------------------------------------------------------------------------
# Graph building

class _Importer:
    def __init__(self, model: onnx.ModelProto, where: str):
        self.model = model
        self.where = where
        self.opsets = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in model.opset_import}
        self.n_fresh = 0

    def fresh(self):
        self.n_fresh += 1
        return sympy.Symbol(f"unk{self.n_fresh}", integer=True, positive=True)

    def check_opset(self):
        v = self.opsets.get("")
        if v is None:
            # Legal when every node is in another domain (ai.onnx.preview.training, ...).
            if any(n.domain in ("", "ai.onnx") for n in self.model.graph.node):
                raise UnsupportedOpError(f"{self.where}: the model declares no ONNX opset (opset_import has no default "
                                         f"domain) but uses ONNX ops")
            self.opsets[""] = v = max_opset()
        if v < MIN_OPSET or v > max_opset():
            raise UnsupportedOpError(f"{self.where}: model uses ONNX opset {v}; fusion supports opsets "
                                     f"{MIN_OPSET} to {max_opset()} (convert with onnx.version_converter)")

    def build(self, gp: onnx.GraphProto, parent: Graph | None, types: dict) -> Graph:
        g = Graph(gp.name or "graph", {d: v for d, v in self.opsets.items()})
        g.parent = parent
        g.doc = gp.doc_string
        where = self.where
        inits = {}
        for t in gp.initializer:
            if not t.name:
                raise ModelFileError(f"{where}: an initializer has no name")
            if t.name in inits:
                raise ModelFileError(f"{where}: initializer '{t.name}' is defined twice")
            inits[t.name] = t
        for vi in gp.input:
            if vi.name in inits:
                continue  # old IR: initializers listed as inputs act as constants
            if vi.name in g.values:
                raise ModelFileError(f"{where}: graph input '{vi.name}' is declared twice")
            tp = vi.type
            if parent is not None and tp.WhichOneof("value") is None:
                # A subgraph input may leave its type to the enclosing op (Loop/Scan bodies).
                tp = types.get(vi.name, tp)
                if tp.WhichOneof("value") is None:
                    g.add_input(vi.name, None, None)
                    continue
            dt, shape = _type_of(tp, self.fresh)
            if dt is None and tp.HasField("tensor_type"):
                raise UnsupportedOpError(f"{where}: input '{vi.name}' has an unsupported element type")
            if not tp.HasField("tensor_type"):
                raise UnsupportedOpError(f"{where}: input '{vi.name}' is not a tensor (sequences/maps are not supported)")
            g.add_input(vi.name, dt, shape if shape is not None else ())
        for name, t in inits.items():
            a = tensor_to_numpy(t, where)
            v = Value(name, a.dtype, a.shape, const=a)
            v.graph = g
            g.values[name] = v
        for k, n in enumerate(gp.node):
            self.add(g, n, k, types)
        for vo in gp.output:
            v = g.lookup(vo.name)
            if v is None:
                raise ModelFileError(f"{where}: graph output '{vo.name}' is never computed (missing node or initializer?)")
            if v.dtype is None or v.shape is None:
                dt, shape = _type_of(vo.type, self.fresh)
                v.dtype = v.dtype if v.dtype is not None else dt
                v.shape = v.shape if v.shape is not None else shape
            g.outputs.append(v)
        return g

    def add(self, g: Graph, n: onnx.NodeProto, k: int, types: dict) -> None:
        from fusion.ops import get_op
        from fusion.ir.shape_infer import infer_node
        from fusion.ops.pool import check_window_node
        domain = "" if n.domain in ("", "ai.onnx") else n.domain
        label = f"node '{n.name or f'#{k}'}' ({n.op_type})"
        where = f"{self.where}: {label}"
        opset = self.opsets.get(domain)
        if domain and opset is None:
            raise UnsupportedOpError(f"{where}: domain '{domain}' is not declared in the model's opset_import")
        # Constant nodes become constant Values.
        if n.op_type == "Constant" and domain == "":
            if len(n.output) != 1:
                raise ModelFileError(f"{where}: Constant must have one output")
            a = _constant_value(n, where)
            if n.output[0] in g.values:
                raise ModelFileError(f"{where}: value '{n.output[0]}' is assigned twice")
            v = Value(n.output[0], a.dtype, a.shape, const=a)
            v.graph = g
            g.values[v.name] = v
            return
        od = get_op(n.op_type, domain)
        if od is None:
            raise UnsupportedOpError(
                f"{where}: op {n.op_type} (domain '{domain or 'ai.onnx'}', opset {opset}) is not supported by fusion; "
                f"`fusion ops` lists the supported ops")
        ins = []
        for name in n.input:
            if name == "":
                ins.append(None)
                continue
            v = g.lookup(name)
            if v is None:
                raise ModelFileError(f"{where}: input '{name}' is not defined before this node "
                                     f"(missing initializer, or the nodes are not in topological order)")
            ins.append(v)
        attrs = {}
        known = _defined_attrs(n.op_type, domain, opset if opset is not None else max_opset())
        for a in n.attribute:
            if a.ref_attr_name:
                raise UnsupportedOpError(f"{where}: attribute references outside functions are not supported")
            _check_attr_name(a.name, known, attrs, n.op_type, opset, where)
            attrs[a.name] = attr_value(a, lambda gp: self.build(gp, g, types), where)
        name = n.name or f"{n.op_type}_{k}"
        node = Node(n.op_type, ins, [], attrs, g._unique_node_name(name), domain)
        outs = []
        for o in n.output:
            if o == "":
                v = g.new_value(None, None, name=f"{node.name}_unused")
            else:
                if o in g.values:
                    raise ModelFileError(f"{where}: value '{o}' is assigned twice (not SSA)")
                v = Value(o, None, None)
                v.graph = g
                g.values[o] = v
                if o in types:
                    dt, shape = _type_of(types[o], self.fresh)
                    v.dtype, v.shape = dt, shape
            outs.append(v)
        node.outputs = outs
        g._attach(node)
        if od.normalize is not None:
            try:
                od.normalize(node, g, opset if opset is not None else max_opset())
            except FusionError:
                raise
            except Exception as e:
                raise ShapeError(f"{where}: cannot normalize attributes: {type(e).__name__}: {e}") from e
        _check_required(od, node, where)
        node.attrs = od.fill_attrs(node.attrs)
        n_in = len(node.inputs)
        if n_in < od.min_inputs() or n_in > od.max_inputs():
            raise ModelFileError(f"{where}: has {n_in} inputs; {n.op_type} takes {od.min_inputs()} to "
                                 f"{od.max_inputs() if not od.variadic_input else 'any number of'}")
        for i in range(od.min_inputs()):
            if node.inputs[i] is None:
                raise ModelFileError(f"{where}: required input {i} ('{od.inputs[i]}') is missing")
        try:
            check_window_node(node)
            infer_node(node)
        except FusionError as e:
            msg = str(e)
            raise type(e)(msg if msg.startswith(self.where) else f"{self.where}: {msg}") from None


@functools.lru_cache(maxsize=None)
def _defined_attrs(op_type: str, domain: str, opset: int) -> frozenset:
    """Attribute names the op takes at `opset`: onnx's schema for that opset
    (older spellings that `normalize` rewrites) plus the op table's."""
    from fusion.ops import get_op
    od = get_op(op_type, domain)
    names = set(od.attrs) if od is not None else set()
    try:
        names |= set(onnx.defs.get_schema(op_type, opset, domain).attributes)
    except Exception:  # SchemaError: an op newer than the model's opset, or a domain onnx has no schemas for
        pass
    return frozenset(names)


def _check_attr_name(name, known: frozenset, seen: dict, op_type: str, opset, where: str) -> None:
    # An attribute the op does not define is refused (as onnx.checker and onnxruntime
    # do): kept, it would be silently ignored (ReduceSum-13 with an `axes` attribute
    # reduces over every axis) or, with a name that is not UTF-8, reach later passes
    # as a bytes key.
    if not isinstance(name, str):
        raise ModelFileError(f"{where}: attribute name {bytes(name)!r} is not valid UTF-8 (corrupted file?)")
    if name in seen:
        raise ModelFileError(f"{where}: attribute '{name}' is given twice")
    if name not in known:
        takes = ", ".join(sorted(known)) or "no attributes"
        raise ModelFileError(f"{where}: attribute '{name}' is not defined for {op_type} at opset {opset} "
                             f"(it takes: {takes})")


def _check_required(od, node, where) -> None:
    from fusion.ops.table import REQUIRED
    for k, spec in od.attrs.items():
        if spec.default is REQUIRED and k not in node.attrs:
            raise ModelFileError(f"{where}: required attribute '{k}' is missing")


def _constant_value(n: onnx.NodeProto, where: str) -> np.ndarray:
    for a in n.attribute:
        if a.name == "value":
            return tensor_to_numpy(a.t, where)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
        if a.name == "value_string":
            return np.array(a.s.decode(), dtype=object)
        if a.name == "value_strings":
            return np.array([s.decode() for s in a.strings], dtype=object)
        if a.name == "sparse_value":
            raise UnsupportedOpError(f"{where}: sparse constants are not supported")
    raise ModelFileError(f"{where}: Constant has no value attribute")


def _collect_types(model: onnx.ModelProto) -> dict:
    types = {}

    def visit(g):
        for vi in list(g.value_info) + list(g.output) + list(g.input):
            types[vi.name] = vi.type
        for n in g.node:
            for a in n.attribute:
                if a.HasField("g"):
                    visit(a.g)
                for sg in a.graphs:
                    visit(sg)
    visit(model.graph)
    return types


def _open_dims_hint(model: onnx.ModelProto) -> str:
    """'open dimensions: input 'x' [batch,4] -> --shape x=1x4 (or batch=N)', or ''."""
    inits = {t.name for t in model.graph.initializer}
    parts = []
    for vi in model.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            continue
        shown = ",".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
        example = "x".join(str(d.dim_value) if d.HasField("dim_value") else "1" for d in dims)
        named = [d.dim_param for d in dims if d.HasField("dim_param") and d.dim_param]
        parts.append(f"input '{vi.name}' [{shown}]: --shape {vi.name}={example}"
                     + (f" or --shape {named[0]}=N" if named else ""))
    return ("open dimensions: " + "; ".join(parts)) if parts else ""


# ---------------------------------------------------------------------------
# Entry point

# Control characters (from corrupted names) would split a one-line error message.
_ESCAPE_CONTROL = {c: f"\\x{c:02x}" for c in range(32)}


def load(model_or_path, shapes: TMapping | None = None, check: bool = True) -> Graph:
    """Import an ONNX model (path, bytes, ModelProto, or 'zoo:NAME[:small]')."""
    try:
        return _load(model_or_path, shapes, check)
    except FusionError as e:
        msg = str(e)
        if any(ord(ch) < 32 for ch in msg):
            raise type(e)(msg.translate(_ESCAPE_CONTROL)) from None
        raise


def _load(model_or_path, shapes: TMapping | None, check: bool) -> Graph:
    base_dir = None
    where = "<model>"
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
    elif isinstance(model_or_path, (bytes, bytearray)):
        model = parse_model(bytes(model_or_path))
    elif isinstance(model_or_path, (str, os.PathLike)) and str(model_or_path).startswith("zoo:"):
        from fusion import zoo
        where = str(model_or_path)
        model = zoo.resolve(str(model_or_path))
    else:
        path = os.fspath(model_or_path)
        where = path
        model = read_model(path)
        base_dir = os.path.dirname(os.path.abspath(path))
    load_external_data(model, base_dir, where)
    imp = _Importer(model, where)
    imp.check_opset()
    if model.functions:
        try:
            from onnx import inliner
            model = inliner.inline_local_functions(model)
        except Exception as e:
            raise ModelFileError(f"{where}: cannot inline model-local functions: {e}") from None
    bind_shapes(model, shapes, where)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as e:
        # onnx's inference refuses some valid-but-unusual models; the op table's rules still run.
        inferred = model
        if "ShapeInferenceError" in type(e).__name__ or "InferenceError" in str(type(e)):
            raise ShapeError(f"{where}: {str(e).splitlines()[0]}") from None
    types = _collect_types(inferred)
    try:
        g = imp.build(model.graph, None, types)
    except ShapeError as e:
        hint = _open_dims_hint(model)
        if hint and "--shape" in str(e) and "open dimensions:" not in str(e):
            raise ShapeError(f"{e} ({hint})") from None
        raise
    g.name = model.graph.name or os.path.splitext(os.path.basename(where))[0] or "model"
    g.metadata = {p.key: p.value for p in model.metadata_props}
    g.metadata.setdefault("source", where)
    if check:
        g.verify()
    return g
