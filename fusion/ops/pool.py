"""Pooling (Many-to-Many anchors): MaxPool (with Indices), AveragePool,
GlobalAveragePool, GlobalMaxPool."""
from __future__ import annotations

import numpy as np

from fusion.errors import ShapeError
from fusion.ir import expr as E
from fusion.ops.table import REQUIRED, Algebra, AttrSpec, Mapping, OpDef, prod, register


WINDOW_ATTRS = ("kernel_shape", "strides", "dilations", "pads", "output_padding")
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "")   # onnxruntime reads "" as NOTSET


def check_window_attrs(node, nsp: int | None = None) -> None:
    """Refuse the sliding-window geometry onnxruntime refuses (Conv, ConvTranspose,
    the pools, ...): kernel_shape, strides and dilations must be positive, pads and
    output_padding non-negative, and their lengths must agree with each other and
    with `nsp` spatial dims when given. Without this a stride of 0 divides by zero
    and a kernel or dilation of 0 gives a shape onnxruntime never computes."""
    ref = None   # (attribute, spatial dims) the others must agree with
    if nsp is not None:
        ref = (f"an input of rank {nsp + 2}", nsp)
    for k in WINDOW_ATTRS:
        v = node.attrs.get(k)
        if v is None or (isinstance(v, (list, tuple)) and not len(v)):
            continue
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, np.integer)) for x in v):
            raise ShapeError(f"{node.label()}: attribute {k} must be a list of integers, got {v!r}")
        vals = [int(x) for x in v]
        lo = 0 if k in ("pads", "output_padding") else 1
        if any(x < lo for x in vals):
            want = "non-negative" if lo == 0 else "positive"
            raise ShapeError(f"{node.label()}: attribute {k} {vals} must only hold {want} values")
        if k == "pads" and len(vals) % 2:
            raise ShapeError(f"{node.label()}: attribute pads {vals} needs an even count (begin and end per axis)")
        dims = len(vals) // 2 if k == "pads" else len(vals)
        if ref is None:
            ref = (f"{k} {vals}", dims)
        elif dims != ref[1]:
            raise ShapeError(f"{node.label()}: attribute {k} {vals} covers {dims} spatial dims but "
                             f"{ref[0]} has {ref[1]}")
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode("utf-8", errors="replace")
    if auto not in _AUTO_PADS:
        raise ShapeError(f"{node.label()}: auto_pad {auto!r} is not one of {', '.join(_AUTO_PADS[:4])}")


def check_window_node(node) -> None:
    """check_window_attrs for any op with window attributes, with the spatial
    rank taken from input 0 (N, C, spatial...) when the op has a kernel_shape,
    and a given kernel_shape checked against the weight's spatial dims
    (onnxruntime refuses a mismatch; the shape rules would trust the attribute)."""
    od = node.opdef
    if od is None or not any(k in od.attrs for k in ("kernel_shape", "strides", "dilations")):
        return   # Pad's `pads` are per axis and may be negative
    x = node.inputs[0] if node.inputs else None
    static = lambda v: v is not None and v.shape is not None and all(isinstance(d, int) for d in v.shape)  # noqa: E731
    has_kernel = "kernel_shape" in od.attrs
    nsp = x.rank - 2 if has_kernel and x is not None and x.shape is not None and x.rank >= 3 else None
    check_window_attrs(node, nsp)
    kernel = node.attrs.get("kernel_shape")
    if not kernel:
        return
    for i, name in enumerate(od.inputs):
        w = node.inputs[i] if i < len(node.inputs) else None
        if (name.rstrip("?*").lower() == "w" and static(w) and w.rank >= 3
                and list(w.shape[2:]) != [int(k) for k in kernel]):
            raise ShapeError(f"{node.label()}: kernel_shape {[int(k) for k in kernel]} does not match the weight "
                             f"'{w.name}' {list(w.shape)} (its spatial dims are {list(w.shape[2:])})")


def pool_geometry(node):
    """(kernel, strides, dilations, pads_begin, pads_end, out_spatial), ONNX/onnxruntime rules
    (ceil_mode drops a last window that would start inside the end padding)."""
    x = node.inputs[0]
    nsp = x.rank - 2
    kernel = [int(k) for k in node.attrs["kernel_shape"]]
    if len(kernel) != nsp:
        raise ShapeError(f"{node.label()}: kernel_shape {kernel} does not match input {list(x.shape)}")
    check_window_attrs(node, nsp)
    strides = [int(s) for s in (node.attrs.get("strides") or [1] * nsp)]
    dil = [int(d) for d in (node.attrs.get("dilations") or [1] * nsp)]
    pads = [int(p) for p in (node.attrs.get("pads") or [0] * (2 * nsp))]
    auto = node.attrs.get("auto_pad", "NOTSET")
    ceil = int(node.attrs.get("ceil_mode", 0))
    in_sp = list(x.shape[2:])
    if not all(isinstance(d, int) for d in in_sp):
        raise ShapeError(f"{node.label()}: pooling needs static spatial dims, got {list(x.shape)}; bind them with --shape")
    explicit = auto not in ("SAME_UPPER", "SAME_LOWER", "VALID")
    if explicit and any(pads[d] >= kernel[d] or pads[d + nsp] >= kernel[d] for d in range(nsp)):
        # onnxruntime refuses it; a window wholly inside the padding has no input element
        raise ShapeError(f"{node.label()}: pads {pads} must be smaller than kernel_shape {kernel} on every axis")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        # onnxruntime: pads from the undilated kernel, then the usual output size
        for d in range(nsp):
            need = max(0, (-(-in_sp[d] // strides[d]) - 1) * strides[d] + kernel[d] - in_sp[d])
            head = (need + 1) // 2 if auto == "SAME_LOWER" else need // 2
            pads[d], pads[d + nsp] = head, need - head
    elif auto == "VALID":
        pads = [0] * (2 * nsp)
    out = []
    for d in range(nsp):
        span = in_sp[d] + pads[d] + pads[d + nsp] - ((kernel[d] - 1) * dil[d] + 1)
        o = (-(-span // strides[d]) if ceil else span // strides[d]) + 1
        if ceil and (o - 1) * strides[d] >= in_sp[d] + pads[d]:
            o -= 1
        if o <= 0:
            raise ShapeError(f"{node.label()}: kernel {kernel} does not fit input {list(x.shape)} with pads {pads}")
        out.append(o)
    return kernel, strides, dil, pads[:nsp], pads[nsp:], out


def _pool_mapping(node):
    # A 1-element window (kernel 1, e.g. a strided subsample) reads one element per output.
    return Mapping.M2M if int(prod(node.attrs["kernel_shape"])) > 1 else Mapping.O2O


def _pool_infer(node):
    x = node.inputs[0]
    if x.rank < 3:
        raise ShapeError(f"{node.label()}: pooling needs an input of rank >= 3 (N, C, spatial...), got {list(x.shape)}")
    *_, out = pool_geometry(node)
    shape = (x.shape[0], x.shape[1], *out)
    return [(x.dtype, shape), (np.dtype(np.int64), shape)][:len(node.outputs)]


def _window(node, out, read, body_of, op):
    """Reduce `op` over the kernel window of output position `out`; body_of(x, inside, taps)."""
    x = node.inputs[0]
    kernel, strides, dil, pb, _, _ = pool_geometry(node)
    in_sp = [int(s) for s in x.shape[2:]]

    def body(ks):
        pos = [o * s + kk * d - p for o, s, kk, d, p in zip(out[2:], strides, ks, dil, pb)]
        inside = E.Const(True)
        for p_, size in zip(pos, in_sp):
            inside = E.binary("and", inside, E.binary("and", E.binary("ge", p_, 0), E.binary("lt", p_, size)))
        return body_of(read(0, [out[0], out[1]] + pos), inside)

    return E.reduce(op, kernel, body, prefix="p")


def _lowest(dtype: str):
    return -np.inf if dtype.startswith("float") else int(np.iinfo(dtype).min)


def _maxpool_lower(node, out, read, k=0):
    x = node.inputs[0]
    dt = "bool" if x.dtype == np.bool_ else x.dtype.name
    lo = _lowest(dt)
    masked = lambda v, inside: E.select(inside, v, E.Const(lo, v.dtype))  # noqa: E731
    if k == 0:
        return _window(node, out, read, masked, "max")
    # Indices: flat position of the (first) maximum in the whole input tensor.
    kernel, strides, dil, pb, _, _ = pool_geometry(node)
    pos = _window(node, out, read, masked, "argmax")
    ks = E.delinearize(pos, kernel)
    sp = [o * s + kk * d - p for o, s, kk, d, p in zip(out[2:], strides, ks, dil, pb)]
    in_sp = [int(s) for s in x.shape[2:]]
    base = (out[0] * int(x.shape[1]) + out[1]) * int(prod(in_sp))
    if node.attrs.get("storage_order", 0):
        # column-major over the spatial dims
        flat, stride = E.Const(0), 1
        for p_, size in zip(sp, in_sp):
            flat = flat + p_ * stride
            stride *= size
        return base + flat
    return base + E.linearize(sp, in_sp)


def _maxpool_reference(node, a):
    x = a[0]
    kernel, strides, dil, pb, pe, out_sp = pool_geometry(node)
    nsp = len(kernel)
    lo = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    big = [max(pb[d] + (out_sp[d] - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1, pb[d] + x.shape[2 + d])
           for d in range(nsp)]
    xp = np.full(x.shape[:2] + tuple(big), lo, dtype=x.dtype)
    xp[(slice(None), slice(None)) + tuple(slice(pb[d], pb[d] + x.shape[2 + d]) for d in range(nsp))] = x
    best = np.full(x.shape[:2] + tuple(out_sp), lo, dtype=x.dtype)
    arg = np.zeros(best.shape, dtype=np.int64)
    for kidx, koff in enumerate(np.ndindex(*kernel)):
        sl = tuple(slice(koff[d] * dil[d], koff[d] * dil[d] + (out_sp[d] - 1) * strides[d] + 1, strides[d]) for d in range(nsp))
        v = xp[(slice(None), slice(None)) + sl]
        better = v > best if kidx else np.ones(v.shape, bool)
        best = np.where(better, v, best)
        arg = np.where(better, kidx, arg)
    res = [best]
    if len(node.outputs) > 1:
        ks = np.unravel_index(arg, kernel)
        grids = np.indices(best.shape)
        sp = [grids[2 + d] * strides[d] + ks[d] * dil[d] - pb[d] for d in range(nsp)]
        in_sp = x.shape[2:]
        if node.attrs.get("storage_order", 0):
            flat = sum(sp[d] * int(np.prod(in_sp[:d])) for d in range(nsp))
        else:
            flat = np.ravel_multi_index(sp, in_sp)
        res.append(((grids[0] * x.shape[1] + grids[1]) * int(np.prod(in_sp)) + flat).astype(np.int64))
    return res


_POOL_ATTRS = {"auto_pad": AttrSpec("string", "NOTSET"), "ceil_mode": AttrSpec("int", 0),
               "dilations": AttrSpec("ints", []), "kernel_shape": AttrSpec("ints", REQUIRED),
               "pads": AttrSpec("ints", []), "strides": AttrSpec("ints", [])}

register(OpDef(
    "MaxPool", inputs=("X",), outputs=("Y", "Indices?"),
    attrs=dict(_POOL_ATTRS, storage_order=AttrSpec("int", 0)),
    mapping=lambda node: _pool_mapping(node), infer=_pool_infer, reference=_maxpool_reference, lower=_maxpool_lower,
    category="pool", flops=lambda node: int(prod(node.outputs[0].shape)) * int(prod(node.attrs["kernel_shape"])),
))


# ---------------------------------------------------------------------------
# AveragePool: divisor = taps inside the input (count_include_pad=0) or inside
# the padded input (=1), per onnxruntime.

def _taps(start, K: int, d: int, lo: int, hi: int):
    """How many of start + k*d (0 <= k < K) lie in [lo, hi); start is an index expression."""
    def ceil_div(a, b):
        return -((-a) // b)
    kmin = E.binary("max", ceil_div(lo - start, d) if d > 1 else lo - start, 0)
    kmax = E.binary("min", ((hi - 1 - start) // d) if d > 1 else hi - 1 - start, K - 1)
    return E.binary("max", kmax - kmin + 1, 0)


def _avgpool_lower(node, out, read, k=0):
    x = node.inputs[0]
    kernel, strides, dil, pb, pe, _ = pool_geometry(node)
    in_sp = [int(s) for s in x.shape[2:]]
    dt = x.dtype.name
    s = _window(node, out, read, lambda v, inside: E.select(inside, v, E.Const(0.0, v.dtype)), "sum")
    include = int(node.attrs["count_include_pad"])
    count = E.Const(1)
    for o, st, K, d, p, q, size in zip(out[2:], strides, kernel, dil, pb, pe, in_sp):
        start = o * st - p
        count = count * (_taps(start, K, d, -p, size + q) if include else _taps(start, K, d, 0, size))
    return s / E.cast(count, dt)


def _avgpool_reference(node, a):
    x = a[0]
    kernel, strides, dil, pb, pe, out_sp = pool_geometry(node)
    nsp = len(kernel)
    big = [max(pb[d] + (out_sp[d] - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1, pb[d] + x.shape[2 + d] + pe[d])
           for d in range(nsp)]
    xp = np.zeros(x.shape[:2] + tuple(big), dtype=np.float64)
    inner = tuple(slice(pb[d], pb[d] + x.shape[2 + d]) for d in range(nsp))
    xp[(slice(None), slice(None)) + inner] = x
    valid = np.zeros(tuple(big), dtype=np.int64)
    if node.attrs["count_include_pad"]:
        valid[tuple(slice(0, pb[d] + x.shape[2 + d] + pe[d]) for d in range(nsp))] = 1
    else:
        valid[inner] = 1
    acc = np.zeros(x.shape[:2] + tuple(out_sp))
    cnt = np.zeros(tuple(out_sp), dtype=np.int64)
    for koff in np.ndindex(*kernel):
        sl = tuple(slice(koff[d] * dil[d], koff[d] * dil[d] + (out_sp[d] - 1) * strides[d] + 1, strides[d]) for d in range(nsp))
        acc += xp[(slice(None), slice(None)) + sl]
        cnt += valid[sl]
    return [(acc / cnt).astype(x.dtype)]


register(OpDef(
    "AveragePool", inputs=("X",), outputs=("Y",),
    attrs=dict(_POOL_ATTRS, count_include_pad=AttrSpec("int", 0)),
    mapping=lambda node: _pool_mapping(node), infer=_pool_infer, reference=_avgpool_reference, lower=_avgpool_lower,
    category="pool", flops=lambda node: int(prod(node.outputs[0].shape)) * int(prod(node.attrs["kernel_shape"])),
))


# ---------------------------------------------------------------------------
# GlobalAveragePool, GlobalMaxPool: reduce every spatial axis, keep it as 1

def _global(kind):
    def infer(node):
        x = node.inputs[0]
        if x.rank < 2:
            raise ShapeError(f"{node.label()}: input needs rank >= 2, got {list(x.shape)}")
        return [(x.dtype, tuple(x.shape[:2]) + (1,) * (x.rank - 2))]

    def reference(node, a):
        x = a[0]
        axes = tuple(range(2, x.ndim))
        y = x.mean(axis=axes, keepdims=True) if kind == "avg" else x.max(axis=axes, keepdims=True)
        return [y.astype(x.dtype)]

    def lower(node, out, read, k=0):
        x = node.inputs[0]
        ext = [int(d) for d in x.shape[2:]]
        r = E.reduce("sum" if kind == "avg" else "max", ext, lambda v: read(0, [out[0], out[1]] + list(v)), prefix="g")
        return r / E.Const(float(prod(ext)), r.dtype) if kind == "avg" else r

    return infer, reference, lower


for _name, _kind in (("GlobalAveragePool", "avg"), ("GlobalMaxPool", "max")):
    _i, _r, _l = _global(_kind)
    register(OpDef(_name, inputs=("X",), outputs=("Y",), infer=_i,
                   algebra=Algebra(idempotent=True),   # a second pool sees [N, C, 1, ...]: a copy
                   mapping=lambda node: Mapping.M2M if int(prod(node.inputs[0].shape[2:])) > 1 else Mapping.O2O, reference=_r, lower=_l,
                   category="pool", flops=lambda node: int(prod(node.inputs[0].shape))))
