"""Many-to-Many linear anchors: MatMul, Conv (more in the same style: Gemm, ConvTranspose, ...)."""
from __future__ import annotations

import numpy as np

from fusion.errors import ShapeError
from fusion.ir import expr as E
from fusion.ops.table import (AttrSpec, Mapping, OpDef, broadcast_shapes, prod, register)


# ---------------------------------------------------------------------------
# MatMul (numpy semantics: batch broadcasting, 1-D promotion)

def matmul_shapes(a, b, node=None):
    who = f"{node.label()}: " if node is not None else ""
    if len(a) == 0 or len(b) == 0:
        raise ShapeError(f"{who}MatMul inputs must have rank >= 1")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if not (a2[-1] == b2[-2]) and isinstance(a2[-1], int) and isinstance(b2[-2], int):
        raise ShapeError(f"{who}MatMul inner dimensions differ: {list(a)} @ {list(b)}")
    batch = broadcast_shapes(a2[:-2], b2[:-2], who=who)
    out = tuple(batch) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out, a2, b2


def _matmul_infer(node):
    a, b = node.inputs
    out, _, _ = matmul_shapes(a.shape, b.shape, node)
    return [(a.dtype, out)]


def _matmul_lower(node, out, read, k=0):
    a, b = node.inputs
    _, a2, b2 = matmul_shapes(a.shape, b.shape)
    # Re-insert the dims removed by 1-D promotion to index the 2-D view.
    o = list(out)
    if len(a.shape) == 1:
        o = o[:-1] + [E.Const(0)] + o[-1:]
    if len(b.shape) == 1:
        o = o + [E.Const(0)]
    batch, i, j = o[:-2], o[-2], o[-1]
    K = int(a2[-1])

    def body(r):
        kk = r[0]
        ai = E.broadcast_index(batch + [i, kk], a2)
        bi = E.broadcast_index(batch + [kk, j], b2)
        if len(a.shape) == 1:
            ai = ai[-1:]
        if len(b.shape) == 1:
            bi = bi[:-1]
        return read(0, ai) * read(1, bi)

    return E.reduce("sum", [K], body, prefix="k")


def _matmul_flops(node):
    a, b = node.inputs
    out, a2, _ = matmul_shapes(a.shape, b.shape)
    return 2 * int(prod(out)) * int(a2[-1])


register(OpDef(
    "MatMul", inputs=("A", "B"), mapping=Mapping.M2M, infer=_matmul_infer,
    reference=lambda node, a: [np.matmul(a[0], a[1])],
    lower=_matmul_lower, flops=_matmul_flops, category="linear",
))


# ---------------------------------------------------------------------------
# Conv (N-d, groups, dilations, auto_pad)

def conv_geometry(node):
    """(kernel, strides, dilations, pads_begin, pads_end, out_spatial) for Conv-like ops."""
    x, w = node.inputs[0], node.inputs[1]
    nsp = x.rank - 2
    kernel = [int(k) for k in (node.attrs.get("kernel_shape") or w.shape[2:])]
    strides = [int(s) for s in (node.attrs.get("strides") or [1] * nsp)]
    dil = [int(d) for d in (node.attrs.get("dilations") or [1] * nsp)]
    pads = [int(p) for p in (node.attrs.get("pads") or [0] * (2 * nsp))]
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    in_sp = list(x.shape[2:])
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nsp)
        for d in range(nsp):
            out = -(-in_sp[d] // strides[d])
            total = max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1 - in_sp[d])
            small, big = total // 2, total - total // 2
            pads[d], pads[d + nsp] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * nsp)
    out_sp = []
    for d in range(nsp):
        eff = (kernel[d] - 1) * dil[d] + 1
        o = (in_sp[d] + pads[d] + pads[d + nsp] - eff) // strides[d] + 1
        if isinstance(o, int) and o <= 0:
            raise ShapeError(f"{node.label()}: kernel {kernel} does not fit the input {list(x.shape)} with pads {pads}")
        out_sp.append(o)
    return kernel, strides, dil, pads[:nsp], pads[nsp:], out_sp


def _conv_infer(node):
    x, w = node.inputs[0], node.inputs[1]
    g = int(node.attrs["group"])
    if x.rank < 3 or w.rank != x.rank:
        raise ShapeError(f"{node.label()}: Conv needs input and weight of equal rank >= 3, got {list(x.shape)} and {list(w.shape)}")
    if isinstance(x.shape[1], int) and isinstance(w.shape[1], int) and x.shape[1] != w.shape[1] * g:
        raise ShapeError(f"{node.label()}: input has {x.shape[1]} channels but weight expects {w.shape[1]} x group {g}")
    *_, out_sp = conv_geometry(node)
    return [(x.dtype, (x.shape[0], w.shape[0], *out_sp))]


def _conv_lower(node, out, read, k=0):
    x, w = node.inputs[0], node.inputs[1]
    b = node.input(2)
    kernel, strides, dil, pb, _, _ = conv_geometry(node)
    g = int(node.attrs["group"])
    C = int(w.shape[1])
    M = int(w.shape[0])
    n, m, osp = out[0], out[1], list(out[2:])
    grp = m // (M // g)
    in_sp = [int(s) for s in x.shape[2:]]

    def body(r):
        c, ks = r[0], r[1:]
        pos = [o * s + kk * d - p for o, s, kk, d, p in zip(osp, strides, ks, dil, pb)]
        inside = E.Const(True)
        for p_, size in zip(pos, in_sp):
            inside = E.binary("and", inside, E.binary("and", E.binary("ge", p_, 0), E.binary("lt", p_, size)))
        xi = read(0, [n, grp * C + c] + pos)
        zero = E.Const(0.0, xi.dtype)
        return E.select(inside, xi, zero) * read(1, [m, c] + ks)

    acc = E.reduce("sum", [C] + kernel, body, prefix="c")
    if b is not None:
        acc = acc + read(2, [m])
    return acc


def _conv_flops(node):
    w = node.inputs[1]
    out = node.outputs[0].shape
    return 2 * int(prod(out)) * int(prod(w.shape[1:]))


def _conv_reference(node, a):
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    kernel, strides, dil, pb, pe, out_sp = conv_geometry(node)
    g = int(node.attrs["group"])
    nsp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pb[d], pe[d]) for d in range(nsp)])
    N, Cin = x.shape[:2]
    M = w.shape[0]
    Cg = Cin // g
    Mg = M // g
    # im2col over all kernel offsets: cols[n, c, k..., o...]
    cols = np.empty((N, Cin, int(np.prod(kernel)), *out_sp), dtype=x.dtype)
    for kidx, koff in enumerate(np.ndindex(*kernel)):
        sl = tuple(slice(koff[d] * dil[d], koff[d] * dil[d] + (out_sp[d] - 1) * strides[d] + 1, strides[d])
                   for d in range(nsp))
        cols[:, :, kidx] = xp[(slice(None), slice(None)) + sl]
    y = np.empty((N, M, *out_sp), dtype=np.result_type(x, w))
    for gi in range(g):
        c = cols[:, gi * Cg:(gi + 1) * Cg].reshape(N, Cg * int(np.prod(kernel)), -1)
        wk = w[gi * Mg:(gi + 1) * Mg].reshape(Mg, -1)
        y[:, gi * Mg:(gi + 1) * Mg] = np.einsum("mk,nkp->nmp", wk, c, optimize=True).reshape(N, Mg, *out_sp)
    if b is not None:
        y += b.reshape((1, M) + (1,) * nsp)
    return [y.astype(x.dtype, copy=False)]


register(OpDef(
    "Conv", inputs=("X", "W", "B?"),
    attrs={"auto_pad": AttrSpec("string", "NOTSET"), "dilations": AttrSpec("ints", []),
           "group": AttrSpec("int", 1), "kernel_shape": AttrSpec("ints", []),
           "pads": AttrSpec("ints", []), "strides": AttrSpec("ints", [])},
    mapping=Mapping.M2M, infer=_conv_infer, reference=_conv_reference, lower=_conv_lower,
    flops=_conv_flops, category="linear",
))
