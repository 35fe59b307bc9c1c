"""Many-to-Many linear anchors: MatMul, Conv (more in the same style: Gemm, ConvTranspose, ...)."""
from __future__ import annotations

import numpy as np

from fusion.errors import ShapeError
from fusion.ir import expr as E
from fusion.ops.pool import check_window_attrs
from fusion.ops.table import (AttrSpec, Mapping, OpDef, broadcast_shapes, prod, reduction_class, register)


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
    "MatMul", inputs=("A", "B"), infer=_matmul_infer,
    mapping=lambda node: reduction_class(node, matmul_shapes(node.inputs[0].shape, node.inputs[1].shape)[1][-1]),
    reference=lambda node, a: [np.matmul(a[0], a[1])],
    lower=_matmul_lower, flops=_matmul_flops, category="linear",
))


# ---------------------------------------------------------------------------
# Conv (N-d, groups, dilations, auto_pad)

def conv_geometry(node):
    """(kernel, strides, dilations, pads_begin, pads_end, out_spatial) for Conv-like ops."""
    x, w = node.inputs[0], node.inputs[1]
    nsp = x.rank - 2
    check_window_attrs(node, nsp)
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
    mapping=lambda node: reduction_class(node, prod(node.inputs[1].shape[1:])),
    infer=_conv_infer, reference=_conv_reference, lower=_conv_lower,
    flops=_conv_flops, category="linear",
))


# ---------------------------------------------------------------------------
# Gemm: Y = alpha * A' @ B' + beta * C   (A' = A or A^T, C broadcast to [M, N])

def _gemm_dims(node):
    a, b = node.inputs[0], node.inputs[1]
    if a.rank != 2 or b.rank != 2:
        raise ShapeError(f"{node.label()}: Gemm needs 2-D A and B, got {list(a.shape)} and {list(b.shape)}")
    M, K = (a.shape[1], a.shape[0]) if node.attrs["transA"] else a.shape
    K2, N = (b.shape[1], b.shape[0]) if node.attrs["transB"] else b.shape
    if isinstance(K, int) and isinstance(K2, int) and K != K2:
        raise ShapeError(f"{node.label()}: Gemm inner dimensions differ: A' is {[M, K]}, B' is {[K2, N]}")
    return M, K, N


def _gemm_infer(node):
    M, _, N = _gemm_dims(node)
    c = node.input(2)
    if c is not None:
        broadcast_shapes((M, N), c.shape, who=f"{node.label()}: C ")
    return [(node.inputs[0].dtype, (M, N))]


def _gemm_reference(node, a):
    A = a[0].T if node.attrs["transA"] else a[0]
    B = a[1].T if node.attrs["transB"] else a[1]
    y = np.float32(node.attrs["alpha"]).astype(A.dtype) * (A @ B)
    if len(a) > 2 and a[2] is not None:
        y = y + np.asarray(node.attrs["beta"], dtype=A.dtype) * a[2]
    return [y.astype(a[0].dtype, copy=False)]


def _gemm_lower(node, out, read, k=0):
    i, j = out
    _, K, _ = _gemm_dims(node)
    ta, tb = node.attrs["transA"], node.attrs["transB"]
    acc = E.reduce("sum", [int(K)], lambda r: read(0, [r[0], i] if ta else [i, r[0]]) *
                   read(1, [j, r[0]] if tb else [r[0], j]), prefix="k")
    dt = acc.dtype
    alpha, beta = float(node.attrs["alpha"]), float(node.attrs["beta"])
    if alpha != 1.0:
        acc = E.Const(alpha, dt) * acc
    c = node.input(2)
    if c is not None and beta != 0.0:
        cv = read(2, E.broadcast_index([i, j], c.shape))
        acc = acc + (cv if beta == 1.0 else E.Const(beta, dt) * cv)
    return acc


def _gemm_normalize(node, graph, opset):
    node.attrs.pop("broadcast", None)  # opset < 7: C broadcasting was opt-in; always on since


register(OpDef(
    "Gemm", inputs=("A", "B", "C?"),
    attrs={"alpha": AttrSpec("float", 1.0), "beta": AttrSpec("float", 1.0),
           "transA": AttrSpec("int", 0), "transB": AttrSpec("int", 0)},
    mapping=lambda node: reduction_class(node, _gemm_dims(node)[1]),
    infer=_gemm_infer, reference=_gemm_reference, lower=_gemm_lower,
    normalize=_gemm_normalize, export_opset=11,
    flops=lambda node: 2 * int(prod(_gemm_dims(node))) + 2 * int(prod(node.outputs[0].shape)),
    category="linear",
))


# ---------------------------------------------------------------------------
# ConvTranspose (N-d, groups, dilations, output_padding/output_shape, auto_pad)

def convtranspose_geometry(node):
    """(kernel, strides, dilations, pads_begin, out_spatial)."""
    x, w = node.inputs[0], node.inputs[1]
    nsp = x.rank - 2
    check_window_attrs(node, nsp)
    kernel = [int(k) for k in (node.attrs.get("kernel_shape") or w.shape[2:])]
    strides = [int(s) for s in (node.attrs.get("strides") or [1] * nsp)]
    dil = [int(d) for d in (node.attrs.get("dilations") or [1] * nsp)]
    opad = [int(p) for p in (node.attrs.get("output_padding") or [0] * nsp)]
    pads = [int(p) for p in (node.attrs.get("pads") or [0] * (2 * nsp))]
    oshape = [int(s) for s in (node.attrs.get("output_shape") or [])]
    auto = node.attrs.get("auto_pad", "NOTSET")
    in_sp = [int(s) for s in x.shape[2:]]
    if len(oshape) > nsp:
        oshape = oshape[-nsp:]   # some exporters give the full N, C, ... shape
    full = [strides[d] * (in_sp[d] - 1) + opad[d] + (kernel[d] - 1) * dil[d] + 1 for d in range(nsp)]
    if oshape or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = oshape or [in_sp[d] * strides[d] for d in range(nsp)]
        pb = []
        for d in range(nsp):
            total = full[d] - target[d]
            upper = auto == "SAME_UPPER"
            pb.append(total // 2 if upper else total - total // 2)
        return kernel, strides, dil, pb, target
    if auto == "VALID":
        pads = [0] * (2 * nsp)
    out = [full[d] - pads[d] - pads[d + nsp] for d in range(nsp)]
    if any(o <= 0 for o in out):
        raise ShapeError(f"{node.label()}: pads {pads} leave no output for input {list(x.shape)}")
    return kernel, strides, dil, pads[:nsp], out


def _convtranspose_infer(node):
    x, w = node.inputs[0], node.inputs[1]
    g = int(node.attrs["group"])
    if x.rank < 3 or w.rank != x.rank:
        raise ShapeError(f"{node.label()}: ConvTranspose needs input and weight of equal rank >= 3")
    if isinstance(x.shape[1], int) and x.shape[1] != w.shape[0]:
        raise ShapeError(f"{node.label()}: input has {x.shape[1]} channels, weight expects {w.shape[0]}")
    *_, out = convtranspose_geometry(node)
    return [(x.dtype, (x.shape[0], w.shape[1] * g, *out))]


def _convtranspose_reference(node, a):
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    kernel, strides, dil, pb, out_sp = convtranspose_geometry(node)
    g = int(node.attrs["group"])
    N, C = x.shape[:2]
    Cg, Mg = C // g, w.shape[1]
    in_sp = x.shape[2:]
    nsp = len(in_sp)
    full = [max(strides[d] * (in_sp[d] - 1) + (kernel[d] - 1) * dil[d] + 1, pb[d] + out_sp[d]) for d in range(nsp)]
    buf = np.zeros((N, g * Mg, *full), dtype=np.float64)
    for koff in np.ndindex(*kernel):
        sl = tuple(slice(koff[d] * dil[d], koff[d] * dil[d] + (in_sp[d] - 1) * strides[d] + 1, strides[d]) for d in range(nsp))
        for gi in range(g):
            xs = x[:, gi * Cg:(gi + 1) * Cg].astype(np.float64)
            ws = w[gi * Cg:(gi + 1) * Cg][(slice(None), slice(None)) + koff].astype(np.float64)
            buf[(slice(None), slice(gi * Mg, (gi + 1) * Mg)) + sl] += np.einsum("nc...,cm->nm...", xs, ws)
    crop = tuple(slice(max(pb[d], 0), max(pb[d], 0) + out_sp[d]) for d in range(nsp))
    y = buf[(slice(None), slice(None)) + crop]
    if any(p < 0 for p in pb):  # negative padding: output starts before the full result
        y = np.pad(y, [(0, 0), (0, 0)] + [(max(-p, 0), 0) for p in pb])[(slice(None), slice(None)) + tuple(slice(0, o) for o in out_sp)]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nsp)
    return [y.astype(x.dtype)]


def _convtranspose_lower(node, out, read, k=0):
    x, w = node.inputs[0], node.inputs[1]
    b = node.input(2)
    kernel, strides, dil, pb, _ = convtranspose_geometry(node)
    g = int(node.attrs["group"])
    Cg, Mg = int(x.shape[1]) // g, int(w.shape[1])
    n, m, osp = out[0], out[1], list(out[2:])
    grp, ml = m // Mg, m % Mg
    in_sp = [int(s) for s in x.shape[2:]]

    def body(r):
        c, ks = r[0], r[1:]
        ok = E.Const(True)
        pos = []
        for o, s, kk, d, p, size in zip(osp, strides, ks, dil, pb, in_sp):
            num = o + p - kk * d          # input position times stride
            i = num // s if s > 1 else num
            cond = E.binary("and", E.binary("ge", num, 0), E.binary("lt", i, size))
            if s > 1:
                cond = E.binary("and", cond, E.binary("eq", num % s, 0))
            ok = E.binary("and", ok, cond)
            pos.append(i)
        xi = read(0, [n, grp * Cg + c] + pos)
        return E.select(ok, xi * read(1, [grp * Cg + c, ml] + ks), E.Const(0.0, xi.dtype))

    acc = E.reduce("sum", [Cg] + kernel, body, prefix="c")
    if b is not None:
        acc = acc + read(2, [m])
    return acc


register(OpDef(
    "ConvTranspose", inputs=("X", "W", "B?"),
    attrs={"auto_pad": AttrSpec("string", "NOTSET"), "dilations": AttrSpec("ints", []),
           "group": AttrSpec("int", 1), "kernel_shape": AttrSpec("ints", []),
           "output_padding": AttrSpec("ints", []), "output_shape": AttrSpec("ints", []),
           "pads": AttrSpec("ints", []), "strides": AttrSpec("ints", [])},
    mapping=lambda node: reduction_class(node, int(node.inputs[0].shape[1]) // int(node.attrs["group"])
                                         * int(prod(convtranspose_geometry(node)[0]))),
    infer=_convtranspose_infer, reference=_convtranspose_reference,
    lower=_convtranspose_lower, category="linear",
    flops=lambda node: 2 * int(prod(node.inputs[0].shape)) * int(prod(node.inputs[1].shape[1:])),
))


# ---------------------------------------------------------------------------
# Einsum: letters of the output index the result, the others are summed

def einsum_terms(node):
    """(input terms, output term) with '...' expanded to capital letters."""
    eq = node.attrs["equation"].replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    ins = [v for v in node.inputs if v is not None]
    if len(terms) != len(ins):
        raise ShapeError(f"{node.label()}: equation '{eq}' has {len(terms)} operands, the node has {len(ins)}")
    ell = 0
    for t, v in zip(terms, ins):
        if "..." in t:
            ell = max(ell, v.rank - len(t.replace("...", "")))
    caps = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:ell]
    out_terms = []
    for t, v in zip(terms, ins):
        if "..." in t:
            n = v.rank - len(t.replace("...", ""))
            t = t.replace("...", caps[ell - n:])
        if len(t) != v.rank:
            raise ShapeError(f"{node.label()}: term '{t}' of '{eq}' does not match input rank {v.rank}")
        out_terms.append(t)
    if arrow:
        rhs = rhs.replace("...", caps)
    else:
        counts = {}
        for t in out_terms:
            for ch in t:
                counts[ch] = counts.get(ch, 0) + 1
        rhs = caps + "".join(sorted(ch for ch, c in counts.items() if c == 1 and ch not in caps))
    return out_terms, rhs


def _einsum_extents(node):
    terms, rhs = einsum_terms(node)
    ext = {}
    for t, v in zip(terms, [v for v in node.inputs if v is not None]):
        for ch, d in zip(t, v.shape):
            if ch not in ext or ext[ch] == 1:
                ext[ch] = d
    return terms, rhs, ext


def _einsum_infer(node):
    terms, rhs, ext = _einsum_extents(node)
    return [(node.inputs[0].dtype, tuple(ext[ch] for ch in rhs))]


def _einsum_lower(node, out, read, k=0):
    terms, rhs, ext = _einsum_extents(node)
    summed = sorted({ch for t in terms for ch in t} - set(rhs))
    ins = [v for v in node.inputs if v is not None]

    def body(r):
        at = dict(zip(rhs, out))
        at.update(zip(summed, r))
        val = None
        for i, (t, v) in enumerate(zip(terms, ins)):
            x = read(i, [E.Const(0) if int(d) == 1 else at[ch] for ch, d in zip(t, v.shape)])
            val = x if val is None else val * x
        return val

    if not summed:
        return body([])
    return E.reduce("sum", [int(ext[ch]) for ch in summed], body, prefix="e")


def _einsum_mapping(node):
    terms, rhs, ext = _einsum_extents(node)
    summed = {ch for t in terms for ch in t} - set(rhs)
    if any(int(ext[ch]) > 1 for ch in summed):
        return Mapping.M2M
    ins = [v for v in node.inputs if v is not None]
    if len(ins) == 1 and sorted(terms[0]) == sorted(rhs) and len(set(rhs)) == len(rhs):
        # a permutation; with unit dims dropped it may be the identity
        order = [ch for ch in terms[0] if int(ext[ch]) > 1]
        return Mapping.O2O if order == [ch for ch in rhs if int(ext[ch]) > 1] else Mapping.SHUFFLE
    for t in terms:
        if any(ch not in t and int(ext[ch]) > 1 for ch in rhs):
            return Mapping.O2M  # an outer product / broadcast: elements feed many outputs
    return Mapping.O2O


register(OpDef(
    "Einsum", inputs=("Inputs*",), outputs=("Output",), since=12,
    attrs={"equation": AttrSpec("string", "")},
    mapping=_einsum_mapping, infer=_einsum_infer,
    reference=lambda node, a: [np.asarray(np.einsum(node.attrs["equation"], *[x for x in a if x is not None])).astype(a[0].dtype)],
    lower=_einsum_lower, category="linear",
    flops=lambda node: 2 * int(prod(_einsum_extents(node)[2].values())),
))
