"""Further ops of the ONNX backend suite that the reference models do not use.

Attributes, their defaults and the input/output names come from onnx's own
schema (`_schema_op`), so each op here writes only what is its own: the shape
rule, the numpy semantics, the index function where the op is a loop, the
mapping class and the FLOP count. Ops whose outputs depend on data in ways no
index function says (Unique, Compress, losses with ignore_index, recurrent
nets, attention with caches) are opaque: `lower=None`.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from fusion.errors import ShapeError
from fusion.ir import expr as E
from fusion.ops.elementwise import elementwise
from fusion.ops.table import (REQUIRED, AttrSpec, Mapping, OpDef, const_input, get_op, norm_axis, prod,
                              register)

_KIND = {onnx.AttributeProto.INT: "int", onnx.AttributeProto.FLOAT: "float", onnx.AttributeProto.STRING: "string",
         onnx.AttributeProto.INTS: "ints", onnx.AttributeProto.FLOATS: "floats",
         onnx.AttributeProto.STRINGS: "strings", onnx.AttributeProto.TENSOR: "tensor",
         onnx.AttributeProto.GRAPH: "graph", onnx.AttributeProto.GRAPHS: "graphs",
         onnx.AttributeProto.TYPE_PROTO: "type"}


def _schema_op(name: str, *, domain: str = "", **kw) -> OpDef:
    """Register `name` with attributes and formal parameters from onnx's newest schema."""
    s = onnx.defs.get_schema(name, domain=domain)
    attrs = {}
    for a in s.attributes.values():
        if a.required:
            default = REQUIRED
        elif a.default_value is not None and a.default_value.type:
            default = helper.get_attribute_value(a.default_value)
            if isinstance(default, bytes):
                default = default.decode()
            elif isinstance(default, list) and default and isinstance(default[0], bytes):
                default = [d.decode() for d in default]
        else:
            default = None
        attrs[a.name] = AttrSpec(_KIND.get(a.type, "other"), default)

    def formal(ps):
        out = []
        for p in ps:
            opt = p.option
            out.append(p.name + ("?" if opt == onnx.defs.OpSchema.FormalParameterOption.Optional else
                                 "*" if opt == onnx.defs.OpSchema.FormalParameterOption.Variadic else ""))
        return tuple(out)
    kw.setdefault("inputs", formal(s.inputs))
    kw.setdefault("outputs", formal(s.outputs))
    first = min(h.since_version for h in onnx.defs.get_all_schemas_with_history()
                if h.name == name and h.domain == domain)
    kw.setdefault("since", first)
    kw.setdefault("export_opset", first)  # the exporter raises it further when an attribute needs it
    attrs.update(kw.pop("attrs", {}))
    od = OpDef(name=name, domain=domain, attrs=attrs, **kw)
    if get_op(name, domain) is not None:  # described elsewhere already: the op table keeps one
        return get_op(name, domain)
    return register(od)


def _n(shape) -> int:
    return int(prod(shape))


def _same(node, i: int = 0):
    v = node.inputs[i]
    return [(v.dtype, v.shape)]


def _flops_per_out(k: float):
    return lambda node: int(k * _n(node.outputs[0].shape))


# ---------------------------------------------------------------------------
# Elementwise (scalar function: reference and lower derive from it)

elementwise("Shrink", 1, lambda m, x, bias=0.0, lambd=0.5:
            m.where(m.lt(x, m.const(-lambd, x)), x + m.const(bias, x),
                    m.where(m.gt(x, m.const(lambd, x)), x - m.const(bias, x), m.const(0, x))),
            attrs={"bias": AttrSpec("float", 0.0), "lambd": AttrSpec("float", 0.5)}, flops=3, since=9,
            inputs=("input",))
elementwise("Swish", 1, lambda m, x, alpha=1.0: x / (m.const(1.0, x) + m.exp(-(m.const(alpha, x) * x))),
            attrs={"alpha": AttrSpec("float", 1.0)}, flops=12, since=24, export_opset=24, inputs=("X",))


# ---------------------------------------------------------------------------
# Normalizations over trailing axes / one axis (Many-to-Many, with lower)

def _rms_ref(node, a):
    x, scale = a[0], a[1]
    ax = norm_axis(node.attrs["axis"], x.ndim, node)
    axes = tuple(range(ax, x.ndim))
    st = np.float32 if node.attrs.get("stash_type", 1) == 1 else x.dtype
    xs = x.astype(st)
    ms = np.mean(xs * xs, axis=axes, keepdims=True)
    y = xs / np.sqrt(ms + np.asarray(node.attrs["epsilon"], st))
    return [(y.astype(x.dtype) * scale).astype(x.dtype)]


def _rms_lower(node, out, read, k=0):
    x = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], x.rank, node)
    ext = [int(d) for d in x.shape[ax:]]

    def at(r):
        return read(0, list(out[:ax]) + list(r))
    ss = E.reduce("sum", ext, lambda r: at(r) * at(r))
    dt = x.dtype.name
    ms = ss / E.const(float(_n(ext)), dt) + E.const(float(node.attrs["epsilon"]), dt)
    s = node.inputs[1]
    return read(0, list(out)) / E.call("sqrt", ms) * read(1, E.broadcast_index(out, s.shape))


_schema_op("RMSNormalization", mapping=Mapping.M2M, infer=_same, reference=_rms_ref, lower=_rms_lower,
           flops=_flops_per_out(4), category="norm")


def _lpnorm_ref(node, a):
    x = a[0]
    ax = norm_axis(node.attrs["axis"], x.ndim, node)
    if node.attrs["p"] == 1:
        n = np.sum(np.abs(x), axis=ax, keepdims=True)
    else:
        n = np.sqrt(np.sum(x * x, axis=ax, keepdims=True))
    with np.errstate(all="ignore"):
        y = np.where(n == 0, 0, x / np.where(n == 0, 1, n))
    return [y.astype(x.dtype)]


def _lpnorm_lower(node, out, read, k=0):
    x = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], x.rank, node)

    def at(r):
        idx = list(out)
        idx[ax] = r[0]
        return read(0, idx)
    if node.attrs["p"] == 1:
        n = E.reduce("sum", [int(x.shape[ax])], lambda r: E.call("abs", at(r)))
    else:
        n = E.call("sqrt", E.reduce("sum", [int(x.shape[ax])], lambda r: at(r) * at(r)))
    zero = E.const(0.0, x.dtype.name)
    return E.select(E.binary("eq", n, zero), zero, read(0, list(out)) / n)


_schema_op("LpNormalization", mapping=Mapping.M2M, infer=_same, reference=_lpnorm_ref, lower=_lpnorm_lower,
           flops=_flops_per_out(3), category="norm")


def _mvn_ref(node, a):
    x = a[0]
    axes = tuple(node.attrs["axes"] if node.attrs.get("axes") is not None else [0, 2, 3])
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    return [((x - mean) / (np.sqrt(var) + 1e-9)).astype(x.dtype)]


def _mvn_lower(node, out, read, k=0):
    x = node.inputs[0]
    axes = sorted(norm_axis(a, x.rank, node) for a in (node.attrs.get("axes") or [0, 2, 3]))
    ext = [int(x.shape[a]) for a in axes]
    dt = x.dtype.name
    cnt = E.const(float(_n(ext)), dt)

    def at(r):
        idx = list(out)
        for a, v in zip(axes, r):
            idx[a] = v
        return read(0, idx)
    mean = E.reduce("sum", ext, at) / cnt
    var = E.reduce("sum", ext, lambda r: (at(r) - mean) * (at(r) - mean)) / cnt
    return (read(0, list(out)) - mean) / (E.call("sqrt", var) + E.const(1e-9, dt))


_schema_op("MeanVarianceNormalization", mapping=Mapping.M2M, infer=_same, reference=_mvn_ref, lower=_mvn_lower,
           flops=_flops_per_out(6), category="norm")


def _lrn_ref(node, a):
    x = a[0]
    size, alpha, beta, bias = node.attrs["size"], node.attrs["alpha"], node.attrs["beta"], node.attrs["bias"]
    C = x.shape[1]
    sq = x.astype(np.float64) ** 2
    s = np.zeros_like(sq)
    lo_off, hi_off = (size - 1) // 2, int(math.ceil((size - 1) / 2))
    for c in range(C):
        s[:, c] = sq[:, max(0, c - lo_off):min(C, c + hi_off + 1)].sum(axis=1)
    return [(x / (bias + alpha / size * s) ** beta).astype(x.dtype)]


def _lrn_lower(node, out, read, k=0):
    x = node.inputs[0]
    size, alpha, beta, bias = node.attrs["size"], node.attrs["alpha"], node.attrs["beta"], node.attrs["bias"]
    C = int(x.shape[1])
    lo_off = (size - 1) // 2
    dt = x.dtype.name

    def term(r):
        c = out[1] + r[0] - lo_off
        idx = list(out)
        idx[1] = E.binary("min", E.binary("max", c, 0), C - 1)
        v = read(0, idx)
        inside = E.binary("and", E.binary("ge", c, 0), E.binary("lt", c, C))
        return E.select(inside, v * v, E.const(0.0, dt))
    s = E.reduce("sum", [size], term)
    base = E.const(bias, dt) + E.const(alpha / size, dt) * s
    return read(0, list(out)) / E.binary("pow", base, E.const(beta, dt))


_schema_op("LRN", mapping=Mapping.M2M, infer=_same, reference=_lrn_ref, lower=_lrn_lower,
           flops=lambda node: int(node.attrs["size"] * 2 + 8) * _n(node.outputs[0].shape), category="norm")


def _groupnorm_ref(node, a):
    x, scale, bias = a
    G = node.attrs["num_groups"]
    N, C = x.shape[:2]
    st = np.float32 if node.attrs.get("stash_type", 1) == 1 else x.dtype
    xg = x.reshape(N, G, -1).astype(st)
    mean = xg.mean(axis=2, keepdims=True)
    var = xg.var(axis=2, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + node.attrs["epsilon"])).reshape(x.shape).astype(x.dtype)
    bshape = (1, C) + (1,) * (x.ndim - 2)
    if scale.shape[0] != C:  # opset 18 scale/bias are per group
        scale, bias = np.repeat(scale, C // G), np.repeat(bias, C // G)
    return [(y * scale.reshape(bshape) + bias.reshape(bshape)).astype(x.dtype)]


def _groupnorm_lower(node, out, read, k=0):
    x = node.inputs[0]
    G = node.attrs["num_groups"]
    C = int(x.shape[1])
    cg = C // G
    sp = [int(d) for d in x.shape[2:]]
    ext = [cg] + sp
    dt = x.dtype.name
    g = out[1] // cg
    cnt = E.const(float(_n(ext)), dt)

    def at(r):
        return read(0, [out[0], g * cg + r[0]] + list(r[1:]))
    mean = E.reduce("sum", ext, at) / cnt
    var = E.reduce("sum", ext, lambda r: (at(r) - mean) * (at(r) - mean)) / cnt
    y = (read(0, list(out)) - mean) / E.call("sqrt", var + E.const(node.attrs["epsilon"], dt))
    per_group = int(node.inputs[1].shape[0]) != C
    ch = g if per_group else out[1]
    return y * read(1, [ch]) + read(2, [ch])


_schema_op("GroupNormalization", mapping=Mapping.M2M, infer=_same, reference=_groupnorm_ref, lower=_groupnorm_lower,
           flops=_flops_per_out(8), category="norm")


def _hardmax_ref(node, a):
    x = a[0]
    ax = norm_axis(node.attrs["axis"], x.ndim, node)
    idx = np.argmax(x, axis=ax)
    y = np.zeros_like(x)
    np.put_along_axis(y, np.expand_dims(idx, ax), 1, axis=ax)
    return [y]


def _hardmax_normalize(node, graph, opset):
    # Before opset 13 Hardmax flattened to 2-D at `axis` (default 1); equal to one axis only when it is the last.
    if opset < 13:
        x = node.inputs[0]
        ax = norm_axis(node.attrs.get("axis", 1), x.rank, node)
        if ax != x.rank - 1:
            raise ShapeError(f"{node.label()}: Hardmax before opset 13 with axis {ax} of rank {x.rank} "
                             f"(2-D coercion) is not supported; convert the model to opset 13")
        node.attrs["axis"] = ax


def _hardmax_lower(node, out, read, k=0):
    x = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], x.rank, node)

    def at(r):
        idx = list(out)
        idx[ax] = r[0]
        return read(0, idx)
    am = E.reduce("argmax", [int(x.shape[ax])], at)
    dt = x.dtype.name
    return E.select(E.binary("eq", am, out[ax]), E.const(1, dt), E.const(0, dt))


_schema_op("Hardmax", mapping=Mapping.M2M, infer=_same, reference=_hardmax_ref, lower=_hardmax_lower,
           normalize=_hardmax_normalize, flops=_flops_per_out(1), category="reduce")


# ---------------------------------------------------------------------------
# Pooling by Lp norm

def _lppool_geometry(node):
    x = node.inputs[0]
    k = list(node.attrs["kernel_shape"])
    nd = len(k)
    strides = list(node.attrs.get("strides") or [1] * nd)
    dil = list(node.attrs.get("dilations") or [1] * nd)
    pads = list(node.attrs.get("pads") or [0] * (2 * nd))
    auto = node.attrs.get("auto_pad", "NOTSET")
    ceil = node.attrs.get("ceil_mode", 0)
    if auto in ("NOTSET", "") and any(int(p) >= int(k[i % nd]) for i, p in enumerate(pads)):
        # onnxruntime refuses it too ("Pad should be smaller than kernel")
        raise ShapeError(f"{node.label()}: pads {pads} must be smaller than kernel_shape {k}")
    sp = [int(d) for d in x.shape[2:]]
    out = []
    for i in range(nd):
        ek = (k[i] - 1) * dil[i] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-sp[i] // strides[i])
            total = max(0, (o - 1) * strides[i] + ek - sp[i])
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[i + nd] = lo, total - lo
        elif auto == "VALID":
            pads[i] = pads[i + nd] = 0
        span = sp[i] + pads[i] + pads[i + nd] - ek
        o = (-(-span // strides[i]) if ceil else span // strides[i]) + 1
        if ceil and (o - 1) * strides[i] >= sp[i] + pads[i]:
            o -= 1
        out.append(o)
    return k, strides, dil, pads, out


def _lppool_infer(node):
    x = node.inputs[0]
    *_, o = _lppool_geometry(node)
    return [(x.dtype, tuple(x.shape[:2]) + tuple(o))]


def _lppool_ref(node, a):
    x = a[0]
    k, s, d, pads, o = _lppool_geometry(node)
    nd = len(k)
    p = node.attrs["p"]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    y = np.zeros(x.shape[:2] + tuple(o), dtype=np.float64)
    for off in np.ndindex(*k):
        sl = tuple(slice(off[i] * d[i], off[i] * d[i] + (o[i] - 1) * s[i] + 1, s[i]) for i in range(nd))
        y += np.abs(xp[(slice(None), slice(None)) + sl]).astype(np.float64) ** p
    return [(y ** (1.0 / p)).astype(x.dtype)]


def _lppool_lower(node, out, read, k_=0):
    x = node.inputs[0]
    k, s, d, pads, o = _lppool_geometry(node)
    nd = len(k)
    p = node.attrs["p"]
    sp = [int(v) for v in x.shape[2:]]
    dt = x.dtype.name

    def term(r):
        idx = [out[0], out[1]]
        inside = None
        for i in range(nd):
            pos = out[2 + i] * s[i] + r[i] * d[i] - pads[i]
            ok = E.binary("and", E.binary("ge", pos, 0), E.binary("lt", pos, sp[i]))
            inside = ok if inside is None else E.binary("and", inside, ok)
            idx.append(E.binary("min", E.binary("max", pos, 0), sp[i] - 1))
        v = E.call("abs", read(0, idx))
        vp = v * v if p == 2 else E.binary("pow", v, E.const(float(p), dt))
        return E.select(inside, vp, E.const(0.0, dt))
    acc = E.reduce("sum", k, term)
    return E.call("sqrt", acc) if p == 2 else E.binary("pow", acc, E.const(1.0 / p, dt))


_schema_op("LpPool", mapping=Mapping.M2M, infer=_lppool_infer, reference=_lppool_ref, lower=_lppool_lower,
           flops=lambda node: 3 * _n(node.outputs[0].shape) * _n(node.attrs["kernel_shape"]), category="pool")


def _glp_infer(node):
    x = node.inputs[0]
    return [(x.dtype, tuple(x.shape[:2]) + (1,) * (x.rank - 2))]


def _glp_ref(node, a):
    x = a[0]
    p = node.attrs["p"]
    axes = tuple(range(2, x.ndim))
    return [(np.sum(np.abs(x) ** p, axis=axes, keepdims=True) ** (1.0 / p)).astype(x.dtype)]


def _glp_lower(node, out, read, k=0):
    x = node.inputs[0]
    p = node.attrs["p"]
    dt = x.dtype.name

    def term(r):
        v = E.call("abs", read(0, [out[0], out[1]] + list(r)))
        return v * v if p == 2 else E.binary("pow", v, E.const(float(p), dt))
    acc = E.reduce("sum", [int(d) for d in x.shape[2:]], term)
    return E.call("sqrt", acc) if p == 2 else E.binary("pow", acc, E.const(1.0 / p, dt))


_schema_op("GlobalLpPool", mapping=Mapping.M2M, infer=_glp_infer, reference=_glp_ref, lower=_glp_lower,
           flops=lambda node: 3 * _n(node.inputs[0].shape), category="pool")


# ---------------------------------------------------------------------------
# Attention (opset 23): opaque; its causal/padding masks and caches make the
# reads data- and attribute-dependent in ways one index function does not say.

def _to_heads(x, heads):
    b, s, h = x.shape
    return x.reshape(b, s, heads, h // heads).transpose(0, 2, 1, 3)


def _softmax_rows(x):
    mx = np.max(x, axis=-1, keepdims=True)
    dead = np.isneginf(mx)
    e = np.exp(x - np.where(dead, 0, mx))
    s = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(s == 0, 1, s)


def _attention_ref(node, a):
    a = list(a) + [None] * (7 - len(a))
    q, k, v, mask, past_k, past_v, nonpad = a[:7]
    at = node.attrs
    rank3 = q.ndim == 3
    if rank3:
        q, k, v = _to_heads(q, at["q_num_heads"]), _to_heads(k, at["kv_num_heads"]), _to_heads(v, at["kv_num_heads"])
    dt = q.dtype
    scale = at.get("scale")
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    s = dt.type(math.sqrt(scale))
    if past_k is not None:
        k = np.concatenate([past_k, k], axis=2)
        v = np.concatenate([past_v, v], axis=2)
    present_k, present_v = k, v
    sq, skv = q.shape[2], k.shape[2]
    bias = np.zeros((sq, skv), dt)
    if mask is not None and mask.shape[-1] < skv:
        pad = [(0, 0)] * (mask.ndim - 1) + [(0, skv - mask.shape[-1])]
        mask = np.pad(mask, pad, constant_values=False if mask.dtype == np.bool_ else -np.inf)
    if mask is not None:
        if mask.dtype == np.bool_:
            mask = np.where(mask, dt.type(0), dt.type(-np.inf))
        bias = bias + mask
    if at.get("is_causal"):
        if nonpad is not None and past_k is None:
            off = nonpad.reshape(-1, 1, 1, 1) - sq
        else:
            off = past_k.shape[2] if past_k is not None else 0
        i = np.arange(sq).reshape(sq, 1)
        j = np.arange(skv).reshape(1, skv)
        bias = bias + np.where(j <= i + off, dt.type(0), dt.type(-np.inf))
    left = at.get("left_window_size")
    right = at.get("right_window_size")
    left, right = (-1 if left is None else left), (-1 if right is None else right)
    if left >= 0 or right >= 0:  # sliding window around each query's absolute position
        if nonpad is not None and past_k is None:
            off = nonpad.reshape(-1, 1, 1, 1) - sq
        else:
            off = past_k.shape[2] if past_k is not None else 0
        diff = np.arange(sq).reshape(sq, 1) + off - np.arange(skv).reshape(1, skv)
        ok = np.ones(np.shape(diff), bool)
        if left >= 0:
            ok &= diff <= left
        if right >= 0:
            ok &= -diff <= right
        bias = bias + np.where(ok, dt.type(0), dt.type(-np.inf))
    if nonpad is not None:
        pm = np.arange(skv) < nonpad.reshape(-1, 1)
        bias = bias + np.where(pm, 0, -np.inf).astype(dt).reshape(-1, 1, 1, skv)
    hq, hk = q.shape[1], k.shape[1]
    if hq != hk:
        k = np.repeat(k, hq // hk, axis=1)
        v = np.repeat(v, hq // hk, axis=1)
    qk = np.matmul(q * s, np.swapaxes(k * s, -1, -2))
    softcap = at.get("softcap") or 0.0
    if softcap > 0:
        qk = (np.tanh(qk / dt.type(softcap)) * dt.type(softcap)).astype(dt)
    mode = at.get("qk_matmul_output_mode") or 0
    qk_out = qk
    with_bias = qk + bias
    if mode == 2:
        qk_out = with_bias
    sp = at.get("softmax_precision")
    if sp:
        from fusion.ir.dtypes import to_numpy
        with_bias = with_bias.astype(to_numpy(sp))
    p = _softmax_rows(with_bias)
    p = np.where(np.isneginf(np.max(bias, axis=-1, keepdims=True)), 0, p)
    if mode == 3:
        qk_out = p
    y = np.matmul(p.astype(dt), v)
    if rank3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
    return [y.astype(dt), present_k, present_v, np.broadcast_to(qk_out, y.shape[:1] + qk_out.shape[-3:] if qk_out.ndim == 4 else qk_out.shape).astype(dt)][:len(node.outputs)]


def _attention_infer(node):
    q, k, v = node.inputs[:3]
    past = node.input(4)
    at = node.attrs
    if q.rank == 3:
        hq, hk = at["q_num_heads"], at["kv_num_heads"]
        B, Sq, Skv = q.shape[0], q.shape[1], k.shape[1]
        dk, dv = k.shape[2] // hk, v.shape[2] // hk
        y = (B, Sq, hq * dv)
    else:
        B, hq, Sq, _ = q.shape
        hk, Skv, dk, dv = k.shape[1], k.shape[2], k.shape[3], v.shape[3]
        y = (B, hq, Sq, dv)
    total = Skv + (past.shape[2] if past is not None else 0)
    outs = [(q.dtype, y), (q.dtype, (B, hk, total, dk)), (q.dtype, (B, hk, total, dv)), (q.dtype, (B, hq, Sq, total))]
    return outs[:len(node.outputs)]


def _attention_flops(node):
    y = node.outputs[0].shape
    q, k = node.inputs[0], node.inputs[1]
    return 4 * _n(y) * int(k.shape[-2]) + 5 * _n(q.shape[:-1]) * int(k.shape[-2])


_schema_op("Attention", mapping=Mapping.OPAQUE, infer=_attention_infer, reference=_attention_ref,
           flops=_attention_flops, category="nn")


def _rope_ref(node, a):
    x, cos, sin = a[:3]
    pos = a[3] if len(a) > 3 else None
    at = node.attrs
    shape = x.shape
    if x.ndim == 4:
        x = x.transpose(0, 2, 1, 3)                       # [B, S, H, D]
    else:
        x = x.reshape(shape[0], shape[1], at["num_heads"], -1)
    d = at.get("rotary_embedding_dim") or x.shape[3]
    if pos is not None:
        cos, sin = cos[pos], sin[pos]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    xr, rest = x[..., :d], x[..., d:]
    if at.get("interleaved"):
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
    else:
        x1, x2 = xr[..., :d // 2], xr[..., d // 2:]
    re, im = cos * x1 - sin * x2, sin * x1 + cos * x2
    rot = np.stack([re, im], axis=-1).reshape(xr.shape) if at.get("interleaved") else np.concatenate([re, im], -1)
    y = np.concatenate([rot, rest], axis=-1)
    y = y.transpose(0, 2, 1, 3) if len(shape) == 4 else y.reshape(shape)
    return [y.astype(x.dtype)]


def _rope_lower(node, out, read, k=0):
    x, cos, sin = node.inputs[:3]
    at = node.attrs
    has_pos = node.input(3) is not None
    if x.rank == 4:
        b, h, s, j = out
        D = int(x.shape[3])
        xi = lambda jj: read(0, [b, h, s, jj])  # noqa: E731
    else:
        b, s, c = out
        D = int(x.shape[2]) // at["num_heads"]
        h, j = c // D, c % D
        xi = lambda jj: read(0, [b, s, h * D + jj])  # noqa: E731
    d = at.get("rotary_embedding_dim") or D
    half = d // 2
    inter = bool(at.get("interleaved"))
    if inter:
        pair, second = j // 2, j % 2
        x1, x2 = xi(pair * 2), xi(pair * 2 + 1)
    else:
        second = E.binary("ge", j, half)
        pair = E.select(second, j - half, j)
        x1, x2 = xi(pair), xi(pair + half)
    pair = E.binary("min", E.binary("max", pair, 0), half - 1)
    if has_pos:
        p = read(3, [b, s])
        c_, s_ = read(1, [p, pair]), read(2, [p, pair])
    else:
        c_, s_ = read(1, [b, s, pair]), read(2, [b, s, pair])
    re, im = c_ * x1 - s_ * x2, s_ * x1 + c_ * x2
    is_second = E.binary("eq", second, 1) if inter else second
    rot = E.select(is_second, im, re)
    return E.select(E.binary("lt", j, d), rot, read(0, list(out)))


_schema_op("RotaryEmbedding", mapping=Mapping.O2M, infer=_same, reference=_rope_ref, lower=_rope_lower,
           flops=_flops_per_out(3), category="nn")


# ---------------------------------------------------------------------------
# Losses: opaque (ignore_index and weights make the reduction data-dependent)

def _nll(logp, target, weight, reduction, ignore_index):
    N, C = logp.shape[:2]
    x3 = logp.reshape(N, C, -1)
    t2 = target.reshape(N, -1)
    tc = np.clip(t2, 0, C - 1)
    picked = -np.take_along_axis(x3, tc[:, None, :], axis=1)[:, 0, :]
    ignored = (t2 == ignore_index) if ignore_index is not None else np.zeros(t2.shape, bool)
    w = weight[tc] if weight is not None else np.ones(t2.shape, logp.dtype)
    w = np.where(ignored, 0, w).astype(logp.dtype)
    loss = (picked * w).reshape(target.shape)
    if reduction == "mean":
        if weight is None and ignore_index is None:
            return np.mean(loss).astype(logp.dtype)
        return (loss.sum() / w.sum()).astype(logp.dtype)
    if reduction == "sum":
        return np.sum(loss).astype(logp.dtype)
    return loss.astype(logp.dtype)


def _nll_ref(node, a):
    w = a[2] if len(a) > 2 else None
    return [_nll(a[0], a[1], w, node.attrs["reduction"], node.attrs.get("ignore_index"))]


def _loss_shape(node):
    x, t = node.inputs[0], node.inputs[1]
    return () if node.attrs["reduction"] != "none" else tuple(t.shape)


_schema_op("NegativeLogLikelihoodLoss", mapping=Mapping.OPAQUE, reference=_nll_ref,
           infer=lambda node: [(node.inputs[0].dtype, _loss_shape(node))],
           flops=lambda node: 2 * _n(node.inputs[1].shape), category="loss")


def _sce_ref(node, a):
    x, t = a[0], a[1]
    w = a[2] if len(a) > 2 else None
    mx = np.max(x, axis=1, keepdims=True)
    logp = (x - mx) - np.log(np.sum(np.exp(x - mx), axis=1, keepdims=True))
    loss = _nll(logp, t, w, node.attrs["reduction"], node.attrs.get("ignore_index"))
    return [loss, logp.astype(x.dtype)][:len(node.outputs)]


_schema_op("SoftmaxCrossEntropyLoss", mapping=Mapping.OPAQUE, reference=_sce_ref,
           infer=lambda node: [(node.inputs[0].dtype, _loss_shape(node)),
                               (node.inputs[0].dtype, node.inputs[0].shape)][:len(node.outputs)],
           flops=lambda node: 6 * _n(node.inputs[0].shape), category="loss")


# ---------------------------------------------------------------------------
# Quantization. Scales broadcast per tensor (scalar), per axis (1-D) or per
# block (same rank as x, `block_size` elements of `axis` share one scale).

def _qparam(p, x_shape, axis, block_size):
    if p is None:
        return None
    p = np.asarray(p)
    r = len(x_shape)
    if p.ndim == 0 or p.size == 1 and block_size == 0 and p.ndim <= 1:
        return p.reshape(())
    ax = axis + r if axis < 0 else axis
    if block_size and block_size > 0:
        return np.repeat(p, block_size, axis=ax)[tuple(slice(0, d) for d in x_shape)]
    shape = [1] * r
    shape[ax] = p.size
    return p.reshape(shape)


def _quant_dtype(node):
    from fusion.ir.dtypes import to_numpy
    zp = node.input(2)
    od = node.attrs.get("output_dtype") or 0
    dt = zp.dtype if zp is not None else to_numpy(od) if od else np.dtype(np.uint8)
    if dt.kind not in "iu":
        from fusion.errors import UnsupportedOpError
        raise UnsupportedOpError(f"{node.label()}: quantizing to {dt} is not supported (integer types only)")
    return dt


def _saturate(y, dt):
    info = np.iinfo(dt)
    return np.clip(y, info.min, info.max).astype(dt)


def _quantize_ref(node, a):
    x, scale = a[0], a[1]
    zp = a[2] if len(a) > 2 else None
    ax, bs = node.attrs.get("axis", 1), node.attrs.get("block_size", 0) or 0
    dt = _quant_dtype(node)
    s = _qparam(scale, x.shape, ax, bs)
    z = _qparam(zp, x.shape, ax, bs)
    y = np.rint(x.astype(np.float32) / s.astype(np.float32))
    if z is not None:
        y = y + z.astype(np.float32)
    return [_saturate(y, dt)]


def _quantize_lower(node, out, read, k=0):
    x = node.inputs[0]
    dt = _quant_dtype(node)
    bs = node.attrs.get("block_size", 0) or 0

    def param(i):
        v = node.inputs[i]
        if v.size == 1 and v.rank <= 1:
            return read(i, [0] * v.rank)
        ax = norm_axis(node.attrs.get("axis", 1), x.rank, node)
        if bs:
            idx = list(out)
            idx[ax] = out[ax] // bs
            return read(i, idx)
        return read(i, [out[ax]])
    y = E.call("round", E.cast(read(0, list(out)), "float32") / E.cast(param(1), "float32"))
    if node.input(2) is not None:
        y = y + E.cast(param(2), "float32")
    info = np.iinfo(dt)
    y = E.binary("min", E.binary("max", y, E.const(float(info.min), "float32")), E.const(float(info.max), "float32"))
    return E.cast(y, dt.name)


def _param_mapping(node):
    # A scale/zero point shared by several elements is a broadcast (the planner
    # treats a constant one as One-to-One itself).
    x = node.inputs[0]
    return Mapping.O2O if all(v is None or v.size == x.size for v in node.inputs[1:]) else Mapping.O2M


_schema_op("QuantizeLinear", mapping=_param_mapping, reference=_quantize_ref, lower=_quantize_lower,
           infer=lambda node: [(_quant_dtype(node), node.inputs[0].shape)], flops=_flops_per_out(3),
           export_opset=21, category="quant")


def _dequant_dtype(node):
    from fusion.ir.dtypes import to_numpy
    od = node.attrs.get("output_dtype") or 0
    return to_numpy(od) if od else node.inputs[1].dtype


def _dequantize_ref(node, a):
    x, scale = a[0], a[1]
    zp = a[2] if len(a) > 2 else None
    ax, bs = node.attrs.get("axis", 1), node.attrs.get("block_size", 0) or 0
    s = _qparam(scale, x.shape, ax, bs)
    z = _qparam(zp, x.shape, ax, bs)
    y = x.astype(np.float32) - (z.astype(np.float32) if z is not None else 0)
    return [(y * s.astype(np.float32)).astype(_dequant_dtype(node))]


def _dequantize_lower(node, out, read, k=0):
    x = node.inputs[0]
    bs = node.attrs.get("block_size", 0) or 0

    def param(i):
        v = node.inputs[i]
        if v.size == 1 and v.rank <= 1:
            return read(i, [0] * v.rank)
        ax = norm_axis(node.attrs.get("axis", 1), x.rank, node)
        if bs:
            idx = list(out)
            idx[ax] = out[ax] // bs
            return read(i, idx)
        return read(i, [out[ax]])
    y = E.cast(read(0, list(out)), "float32")
    if node.input(2) is not None:
        y = y - E.cast(param(2), "float32")
    return E.cast(y * E.cast(param(1), "float32"), _dequant_dtype(node).name)


_schema_op("DequantizeLinear", mapping=_param_mapping, reference=_dequantize_ref, lower=_dequantize_lower,
           infer=lambda node: [(_dequant_dtype(node), node.inputs[0].shape)], flops=_flops_per_out(2),
           export_opset=21, category="quant")


def _dynq_ref(node, a):
    x = a[0].astype(np.float32)
    lo, hi = min(0.0, float(x.min())) if x.size else 0.0, max(0.0, float(x.max())) if x.size else 0.0
    scale = np.float32((hi - lo) / 255.0)
    zp = np.clip(np.rint(0 - lo / scale) if scale else 0, 0, 255)
    y = np.clip(np.rint(x / scale) + zp if scale else zp, 0, 255)
    return [y.astype(np.uint8), np.array(scale, np.float32), np.array(zp, np.uint8)]


_schema_op("DynamicQuantizeLinear", mapping=Mapping.OPAQUE, reference=_dynq_ref,
           infer=lambda node: [(np.dtype(np.uint8), node.inputs[0].shape), (np.dtype(np.float32), ()),
                               (np.dtype(np.uint8), ())],
           flops=lambda node: 5 * _n(node.inputs[0].shape), category="quant")


def _zp_sub(x, zp):
    x = x.astype(np.int32)
    if zp is None:
        return x
    return x - np.asarray(zp).astype(np.int32)


def _matmul_integer_ref(node, a):
    A, B = a[0], a[1]
    az = a[2] if len(a) > 2 else None
    bz = a[3] if len(a) > 3 else None
    A = _zp_sub(A, az.reshape(-1, 1) if az is not None and az.size > 1 else az)
    B = _zp_sub(B, bz)
    return [np.matmul(A, B).astype(np.int32)]


def _matmul_shape(a, b):
    from fusion.ops.linear import matmul_shapes
    return matmul_shapes(a, b)[0]


def _mmi_lower(node, out, read, k=0):
    A, B = node.inputs[0], node.inputs[1]
    if A.rank < 2 or B.rank < 2:
        raise ShapeError(f"{node.label()}: MatMulInteger's loop is written for operands of rank >= 2")
    K = int(A.shape[-1])
    batch, i, j = list(out[:-2]), out[-2], out[-1]

    def body(r):
        a = E.cast(read(0, E.broadcast_index(batch + [i, r[0]], A.shape)), "int32")
        b = E.cast(read(1, E.broadcast_index(batch + [r[0], j], B.shape)), "int32")
        if node.input(2) is not None:
            z = node.inputs[2]
            a = a - E.cast(read(2, [i] if z.size > 1 else [0] * z.rank), "int32")
        if node.input(3) is not None:
            z = node.inputs[3]
            b = b - E.cast(read(3, [j] if z.size > 1 else [0] * z.rank), "int32")
        return a * b
    return E.reduce("sum", [K], body, prefix="k")


_schema_op("MatMulInteger", mapping=Mapping.M2M, reference=_matmul_integer_ref,
           lower=_mmi_lower,
           infer=lambda node: [(np.dtype(np.int32), _matmul_shape(node.inputs[0].shape, node.inputs[1].shape))],
           flops=lambda node: 2 * _n(node.outputs[0].shape) * int(node.inputs[0].shape[-1]), category="quant")


def _qlinear_matmul_ref(node, a):
    A, As, Az, B, Bs, Bz, Ys, Yz = a
    acc = np.matmul(A.astype(np.float64) - Az.astype(np.float64).reshape(-1, 1) if Az.size > 1 else
                    A.astype(np.float64) - Az.astype(np.float64),
                    B.astype(np.float64) - Bz.astype(np.float64))
    sa = As.astype(np.float64).reshape(-1, 1) if As.size > 1 else As.astype(np.float64)
    y = acc * sa * Bs.astype(np.float64) / Ys.astype(np.float64)
    y = np.rint(y) + Yz.astype(np.float64)
    return [_saturate(y, Yz.dtype)]


_schema_op("QLinearMatMul", mapping=Mapping.OPAQUE, reference=_qlinear_matmul_ref,
           infer=lambda node: [(node.inputs[7].dtype, _matmul_shape(node.inputs[0].shape, node.inputs[3].shape))],
           flops=lambda node: 2 * _n(node.outputs[0].shape) * int(node.inputs[0].shape[-1]), category="quant")


def _conv_nd(x, w, attrs):
    """Direct N-d convolution in float64 (groups, strides, dilations, pads, auto_pad)."""
    N, C = x.shape[:2]
    M = w.shape[0]
    ks = list(w.shape[2:])
    nd = len(ks)
    g = attrs.get("group", 1) or 1
    st = list(attrs.get("strides") or [1] * nd)
    dl = list(attrs.get("dilations") or [1] * nd)
    pads = list(attrs.get("pads") or [0] * (2 * nd))
    auto = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    sp = x.shape[2:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nd):
            o = -(-sp[i] // st[i])
            total = max(0, (o - 1) * st[i] + (ks[i] - 1) * dl[i] + 1 - sp[i])
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[i + nd] = lo, total - lo
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    out_sp = [(xp.shape[2 + i] - (ks[i] - 1) * dl[i] - 1) // st[i] + 1 for i in range(nd)]
    y = np.zeros((N, M) + tuple(out_sp), np.float64)
    cg, mg = C // g, M // g
    for gi in range(g):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        ws = w[gi * mg:(gi + 1) * mg]
        for off in np.ndindex(*ks):
            sl = tuple(slice(off[i] * dl[i], off[i] * dl[i] + (out_sp[i] - 1) * st[i] + 1, st[i]) for i in range(nd))
            patch = xs[(slice(None), slice(None)) + sl]                  # N, cg, *out
            y[:, gi * mg:(gi + 1) * mg] += np.einsum("nc...,mc->nm...", patch, ws[(slice(None), slice(None)) + off])
    return y


def _conv_out_shape(node, x, w):
    nd = len(w.shape) - 2
    ks = [int(d) for d in w.shape[2:]]
    st = list(node.attrs.get("strides") or [1] * nd)
    dl = list(node.attrs.get("dilations") or [1] * nd)
    pads = list(node.attrs.get("pads") or [0] * (2 * nd))
    auto = node.attrs.get("auto_pad", "NOTSET") or "NOTSET"
    sp = [int(d) for d in x.shape[2:]]
    out = []
    for i in range(nd):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-sp[i] // st[i]))
        else:
            p = 0 if auto == "VALID" else pads[i] + pads[i + nd]
            out.append((sp[i] + p - (ks[i] - 1) * dl[i] - 1) // st[i] + 1)
    return (x.shape[0], w.shape[0]) + tuple(out)


def _conv_integer_ref(node, a):
    x, w = a[0], a[1]
    xz = a[2] if len(a) > 2 and a[2] is not None else 0
    wz = a[3] if len(a) > 3 and a[3] is not None else 0
    wz = np.asarray(wz)
    wf = w.astype(np.float64) - (wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz)
    y = _conv_nd(x.astype(np.float64) - np.asarray(xz, np.float64), wf, node.attrs)
    return [y.astype(np.int32)]


_schema_op("ConvInteger", mapping=Mapping.OPAQUE, reference=_conv_integer_ref,
           infer=lambda node: [(np.dtype(np.int32), _conv_out_shape(node, node.inputs[0], node.inputs[1]))],
           flops=lambda node: 2 * _n(node.outputs[0].shape) * _n(node.inputs[1].shape[1:]), category="quant")


def _qlinear_conv_ref(node, a):
    x, xs, xz, w, ws, wz, ys, yz = a[:8]
    b = a[8] if len(a) > 8 else None
    wz = np.asarray(wz, np.float64)
    wf = w.astype(np.float64) - (wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz)
    acc = _conv_nd(x.astype(np.float64) - np.asarray(xz, np.float64), wf, node.attrs)
    if b is not None:
        acc = acc + b.astype(np.float64).reshape((1, -1) + (1,) * (acc.ndim - 2))
    wsf = np.asarray(ws, np.float64)
    wsf = wsf.reshape((1, -1) + (1,) * (acc.ndim - 2)) if wsf.size > 1 else wsf
    y = np.rint(acc * np.float64(xs) * wsf / np.float64(ys)) + np.float64(yz)
    return [_saturate(y, np.asarray(yz).dtype)]


_schema_op("QLinearConv", mapping=Mapping.OPAQUE, reference=_qlinear_conv_ref,
           infer=lambda node: [(node.inputs[7].dtype, _conv_out_shape(node, node.inputs[0], node.inputs[3]))],
           flops=lambda node: 2 * _n(node.outputs[0].shape) * _n(node.inputs[3].shape[1:]), category="quant")


# ---------------------------------------------------------------------------
# Scans, generators and simple rearrangements

def _cumprod_ref(node, a):
    x = a[0]
    ax = norm_axis(int(np.asarray(a[1]).reshape(-1)[0]), x.ndim, node)
    y = np.flip(x, ax) if node.attrs["reverse"] else x
    if node.attrs["exclusive"]:
        ones = np.ones_like(np.take(y, [0], axis=ax))
        y = np.concatenate([ones, np.take(y, range(y.shape[ax] - 1), axis=ax)], axis=ax)
    y = np.cumprod(y, axis=ax, dtype=x.dtype)
    return [np.flip(y, ax) if node.attrs["reverse"] else y]


def _cumprod_lower(node, out, read, k=0):
    x = node.inputs[0]
    rev, exc = node.attrs["reverse"], node.attrs["exclusive"]
    one = E.const(1, x.dtype.name)

    def along(ax):
        def term(r):
            idx = list(out)
            idx[ax] = r[0]
            keep = E.binary(("gt" if exc else "ge") if rev else ("lt" if exc else "le"), r[0], out[ax])
            return E.select(keep, read(0, idx), one)
        return E.reduce("prod", [int(x.shape[ax])], term)

    axv = const_input(node, 1)
    if axv is not None:
        return along(norm_axis(int(np.asarray(axv).reshape(-1)[0]), x.rank, node))
    # The axis arrives at run time: choose among all axes by its value.
    a = E.cast(read(1, [E.Const(0)] * node.inputs[1].rank), "int64")
    a = E.select(E.binary("lt", a, 0), a + x.rank, a)
    res = along(x.rank - 1)
    for ax in range(x.rank - 2, -1, -1):
        res = E.select(E.binary("eq", a, ax), along(ax), res)
    return res


_schema_op("CumProd", mapping=Mapping.M2M, infer=_same, reference=_cumprod_ref,
           lower=_cumprod_lower,
           flops=lambda node: _n(node.inputs[0].shape), category="reduce")


def _eyelike_dtype(node):
    from fusion.ir.dtypes import to_numpy
    d = node.attrs.get("dtype")
    return to_numpy(d) if d is not None else node.inputs[0].dtype


def _eyelike_ref(node, a):
    x = a[0]
    return [np.eye(x.shape[0], x.shape[1], k=node.attrs["k"], dtype=_eyelike_dtype(node))]


def _eyelike_lower(node, out, read, k_=0):
    dt = _eyelike_dtype(node).name
    on = E.binary("eq", out[1] - out[0], node.attrs["k"])
    return E.select(on, E.const(1, dt), E.const(0, dt))


_schema_op("EyeLike", mapping=Mapping.O2O, reference=_eyelike_ref, lower=_eyelike_lower,
           infer=lambda node: [(_eyelike_dtype(node), node.inputs[0].shape)], flops=lambda node: 0,
           category="generator")


def _revseq_ref(node, a):
    x, lens = a[0], a[1]
    bax, tax = node.attrs["batch_axis"], node.attrs["time_axis"]
    y = x.copy()
    for b in range(x.shape[bax]):
        n = int(lens[b])
        src = [slice(None)] * x.ndim
        src[bax] = b
        src[tax] = slice(0, n)
        dst = list(src)
        dst[tax] = slice(n - 1, None, -1) if n > 0 else slice(0, 0)
        y[tuple(src)] = x[tuple(dst)]
    return [y]


def _revseq_lower(node, out, read, k=0):
    bax, tax = node.attrs["batch_axis"], node.attrs["time_axis"]
    n = read(1, [out[bax]])
    t = out[tax]
    idx = list(out)
    idx[tax] = E.select(E.binary("lt", t, n), n - 1 - t, t)
    return read(0, idx)


_schema_op("ReverseSequence", mapping=Mapping.O2M, infer=_same, reference=_revseq_ref, lower=_revseq_lower,
           flops=lambda node: 0, category="movement")


def _compress_ref(node, a):
    x, c = a[0], a[1].astype(bool)
    ax = node.attrs.get("axis")
    if ax is None:
        x = x.reshape(-1)
        ax = 0
    ax = norm_axis(ax, x.ndim, node)
    c = c[:x.shape[ax]]
    return [np.compress(c, x, axis=ax)]


def _compress_infer(node):
    x, c = node.inputs
    ax = node.attrs.get("axis")
    cv = c.value
    if ax is None:
        n = int(np.count_nonzero(cv[:x.size])) if cv is not None else _sym(node, "compressed")
        return [(x.dtype, (n,))]
    ax = norm_axis(ax, x.rank, node)
    shape = list(x.shape)
    shape[ax] = int(np.count_nonzero(cv[:shape[ax]])) if cv is not None else _sym(node, "compressed")
    return [(x.dtype, tuple(shape))]


def _sym(node, what):
    import sympy
    return sympy.Symbol(f"{node.name}_{what}", integer=True, nonnegative=True)


_schema_op("Compress", mapping=Mapping.OPAQUE, infer=_compress_infer, reference=_compress_ref,
           flops=lambda node: 0, category="movement")


def _unique_ref(node, a):
    x = a[0]
    ax = node.attrs.get("axis")
    if ax is None:
        flat = x.reshape(-1)
        u, first, inv, cnt = np.unique(flat, return_index=True, return_inverse=True, return_counts=True)
    else:
        ax = norm_axis(ax, x.ndim, node)
        u, first, inv, cnt = np.unique(x, axis=ax, return_index=True, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    if not node.attrs["sorted"]:
        order = np.argsort(first, kind="stable")      # order of first occurrence
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        u = np.take(u, order, axis=0 if ax is None else ax)
        first, cnt, inv = first[order], cnt[order], rank[inv]
    i64 = np.int64
    return [u, first.astype(i64), inv.astype(i64), cnt.astype(i64)][:len(node.outputs)]


def _unique_infer(node):
    x = node.inputs[0]
    ax = node.attrs.get("axis")
    n = _sym(node, "unique")
    if x.value is not None:
        n = int(_unique_ref(node, [x.value])[0].shape[0 if ax is None else norm_axis(ax, x.rank, node)])
    if ax is None:
        y = (n,)
        inv = (x.size if x.is_static else _sym(node, "n"),)
    else:
        ax = norm_axis(ax, x.rank, node)
        y = tuple(x.shape[:ax]) + (n,) + tuple(x.shape[ax + 1:])
        inv = (x.shape[ax],)
    i64 = np.dtype(np.int64)
    return [(x.dtype, y), (i64, (n,)), (i64, inv), (i64, (n,))][:len(node.outputs)]


_schema_op("Unique", mapping=Mapping.OPAQUE, infer=_unique_infer, reference=_unique_ref,
           flops=lambda node: 0, category="movement")


_schema_op("Det", mapping=Mapping.OPAQUE, reference=lambda node, a: [np.linalg.det(a[0]).astype(a[0].dtype)],
           infer=lambda node: [(node.inputs[0].dtype, tuple(node.inputs[0].shape[:-2]))],
           flops=lambda node: _n(node.inputs[0].shape) * int(node.inputs[0].shape[-1]), category="linear")


def _bitcast_dtype(node):
    from fusion.ir.dtypes import to_numpy
    return to_numpy(node.attrs["to"])


def _bitcast_shape(node):
    x = node.inputs[0]
    a, b = x.dtype.itemsize, _bitcast_dtype(node).itemsize
    if a == b:
        return tuple(x.shape)
    if a > b:
        return tuple(x.shape) + (a // b,)
    return tuple(x.shape[:-1])


def _bitcast_ref(node, a):
    x = a[0]
    dt = _bitcast_dtype(node)
    if x.dtype.itemsize == dt.itemsize:
        return [x.view(dt)]
    xs = x if x.flags.c_contiguous else x.copy()
    return [xs.view(dt).reshape(_bitcast_shape(node))]


_schema_op("BitCast", mapping=Mapping.OPAQUE, reference=_bitcast_ref,
           infer=lambda node: [(_bitcast_dtype(node), _bitcast_shape(node))], flops=lambda node: 0,
           category="movement")


def _swiglu_ref(node, a):
    x, g = a[0], a[1]
    al = x.dtype.type(node.attrs["alpha"])
    return [(x / (1 + np.exp(-al * x)) * g).astype(x.dtype)]


def _swiglu_lower(node, out, read, k=0):
    A, B = node.inputs
    a = read(0, E.broadcast_index(out, A.shape))
    b = read(1, E.broadcast_index(out, B.shape))
    dt = A.dtype.name
    return a / (E.const(1.0, dt) + E.call("exp", -(E.const(node.attrs["alpha"], dt) * a))) * b


def _swiglu_infer(node):
    from fusion.ops.table import broadcast_shapes
    return [(node.inputs[0].dtype, broadcast_shapes(node.inputs[0].shape, node.inputs[1].shape))]


_schema_op("SwiGLU", mapping=lambda node: Mapping.O2O if tuple(node.inputs[0].shape) == tuple(node.inputs[1].shape)
           else Mapping.O2M, infer=_swiglu_infer, reference=_swiglu_ref, lower=_swiglu_lower,
           flops=_flops_per_out(14), category="elementwise")


def _window(kind):
    def ref(node, a):
        from fusion.ir.dtypes import to_numpy
        n = int(np.asarray(a[0]).reshape(-1)[0])
        dt = to_numpy(node.attrs["output_datatype"])
        N = n if node.attrs["periodic"] else n - 1
        k = np.arange(n, dtype=np.float64)
        if kind == "Hann":
            w = np.sin(np.pi * k / N) ** 2
        elif kind == "Hamming":
            w = 25 / 46 - (21 / 46) * np.cos(2 * np.pi * k / N)
        else:
            w = 0.42 - 0.5 * np.cos(2 * np.pi * k / N) + 0.08 * np.cos(4 * np.pi * k / N)
        return [w.astype(dt)]

    def infer(node):
        from fusion.ir.dtypes import to_numpy
        v = const_input(node, 0)
        n = int(np.asarray(v).reshape(-1)[0]) if v is not None else _sym(node, "size")
        return [(to_numpy(node.attrs["output_datatype"]), (n,))]
    _schema_op(f"{kind}Window", mapping=Mapping.OPAQUE, infer=infer, reference=ref,
               flops=lambda node: 10 * _n(node.outputs[0].shape), category="generator")


for _kind in ("Hann", "Hamming", "Blackman"):
    _window(_kind)


def _ccp_target(node):
    x = node.inputs[0]
    sh = const_input(node, 1)
    if sh is None:
        raise ShapeError(f"{node.label()}: input 1 ('shape', value '{node.inputs[1].name}') must be known at compile time")
    axes = node.attrs.get("axes")
    axes = list(range(x.rank)) if axes is None else [norm_axis(a, x.rank, node) for a in axes]
    out = list(x.shape)
    for a, s in zip(axes, np.asarray(sh).reshape(-1)):
        out[a] = int(s)
    return out


def _ccp_ref(node, a):
    x = a[0]
    out = _ccp_target(node)
    y = np.zeros(out, x.dtype)
    src, dst = [], []
    for d, o in zip(x.shape, out):
        if o <= d:
            s = (d - o) // 2
            src.append(slice(s, s + o))
            dst.append(slice(0, o))
        else:
            s = (o - d) // 2
            src.append(slice(0, d))
            dst.append(slice(s, s + d))
    y[tuple(dst)] = x[tuple(src)]
    return [y]


def _ccp_lower(node, out, read, k=0):
    x = node.inputs[0]
    tgt = _ccp_target(node)
    idx, inside = [], None
    for i, (d, o) in enumerate(zip(x.shape, tgt)):
        d = int(d)
        off = (d - o) // 2 if o <= d else -((o - d) // 2)
        p = out[i] + off
        if o > d:
            ok = E.binary("and", E.binary("ge", p, 0), E.binary("lt", p, d))
            inside = ok if inside is None else E.binary("and", inside, ok)
            p = E.binary("min", E.binary("max", p, 0), d - 1)
        idx.append(p)
    v = read(0, idx)
    return v if inside is None else E.select(inside, v, E.const(0, x.dtype.name))


_schema_op("CenterCropPad", mapping=Mapping.O2O, reference=_ccp_ref, lower=_ccp_lower,
           infer=lambda node: [(node.inputs[0].dtype, tuple(_ccp_target(node)))], flops=lambda node: 0,
           category="movement")


def _tscatter_ref(node, a):
    past, upd = a[0], a[1]
    wi = a[2] if len(a) > 2 and a[2] is not None else np.zeros(past.shape[0], np.int64)
    ax = norm_axis(node.attrs["axis"], past.ndim, node)
    L, S = past.shape[ax], upd.shape[ax]
    y = past.copy()
    for pre in np.ndindex(*past.shape[:ax]):
        for s in range(S):
            t = int(wi[pre[0]]) + s
            if node.attrs["mode"] == "circular":
                t %= L
            y[pre + (t,)] = upd[pre + (s,)]
    return [y]


_schema_op("TensorScatter", mapping=Mapping.OPAQUE, infer=_same, reference=_tscatter_ref, flops=lambda node: 0,
           category="movement")


# ---------------------------------------------------------------------------
# Training-domain optimizers (ai.onnx.preview.training): one update step

_TRAIN = "ai.onnx.preview.training"


def _adagrad_ref(node, a):
    r, t = a[0], a[1]
    rest = a[2:]
    n = len(rest) // 3
    at = node.attrs
    rr = r / (1 + t * at["decay_factor"])
    xs, gs, hs = rest[:n], rest[n:2 * n], rest[2 * n:]
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        g = g + at["norm_coefficient"] * x
        h2 = h + g * g
        new_h.append(h2.astype(h.dtype))
        new_x.append((x - rr * g / (np.sqrt(h2) + at["epsilon"])).astype(x.dtype))
    return new_x + new_h


def _train_infer(k_state):
    def infer(node):
        rest = node.inputs[2:]
        n = len(rest) // (2 + k_state)
        xs, states = rest[:n], rest[2 * n:]
        return [(v.dtype, v.shape) for v in xs] + [(v.dtype, v.shape) for v in states]
    return infer


def _adam_ref(node, a):
    r, t = a[0], a[1]
    rest = a[2:]
    n = len(rest) // 4
    at = node.attrs
    al, be, eps = at["alpha"], at["beta"], at["epsilon"]
    xs, gs, vs, hs = rest[:n], rest[n:2 * n], rest[2 * n:3 * n], rest[3 * n:]
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        g = g + at["norm_coefficient"] * x
        v2 = al * v + (1 - al) * g
        h2 = be * h + (1 - be) * g * g
        hs_ = np.sqrt(h2) + eps
        rr = r * np.sqrt(1 - be ** t) / (1 - al ** t) if t > 0 else r
        x2 = x - rr * v2 / hs_
        x2 = (1 - at["norm_coefficient_post"]) * x2
        new_x.append(x2.astype(x.dtype))
        new_v.append(v2.astype(v.dtype))
        new_h.append(h2.astype(h.dtype))
    return new_x + new_v + new_h


def _momentum_ref(node, a):
    r, t = a[0], a[1]
    rest = a[2:]
    n = len(rest) // 3
    at = node.attrs
    al, be, lam, mode = at["alpha"], at["beta"], at["norm_coefficient"], at["mode"]
    xs, gs, vs = rest[:n], rest[n:2 * n], rest[2 * n:]
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs):
        g = g + lam * x
        bb = 1 if t == 0 else be
        v2 = al * v + bb * g
        x2 = x - r * v2 if mode == "standard" else x - r * (g + al * v2)
        new_x.append(x2.astype(x.dtype))
        new_v.append(v2.astype(v.dtype))
    return new_x + new_v


for _name, _ref, _k in (("Adagrad", _adagrad_ref, 1), ("Adam", _adam_ref, 2), ("Momentum", _momentum_ref, 1)):
    _schema_op(_name, domain=_TRAIN, mapping=Mapping.OPAQUE, reference=_ref, infer=_train_infer(_k),
               flops=lambda node: 8 * sum(_n(v.shape) for v in node.inputs[2:]), category="training")


# ---------------------------------------------------------------------------
# Recurrent nets (RNN, GRU, LSTM): opaque; a time loop with a carried state.

def _act(name, alpha, beta):
    n = name.lower()
    if n == "sigmoid":
        return lambda x: 1 / (1 + np.exp(-x))
    if n == "tanh":
        return np.tanh
    if n == "relu":
        return lambda x: np.maximum(x, 0)
    if n == "leakyrelu":
        return lambda x: np.where(x < 0, alpha * x, x)
    if n == "thresholdedrelu":
        return lambda x: np.where(x > alpha, x, 0)
    if n == "scaledtanh":
        return lambda x: alpha * np.tanh(beta * x)
    if n == "hardsigmoid":
        return lambda x: np.clip(alpha * x + beta, 0, 1)
    if n == "elu":
        return lambda x: np.where(x < 0, alpha * (np.exp(x) - 1), x)
    if n == "softsign":
        return lambda x: x / (1 + np.abs(x))
    if n == "softplus":
        return lambda x: np.log1p(np.exp(x))
    if n == "affine":
        return lambda x: alpha * x + beta
    raise ShapeError(f"recurrent activation '{name}' is not supported")


_RNN_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
_RNN_DEFAULT_ALPHA = {"leakyrelu": 0.01, "thresholdedrelu": 1.0, "hardsigmoid": 0.2, "elu": 1.0}
_RNN_DEFAULT_BETA = {"hardsigmoid": 0.5}


def _rnn_acts(node, per_dir):
    at = node.attrs
    names = at.get("activations") or _RNN_DEFAULT_ACTS[node.op]
    ndir = 2 if at.get("direction") == "bidirectional" else 1
    if len(names) == per_dir:
        names = names * ndir
    alphas, betas = at.get("activation_alpha") or [], at.get("activation_beta") or []
    out, ai, bi = [], 0, 0
    for nm in names:
        low = nm.lower()
        a = _RNN_DEFAULT_ALPHA.get(low, 1.0)
        b = _RNN_DEFAULT_BETA.get(low, 0.0)
        if low in ("leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu", "affine") and ai < len(alphas):
            a = alphas[ai]
            ai += 1
        if low in ("scaledtanh", "hardsigmoid", "affine") and bi < len(betas):
            b = betas[bi]
            bi += 1
        out.append(_act(nm, a, b))
    return [out[d * per_dir:(d + 1) * per_dir] for d in range(ndir)]


def _rnn_ref(node, a):
    a = list(a) + [None] * (8 - len(a))
    op, at = node.op, node.attrs
    X, W, R, B, seq_lens, h0 = a[:6]
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    layout = at.get("layout", 0) or 0
    if layout:
        X = X.transpose(1, 0, 2)
        h0 = h0.transpose(1, 0, 2) if h0 is not None else None
    T, N, _ = X.shape
    ndir, H = W.shape[0], at["hidden_size"] or R.shape[-1]
    dt = X.dtype
    clip = at.get("clip")
    acts = _rnn_acts(node, {"RNN": 1, "GRU": 2, "LSTM": 3}[op])
    B = B if B is not None else np.zeros((ndir, 2 * gates * H), dt)
    h0 = h0 if h0 is not None else np.zeros((ndir, N, H), dt)
    c0 = P = None
    if op == "LSTM":
        c0 = a[6] if a[6] is not None else np.zeros((ndir, N, H), dt)
        if layout and a[6] is not None:
            c0 = c0.transpose(1, 0, 2)
        P = a[7] if a[7] is not None else np.zeros((ndir, 3 * H), dt)
    lens = seq_lens if seq_lens is not None else np.full(N, T, np.int64)
    Y = np.zeros((T, ndir, N, H), dt)
    Yh = np.zeros((ndir, N, H), dt)
    Yc = np.zeros((ndir, N, H), dt)
    cl = (lambda v: np.clip(v, -clip, clip)) if clip else (lambda v: v)
    for d in range(ndir):
        reverse = at.get("direction") == "reverse" or d == 1
        w, r = W[d], R[d]
        wb, rb = B[d][:gates * H], B[d][gates * H:]
        h = h0[d].astype(dt).copy()
        c = c0[d].astype(dt).copy() if op == "LSTM" else None
        f = acts[d]
        for n in range(N):
            steps = range(int(lens[n]) - 1, -1, -1) if reverse else range(int(lens[n]))
            hn = h[n].copy()
            cn = c[n].copy() if c is not None else None
            for t in steps:
                x = X[t, n]
                if op == "RNN":
                    hn = f[0](cl(x @ w.T + hn @ r.T + wb + rb))
                elif op == "GRU":
                    xw = x @ w.T + wb
                    z = f[0](cl(xw[:H] + hn @ r[:H].T + rb[:H]))
                    rr = f[0](cl(xw[H:2 * H] + hn @ r[H:2 * H].T + rb[H:2 * H]))
                    if at.get("linear_before_reset"):
                        hh = f[1](cl(xw[2 * H:] + rr * (hn @ r[2 * H:].T + rb[2 * H:])))
                    else:
                        hh = f[1](cl(xw[2 * H:] + (rr * hn) @ r[2 * H:].T + rb[2 * H:]))
                    hn = (1 - z) * hh + z * hn
                else:
                    g = x @ w.T + hn @ r.T + wb + rb
                    pi, po, pf = P[d][:H], P[d][H:2 * H], P[d][2 * H:]
                    i = f[0](cl(g[:H] + pi * cn))
                    fg = f[0](cl(g[2 * H:3 * H] + pf * cn))
                    if at.get("input_forget"):
                        fg = 1 - i
                    cc = f[1](cl(g[3 * H:]))
                    cn = fg * cn + i * cc
                    o = f[0](cl(g[H:2 * H] + po * cn))
                    hn = o * f[2](cn)
                Y[t, d, n] = hn
            Yh[d, n] = hn
            if cn is not None:
                Yc[d, n] = cn
    if layout:
        Y, Yh, Yc = Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2), Yc.transpose(1, 0, 2)
    return [Y, Yh, Yc][:len(node.outputs)]


def _rnn_infer(node):
    X, W = node.inputs[0], node.inputs[1]
    at = node.attrs
    H = at["hidden_size"] or node.inputs[2].shape[-1]
    ndir = W.shape[0]
    if at.get("layout"):
        N, T = X.shape[0], X.shape[1]
        y, h = (N, T, ndir, H), (N, ndir, H)
    else:
        T, N = X.shape[0], X.shape[1]
        y, h = (T, ndir, N, H), (ndir, N, H)
    return [(X.dtype, y), (X.dtype, h), (X.dtype, h)][:len(node.outputs)]


def _rnn_flops(node):
    X, W, R = node.inputs[:3]
    return 2 * int(X.shape[0]) * int(X.shape[1]) * (_n(W.shape) + _n(R.shape)) // max(1, int(W.shape[0])) * int(W.shape[0])


for _name in ("RNN", "GRU", "LSTM"):
    _schema_op(_name, mapping=Mapping.OPAQUE, infer=_rnn_infer, reference=_rnn_ref, flops=_rnn_flops,
               category="recurrent")


# ---------------------------------------------------------------------------
# Signal processing. DFT's canonical form is opset 20: axis is an input.

def _dft_normalize(node, graph, opset):
    if opset < 20:
        ax = node.attrs.pop("axis", 1)
        while len(node.inputs) < 3:
            node.inputs.append(None)
        graph.set_input(node, 2, graph.const(np.array(ax, np.int64), "dft_axis"))
    node.attrs.pop("axis", None)


def _dft_params(node, x_rank, length_at, axis_val, len_val):
    ax = int(np.asarray(axis_val).reshape(-1)[0]) if axis_val is not None else -2
    ax = ax + x_rank if ax < 0 else ax
    inv, one = node.attrs["inverse"], node.attrs["onesided"]
    if len_val is not None:
        n = int(np.asarray(len_val).reshape(-1)[0])
    else:
        n = 2 * (length_at(ax) - 1) if inv and one else length_at(ax)
    return ax, n, inv, one


def _dft_ref(node, a):
    x = a[0]
    ax, n, inv, one = _dft_params(node, x.ndim, lambda i: x.shape[i], a[2] if len(a) > 2 else None,
                                  a[1] if len(a) > 1 else None)
    sig = x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]
    if inv:
        y = np.fft.irfft(sig, n=n, axis=ax)[..., None] if one else np.fft.ifft(sig, n=n, axis=ax)
    else:
        y = np.fft.fft(sig, n=n, axis=ax)
        if one:
            y = np.take(y, range(n // 2 + 1), axis=ax)
    if np.iscomplexobj(y):
        y = np.stack([y.real, y.imag], axis=-1)
    return [y.astype(x.dtype)]


def _dft_infer(node):
    x = node.inputs[0]
    ln, axv = node.input(1), node.input(2)
    if (ln is not None and ln.value is None) or (axv is not None and axv.value is None):
        raise ShapeError(f"{node.label()}: dft_length and axis must be known at compile time")
    ax, n, inv, one = _dft_params(node, x.rank, lambda i: int(x.shape[i]),
                                  axv.value if axv is not None else None, ln.value if ln is not None else None)
    shape = list(x.shape)
    shape[ax] = n // 2 + 1 if one and not inv else n
    shape[-1] = 1 if inv and one else 2
    return [(x.dtype, tuple(shape))]


_schema_op("DFT", mapping=Mapping.OPAQUE, infer=_dft_infer, reference=_dft_ref, normalize=_dft_normalize,
           export_opset=20, attrs={"axis": AttrSpec("int", None)},
           flops=lambda node: 5 * _n(node.outputs[0].shape) * int(math.log2(max(2, _n(node.outputs[0].shape)))),
           category="signal")


def _affine_grid_ref(node, a):
    theta, size = a[0], [int(v) for v in np.asarray(a[1]).reshape(-1)]
    ac = node.attrs["align_corners"]
    N, sp = size[0], size[2:]

    def lin(n):
        if ac:
            return np.linspace(-1, 1, n) if n > 1 else np.zeros(1)
        return (np.arange(n) * 2 + 1) / n - 1
    grids = np.meshgrid(*[lin(n) for n in sp], indexing="ij")       # z, y, x order
    base = np.stack(list(grids)[::-1] + [np.ones_like(grids[0])], axis=-1)  # (..., x, y[, z], 1)
    pts = base.reshape(-1, len(sp) + 1).astype(np.float64)
    out = np.einsum("pk,njk->npj", pts, theta.astype(np.float64))
    return [out.reshape((N,) + tuple(sp) + (len(sp),)).astype(theta.dtype)]


def _affine_grid_infer(node):
    theta, size = node.inputs
    sv = size.value
    if sv is None:
        raise ShapeError(f"{node.label()}: input 1 ('size', value '{size.name}') must be known at compile time")
    s = [int(v) for v in np.asarray(sv).reshape(-1)]
    return [(theta.dtype, (s[0],) + tuple(s[2:]) + (len(s) - 2,))]


_schema_op("AffineGrid", mapping=Mapping.OPAQUE, infer=_affine_grid_infer, reference=_affine_grid_ref,
           flops=lambda node: 2 * _n(node.outputs[0].shape) * int(node.inputs[0].shape[-1]), category="signal")


def _col2im_ref(node, a):
    x = a[0]
    img = [int(v) for v in np.asarray(a[1]).reshape(-1)]
    blk = [int(v) for v in np.asarray(a[2]).reshape(-1)]
    nd = len(img)
    dil = node.attrs.get("dilations") or [1] * nd
    st = node.attrs.get("strides") or [1] * nd
    pads = node.attrs.get("pads") or [0] * (2 * nd)
    N, CK, L = x.shape
    C = CK // _n(blk)
    nb = [(img[i] + pads[i] + pads[i + nd] - dil[i] * (blk[i] - 1) - 1) // st[i] + 1 for i in range(nd)]
    padded = np.zeros((N, C) + tuple(img[i] + pads[i] + pads[i + nd] for i in range(nd)), x.dtype)
    cols = x.reshape((N, C) + tuple(blk) + tuple(nb))
    for k in np.ndindex(*blk):
        sl = tuple(slice(k[i] * dil[i], k[i] * dil[i] + (nb[i] - 1) * st[i] + 1, st[i]) for i in range(nd))
        padded[(slice(None), slice(None)) + sl] += cols[(slice(None), slice(None)) + k]
    crop = tuple(slice(pads[i], pads[i] + img[i]) for i in range(nd))
    return [padded[(slice(None), slice(None)) + crop]]


def _col2im_infer(node):
    x, img, blk = node.inputs
    if img.value is None or blk.value is None:
        raise ShapeError(f"{node.label()}: image_shape and block_shape must be known at compile time")
    im = [int(v) for v in np.asarray(img.value).reshape(-1)]
    C = int(x.shape[1]) // _n(np.asarray(blk.value).reshape(-1))
    return [(x.dtype, (x.shape[0], C) + tuple(im))]


_schema_op("Col2Im", mapping=Mapping.OPAQUE, infer=_col2im_infer, reference=_col2im_ref,
           flops=lambda node: _n(node.inputs[0].shape), category="movement")


def _maxunpool_ref(node, a):
    x, idx = a[0], a[1]
    inferred = _maxunpool_shape(node, x.shape, None)      # the indices address this shape
    shape = _maxunpool_shape(node, x.shape, a[2] if len(a) > 2 else None)
    y = np.zeros(int(np.prod(inferred)), x.dtype)
    y[idx.reshape(-1)] = x.reshape(-1)
    out = np.zeros(shape, x.dtype)                        # a larger output_shape pads at the end
    out[tuple(slice(0, d) for d in inferred)] = y.reshape(inferred)
    return [out]


def _maxunpool_shape(node, xs, out_shape):
    if out_shape is not None:
        return tuple(int(v) for v in np.asarray(out_shape).reshape(-1))
    k = node.attrs["kernel_shape"]
    nd = len(k)
    st = node.attrs.get("strides") or [1] * nd
    pads = node.attrs.get("pads") or [0] * (2 * nd)
    return tuple(xs[:2]) + tuple((int(xs[2 + i]) - 1) * st[i] + k[i] - pads[i] - pads[i + nd] for i in range(nd))


def _maxunpool_infer(node):
    os_ = node.input(2)
    if os_ is not None and os_.value is None:
        raise ShapeError(f"{node.label()}: input 2 ('output_shape') must be known at compile time")
    return [(node.inputs[0].dtype, _maxunpool_shape(node, node.inputs[0].shape, os_.value if os_ is not None else None))]


_schema_op("MaxUnpool", mapping=Mapping.OPAQUE, infer=_maxunpool_infer, reference=_maxunpool_ref,
           flops=lambda node: 0, category="pool")


# ---------------------------------------------------------------------------
# GridSample (N-d): opaque, its reads are addressed by the grid's values.

def _gs_reflect(x, lo, hi):
    rng = hi - lo
    out = np.array(x, dtype=np.float64, copy=True)
    for below in (True, False):
        m = x < lo if below else x > hi
        if not np.any(m):
            continue
        dx = (lo - x[m]) if below else (x[m] - hi)
        k = np.floor(dx / rng) if rng > 0 else np.zeros_like(dx)
        r = dx - k * rng
        even = (k % 2) == 0
        out[m] = np.where(even, lo + r, hi - r) if below else np.where(even, hi - r, lo + r)
    return out


def _gs_cubic(t):
    a = -0.75
    t = np.abs(t)
    return [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]


def _grid_sample_ref(node, a):
    X, grid = a[0], a[1]
    mode, pad, ac = node.attrs["mode"], node.attrs["padding_mode"], node.attrs["align_corners"]
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    N, C = X.shape[:2]
    dims = X.shape[2:]
    nd = len(dims)
    out_sp = grid.shape[1:-1]
    Y = np.zeros((N, C) + tuple(out_sp), np.float64)
    lo = [0.0 if ac else -0.5 for _ in dims]
    hi = [d - 1.0 if ac else d - 0.5 for d in dims]
    for n in range(N):
        g = grid[n].astype(np.float64)
        xs = []
        for i in range(nd):
            v = g[..., nd - 1 - i]                         # the grid lists x (width) first
            L = dims[i]
            v = (v + 1) / 2 * (L - 1) if ac else ((v + 1) * L - 1) / 2
            if mode == "nearest":
                v = np.rint(v)
            out = (v < lo[i]) | (v > hi[i])
            if pad == "border":
                v = np.where(out, np.clip(v, 0, L - 1), v)
            elif pad == "reflection":
                v = np.where(out, _gs_reflect(v, lo[i], hi[i]), v)
            xs.append(v)

        def pixel(idx):
            ok = np.ones(out_sp, bool)
            fixed = []
            for i, ix in enumerate(idx):
                L = dims[i]
                if pad == "zeros":
                    ok &= (ix >= 0) & (ix < L)
                    ix = np.clip(ix, 0, L - 1)
                elif pad == "border":
                    ix = np.clip(ix, 0, L - 1)
                else:
                    ix = _gs_reflect(ix.astype(np.float64), lo[i], hi[i]).astype(np.int64)
                    ix = np.clip(ix, 0, L - 1)
                fixed.append(ix.astype(np.int64))
            v = X[n][(slice(None),) + tuple(fixed)].astype(np.float64)
            return np.where(ok, v, 0.0)
        if mode == "nearest":
            Y[n] = pixel([x.astype(np.int64) for x in xs])
            continue
        base = [np.floor(x).astype(np.int64) for x in xs]
        frac = [x - b for x, b in zip(xs, base)]
        if mode == "linear":
            offs, weights = [0, 1], [[1 - f, f] for f in frac]
        else:
            offs, weights = [-1, 0, 1, 2], [_gs_cubic(f) for f in frac]
        for combo in np.ndindex(*([len(offs)] * nd)):
            w = np.ones(out_sp)
            for i, k in enumerate(combo):
                w = w * weights[i][k]
            Y[n] += w * pixel([base[i] + offs[k] for i, k in enumerate(combo)])
    return [Y.astype(X.dtype)]


def _gs_normalize(node, graph, opset):
    # Opset 20 renamed the modes (bilinear -> linear, bicubic -> cubic) and allowed N-d; keep the new spelling.
    node.attrs["mode"] = {"bilinear": "linear", "bicubic": "cubic"}.get(node.attrs.get("mode", "linear"),
                                                                       node.attrs.get("mode", "linear"))


_schema_op("GridSample", mapping=Mapping.OPAQUE, reference=_grid_sample_ref, normalize=_gs_normalize, export_opset=20,
           infer=lambda node: [(node.inputs[0].dtype, tuple(node.inputs[0].shape[:2]) + tuple(node.inputs[1].shape[1:-1]))],
           flops=lambda node: 8 * _n(node.outputs[0].shape), category="movement")


# ---------------------------------------------------------------------------
# State-carrying sequence ops of opset 27 (opaque: a loop over time)

def _ccws_ref(node, a):
    a = list(a) + [None] * (4 - len(a))
    x, w, b, past = a[:4]
    N, C, _ = x.shape
    k = w.shape[2]
    pad = past if past is not None else np.zeros((N, C, k - 1), x.dtype)
    xp = np.concatenate([pad, x], axis=2)
    y = _conv_nd(xp.astype(np.float64), w.astype(np.float64), {"group": C})
    if b is not None:
        y = y + b.astype(np.float64).reshape(1, -1, 1)
    y = y.astype(x.dtype)
    if node.attrs.get("activation") in ("silu", "swish"):
        yf = y.astype(np.float32)
        y = (yf / (1 + np.exp(-yf))).astype(x.dtype)
    return [y, xp[:, :, xp.shape[2] - (k - 1):]][:len(node.outputs)]


_schema_op("CausalConvWithState", mapping=Mapping.OPAQUE, reference=_ccws_ref,
           infer=lambda node: [(node.inputs[0].dtype, node.inputs[0].shape),
                               (node.inputs[0].dtype, tuple(node.inputs[0].shape[:2]) + (int(node.inputs[1].shape[2]) - 1,))
                               ][:len(node.outputs)],
           flops=lambda node: 2 * _n(node.inputs[0].shape) * int(node.inputs[1].shape[2]), category="recurrent")


def _linear_attention_ref(node, a):
    a = list(a) + [None] * (6 - len(a))
    q, k, v, past, decay, beta = a[:6]
    at = node.attrs
    hq, hk = at["q_num_heads"], at["kv_num_heads"]
    rule = at.get("update_rule") or "gated_delta"
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    B, T, _ = q.shape
    dk, dv = q.shape[-1] // hq, v.shape[-1] // hk
    q4 = _to_heads(q, hq).astype(np.float32)
    k4 = _to_heads(k, hk).astype(np.float32)
    v4 = _to_heads(v, hk).astype(np.float32)
    if gated:
        g4 = (decay.reshape(B, T, hk, 1).transpose(0, 2, 1, 3) if decay.shape[-1] == hk
              else _to_heads(decay, hk)).astype(np.float32)
    if delta:
        b4 = beta.reshape(B, T, beta.shape[-1], 1).transpose(0, 2, 1, 3).astype(np.float32)
    state = past.astype(np.float32).copy() if past is not None else np.zeros((B, hk, dk, dv), np.float32)
    scale = at.get("scale") or 0.0
    scale = 1.0 / math.sqrt(dk) if scale == 0.0 else scale
    out = np.zeros((B, hq, T, dv), np.float32)
    for t in range(T):
        kt, vt = k4[:, :, t, :], v4[:, :, t, :]
        if gated:
            state = state * np.exp(g4[:, :, t, :])[..., None]
        if delta:
            vt = b4[:, :, t, :] * (vt - np.einsum("bhdm,bhd->bhm", state, kt))
        state = state + kt[..., :, None] * vt[..., None, :]
        read = np.repeat(state, hq // hk, axis=1) if hq != hk else state
        out[:, :, t, :] = scale * np.einsum("bhd,bhdm->bhm", q4[:, :, t, :], read)
    y = out.transpose(0, 2, 1, 3).reshape(B, T, hq * dv).astype(q.dtype)
    return [y, state.astype(past.dtype if past is not None else q.dtype)][:len(node.outputs)]


def _linear_attention_infer(node):
    q, k, v = node.inputs[:3]
    hq, hk = node.attrs["q_num_heads"], node.attrs["kv_num_heads"]
    dk, dv = int(q.shape[-1]) // hq, int(v.shape[-1]) // hk
    past = node.input(3)
    return [(q.dtype, (q.shape[0], q.shape[1], hq * dv)),
            (past.dtype if past is not None else q.dtype, (q.shape[0], hk, dk, dv))][:len(node.outputs)]


_schema_op("LinearAttention", mapping=Mapping.OPAQUE, reference=_linear_attention_ref, infer=_linear_attention_infer,
           flops=lambda node: 4 * _n(node.outputs[0].shape) * int(node.inputs[0].shape[-1]), category="recurrent")


def _scatter_ref(node, a):
    data, idx, upd = a
    ax = norm_axis(node.attrs["axis"], data.ndim, node)
    idx = np.where(idx < 0, idx + data.shape[ax], idx)
    y = data.copy()
    np.put_along_axis(y, idx, upd, axis=ax)
    return [y]


# Scatter is ScatterElements' name before opset 11 (deprecated since).
_schema_op("Scatter", mapping=Mapping.OPAQUE, infer=_same, reference=_scatter_ref, flops=lambda node: 0,
           category="movement")


def _flex_attention_ref(node, a, env=None):
    from fusion.ir.dtypes import to_numpy
    from fusion.ir.interpreter import run_subgraph
    q, k, v = a[:3]
    at = node.attrs
    E_ = q.shape[-1]
    scale = at.get("scale")
    scale = 1.0 / math.sqrt(E_) if scale is None else scale
    hq, hk = q.shape[1], k.shape[1]
    if hq != hk:
        k, v = np.repeat(k, hq // hk, axis=1), np.repeat(v, hq // hk, axis=1)
    s = np.asarray(np.sqrt(np.float32(scale)), q.dtype)
    scores = np.matmul(q * s, np.swapaxes(k * s, -1, -2))
    sp = at.get("softmax_precision")
    cdt = to_numpy(sp) if sp else (np.dtype(np.float32) if q.dtype.itemsize < 4 else q.dtype)
    scores = scores.astype(cdt)
    if at.get("score_mod") is not None:
        scores = np.asarray(run_subgraph(at["score_mod"], [scores], env or {})[0], cdt)
    e = np.exp(scores - np.max(scores, axis=-1, keepdims=True))
    p = e / np.sum(e, axis=-1, keepdims=True)
    if at.get("prob_mod") is not None:
        p = np.asarray(run_subgraph(at["prob_mod"], [p], env or {})[0], cdt)
    return [np.matmul(p, v.astype(cdt)).astype(v.dtype)]


_schema_op("FlexAttention", domain="ai.onnx.preview", mapping=Mapping.OPAQUE, reference=_flex_attention_ref,
           needs_env=True, infer=lambda node: [(node.inputs[2].dtype, tuple(node.inputs[0].shape[:3]) +
                                                (node.inputs[2].shape[3],))],
           flops=lambda node: 4 * _n(node.inputs[0].shape) * int(node.inputs[1].shape[2]), category="nn")


def _bilinear_zero(img, h, w):
    """img (C, H, W) sampled at float positions h, w (same shape S): (C, *S), zero outside."""
    H, W = img.shape[1:]
    h0, w0 = np.floor(h).astype(np.int64), np.floor(w).astype(np.int64)
    out = 0.0
    for dh in (0, 1):
        for dw in (0, 1):
            hh, ww = h0 + dh, w0 + dw
            wt = (1 - np.abs(h - hh)) * (1 - np.abs(w - ww))
            ok = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            v = img[:, np.clip(hh, 0, H - 1), np.clip(ww, 0, W - 1)]
            out = out + np.where(ok, wt, 0.0) * v
    return out


def _deform_conv_ref(node, a):
    a = list(a) + [None] * (5 - len(a))
    X, W, off, B, mask = a[:5]
    if X.ndim != 4:
        raise ShapeError(f"{node.label()}: DeformConv is implemented for 2-D images only")
    at = node.attrs
    n, ic, ih, iw = X.shape
    oc, icg, kh, kw = W.shape
    g, og = at.get("group") or 1, at.get("offset_group") or 1
    sh, sw = at.get("strides") or [1, 1]
    dh, dw = at.get("dilations") or [1, 1]
    pads = at.get("pads") or [0, 0, 0, 0]
    oh, ow = off.shape[-2:]
    off = off.reshape(n, og, kh, kw, 2, oh, ow).astype(np.float64)
    mask = (np.ones((n, og, kh, kw, oh, ow)) if mask is None else mask.reshape(n, og, kh, kw, oh, ow))
    ii = (np.arange(oh) * sh - pads[0]).reshape(oh, 1)
    jj = (np.arange(ow) * sw - pads[1]).reshape(1, ow)
    cols = np.zeros((n, ic, kh, kw, oh, ow))
    icpo = ic // og
    for b in range(n):
        for o in range(og):
            img = X[b, o * icpo:(o + 1) * icpo].astype(np.float64)
            for p in range(kh):
                for q in range(kw):
                    hpos = ii + p * dh + off[b, o, p, q, 0]
                    wpos = jj + q * dw + off[b, o, p, q, 1]
                    cols[b, o * icpo:(o + 1) * icpo, p, q] = _bilinear_zero(img, hpos, wpos) * mask[b, o, p, q]
    res = np.zeros((n, oc, oh, ow))
    ocg = oc // g
    for gi in range(g):
        res[:, gi * ocg:(gi + 1) * ocg] = np.einsum("ncpqij,mcpq->nmij", cols[:, gi * icg:(gi + 1) * icg],
                                                    W[gi * ocg:(gi + 1) * ocg].astype(np.float64))
    if B is not None:
        res += B.reshape(1, -1, 1, 1)
    return [res.astype(X.dtype)]


_schema_op("DeformConv", mapping=Mapping.OPAQUE, reference=_deform_conv_ref,
           infer=lambda node: [(node.inputs[0].dtype, (node.inputs[0].shape[0], node.inputs[1].shape[0]) +
                                tuple(node.inputs[2].shape[2:]))],
           flops=lambda node: 10 * _n(node.outputs[0].shape) * _n(node.inputs[1].shape[1:]), category="linear")


def _stft_len(win_v, fl_v):
    if fl_v is not None:
        return int(np.asarray(fl_v).reshape(-1)[0])
    return int(np.asarray(win_v).shape[0])


def _stft_ref(node, a):
    a = list(a) + [None] * (4 - len(a))
    x, step, win, fl = a[:4]
    step = int(np.asarray(step).reshape(-1)[0])
    L = _stft_len(win, fl)
    sig = x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]
    nf = 1 + (sig.shape[1] - L) // step
    frames = np.stack([sig[:, f * step:f * step + L] for f in range(nf)], axis=1)
    if win is not None:
        frames = frames * win
    y = np.fft.fft(frames, n=L, axis=-1)
    if node.attrs["onesided"]:
        y = y[..., :L // 2 + 1]
    return [np.stack([y.real, y.imag], axis=-1).astype(x.dtype)]


def _stft_infer(node):
    x, step, win, fl = (list(node.inputs) + [None] * 4)[:4]
    if step.value is None or (fl is not None and fl.value is None) or (fl is None and win is None):
        raise ShapeError(f"{node.label()}: frame_step and frame_length must be known at compile time")
    L = _stft_len(None if win is None else np.zeros(int(win.shape[0])), fl.value if fl is not None else None)
    s = int(np.asarray(step.value).reshape(-1)[0])
    nf = 1 + (int(x.shape[1]) - L) // s
    return [(x.dtype, (x.shape[0], nf, L // 2 + 1 if node.attrs["onesided"] else L, 2))]


_schema_op("STFT", mapping=Mapping.OPAQUE, reference=_stft_ref, infer=_stft_infer,
           flops=lambda node: 5 * _n(node.outputs[0].shape) * 8, category="signal")


def _mel_ref(node, a):
    from fusion.ir.dtypes import to_numpy
    bins, n_fft, rate, lo, hi = [np.asarray(v).reshape(-1)[0] for v in a]
    bins, n_fft = int(bins), int(n_fft)
    to_mel = lambda f: 2595 * np.log1p(f / 700) / np.log(10)  # noqa: E731
    lo_m, hi_m = to_mel(float(lo)), to_mel(float(hi))
    pts = np.arange(bins + 2) * ((hi_m - lo_m) / (bins + 2)) + lo_m
    hz = 700 * np.expm1(pts / 2595 * np.log(10))
    fb = (((n_fft + 1) * hz) // rate).astype(int)
    out = np.zeros((n_fft // 2 + 1, bins))
    for i in range(bins):
        l, c, r = fb[i], fb[i + 1], fb[i + 2]
        if c == l:
            out[c, i] = 1
        else:
            out[l:c + 1, i] = (np.arange(l, c + 1) - l) / (c - l)
        if r > c:
            out[c:r, i] = (r - np.arange(c, r)) / (r - c)
    return [out.astype(to_numpy(node.attrs["output_datatype"]))]


def _mel_infer(node):
    from fusion.ir.dtypes import to_numpy
    b, n = node.inputs[0].value, node.inputs[1].value
    if b is None or n is None:
        raise ShapeError(f"{node.label()}: num_mel_bins and dft_length must be known at compile time")
    return [(to_numpy(node.attrs["output_datatype"]),
             (int(np.asarray(n).reshape(-1)[0]) // 2 + 1, int(np.asarray(b).reshape(-1)[0])))]


_schema_op("MelWeightMatrix", mapping=Mapping.OPAQUE, reference=_mel_ref, infer=_mel_infer,
           flops=lambda node: 0, category="signal")


# ---------------------------------------------------------------------------
# ai.onnx.ml: the two elementwise-like ones of the suite

_ML = "ai.onnx.ml"


def _binarizer_ref(node, a):
    x = a[0]
    return [np.where(x > node.attrs["threshold"], 1, 0).astype(x.dtype)]


def _binarizer_lower(node, out, read, k=0):
    v = read(0, list(out))
    dt = node.inputs[0].dtype.name
    return E.select(E.binary("gt", v, E.const(node.attrs["threshold"], dt)), E.const(1, dt), E.const(0, dt))


_schema_op("Binarizer", domain=_ML, mapping=Mapping.O2O, infer=_same, reference=_binarizer_ref,
           lower=_binarizer_lower, flops=_flops_per_out(1), category="elementwise")


def _afe_ref(node, a):
    x, idx = a[0], a[1].reshape(-1).astype(np.int64)
    y = np.take(x, idx, axis=-1)
    return [y.reshape(x.shape[:-1] + (idx.size,)) if x.ndim > 1 else y.reshape(1, idx.size)]


def _afe_infer(node):
    x, idx = node.inputs
    k = idx.size if idx.is_static else _sym(node, "k")
    return [(x.dtype, tuple(x.shape[:-1]) + (k,) if x.rank > 1 else (1, k))]


_schema_op("ArrayFeatureExtractor", domain=_ML, mapping=Mapping.OPAQUE, infer=_afe_infer, reference=_afe_ref,
           flops=lambda node: 0, category="gather")


# ---------------------------------------------------------------------------
# TfIdfVectorizer over integer tokens (string pools are skipped with the strings)

def _tfidf_table(at):
    pool = list(at.get("pool_int64s") or [])
    starts = list(at["ngram_counts"]) + [len(pool)]
    table, j = {}, 0
    for n in range(1, len(starts)):
        seg = pool[starts[n - 1]:starts[n]]
        for i in range(0, len(seg), n):
            table[tuple(seg[i:i + n])] = at["ngram_indexes"][j]
            j += 1
    return table


def _tfidf_ref(node, a):
    at = node.attrs
    x = a[0]
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    table = _tfidf_table(at)
    size = max(at["ngram_indexes"]) + 1
    y = np.zeros((rows.shape[0], size), np.float32)
    for r, row in enumerate(rows.tolist()):
        for n in range(at["min_gram_length"], at["max_gram_length"] + 1):
            for skip in range(0, (at["max_skip_count"] if n > 1 else 0) + 1):
                step = skip + 1
                for s in range(len(row) - (n - 1) * step):
                    j = table.get(tuple(row[s + k * step] for k in range(n)))
                    if j is not None:
                        y[r, j] += 1
    w = np.asarray(at.get("weights") or [1.0] * size, np.float32)
    mode = at["mode"]
    if mode == "IDF":
        y = (y > 0).astype(np.float32) * w
    elif mode == "TFIDF":
        y = y * w
    return [y.reshape(size) if x.ndim == 1 else y]


def _tfidf_infer(node):
    x = node.inputs[0]
    size = max(node.attrs["ngram_indexes"]) + 1
    return [(np.dtype(np.float32), (size,) if x.rank == 1 else (x.shape[0], size))]


_schema_op("TfIdfVectorizer", mapping=Mapping.OPAQUE, infer=_tfidf_infer, reference=_tfidf_ref,
           flops=lambda node: _n(node.inputs[0].shape) * node.attrs["max_gram_length"], category="text")


# ---------------------------------------------------------------------------
# ai.onnx.ml TreeEnsemble (v5): opaque, each row walks data-dependent paths.

def _tree_ensemble_ref(node, a):
    X = a[0]
    at = node.attrs
    modes = np.asarray(at["nodes_modes"]).reshape(-1).astype(int)
    splits = np.asarray(at["nodes_splits"]).reshape(-1).astype(np.float64)
    feat, tnode, fnode = at["nodes_featureids"], at["nodes_truenodeids"], at["nodes_falsenodeids"]
    tleaf, fleaf = at["nodes_trueleafs"], at["nodes_falseleafs"]
    missing = at.get("nodes_missing_value_tracks_true") or [0] * len(modes)
    weights = np.asarray(at["leaf_weights"]).reshape(-1).astype(np.float64)
    targets = at["leaf_targetids"]
    n_targets = at.get("n_targets") or (max(targets) + 1)
    # Set membership (mode 6): the values of each MEMBER node, in node order, NaN-separated.
    members, vals = {}, list(np.asarray(at.get("membership_values") if at.get("membership_values") is not None
                                        else []).reshape(-1))
    for i in np.nonzero(modes == 6)[0]:
        s = set()
        while vals:
            v = vals.pop(0)
            if np.isnan(v):
                break
            s.add(float(v))
        members[int(i)] = s
    cmp = {0: np.less_equal, 1: np.less, 2: np.greater_equal, 3: np.greater, 4: np.equal, 5: np.not_equal}
    agg = at.get("aggregate_function", 1)
    init = {0: 0.0, 1: 0.0, 2: np.inf, 3: -np.inf}[agg]
    out = np.full((X.shape[0], n_targets), init)
    for r, row in enumerate(X.astype(np.float64)):
        for root in at["tree_roots"]:
            i = root
            while True:
                v = row[feat[i]]
                go = (float(v) in members[i]) if modes[i] == 6 else bool(cmp[modes[i]](v, splits[i]))
                go = go or (bool(missing[i]) and np.isnan(v))
                nxt, leaf = (tnode[i], tleaf[i]) if go else (fnode[i], fleaf[i])
                if leaf:
                    w, t = weights[nxt], targets[nxt]
                    if agg == 1:
                        out[r, t] += w
                    elif agg == 0:
                        out[r, t] += w / len(at["tree_roots"])
                    elif agg == 2:
                        out[r, t] = min(out[r, t], w)
                    else:
                        out[r, t] = max(out[r, t], w)
                    break
                i = nxt
    if at.get("post_transform", 0):
        from fusion.errors import UnsupportedOpError
        raise UnsupportedOpError(f"{node.label()}: TreeEnsemble post_transform={at['post_transform']} is not supported")
    return [out.astype(X.dtype)]


def _tree_ensemble_infer(node):
    at = node.attrs
    n_targets = at.get("n_targets") or (max(at["leaf_targetids"]) + 1)
    return [(node.inputs[0].dtype, (node.inputs[0].shape[0], n_targets))]


_schema_op("TreeEnsemble", domain=_ML, mapping=Mapping.OPAQUE, infer=_tree_ensemble_infer,
           reference=_tree_ensemble_ref, flops=lambda node: _n(node.inputs[0].shape[:1]) * len(node.attrs["tree_roots"]) * 8,
           category="ml")
