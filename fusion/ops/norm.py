"""Normalization layers: BatchNormalization (inference), LayerNormalization,
InstanceNormalization."""
from __future__ import annotations

import numpy as np

from fusion.errors import FusionError, ShapeError
from fusion.ir import expr as E
from fusion.ops.table import AttrSpec, Mapping, OpDef, norm_axis, prod, register


# ---------------------------------------------------------------------------
# BatchNormalization, inference form: y = (x - mean) / sqrt(var + eps) * scale + B
# over channel axis 1. Training mode (running statistics) is refused.

def _bn_normalize(node, graph, opset):
    for k in ("spatial", "is_test", "consumed_inputs"):
        node.attrs.pop(k, None)
    if node.attrs.get("training_mode", 0):
        raise FusionError(f"{node.label()}: BatchNormalization with training_mode=1 is not supported "
                          f"(export the model in eval mode)")
    node.attrs.pop("training_mode", None)
    # Opset < 14 could list running-mean/var outputs even in inference; they are unused then.


def _bn_infer(node):
    x = node.inputs[0]
    if x.rank < 2:
        raise ShapeError(f"{node.label()}: BatchNormalization input needs rank >= 2, got {list(x.shape)}")
    for i in range(1, 5):
        v = node.inputs[i]
        if v.rank != 1 or (isinstance(v.shape[0], int) and isinstance(x.shape[1], int) and v.shape[0] != x.shape[1]):
            raise ShapeError(f"{node.label()}: input {i} has shape {list(v.shape)}, expected [{x.shape[1]}] (channels)")
    return [(x.dtype, x.shape)] + [(x.dtype, node.inputs[3].shape)] * (len(node.outputs) - 1)


def _bn_reference(node, a):
    x, s, b, m, v = a[:5]
    sh = (1, -1) + (1,) * (x.ndim - 2)
    eps = node.attrs["epsilon"]
    y = (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + np.asarray(eps, x.dtype)) * s.reshape(sh) + b.reshape(sh)
    return [y.astype(x.dtype)] + [m, v][:len(node.outputs) - 1]


def _bn_lower(node, out, read, k=0):
    if k:
        return read(2 + k, list(out))  # running mean / var pass through in inference
    c = [out[1]]
    x = read(0, list(out))
    eps = E.Const(float(node.attrs["epsilon"]), x.dtype)
    return (x - read(3, c)) / E.call("sqrt", read(4, c) + eps) * read(1, c) + read(2, c)


def _bn_mapping(node):
    # Parameters [C] feed every element of their channel: One-to-Many unless
    # they are constants (the usual case), which a kernel reads for free.
    x = node.inputs[0]
    if all(v.const is not None for v in node.inputs[1:5]) or int(prod(x.shape)) == int(x.shape[1]):
        return Mapping.O2O
    return Mapping.O2M


register(OpDef(
    "BatchNormalization", inputs=("X", "scale", "B", "input_mean", "input_var"), outputs=("Y", "mean?", "var?"),
    attrs={"epsilon": AttrSpec("float", 1e-5), "momentum": AttrSpec("float", 0.9)},
    mapping=_bn_mapping, infer=_bn_infer, reference=_bn_reference, lower=_bn_lower,
    normalize=_bn_normalize, export_opset=9, category="nn",
    flops=lambda node: 4 * int(prod(node.inputs[0].shape)),
))


# ---------------------------------------------------------------------------
# LayerNormalization (opset 17): normalize over axes [axis, rank)

def _ln_axis(node):
    x = node.inputs[0]
    return norm_axis(node.attrs["axis"], x.rank, node)


def _ln_infer(node):
    x = node.inputs[0]
    ax = _ln_axis(node)
    stat = tuple(x.shape[:ax]) + (1,) * (x.rank - ax)
    st = np.float32 if node.attrs.get("stash_type", 1) == 1 else x.dtype
    return [(x.dtype, x.shape)] + [(np.dtype(st), stat)] * (len(node.outputs) - 1)


def _ln_reference(node, a):
    x, s = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    ax = _ln_axis(node)
    axes = tuple(range(ax, x.ndim))
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + node.attrs["epsilon"])
    y = (xf - mean) * inv * s
    if b is not None:
        y = y + b
    st = node.outputs[1].dtype if len(node.outputs) > 1 else np.float32
    return [y.astype(x.dtype), mean.astype(st), inv.astype(st)][:len(node.outputs)]


def _moments(node, out, read, axes):
    """(x at out, mean, 1/sqrt(var+eps)) over `axes` of input 0, for output position out."""
    x = node.inputs[0]
    ext = [int(x.shape[a]) for a in axes]
    n = float(prod(ext))

    def at(r):
        idx = list(out)
        for a, v in zip(axes, r):
            idx[a] = v
        return read(0, idx)

    xi = read(0, list(out))
    dt = xi.dtype
    mean = E.reduce("sum", ext, at) / E.Const(n, dt)
    var = E.reduce("sum", ext, lambda r: (at(r) - mean) * (at(r) - mean)) / E.Const(n, dt)
    inv = E.Const(1.0, dt) / E.call("sqrt", var + E.Const(float(node.attrs["epsilon"]), dt))
    return xi, mean, inv


def _ln_lower(node, out, read, k=0):
    x = node.inputs[0]
    ax = _ln_axis(node)
    axes = list(range(ax, x.rank))
    if k:
        out = list(out)  # statistics outputs have 1s on the normalized axes
    xi, mean, inv = _moments(node, list(out) if not k else [o if i < ax else E.Const(0) for i, o in enumerate(out)],
                             read, axes)
    if k == 1:
        return E.cast(mean, node.outputs[1].dtype.name)
    if k == 2:
        return E.cast(inv, node.outputs[2].dtype.name)
    y = (xi - mean) * inv * read(1, E.broadcast_index(out, node.inputs[1].shape))
    b = node.input(2)
    if b is not None:
        y = y + read(2, E.broadcast_index(out, b.shape))
    return y


register(OpDef(
    "LayerNormalization", inputs=("X", "Scale", "B?"), outputs=("Y", "Mean?", "InvStdDev?"), since=17,
    attrs={"axis": AttrSpec("int", -1), "epsilon": AttrSpec("float", 1e-5), "stash_type": AttrSpec("int", 1)},
    mapping=Mapping.M2M, infer=_ln_infer, reference=_ln_reference, lower=_ln_lower, category="nn",
    flops=lambda node: 8 * int(prod(node.inputs[0].shape)),
))


# ---------------------------------------------------------------------------
# InstanceNormalization: per (n, c) over the spatial axes, then scale[c], B[c]

def _in_reference(node, a):
    x, s, b = a
    axes = tuple(range(2, x.ndim))
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=axes, keepdims=True)
    sh = (1, -1) + (1,) * (x.ndim - 2)
    y = (xf - mean) / np.sqrt(var + node.attrs["epsilon"]) * s.reshape(sh) + b.reshape(sh)
    return [y.astype(x.dtype)]


def _in_lower(node, out, read, k=0):
    x = node.inputs[0]
    xi, mean, inv = _moments(node, list(out), read, list(range(2, x.rank)))
    return (xi - mean) * inv * read(1, [out[1]]) + read(2, [out[1]])


register(OpDef(
    "InstanceNormalization", inputs=("input", "scale", "B"), outputs=("output",),
    attrs={"epsilon": AttrSpec("float", 1e-5)},
    mapping=Mapping.M2M, infer=lambda node: [(node.inputs[0].dtype, node.inputs[0].shape)],
    reference=_in_reference, lower=_in_lower, category="nn",
    flops=lambda node: 8 * int(prod(node.inputs[0].shape)),
))
