"""Reorganize and Shuffle ops, and data-movement ops that are pure index arithmetic."""
from __future__ import annotations

import numpy as np

from fusion.errors import ShapeError
from fusion.ir import expr as E
from fusion.ops.table import (AttrSpec, Mapping, OpDef, norm_axis, prod, register,
                              require_const)


# ---------------------------------------------------------------------------
# Reshape

def reshape_target(in_shape, spec, allowzero: int, node=None) -> tuple:
    spec = [int(s) for s in np.asarray(spec).reshape(-1)]
    out = []
    for i, s in enumerate(spec):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise ShapeError(f"{node.label() + ': ' if node else ''}Reshape copies dim {i} (0) but the input has rank {len(in_shape)}")
            out.append(in_shape[i])
        else:
            out.append(s)
    if out.count(-1) > 1:
        raise ShapeError(f"{node.label() + ': ' if node else ''}Reshape target {spec} has more than one -1")
    total = prod(in_shape)
    if -1 in out:
        known = prod([d for d in out if d != -1])
        if isinstance(total, int) and isinstance(known, int):
            if known == 0 or total % known:
                raise ShapeError(f"{node.label() + ': ' if node else ''}cannot reshape {list(in_shape)} to {spec}")
            out[out.index(-1)] = total // known
        else:
            out[out.index(-1)] = total / known
    elif isinstance(total, int) and all(isinstance(d, int) for d in out) and prod(out) != total:
        raise ShapeError(f"{node.label() + ': ' if node else ''}cannot reshape {list(in_shape)} ({total} elements) to {spec}")
    return tuple(out)


def _reshape_infer(node):
    x = node.inputs[0]
    spec = require_const(node, 1, "shape")
    return [(x.dtype, reshape_target(x.shape, spec, node.attrs.get("allowzero", 0), node))]


def _reshape_normalize(node, graph, opset):
    if opset < 5:  # shape was an attribute
        spec = node.attrs.pop("shape")
        node.inputs.append(None)
        graph.set_input(node, 1, graph.const(np.array(spec, dtype=np.int64), "shape"))


def reorganize_lower(node, out, read, k=0):
    """Same elements in the same row-major order, new shape."""
    x = node.inputs[0]
    flat = E.linearize(out, node.outputs[0].shape)
    return read(0, E.delinearize(flat, x.shape))


register(OpDef(
    "Reshape", inputs=("data", "shape"), outputs=("reshaped",),
    attrs={"allowzero": AttrSpec("int", 0)},
    mapping=Mapping.REORG, infer=_reshape_infer,
    reference=lambda node, a: [np.reshape(a[0], node.outputs[0].shape)],
    lower=reorganize_lower, normalize=_reshape_normalize, category="shape",
))


# ---------------------------------------------------------------------------
# Transpose

def _perm(node):
    p = node.attrs.get("perm")
    r = node.inputs[0].rank
    if not p:
        return list(range(r))[::-1]
    p = [int(x) for x in p]
    if sorted(p) != list(range(r)):
        raise ShapeError(f"{node.label()}: perm {p} is not a permutation of {r} axes")
    return p


def _transpose_lower(node, out, read, k=0):
    p = _perm(node)
    idx = [None] * len(p)
    for j, a in enumerate(p):
        idx[a] = out[j]
    return read(0, idx)


register(OpDef(
    "Transpose", inputs=("data",), outputs=("transposed",),
    attrs={"perm": AttrSpec("ints", [])},
    mapping=Mapping.SHUFFLE,
    infer=lambda node: [(node.inputs[0].dtype, tuple(node.inputs[0].shape[a] for a in _perm(node)))],
    reference=lambda node, a: [np.ascontiguousarray(np.transpose(a[0], _perm(node)))],
    lower=_transpose_lower, category="shape",
))


# ---------------------------------------------------------------------------
# Concat

def _concat_infer(node):
    ins = [v for v in node.inputs if v is not None]
    r = ins[0].rank
    ax = norm_axis(node.attrs["axis"], r, node)
    shape = list(ins[0].shape)
    total = 0
    for v in ins:
        if v.rank != r:
            raise ShapeError(f"{node.label()}: inputs have different ranks ({r} and {v.rank})")
        total = total + v.shape[ax]
    shape[ax] = total
    return [(ins[0].dtype, tuple(shape))]


def _concat_lower(node, out, read, k=0):
    ax = norm_axis(node.attrs["axis"], node.outputs[0].rank, node)
    pieces = [(i, v) for i, v in enumerate(node.inputs) if v is not None and v.shape[ax] != 0]
    # Select chain from the last piece backwards; offsets are compile-time ints.
    offs, o = [], 0
    for i, v in pieces:
        offs.append(o)
        o += int(v.shape[ax])
    res = None
    for (i, v), off in reversed(list(zip(pieces, offs))):
        idx = list(out)
        idx[ax] = out[ax] - off
        val = read(i, idx)
        res = val if res is None else E.select(E.binary("lt", out[ax], off + int(v.shape[ax])), val, res)
    return res


register(OpDef(
    "Concat", inputs=("inputs*",), outputs=("concat_result",),
    attrs={"axis": AttrSpec("int", 0)},
    mapping=Mapping.O2O, infer=_concat_infer,
    reference=lambda node, a: [np.concatenate([x for x in a if x is not None], axis=node.attrs["axis"])],
    lower=_concat_lower, category="shape",
))
