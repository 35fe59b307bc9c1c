"""Data-movement ops that are pure index arithmetic: Expand, Tile, Pad, Trilu,
DepthToSpace, SpaceToDepth, Resize, Upsample."""
from __future__ import annotations

import numpy as np

from fusion.errors import ShapeError, UnsupportedOpError
from fusion.ir import expr as E
from fusion.ops.table import (AttrSpec, Mapping, OpDef, attr_to_input, broadcast_shapes, const_input,
                              norm_axis, open_dims, prod, register, require_const, vec)


def _size_class(node):
    """Expand/Tile: One-to-Many when elements are repeated, else a copy (or a reshape)."""
    x, y = node.inputs[0], node.outputs[0]
    if tuple(x.shape) == tuple(y.shape):
        return Mapping.O2O
    nx, ny = prod(x.shape), prod(y.shape)
    if not (isinstance(nx, int) and isinstance(ny, int)):
        return Mapping.O2M   # sizes known only at run time: elements may repeat
    return Mapping.O2M if ny > nx else Mapping.REORG


# ---------------------------------------------------------------------------
# Expand: bidirectional broadcast to `shape`

def _expand_infer(node):
    from fusion.ops.shape import symbolic_value
    x = node.inputs[0]
    s = symbolic_value(node.inputs[1])
    if s is None:
        return [(x.dtype, open_dims(node, max(x.rank, int(node.inputs[1].shape[0]))))]
    return [(x.dtype, broadcast_shapes(x.shape, s, who=f"{node.label()}: "))]


register(OpDef(
    "Expand", inputs=("input", "shape"), since=8, mapping=_size_class, infer=_expand_infer,
    reference=lambda node, a: [np.array(np.broadcast_to(a[0], np.broadcast_shapes(a[0].shape, tuple(int(d) for d in a[1]))))],
    lower=lambda node, out, read, k=0: read(0, E.broadcast_index(out, node.inputs[0].shape)),
    category="movement",
))


# ---------------------------------------------------------------------------
# Tile

def _repeats(node):
    r = [int(v) for v in np.asarray(require_const(node, 1, "repeats")).reshape(-1)]
    if len(r) != node.inputs[0].rank or any(v < 0 for v in r):
        raise ShapeError(f"{node.label()}: repeats {r} must have one non-negative entry per input axis")
    return r


def _tile_infer(node):
    x = node.inputs[0]
    if const_input(node, 1) is None:
        return [(x.dtype, open_dims(node, x.rank))]
    return [(x.dtype, tuple(d * r for d, r in zip(x.shape, _repeats(node))))]


register(OpDef(
    "Tile", inputs=("input", "repeats"), mapping=_size_class, infer=_tile_infer,
    reference=lambda node, a: [np.tile(a[0], vec(a[1]))],
    # from the shapes alone: an axis that grew wraps around
    lower=lambda node, out, read, k=0: read(0, [o % int(d) if int(d) != int(n) else o for o, d, n in
                                                zip(out, node.inputs[0].shape, node.outputs[0].shape)]),
    category="movement",
))


# ---------------------------------------------------------------------------
# Pad (opset 11+ form: pads, constant_value and axes are inputs)

def _pad_normalize(node, graph, opset):
    if opset < 11:
        dt = node.inputs[0].dtype
        attr_to_input(node, graph, "pads", 1)
        val = node.attrs.pop("value", 0.0)
        if val:
            while len(node.inputs) < 3:
                node.inputs.append(None)
            graph.set_input(node, 2, graph.const(np.array(val, dtype=dt), "pad_value"))


def pad_amounts(node, args=None):
    """(begin, end) per axis; negative values crop. `args`: run-time arguments."""
    x = node.inputs[0]
    if args is not None:
        p = vec(args[1])
        axes = args[3] if len(args) > 3 else None
    else:
        p = [int(v) for v in np.asarray(require_const(node, 1, "pads")).reshape(-1)]
        axes = const_input(node, 3)
        if axes is None and node.input(3) is not None:
            raise ShapeError(f"{node.label()}: Pad axes must be a constant")
    axes = list(range(x.rank)) if axes is None else [norm_axis(int(a), x.rank, node) for a in np.asarray(axes).reshape(-1)]
    if len(p) != 2 * len(axes):
        raise ShapeError(f"{node.label()}: pads has {len(p)} values, expected {2 * len(axes)}")
    begin, end = [0] * x.rank, [0] * x.rank
    for i, a in enumerate(axes):
        begin[a], end[a] = p[i], p[i + len(axes)]
    return begin, end


def _pad_value(node):
    v = node.input(2)
    if v is None:
        return 0
    c = const_input(node, 2)
    return None if c is None else np.asarray(c).reshape(-1)[0].item() if np.asarray(c).size else 0


def _pad_runtime(node):
    return const_input(node, 1) is None or (node.input(3) is not None and const_input(node, 3) is None)


def _check_reflect(node, shape, b, e) -> None:
    """Reflect padding mirrors without repeating the border, so each side may add
    at most len-1 elements of an axis at least 2 long (after negative pads crop
    it); onnxruntime refuses the rest, and numpy would quietly pad something else."""
    if node.attrs.get("mode", "constant") != "reflect":
        return
    for ax, (d, p, q) in enumerate(zip(shape, b, e)):
        if not isinstance(d, (int, np.integer)) or (p <= 0 and q <= 0):
            continue
        n = int(d) - max(-p, 0) - max(-q, 0)
        if n < 2 or p > n - 1 or q > n - 1:
            raise ShapeError(f"{node.label()}: reflect padding of ({max(p, 0)}, {max(q, 0)}) on axis {ax} of "
                             f"length {n}: each side may add at most length-1 and the axis needs 2 or more "
                             f"elements; use mode 'edge' or smaller pads")


def _pad_infer(node):
    x = node.inputs[0]
    if _pad_runtime(node):
        return [(x.dtype, open_dims(node, x.rank))]
    b, e = pad_amounts(node)
    if x.shape is not None:
        _check_reflect(node, x.shape, b, e)
    return [(x.dtype, tuple(d + p + q for d, p, q in zip(x.shape, b, e)))]


def _pad_reference(node, a):
    x = a[0]
    b, e = pad_amounts(node, a)
    _check_reflect(node, x.shape, b, e)
    mode = node.attrs["mode"]
    crop = tuple(slice(max(-p, 0), d - max(-q, 0)) for d, p, q in zip(x.shape, b, e))
    x = x[crop]
    widths = [(max(p, 0), max(q, 0)) for p, q in zip(b, e)]
    if mode == "constant":
        val = a[2].reshape(-1)[0] if len(a) > 2 and a[2] is not None and a[2].size else 0
        return [np.pad(x, widths, mode="constant", constant_values=val)]
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedOpError(f"{node.label()}: Pad mode '{mode}' is not one of constant, reflect, edge, wrap")
    return [np.pad(x, widths, mode=mode)]


def _pad_begin_read(node, read):
    """Begin pads per axis read from the run-time pads (and axes) tensors."""
    x = node.inputs[0]
    n = int(node.inputs[1].shape[0]) // 2
    const_axes = const_input(node, 3)
    if node.input(3) is None:
        axes = list(range(x.rank))
    elif const_axes is not None:
        axes = [norm_axis(v, x.rank, node) for v in vec(const_axes)]
    else:
        axes = None
    begin = []
    for d in range(x.rank):
        val = E.Const(0)
        for j in range(n - 1, -1, -1):
            pj = E.cast(read(1, [E.Const(j)]), "int64")
            if axes is not None:
                val = pj if axes[j] == d else val
            else:
                aj = E.cast(read(3, [E.Const(j)]), "int64")
                aj = E.select(E.binary("lt", aj, 0), aj + x.rank, aj)
                val = E.select(E.binary("eq", aj, d), pj, val)
        begin.append(val)
    return begin


def _pad_lower(node, out, read, k=0):
    return pad_lower_with(node, out, read)


def pad_lower_with(node, out, read, dims=None):
    """The index function of Pad; `dims`: the input's sizes per axis, ints or int64
    expressions of sizes known only at run time (then the border tests, edge
    clamps, wrap and reflect use the actual sizes, not the capacities)."""
    x = node.inputs[0]
    b = _pad_begin_read(node, read) if _pad_runtime(node) else pad_amounts(node)[0]
    mode = node.attrs["mode"]
    pos = [o - p for o, p in zip(out, b)]
    if dims is None:
        dims = [int(d) for d in x.shape]
    else:
        dims = [int(d.value) if isinstance(d, E.Const) else d for d in dims]
    if mode == "constant":
        inside = E.Const(True)
        for p_, d in zip(pos, dims):
            inside = E.binary("and", inside, E.binary("and", E.binary("ge", p_, 0), E.binary("lt", p_, d)))
        v = read(0, pos)
        val = _pad_value(node)
        fill = E.cast(read(2, [E.Const(0)] * node.inputs[2].rank), v.dtype) if val is None else E.Const(val, v.dtype)
        return E.select(inside, v, fill)
    idx = []
    for p_, d in zip(pos, dims):
        if mode == "edge":
            idx.append(E.binary("min", E.binary("max", p_, 0), d - 1))
        elif mode == "wrap":
            idx.append(p_ % d if _is_len(d) else p_ % E.binary("max", d, 1))   # an empty axis is never read
        else:  # reflect (pads smaller than the dim)
            r = E.select(E.binary("lt", p_, 0), -p_, p_)
            if _is_len(d):
                idx.append(E.select(E.binary("ge", r, d), 2 * (d - 1) - r, r) if d > 1 else E.Const(0))
            else:
                idx.append(E.select(E.binary("gt", d, 1), E.select(E.binary("ge", r, d), 2 * (d - 1) - r, r), 0))
    return read(0, idx)


def _pad_mapping(node):
    if _pad_runtime(node):
        return Mapping.O2M  # positions computed from run-time pads
    b, e = pad_amounts(node)
    if not all(_is_len(d) for d in tuple(node.inputs[0].shape or ()) + tuple(node.outputs[0].shape or ())):
        return Mapping.O2M   # sizes known only at run time
    grows = any(p > 0 for p in b + e)
    if not grows:
        return Mapping.O2O
    if node.attrs["mode"] == "constant":
        # the fill value is read by every padded element unless it is a constant
        n_pad = int(prod(node.outputs[0].shape)) - int(prod([d + min(p, 0) + min(q, 0) for d, p, q in
                                                              zip(node.inputs[0].shape, b, e)]))
        return Mapping.O2M if _pad_value(node) is None and n_pad > 1 else Mapping.O2O
    return Mapping.O2M  # edge/reflect/wrap read border elements several times


register(OpDef(
    "Pad", inputs=("data", "pads", "constant_value?", "axes?"), outputs=("output",),
    attrs={"mode": AttrSpec("string", "constant")},
    mapping=_pad_mapping, infer=_pad_infer, reference=_pad_reference, lower=_pad_lower,
    normalize=_pad_normalize, export_opset=11, category="movement",
))


# ---------------------------------------------------------------------------
# Trilu: keep the upper (or lower) triangle of the last two axes

def _trilu_k(node):
    if node.input(1) is None:
        return 0
    return int(np.asarray(require_const(node, 1, "k")).reshape(-1)[0])


def _trilu_reference(node, a):
    x = a[0]
    kk = int(np.asarray(a[1]).reshape(-1)[0]) if len(a) > 1 and a[1] is not None else 0
    return [np.triu(x, kk) if node.attrs["upper"] else np.tril(x, kk)]


def _trilu_lower(node, out, read, k=0):
    i, j = out[-2], out[-1]
    # k computed at run time: a data-dependent condition
    kk = _trilu_k(node) if node.input(1) is None or const_input(node, 1) is not None else \
        E.cast(read(1, [E.Const(0)] * node.inputs[1].rank), "int64")
    keep = E.binary("ge", j - i, kk) if node.attrs["upper"] else E.binary("le", j - i, kk)
    v = read(0, list(out))
    return E.select(keep, v, E.Const(0, v.dtype) if v.dtype != "bool" else E.Const(False))


register(OpDef(
    "Trilu", inputs=("input", "k?"), since=14, attrs={"upper": AttrSpec("int", 1)},
    mapping=lambda node: Mapping.O2O if node.input(1) is None or const_input(node, 1) is not None
    or int(prod(node.outputs[0].shape)) <= 1 else Mapping.O2M,   # a run-time k is read by every element
    infer=lambda node: [(node.inputs[0].dtype, node.inputs[0].shape)],
    reference=_trilu_reference, lower=_trilu_lower, category="movement",
))


# ---------------------------------------------------------------------------
# DepthToSpace / SpaceToDepth: channel blocks <-> spatial blocks (Shuffle)

def _d2s_infer(node):
    x = node.inputs[0]
    b = int(node.attrs["blocksize"])
    if x.rank != 4 or (isinstance(x.shape[1], int) and x.shape[1] % (b * b)):
        raise ShapeError(f"{node.label()}: needs a 4-D input with channels divisible by {b * b}, got {list(x.shape)}")
    n, c, h, w = x.shape
    return [(x.dtype, (n, c // (b * b), h * b, w * b))]


def _d2s_reference(node, a):
    x = a[0]
    b = int(node.attrs["blocksize"])
    n, c, h, w = x.shape
    if node.attrs["mode"] == "CRD":
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return [np.ascontiguousarray(t.reshape(n, c // (b * b), h * b, w * b))]


def _d2s_lower(node, out, read, k=0):
    b = int(node.attrs["blocksize"])
    c2 = int(node.outputs[0].shape[1])
    n, c, h, w = out
    bh, bw = h % b, w % b
    ch = c * (b * b) + bh * b + bw if node.attrs["mode"] == "CRD" else (bh * b + bw) * c2 + c
    return read(0, [n, ch, h // b, w // b])


def _d2s_mapping(node):
    x = node.inputs[0]
    b = int(node.attrs["blocksize"])
    _, c, h, w = (int(d) for d in x.shape)
    if b == 1:
        return Mapping.O2O
    # With 1x1 spatial input the element order may survive: then it is a reshape.
    if h == 1 and w == 1 and (node.attrs.get("mode", "DCR") == "CRD" or c == b * b):
        return Mapping.REORG
    return Mapping.SHUFFLE


register(OpDef(
    "DepthToSpace", inputs=("input",), outputs=("output",),
    attrs={"blocksize": AttrSpec("int", 2), "mode": AttrSpec("string", "DCR")},
    mapping=_d2s_mapping, infer=_d2s_infer, reference=_d2s_reference, lower=_d2s_lower, category="movement",
))


def _s2d_infer(node):
    x = node.inputs[0]
    b = int(node.attrs["blocksize"])
    if x.rank != 4 or any(isinstance(d, int) and d % b for d in x.shape[2:]):
        raise ShapeError(f"{node.label()}: needs a 4-D input with H and W divisible by {b}, got {list(x.shape)}")
    n, c, h, w = x.shape
    return [(x.dtype, (n, c * b * b, h // b, w // b))]


def _s2d_reference(node, a):
    x = a[0]
    b = int(node.attrs["blocksize"])
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // b, b, w // b, b)
    t = t.transpose(0, 1, 3, 5, 2, 4) if node.attrs.get("mode") == "CRD" else t.transpose(0, 3, 5, 1, 2, 4)
    return [np.ascontiguousarray(t.reshape(n, c * b * b, h // b, w // b))]


def _s2d_lower(node, out, read, k=0):
    b = int(node.attrs["blocksize"])
    c = int(node.inputs[0].shape[1])
    n, oc, h, w = out
    if node.attrs.get("mode") == "CRD":   # channel-major blocks (opset 28)
        q = oc % (b * b)
        return read(0, [n, oc // (b * b), h * b + q // b, w * b + q % b])
    q = oc // c
    return read(0, [n, oc % c, h * b + q // b, w * b + q % b])


def _s2d_mapping(node):
    b = int(node.attrs["blocksize"])
    _, c, h, w = (int(d) for d in node.outputs[0].shape)
    if b == 1:
        return Mapping.O2O
    crd = node.attrs.get("mode") == "CRD"
    return Mapping.REORG if h == 1 and w == 1 and (crd or c == b * b) else Mapping.SHUFFLE


register(OpDef(
    "SpaceToDepth", inputs=("input",), outputs=("output",),
    attrs={"blocksize": AttrSpec("int", 2), "mode": AttrSpec("string", None)},   # mode: opset 28 (None = DCR)
    mapping=_s2d_mapping, infer=_s2d_infer, reference=_s2d_reference, lower=_s2d_lower, category="movement",
))


# ---------------------------------------------------------------------------
# Resize (opset 11+ form) and Upsample. Every resized axis contributes taps
# (index, weight): nearest 1, linear 2, cubic 4; an output element is the
# weighted sum over all tap combinations. The tap formulas are written once
# over a small namespace (numpy for the reference, expr for `lower`).

class _NpM:
    f = staticmethod(np.float32)
    floor = staticmethod(np.floor)
    ceil = staticmethod(np.ceil)
    where = staticmethod(np.where)
    imin = staticmethod(np.minimum)
    imax = staticmethod(np.maximum)
    abs = staticmethod(np.abs)
    lt = staticmethod(np.less)
    gt = staticmethod(np.greater)
    eq = staticmethod(np.equal)
    or_ = staticmethod(np.logical_or)

    @staticmethod
    def to_f(x): return np.asarray(x).astype(np.float32)

    @staticmethod
    def to_i(x): return np.asarray(x).astype(np.int64)


class _ExM:
    f = staticmethod(lambda v: v if isinstance(v, E.Expr) else E.Const(float(v), "float32"))
    floor = staticmethod(lambda x: E.call("floor", x))
    ceil = staticmethod(lambda x: E.call("ceil", x))
    where = staticmethod(E.select)
    imin = staticmethod(lambda a, b: E.binary("min", a, b))
    imax = staticmethod(lambda a, b: E.binary("max", a, b))
    abs = staticmethod(lambda x: E.call("abs", x))
    lt = staticmethod(lambda a, b: E.binary("lt", a, b))
    gt = staticmethod(lambda a, b: E.binary("gt", a, b))
    eq = staticmethod(lambda a, b: E.binary("eq", a, b))
    or_ = staticmethod(lambda a, b: E.binary("or", a, b))

    @staticmethod
    def to_f(x): return E.cast(x, "float32")

    @staticmethod
    def to_i(x): return E.cast(x, "int64")


def _resize_normalize(node, graph, opset):
    if opset < 11:  # Resize-10: (X, scales), asymmetric coordinates, nearest rounds down
        scales = node.inputs[1]
        graph.set_input(node, 1, None)
        node.inputs.append(None)
        graph.set_input(node, 2, scales)
        node.attrs.setdefault("coordinate_transformation_mode", "asymmetric")
        node.attrs.setdefault("nearest_mode", "floor")


def _upsample_normalize(node, graph, opset):
    if opset < 9:
        attr_to_input(node, graph, "scales", 1, dtype=np.float32)


def _nonempty(a):
    return None if a is None or np.asarray(a).size == 0 else a


def _resize_slots(node):
    return (1, None) if node.op == "Upsample" else (2, 3)


def resize_runtime(node) -> bool:
    """Scales and sizes are both unknown at compile time (given as tensors)."""
    si, zi = _resize_slots(node)
    return _nonempty(const_input(node, si)) is None and (zi is None or _nonempty(const_input(node, zi)) is None)


def _resize_reads_params(node) -> bool:
    """Does the index function read scales/sizes/roi at run time?"""
    si, zi = _resize_slots(node)
    ct = node.attrs.get("coordinate_transformation_mode")
    roi_rt = node.op == "Resize" and node.input(1) is not None and const_input(node, 1) is None
    if roi_rt and ct == "tf_crop_and_resize":
        return True
    if not resize_runtime(node):
        return False
    by_scales = node.input(si) is not None and node.inputs[si].size > 0
    return by_scales or node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch"


def _is_len(v) -> bool:
    return isinstance(v, (int, np.integer))


def _len_f(v, k: float = 1.0):
    """Length v (times k) as a float32 number: a constant, or an expression when
    v is a size known only at run time (an int64 expression)."""
    if _is_len(v):
        return E.Const(float(v * k), "float32")
    f = E.cast(v, "float32")
    return f if k == 1.0 else f * E.Const(float(k), "float32")


def _len_ratio(o, i):
    """ONNX's scale out/in of a `sizes`-given Resize, in float32."""
    if _is_len(o) and _is_len(i):
        return np.float32(o) / np.float32(i)
    return _len_f(o) / _len_f(i)


def _len_min(a, b, op="min"):
    if not isinstance(a, E.Expr) and not isinstance(b, E.Expr):
        return min(a, b) if op == "min" else max(a, b)
    return E.binary(op, a if isinstance(a, E.Expr) else E.Const(float(a), "float32"),
                    b if isinstance(b, E.Expr) else E.Const(float(b), "float32"))


def resize_plan(node, args=None, read=None, dims=None):
    """Per axis: (in_len, out_len, scale, roi_start, roi_end); scale 1 and in == out: untouched.
    `args`: run-time arguments (reference). `read`: build run-time reads of
    scales/sizes/roi (index function of a node whose output shape is static).
    `dims`: (input sizes, output sizes) per axis, ints or int64 expressions of
    sizes known only at run time (with `read`): the scales derived from sizes
    are then out/in of the actual sizes, as ONNX defines them."""
    x = node.inputs[0]
    r = x.rank
    si, zi = _resize_slots(node)
    if args is not None:
        scales = _nonempty(args[si]) if len(args) > si else None
        sizes = _nonempty(args[zi]) if zi is not None and len(args) > zi else None
        roi = _nonempty(args[1]) if node.op == "Resize" and len(args) > 1 else None
    else:
        scales = _nonempty(const_input(node, si))
        sizes = _nonempty(const_input(node, zi)) if zi is not None else None
        roi = _nonempty(const_input(node, 1)) if node.op == "Resize" and node.input(1) is not None else None
    axes = node.attrs.get("axes") or list(range(r))
    axes = [norm_axis(a, r, node) for a in axes]
    in_sp = [x.shape[a] for a in axes] if args is None else [args[0].shape[a] for a in axes]
    if dims is not None:
        in_sp = [dims[0][a] for a in axes]
    elif not all(isinstance(d, (int, np.integer)) for d in in_sp):
        raise ShapeError(f"{node.label()}: Resize needs static input dims, got {list(x.shape)}; bind them with --shape")
    policy = node.attrs.get("keep_aspect_ratio_policy", "stretch")
    if scales is None and sizes is None:
        if read is None or (dims is None and not node.outputs[0].is_static):
            which = node.input(si) if node.input(si) is not None else (node.input(zi) if zi else None)
            raise ShapeError(f"{node.label()}: Resize needs constant scales or sizes"
                             + (f" ('{which.name}' is computed at run time)" if which is not None else ""))
        # run time: output sizes are known from the (static) output shape
        sz = [int(node.outputs[0].shape[a]) for a in axes] if dims is None else [dims[1][a] for a in axes]
        if node.input(si) is not None and node.inputs[si].size > 0:
            sc = [E.cast(read(si, [E.Const(j)]), "float32") for j in range(len(axes))]
        elif policy == "stretch":
            sc = [_len_ratio(o, i) for o, i in zip(sz, in_sp)]
        else:
            ratios = [E.cast(read(zi, [E.Const(j)]), "float32") / _len_f(i) for j, i in enumerate(in_sp)]
            s_ = ratios[0]
            for q in ratios[1:]:
                s_ = E.binary("min" if policy == "not_larger" else "max", s_, q)
            sc = [s_] * len(axes)
    elif sizes is not None:
        sz = [int(v) for v in np.asarray(sizes).reshape(-1)]
        sc = [_len_ratio(o, i) for o, i in zip(sz, in_sp)]
        if policy in ("not_larger", "not_smaller"):
            s_ = sc[0]
            for q in sc[1:]:
                s_ = _len_min(s_, q, "min" if policy == "not_larger" else "max")
            sc = [s_ if isinstance(s_, E.Expr) else np.float32(s_)] * len(sc)
            sz = [int(np.floor(i * s_ + 0.5)) for i in in_sp] if dims is None else sz
    else:
        sc = [np.float32(v) for v in np.asarray(scales).reshape(-1)]
        sz = [int(np.floor(np.float32(i) * s_)) for i, s_ in zip(in_sp, sc)] if dims is None else in_sp
    if dims is not None:
        sz = [dims[1][a] for a in axes]
    if len(sc) != len(axes):
        raise ShapeError(f"{node.label()}: {len(sc)} scales/sizes for {len(axes)} axes")
    roi_rt = node.op == "Resize" and args is None and node.input(1) is not None and roi is None
    if roi_rt and node.attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize" and read is None:
        roi_rt = "unknown"
    shape = x.shape if args is None else args[0].shape
    if dims is not None:
        shape = dims[0]
    plan = [(d, d, np.float32(1), 0.0, 1.0) for d in shape]
    for j, a in enumerate(axes):
        rs, re_ = 0.0, 1.0
        if roi is not None:
            rv = np.asarray(roi, dtype=np.float32).reshape(-1)
            rs, re_ = float(rv[j]), float(rv[j + len(axes)])
        elif roi_rt is True and read is not None:
            rs = E.cast(read(1, [E.Const(j)]), "float32")
            re_ = E.cast(read(1, [E.Const(j + len(axes))]), "float32")
        plan[a] = (in_sp[j], sz[j], sc[j], rs, re_)
    return plan


def _taps(M, o, in_len, out_len, scale, rs, re_, attrs):
    """[(index, weight, inside)] for output coordinate o along one axis. in_len and
    out_len are ints, or (expr namespace only) int64 expressions of sizes known
    only at run time: the same formulas then use the actual sizes."""
    mode = attrs["mode"]
    ct = attrs.get("coordinate_transformation_mode", "half_pixel")
    of = M.to_f(o)
    half = M.f(0.5)
    sc = M.f(scale)
    rt = not (_is_len(in_len) and _is_len(out_len))

    def lf(v, k=1.0):   # a length (times k) as float32
        return _len_f(v, k) if rt else M.f(v * k if k != 1.0 else v)

    def over(v, a, b):  # v * (in-1) / (out-1) in onnxruntime's order (the product first: 23 * 7 / 23 is 7,
        # 23 * (7 / 23) is 6.9999995, which nearest/floor turns into the pixel before); guarded
        # against out == 1 (the branch not taken) when the sizes are known only at run time
        return v * M.f(a) / M.f(b) if not rt else v * _len_f(a) / _len_f(E.binary("max", E.wrap(b), 1))

    def if_long(then, other):   # then() if out_len > 1 else other()
        if not rt:
            return then() if out_len > 1 else other()
        return M.where(M.gt(E.wrap(out_len), 1), then(), other())

    if ct == "asymmetric":
        x = of / sc
    elif ct == "align_corners":
        x = if_long(lambda: over(of, in_len - 1, out_len - 1), lambda: of * M.f(0))
    elif ct == "pytorch_half_pixel":
        x = if_long(lambda: (of + half) / sc - half, lambda: of * M.f(0))
    elif ct == "half_pixel_symmetric":
        adj = lf(out_len) / (sc * lf(in_len))
        off = lf(in_len, 0.5) * (M.f(1) - adj)
        x = off + (of + half) / sc - half
    elif ct == "tf_crop_and_resize":
        x = if_long(lambda: M.f(rs) * lf(in_len - 1) + over(of * (M.f(re_) - M.f(rs)), in_len - 1, out_len - 1),
                    lambda: of * M.f(0) + M.f(0.5) * (M.f(rs) + M.f(re_)) * lf(in_len - 1))
    elif ct == "half_pixel":
        x = (of + half) / sc - half
    else:
        raise UnsupportedOpError(f"Resize coordinate_transformation_mode '{ct}' is not supported")
    inside = None
    if ct == "tf_crop_and_resize":
        inside = M.or_(M.lt(x, M.f(0)), M.gt(x, lf(in_len - 1)))   # True: outside (extrapolate)
    hi = in_len - 1
    if mode == "nearest":
        nm = attrs.get("nearest_mode", "round_prefer_floor")
        if nm == "round_prefer_floor":
            i = M.ceil(x - half)
        elif nm == "round_prefer_ceil":
            i = M.floor(x + half)
        elif nm == "floor":
            i = M.floor(x)
        elif nm == "ceil":
            i = M.ceil(x)
        else:
            raise UnsupportedOpError(f"Resize nearest_mode '{nm}' is not supported")
        return [(M.imin(M.imax(M.to_i(i), 0), hi), None)], inside
    if mode == "linear":
        xc = M.imin(M.imax(x, M.f(0)), lf(hi))
        i0 = M.imin(M.to_i(xc), hi)
        i1 = M.imin(i0 + 1, hi)
        d0 = M.abs(xc - M.to_f(i0))
        d1 = M.abs(xc - M.to_f(i1))
        same = M.eq(i0, i1)
        w0 = M.where(same, M.f(0.5), d1)
        w1 = M.where(same, M.f(0.5), d0)
        return [(i0, w0), (i1, w1)], inside
    if mode == "cubic":
        a = float(attrs.get("cubic_coeff_a", -0.75))
        fl = M.floor(x)
        t = x - fl
        base = M.to_i(fl)
        ws = []
        for off, s in ((-1, t + M.f(1)), (0, t), (1, M.f(1) - t), (2, M.f(2) - t)):
            if off in (0, 1):
                w = ((M.f(a + 2) * s - M.f(a + 3)) * s) * s + M.f(1)
            else:
                w = ((M.f(a) * s - M.f(5 * a)) * s + M.f(8 * a)) * s - M.f(4 * a)
            ws.append((base + off, w))
        if attrs.get("exclude_outside", 0):
            ok = [M.where(M.or_(M.lt(i, 0), M.gt(i, hi)), M.f(0), w) for i, w in ws]
            tot = ok[0] + ok[1] + ok[2] + ok[3]
            ws = [(i, w / tot) for (i, _), w in zip(ws, ok)]
        return [(M.imin(M.imax(i, 0), hi), w) for i, w in ws], inside
    raise UnsupportedOpError(f"Resize mode '{mode}' is not supported")


def _resize_attrs(node, plan):
    a = dict(node.attrs)
    if node.op == "Upsample":
        a["coordinate_transformation_mode"] = "asymmetric"
        a["nearest_mode"] = "floor"
    if a.get("mode") == "bilinear":
        a["mode"] = "linear"
    if a.get("antialias", 0) and any(not (_is_len(i) and _is_len(o)) for i, o, _, _, _ in plan) \
            and a.get("mode", "nearest") != "nearest":
        raise UnsupportedOpError(f"{node.label()}: Resize with antialias=1 and sizes known only at run time "
                                 f"is not supported (it may downscale)")
    if a.get("antialias", 0) and any(_is_len(i) and _is_len(o) and o < i for i, o, _, _, _ in plan):
        raise UnsupportedOpError(f"{node.label()}: Resize with antialias=1 when downscaling is not supported")
    return a


def _resize_infer(node):
    x = node.inputs[0]
    y = node.outputs[0]
    if node.attrs.get("antialias", 0) and node.attrs.get("mode", "nearest") != "nearest" and y.shape is not None \
            and any(isinstance(o, int) and isinstance(i, int) and o < i for i, o in zip(x.shape, y.shape)):
        raise UnsupportedOpError(f"{node.label()}: Resize with antialias=1 when downscaling is not supported")
    if resize_runtime(node):
        return [(x.dtype, open_dims(node, x.rank))]
    if x.shape is not None and not all(_is_len(d) for d in x.shape):
        return [(x.dtype, _resize_sym_shape(node))]
    return [(x.dtype, tuple(p[1] if p[0] != p[1] or p[2] != 1 else d for p, d in zip(resize_plan(node), x.shape)))]


def _odd_part(k: int) -> int:
    while k and k % 2 == 0:
        k //= 2
    return k


def _resize_sym_shape(node) -> tuple:
    """Output dims of a Resize with constant scales/sizes over an input with dims
    known only at run time: constant sizes, or floor(in * scale) as a formula
    when onnxruntime's float32 product in * scale is exact for every in < 2^16
    (scale = m * 2^e with m odd below 256: 2, 0.5, 1.5, 0.75...); else a dim
    decided at run time (fresh symbol)."""
    import sympy
    x = node.inputs[0]
    r = x.rank
    si, zi = _resize_slots(node)
    scales = _nonempty(const_input(node, si))
    sizes = _nonempty(const_input(node, zi)) if zi is not None else None
    axes = [norm_axis(a, r, node) for a in (node.attrs.get("axes") or list(range(r)))]
    free = open_dims(node, r)
    out = list(x.shape)
    policy = node.attrs.get("keep_aspect_ratio_policy", "stretch")
    if sizes is not None and policy != "stretch":
        st = [_is_len(x.shape[a]) for a in axes]
        if not all(st):
            for a in axes:
                out[a] = free[a]
            return tuple(out)
    for j, a in enumerate(axes):
        d = x.shape[a]
        if sizes is not None:
            out[a] = int(np.asarray(sizes).reshape(-1)[j])
            continue
        s_ = np.float32(np.asarray(scales).reshape(-1)[j])
        if _is_len(d):
            out[a] = int(np.floor(np.float32(d) * s_))
        elif s_ == 1:
            out[a] = d
        elif 0 < s_ < 256 and float(s_ * 256) == int(s_ * 256) and _odd_part(int(s_ * 256)) < 256:
            out[a] = sympy.floor(sympy.sympify(d) * sympy.Rational(int(s_ * 256), 256))
        else:
            out[a] = free[a]
    return tuple(out)


def _resize_reference(node, a):
    x = a[0]
    plan = resize_plan(node, args=a)
    attrs = _resize_attrs(node, plan)
    y = x.astype(np.float64) if attrs["mode"] != "nearest" else x
    outside_any = None
    for ax, (n_in, n_out, sc, rs, re_) in enumerate(plan):
        if n_in == n_out and sc == 1 and attrs.get("coordinate_transformation_mode") != "tf_crop_and_resize":
            continue
        o = np.arange(n_out)
        taps, outside = _taps(_NpM, o, n_in, n_out, sc, rs, re_, attrs)
        if taps[0][1] is None:
            y = np.take(y, taps[0][0], axis=ax)
        else:
            acc = 0
            for i, w in taps:
                sh = [1] * y.ndim
                sh[ax] = n_out
                acc = acc + np.take(y, i, axis=ax) * np.asarray(w, np.float64).reshape(sh)
            y = acc
        if outside is not None:
            sh = [1] * x.ndim
            sh[ax] = n_out
            m = np.asarray(outside).reshape(sh)
            outside_any = m if outside_any is None else (outside_any | m)
    if outside_any is not None:
        y = np.where(np.broadcast_to(outside_any, y.shape), attrs.get("extrapolation_value", 0.0), y)
    return [np.asarray(y).astype(x.dtype)]


def _resize_lower(node, out, read, k=0):
    return resize_lower_with(node, out, read)


def resize_lower_with(node, out, read, dims=None):
    """The index function of Resize/Upsample; `dims` (see `resize_plan`): the
    input/output sizes per axis, some of them known only at run time."""
    x = node.inputs[0]
    if dims is not None:   # constant sizes as plain ints: the static formulas fold them
        dims = tuple([int(d.value) if isinstance(d, E.Const) else d for d in ds] for ds in dims)
    plan = resize_plan(node, read=read, dims=dims)
    attrs = _resize_attrs(node, plan)
    per_axis, outside = [], None
    for ax, (n_in, n_out, sc, rs, re_) in enumerate(plan):
        if n_in == n_out and sc == 1 and attrs.get("coordinate_transformation_mode") != "tf_crop_and_resize":
            per_axis.append([(out[ax], None)])
            continue
        taps, out_ax = _taps(_ExM, out[ax], n_in, n_out, sc, rs, re_, attrs)
        per_axis.append(taps)
        if out_ax is not None:
            outside = out_ax if outside is None else E.binary("or", outside, out_ax)
    acc = None
    import itertools
    for combo in itertools.product(*per_axis):
        v = read(0, [i for i, _ in combo])
        w = None
        for _, wi in combo:
            if wi is not None:
                w = wi if w is None else w * wi
        if w is not None:
            v = E.cast(v, "float32") * w if v.dtype != "float32" else v * w
        acc = v if acc is None else acc + v
    acc = E.cast(acc, x.dtype.name)
    if outside is not None:
        acc = E.select(outside, E.Const(float(attrs.get("extrapolation_value", 0.0)), acc.dtype), acc)
    return acc


def _resize_mapping(node):
    attrs = dict(node.attrs)
    if _resize_reads_params(node):
        return Mapping.O2M  # coordinates computed from run-time scales/roi
    x, y = node.inputs[0], node.outputs[0]
    if not all(_is_len(d) for d in tuple(x.shape or ()) + tuple(y.shape or ())):
        return Mapping.O2M   # sizes known only at run time: may upsample
    if resize_runtime(node):
        plan = [(int(i), int(o), None) for i, o in zip(x.shape, y.shape) if i != o]
    else:
        plan = [p for p in resize_plan(node) if not (p[0] == p[1] and p[2] == 1)]
    if not plan:
        return Mapping.O2O
    if attrs.get("mode", "nearest") == "nearest" and all(p[1] <= p[0] for p in plan):
        return Mapping.O2O  # nearest downsampling picks distinct elements
    return Mapping.O2M


_RESIZE_ATTRS = {"antialias": AttrSpec("int", 0), "axes": AttrSpec("ints", []),
                 "coordinate_transformation_mode": AttrSpec("string", "half_pixel"),
                 "cubic_coeff_a": AttrSpec("float", -0.75), "exclude_outside": AttrSpec("int", 0),
                 "extrapolation_value": AttrSpec("float", 0.0),
                 "keep_aspect_ratio_policy": AttrSpec("string", "stretch"),
                 "mode": AttrSpec("string", "nearest"), "nearest_mode": AttrSpec("string", "round_prefer_floor")}

register(OpDef(
    "Resize", inputs=("X", "roi?", "scales?", "sizes?"), since=10, attrs=_RESIZE_ATTRS,
    mapping=_resize_mapping, infer=_resize_infer, reference=_resize_reference, lower=_resize_lower,
    normalize=_resize_normalize, export_opset=11, category="movement",
    flops=lambda node: 4 * int(prod(node.outputs[0].shape)),
))

register(OpDef(
    "Upsample", inputs=("X", "scales"), since=7, attrs={"mode": AttrSpec("string", "nearest")},
    mapping=_resize_mapping, infer=_resize_infer, reference=_resize_reference, lower=_resize_lower,
    normalize=_upsample_normalize, export_opset=9, category="movement",
    flops=lambda node: 4 * int(prod(node.outputs[0].shape)),
    doc="Deprecated since opset 10: Resize with asymmetric coordinates and nearest rounding down.",
))


def resize_value_dims(node, xs, sv):
    """Output dims of a Resize whose `sizes` is a run-time value known as formulas
    (shape arithmetic on run-time dims, see fusion.ir.shape_infer): xs are the
    input dims, sv(i) the symbolic value of input i or None. None: no formula."""
    si, zi = _resize_slots(node)
    if zi is None or node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        return None
    s = sv(zi) if len(node.inputs) > zi and node.inputs[zi] is not None else None
    if s is None or xs is None:
        return None
    r = len(xs)
    axes = [norm_axis(a, r, node) for a in (node.attrs.get("axes") or list(range(r)))]
    vals = list(np.asarray(s, dtype=object).reshape(-1))
    if len(vals) != len(axes):
        return None
    out = list(xs)
    for a, v in zip(axes, vals):
        out[a] = v
    return out


def pad_value_dims(node, xs, sv):
    """Output dims of a Pad whose pads (and axes) are a run-time value known as
    formulas (see `resize_value_dims`): in + begin + end. None: no formula."""
    if xs is None or node.input(1) is None:
        return None
    pads = sv(1)
    if pads is None:
        return None
    r = len(xs)
    if node.input(3) is not None:
        ax = sv(3)
        if ax is None:
            return None
        axes = [int(a) % r for a in np.asarray(ax, dtype=object).reshape(-1)]
    else:
        axes = list(range(r))
    p = list(np.asarray(pads, dtype=object).reshape(-1))
    if len(p) != 2 * len(axes):
        return None
    out = list(xs)
    for j, a in enumerate(axes):
        out[a] = out[a] + p[j] + p[j + len(axes)]
    return out
