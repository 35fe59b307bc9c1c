"""The weight-less storage format of the zoo.

A stored model is an ordinary ONNX ModelProto, gzipped, in which every large
learned float initializer keeps its name, dims and data type but no data; its
`doc_string` is the marker FILL. Everything else (graph, small integer and
shape constants, float constants that are not learned, such as prior boxes)
is verbatim. `fill` puts data back: each marked tensor is drawn from a seed
derived from (model name, tensor name) with the recipe `roles.plan_recipes`
reads off the graph, so the same file gives the same bytes everywhere.

The marker may carry a calibrated scale, `fusion.zoo:fill scale=0.8125`,
written at export by calibrate.py (layer-sequential unit variance): the
recipe's standard deviation is multiplied by it.
"""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from fusion.zoo import roles, sampling

FILL = "fusion.zoo:fill"
MIN_STRIP = 64  # float tensors with fewer elements stay verbatim (scales, eps, tiny biases)
_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _numel(t: TensorProto) -> int:
    return int(np.prod(list(t.dims), dtype=np.int64)) if len(t.dims) else 1


def strip(model: onnx.ModelProto, keep: set[str] = frozenset()) -> onnx.ModelProto:
    """A copy of `model` whose float initializers of >= MIN_STRIP elements (except `keep`,
    the constants that are not learned) carry no data. Constant nodes holding large float
    tensors are turned into initializers first, so they are stripped the same way."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _constants_to_initializers(m.graph, keep)
    for t in m.graph.initializer:
        if t.data_type in _FLOATS and _numel(t) >= MIN_STRIP and t.name not in keep:
            name, dims, dtype = t.name, list(t.dims), t.data_type
            t.Clear()
            t.name, t.data_type, t.doc_string = name, dtype, FILL
            t.dims.extend(dims)
    return m


def _constants_to_initializers(g: onnx.GraphProto, keep) -> None:
    kept = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = n.attribute[0].t
            if t.data_type in _FLOATS and _numel(t) >= MIN_STRIP and n.output[0] not in keep:
                init = g.initializer.add()
                init.CopyFrom(t)
                init.name = n.output[0]
                continue
        kept.append(n)
    if len(kept) != len(g.node):
        del g.node[:]
        g.node.extend(kept)


def is_marked(t: TensorProto) -> bool:
    return t.doc_string == FILL or t.doc_string.startswith(FILL + " ")


def marked_scale(t: TensorProto) -> float:
    for part in t.doc_string.split()[1:]:
        if part.startswith("scale="):
            return float(part[6:])
    return 1.0


def set_scale(t: TensorProto, scale: float) -> None:
    t.doc_string = FILL if scale == 1.0 else f"{FILL} scale={float(np.float32(scale))!r}"


def stripped_names(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer if is_marked(t)]


def draw(zoo_name: str, t: TensorProto, r: roles.Recipe, scale: float = 1.0) -> np.ndarray:
    """The filled values of one marked tensor."""
    seed = sampling.seed_for(zoo_name.split(":")[0], t.name)
    shape = tuple(int(d) for d in t.dims)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    if r.kind == "uniform":
        arr = sampling.uniform(seed, shape, r.a, r.b, dtype=np.float32)
    else:
        arr = sampling.normal(seed, shape, r.a, r.b * scale, dtype=np.float32)
    return arr.astype(dtype, copy=False)


def fill(model: onnx.ModelProto, zoo_name: str, scales: dict[str, float] | None = None) -> onnx.ModelProto:
    """A copy of a stored model with every marked initializer filled (`scales`
    overrides the stored calibration, for calibrate.py)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    recipes = roles.plan_recipes(m, stripped_names(m))
    for t in m.graph.initializer:
        if not is_marked(t):
            continue
        scale = scales.get(t.name, 1.0) if scales is not None else marked_scale(t)
        t.CopyFrom(numpy_helper.from_array(draw(zoo_name, t, recipes[t.name], scale), t.name))
    return m


def recipes_of(model: onnx.ModelProto) -> dict[str, roles.Recipe]:
    return roles.plan_recipes(model, stripped_names(model))


def weights_digest(model: onnx.ModelProto) -> str:
    """sha256 over every initializer's name and bytes: the fill's fingerprint."""
    h = hashlib.sha256()
    for t in model.graph.initializer:
        h.update(t.name.encode())
        h.update(numpy_helper.to_array(t).tobytes())
    return h.hexdigest()


def save(model: onnx.ModelProto, path: str) -> int:
    data = gzip.compress(model.SerializeToString(), compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def load(path: str) -> onnx.ModelProto:
    with gzip.open(path, "rb") as f:
        data = f.read()
    m = onnx.ModelProto()
    m.ParseFromString(data)
    return m
