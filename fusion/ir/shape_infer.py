"""Shape inference from the op table, and compile-time known values.

`infer_node` fills a node's output dtypes/shapes from its op's shape rule
(where the importer did not already get them from onnx's inference) and, when
every input is known at compile time and the result is small, computes the
output's value with the reference semantics (shape arithmetic such as
Shape -> Gather -> Concat -> Reshape then resolves statically).
"""
from __future__ import annotations

import numpy as np

from fusion.errors import FusionError, ShapeError

# Results up to this many elements are computed at compile time when all
# inputs are known (keeps shape arithmetic static without folding big tensors).
KNOWN_LIMIT = 4096


def _same_shape(a, b) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        try:
            if not bool(x == y):
                return False
        except TypeError:
            return False
    return True


def _complete(shape) -> bool:
    return shape is not None and all(isinstance(d, (int, np.integer)) for d in shape)


def infer_node(node, prefer_existing: bool = True) -> None:
    """Set output types of `node` from the op table (keeping complete
    types already present when prefer_existing), then its known values."""
    od = node.opdef
    if od is None:
        raise FusionError(f"{node.label()}: op '{node.op}' (domain '{node.domain or 'ai.onnx'}') is not in the op table")
    need = [v for v in node.outputs if v.dtype is None or not _complete(v.shape)]
    if need or not prefer_existing:
        if od.infer is None:
            raise ShapeError(f"{node.label()}: op {node.op} has no shape rule")
        try:
            types = od.infer(node)
        except FusionError:
            raise
        except Exception as e:  # a shape rule tripping over odd input is a user-facing shape error
            raise ShapeError(f"{node.label()}: cannot infer output shapes: {type(e).__name__}: {e}") from e
        for v, (dt, sh) in zip(node.outputs, types):
            if v.dtype is None or not prefer_existing:
                v.dtype = np.dtype(dt) if dt is not None else None
            if not _complete(v.shape) or not prefer_existing:
                v.shape = tuple(int(d) if isinstance(d, (int, np.integer)) else d for d in sh) if sh is not None else None
    compute_known(node)


def compute_known(node) -> None:
    od = node.opdef
    if od is None or od.reference is None:
        return
    if getattr(od, "fold", None) is not None:
        try:
            vals = od.fold(node)
        except Exception:
            vals = None
        if vals is not None:
            for v, a in zip(node.outputs, vals):
                if a is not None:
                    v.known = np.asarray(a)
            return
    if node.subgraphs() or od.category in ("random",):
        return
    args = []
    for v in node.inputs:
        if v is None:
            args.append(None)
            continue
        a = v.value
        if a is None or a.size > KNOWN_LIMIT:
            return
        args.append(a)
    if not any(a is not None for a in args) and node.inputs:
        return
    for v in node.outputs:
        if not _complete(v.shape) or int(np.prod(v.shape)) > KNOWN_LIMIT:
            return
    try:
        with np.errstate(all="ignore"):
            outs = od.reference(node, args)
    except Exception:
        return
    for v, a in zip(node.outputs, outs):
        if a is not None:
            v.known = np.asarray(a)


def check_node(node) -> None:
    """The op's shape rule must agree with the recorded output types."""
    od = node.opdef
    if od is None:
        raise FusionError(f"{node.label()}: op '{node.op}' is not in the op table")
    n_in = len(node.inputs)
    if n_in < od.min_inputs() or n_in > od.max_inputs():
        raise FusionError(f"{node.label()}: {n_in} inputs, op {node.op} takes "
                          f"{od.min_inputs()}..{od.max_inputs() if not od.variadic_input else 'n'}")
    for i in range(od.min_inputs()):
        if node.inputs[i] is None:
            raise FusionError(f"{node.label()}: required input {i} ('{od.inputs[i]}') is missing")
    if od.infer is None:
        return
    try:
        types = od.infer(node)
    except FusionError as e:
        raise ShapeError(str(e)) from e
    for v, (dt, sh) in zip(node.outputs, types):
        if v.dtype is not None and dt is not None and np.dtype(dt) != v.dtype:
            raise ShapeError(f"{node.label()}: output '{v.name}' is {v.dtype} but the op gives {np.dtype(dt)}")
        if sh is not None and v.shape is not None and _complete(sh) and _complete(v.shape) and not _same_shape(sh, v.shape):
            raise ShapeError(f"{node.label()}: output '{v.name}' has shape {list(v.shape)} but the op gives {list(sh)}")
