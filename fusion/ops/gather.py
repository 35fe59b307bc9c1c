"""Indexing ops: Gather, GatherElements, GatherND (One-to-Many: indices are
data), ScatterElements, ScatterND (Many-to-Many: each output searches the
updates aimed at it), OneHot."""
from __future__ import annotations

import numpy as np

from fusion.errors import ShapeError
from fusion.ir import expr as E
from fusion.ops.table import AttrSpec, Mapping, OpDef, norm_axis, prod, register, require_const


def _index(v, dim):
    """An index read from data: int64, negative counts from the end."""
    i = E.cast(v, "int64")
    return E.select(E.binary("lt", i, 0), i + int(dim), i)


def _np_index(idx, dim):
    idx = np.asarray(idx).astype(np.int64)
    return np.where(idx < 0, idx + dim, idx)


def _check_range(node, idx, dim, what="indices"):
    if idx.size and (idx.min() < 0 or idx.max() >= dim):
        bad = idx[(idx < 0) | (idx >= dim)].reshape(-1)[0]
        raise ShapeError(f"{node.label()}: {what} value {bad} is out of range for a dimension of size {dim}")


# ---------------------------------------------------------------------------
# Gather

def _gather_infer(node):
    d, i = node.inputs
    ax = norm_axis(node.attrs["axis"], d.rank, node)
    return [(d.dtype, tuple(d.shape[:ax]) + tuple(i.shape) + tuple(d.shape[ax + 1:]))]


def _gather_reference(node, a):
    d, i = a
    ax = norm_axis(node.attrs["axis"], d.ndim, node)
    idx = _np_index(i, d.shape[ax])
    _check_range(node, idx, d.shape[ax])
    return [np.take(d, idx, axis=ax)]


def _gather_lower(node, out, read, k=0):
    d, i = node.inputs
    ax = norm_axis(node.attrs["axis"], d.rank, node)
    q = i.rank
    j = _index(read(1, list(out[ax:ax + q])), d.shape[ax])
    return read(0, list(out[:ax]) + [j] + list(out[ax + q:]))


register(OpDef(
    "Gather", inputs=("data", "indices"), attrs={"axis": AttrSpec("int", 0)},
    mapping=Mapping.O2M, infer=_gather_infer, reference=_gather_reference, lower=_gather_lower,
    category="gather",
))


# ---------------------------------------------------------------------------
# GatherElements: out[p] = data[p with p[axis] = indices[p]]

def _ge_reference(node, a):
    d, i = a
    ax = norm_axis(node.attrs["axis"], d.ndim, node)
    idx = _np_index(i, d.shape[ax])
    _check_range(node, idx, d.shape[ax])
    return [np.take_along_axis(d, idx, axis=ax)]


def _ge_lower(node, out, read, k=0):
    d = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], d.rank, node)
    idx = list(out)
    idx[ax] = _index(read(1, list(out)), d.shape[ax])
    return read(0, idx)


register(OpDef(
    "GatherElements", inputs=("data", "indices"), since=11, attrs={"axis": AttrSpec("int", 0)},
    mapping=Mapping.O2M, infer=lambda node: [(node.inputs[0].dtype, node.inputs[1].shape)],
    reference=_ge_reference, lower=_ge_lower, category="gather",
))


# ---------------------------------------------------------------------------
# GatherND

def _gnd_geometry(node):
    d, i = node.inputs
    b = int(node.attrs["batch_dims"])
    m = i.shape[-1]
    if not isinstance(m, int) or b + m > d.rank:
        raise ShapeError(f"{node.label()}: indices last dim {m} + batch_dims {b} exceeds data rank {d.rank}")
    return b, m


def _gnd_infer(node):
    d, i = node.inputs
    b, m = _gnd_geometry(node)
    return [(d.dtype, tuple(i.shape[:-1]) + tuple(d.shape[b + m:]))]


def _gnd_reference(node, a):
    d, i = a
    b, m = _gnd_geometry(node)
    out_shape = tuple(i.shape[:-1]) + tuple(d.shape[b + m:])
    nb = int(np.prod(d.shape[:b], dtype=np.int64))
    dd = d.reshape((nb,) + d.shape[b:])
    ii = i.astype(np.int64).reshape((nb, -1, m))
    dims = np.array(d.shape[b:b + m], dtype=np.int64)
    ii = np.where(ii < 0, ii + dims, ii)
    if ii.size and ((ii < 0) | (ii >= dims)).any():
        bad = ii[(ii < 0) | (ii >= dims)].reshape(-1)[0]
        raise ShapeError(f"{node.label()}: index {bad} out of range for the indexed dimensions {dims.tolist()}")
    res = dd[(np.arange(nb)[:, None],) + tuple(ii[..., k] for k in range(m))]
    return [np.ascontiguousarray(res).reshape(out_shape)]


def _gnd_lower(node, out, read, k=0):
    d, i = node.inputs
    b, m = _gnd_geometry(node)
    q = i.rank
    lead = list(out[:q - 1])
    idx = [_index(read(1, lead + [E.Const(j)]), d.shape[b + j]) for j in range(m)]
    return read(0, list(out[:b]) + idx + list(out[q - 1:]))


register(OpDef(
    "GatherND", inputs=("data", "indices"), since=11, attrs={"batch_dims": AttrSpec("int", 0)},
    mapping=Mapping.O2M, infer=_gnd_infer, reference=_gnd_reference, lower=_gnd_lower, category="gather",
))


# ---------------------------------------------------------------------------
# Scatter: each output element looks for the updates aimed at it; with
# reduction none the last one wins (onnxruntime writes in order).

_COMBINE = {"add": ("sum", 0), "mul": ("prod", 1), "max": ("max", None), "min": ("min", None)}


def _np_combine(red, cur, u):
    if red == "add":
        return cur + u
    if red == "mul":
        return cur * u
    if red == "max":
        return np.maximum(cur, u)
    if red == "min":
        return np.minimum(cur, u)
    return u


_UFUNC = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(out, where, u, red):
    """out[where] (op)= u, in order; duplicates: the last wins, or all combine."""
    if red == "none":
        out[where] = u
    else:
        _UFUNC[red].at(out, where, u)


def _se_reference(node, a):
    d, i, u = a
    ax = norm_axis(node.attrs["axis"], d.ndim, node)
    idx = _np_index(i, d.shape[ax])
    _check_range(node, idx, d.shape[ax])
    out = d.copy()
    grids = list(np.indices(i.shape, sparse=True)) if i.ndim else []
    grids[ax] = idx
    _scatter(out, tuple(grids), u, node.attrs["reduction"])
    return [out]


def _neutral(red, dtype):
    op, v = _COMBINE[red]
    if v is not None:
        return v
    if dtype.startswith("float"):
        return -np.inf if red == "max" else np.inf
    info = np.iinfo(dtype)
    return int(info.min if red == "max" else info.max)


def _scatter_result(node, out, read, ext, match, upd_index):
    """Shared tail: combine data[out] with the matching updates. match(r) is
    the condition for reduction step r, upd_index(r) the updates element."""
    cur = read(0, list(out))
    red = node.attrs["reduction"]
    dt = cur.dtype
    if red == "none":
        n = int(prod(ext))
        last = E.reduce("max", ext, lambda r: E.select(match(r), E.linearize(r, ext), E.Const(-1)), prefix="s")
        return E.select(E.binary("ge", last, 0), read(2, upd_index(E.delinearize(last, ext) if n > 1 else [E.Const(0)] * len(ext))), cur)
    op, _ = _COMBINE[red]
    neutral = E.Const(_neutral(red, dt), dt)
    acc = E.reduce(op, ext, lambda r: E.select(match(r), read(2, upd_index(r)), neutral), prefix="s")
    if red == "add":
        return cur + acc
    if red == "mul":
        return cur * acc
    return E.binary(red, cur, acc)


def _se_lower(node, out, read, k=0):
    d, i, _ = node.inputs
    ax = norm_axis(node.attrs["axis"], d.rank, node)
    ishape = [int(s) for s in i.shape]
    valid = E.Const(True)
    for a, (o, s) in enumerate(zip(out, ishape)):
        if a != ax:
            valid = E.binary("and", valid, E.binary("lt", o, s))

    def at(r):
        idx = list(out)
        idx[ax] = r[0]
        return idx

    def match(r):
        return E.binary("and", valid, E.binary("eq", _index(read(1, at(r)), d.shape[ax]), out[ax]))

    return _scatter_result(node, out, read, [ishape[ax]], match, at)


_SCATTER_ATTRS = {"reduction": AttrSpec("string", "none")}

register(OpDef(
    "ScatterElements", inputs=("data", "indices", "updates"), since=11,
    attrs=dict(_SCATTER_ATTRS, axis=AttrSpec("int", 0)),
    mapping=Mapping.M2M, infer=lambda node: [(node.inputs[0].dtype, node.inputs[0].shape)],
    reference=_se_reference, lower=_se_lower, category="gather",
))


def _snd_reference(node, a):
    d, i, u = a
    m = i.shape[-1]
    dims = np.array(d.shape[:m], dtype=np.int64)
    ii = i.astype(np.int64)
    ii = np.where(ii < 0, ii + dims, ii)
    if ii.size and ((ii < 0) | (ii >= dims)).any():
        bad = ii[(ii < 0) | (ii >= dims)].reshape(-1)[0]
        raise ShapeError(f"{node.label()}: index {bad} out of range for the indexed dimensions {dims.tolist()}")
    out = d.copy()
    _scatter(out, tuple(ii[..., k] for k in range(m)), u, node.attrs["reduction"])
    return [out]


def _snd_lower(node, out, read, k=0):
    d, i, _ = node.inputs
    m = int(i.shape[-1])
    ext = [int(s) for s in i.shape[:-1]]

    def match(r):
        c = E.Const(True)
        for j in range(m):
            c = E.binary("and", c, E.binary("eq", _index(read(1, list(r) + [E.Const(j)]), d.shape[j]), out[j]))
        return c

    return _scatter_result(node, out, read, ext, match, lambda r: list(r) + list(out[m:]))


register(OpDef(
    "ScatterND", inputs=("data", "indices", "updates"), since=11, attrs=dict(_SCATTER_ATTRS),
    mapping=Mapping.M2M, infer=lambda node: [(node.inputs[0].dtype, node.inputs[0].shape)],
    reference=_snd_reference, lower=_snd_lower, category="gather",
))


# ---------------------------------------------------------------------------
# OneHot

def _onehot_depth(node) -> int:
    return int(np.asarray(require_const(node, 1, "depth")).reshape(-1)[0])


def _onehot_axis(node):
    return norm_axis(node.attrs["axis"], node.inputs[0].rank + 1, node)


def _onehot_infer(node):
    i = node.inputs[0]
    ax = _onehot_axis(node)
    s = list(i.shape)
    from fusion.ops.table import const_input, open_dims
    s.insert(ax, _onehot_depth(node) if const_input(node, 1) is not None else open_dims(node, 1, "depth")[0])
    return [(node.inputs[2].dtype, tuple(s))]


def _onehot_reference(node, a):
    i, d, v = a
    depth = int(np.asarray(d).reshape(-1)[0])
    ax = _onehot_axis(node)
    idx = np.asarray(i).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    hot = np.expand_dims(idx, ax) == np.arange(depth).reshape([-1 if k == ax else 1 for k in range(i.ndim + 1)])
    return [np.where(hot, v.reshape(-1)[1], v.reshape(-1)[0]).astype(v.dtype)]


def _onehot_lower(node, out, read, k=0):
    ax = _onehot_axis(node)
    depth = int(node.outputs[0].shape[ax])
    idx = _index(read(0, list(out[:ax]) + list(out[ax + 1:])), depth)
    return E.select(E.binary("eq", idx, out[ax]), read(2, [E.Const(1)]), read(2, [E.Const(0)]))


register(OpDef(
    "OneHot", inputs=("indices", "depth", "values"), since=9, attrs={"axis": AttrSpec("int", -1)},
    mapping=Mapping.O2M, infer=_onehot_infer, reference=_onehot_reference, lower=_onehot_lower,
    category="gather",
))
