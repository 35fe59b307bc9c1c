"""What each C kernel needs from a node: its attribute struct (read from
fz_opaque.h, the one declaration of the layout), how ONNX attributes become
struct fields, the output dtypes, and a capacity for every output.

Capacities are exact for ops whose output shape follows from input shapes,
and an upper bound for data-dependent ones (NonZero, NMS, Unique, Compress,
TopK with a computed K); the kernel writes the actual shape.
"""
from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from fusion.errors import FusionError, ShapeError, UnsupportedOpError

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "fz_opaque.h")

_CTYPES = {"int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32, "float": ctypes.c_float,
           "double": ctypes.c_double}

REDUCTIONS = {"none": 0, "add": 1, "mul": 2, "max": 3, "min": 4}

FLOATS = ("float32", "float64")
NUMBERS = ("float32", "float64", "int32", "int64")
ANY = None  # byte-moving kernels take every fixed-size type


@lru_cache(maxsize=None)
def struct_fields() -> dict[str, tuple[tuple[str, str], ...]]:
    """{op: ((ctype, field), ...)} from the `struct fz_attrs_OP { ... };` blocks of the header."""
    text = open(HEADER).read()
    out = {}
    for m in re.finditer(r"struct\s+fz_attrs_(\w+)\s*\{(.*?)\};", text, re.S):
        body = re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S)
        out[m.group(1)] = tuple((t + (f"[{k}]" if k else ""), n)
                                for t, n, k in re.findall(r"(\w+)\s+(\w+)\s*(?:\[(\d+)\])?\s*;", body))
    return out


def _ctype(t: str):
    m = re.fullmatch(r"(\w+)\[(\d+)\]", t)
    return _CTYPES[m.group(1)] * int(m.group(2)) if m else _CTYPES[t]


@lru_cache(maxsize=None)
def ctypes_struct(op: str) -> type:
    fields = [(n, _ctype(t)) for t, n in struct_fields()[op]]
    return type(f"fz_attrs_{op}", (ctypes.Structure,), {"_fields_": fields})


# ---------------------------------------------------------------------------
# attribute conversion

def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _choice(op: str, name: str, value, table: dict[str, int]) -> int:
    key = _s(value).lower()
    if key not in table:
        raise FusionError(f"{op}: attribute {name}='{_s(value)}' is not one of {', '.join(table)}")
    return table[key]


def _topk(a, opset):
    return {"axis": int(a.get("axis", -1)), "largest": int(a.get("largest", 1)), "sorted": int(a.get("sorted", 1))}


def _nms(a, opset):
    return {"center_point_box": int(a.get("center_point_box", 0))}


def _roialign(a, opset):
    # opset 10 has no coordinate_transformation_mode and behaves as output_half_pixel
    ctm = a.get("coordinate_transformation_mode") or ("half_pixel" if opset >= 16 else "output_half_pixel")
    return {"mode": _choice("RoiAlign", "mode", a.get("mode", "avg"), {"avg": 0, "max": 1}),
            "half_pixel": _choice("RoiAlign", "coordinate_transformation_mode", ctm,
                                  {"half_pixel": 1, "output_half_pixel": 0}),
            "output_height": int(a.get("output_height", 1)), "output_width": int(a.get("output_width", 1)),
            "sampling_ratio": int(a.get("sampling_ratio", 0)), "spatial_scale": float(a.get("spatial_scale", 1.0))}


def _optional_axis(a, opset):
    axis = a.get("axis")
    return {"has_axis": int(axis is not None), "axis": int(axis) if axis is not None else 0}


def _scatter_nd(a, opset):
    return {"reduction": _choice("ScatterND", "reduction", a.get("reduction", "none"), REDUCTIONS)}


def _scatter_el(a, opset):
    return {"axis": int(a.get("axis", 0)),
            "reduction": _choice("ScatterElements", "reduction", a.get("reduction", "none"), REDUCTIONS)}


def _loss(a, opset):
    ig = a.get("ignore_index")
    return {"reduction": _choice("loss", "reduction", a.get("reduction", "mean"), {"none": 0, "sum": 1, "mean": 2}),
            "has_ignore_index": int(ig is not None), "ignore_index": int(ig) if ig is not None else 0}


def _window(kind):
    return lambda a, opset: {"kind": kind, "periodic": int(a.get("periodic", 1)),
                             "output_datatype": int(a.get("output_datatype", 1))}


def _attention(a, opset):
    sc = a.get("scale")
    return {"is_causal": int(a.get("is_causal", 0) or 0), "q_num_heads": int(a.get("q_num_heads", 0) or 0),
            "kv_num_heads": int(a.get("kv_num_heads", 0) or 0),
            "qk_mode": int(a.get("qk_matmul_output_mode", 0) or 0),
            "has_scale": int(sc is not None), "scale": float(sc) if sc is not None else 0.0,
            "softcap": float(a.get("softcap", 0.0) or 0.0)}


def _qconv(a, opset):
    def arr(v, n, fill):
        v = list(v or [])
        if len(v) > n:
            raise FusionError(f"ConvInteger/QLinearConv: more than {n // (2 if n == 12 else 1)} spatial dimensions")
        return [int(x) for x in v] + [fill] * (n - len(v))
    pads = list(a.get("pads") or [])
    nd = len(pads) // 2
    pads = pads[:nd] + [0] * (6 - nd) + pads[nd:] + [0] * (6 - nd)  # begins at 0..5, ends at 6..11
    return {"group": int(a.get("group", 1) or 1),
            "auto_pad": _choice("Conv", "auto_pad", a.get("auto_pad", "NOTSET") or "NOTSET",
                                {"notset": 0, "same_upper": 1, "same_lower": 2, "valid": 3}),
            "strides": arr(a.get("strides"), 6, 1), "dilations": arr(a.get("dilations"), 6, 1), "pads": pads}


def _spatial(v, n, fill):
    v = [int(x) for x in (v or [])]
    if len(v) > n:
        raise FusionError(f"more than {n} spatial dimensions are not supported by the runtime kernels")
    return v + [fill] * (n - len(v))


def _pads12(p):
    p = [int(x) for x in (p or [])]
    nd = len(p) // 2
    return _spatial(p[:nd], 6, 0) + _spatial(p[nd:], 6, 0)


def _maxunpool(a, opset):
    return {"kernel_shape": _spatial(a.get("kernel_shape"), 6, 1), "strides": _spatial(a.get("strides"), 6, 1),
            "pads": _pads12(a.get("pads"))}


# activation name -> (code in fz_rnn.c, default alpha, default beta, takes alpha, takes beta)
ACTIVATIONS = {"sigmoid": (0, 0, 0, 0, 0), "tanh": (1, 0, 0, 0, 0), "relu": (2, 0, 0, 0, 0),
               "hardsigmoid": (3, 0.2, 0.5, 1, 1), "leakyrelu": (4, 0.01, 0, 1, 0),
               "thresholdedrelu": (5, 1.0, 0, 1, 0), "scaledtanh": (6, 1.0, 1.0, 1, 1), "affine": (7, 1.0, 0, 1, 1),
               "elu": (8, 1.0, 0, 1, 0), "softsign": (9, 0, 0, 0, 0), "softplus": (10, 0, 0, 0, 0)}
_RNN_DEFAULT = {0: ["Tanh"], 1: ["Sigmoid", "Tanh"], 2: ["Sigmoid", "Tanh", "Tanh"]}


def _recurrent(kind):
    def fields(a, opset):
        direction = _choice("RNN", "direction", a.get("direction", "forward") or "forward",
                            {"forward": 0, "reverse": 1, "bidirectional": 2})
        dirs = 2 if direction == 2 else 1
        names = list(a.get("activations") or _RNN_DEFAULT[kind] * dirs)
        if len(names) == len(_RNN_DEFAULT[kind]) and dirs == 2:
            names = names * 2
        if len(names) != len(_RNN_DEFAULT[kind]) * dirs:
            raise FusionError(f"{['RNN', 'GRU', 'LSTM'][kind]}: expected {len(_RNN_DEFAULT[kind]) * dirs} activations, "
                              f"got {len(names)}")
        alphas, betas = list(a.get("activation_alpha") or []), list(a.get("activation_beta") or [])
        codes, al, be = [], [], []
        for n in names:  # onnxruntime: the lists feed only the activations that take a value, in order
            if _s(n).lower() not in ACTIVATIONS:
                raise FusionError(f"activation '{_s(n)}' is not supported by the runtime kernels")
            code, da, db, ta, tb = ACTIVATIONS[_s(n).lower()]
            codes.append(code)
            al.append(float(alphas.pop(0)) if ta and alphas else float(da))
            be.append(float(betas.pop(0)) if tb and betas else float(db))
        pad = lambda v, x: v + [x] * (6 - len(v))
        clip = a.get("clip")
        return {"kind": kind, "direction": direction, "hidden_size": int(a.get("hidden_size") or 0),
                "layout": int(a.get("layout", 0) or 0), "input_forget": int(a.get("input_forget", 0) or 0),
                "linear_before_reset": int(a.get("linear_before_reset", 0) or 0), "has_clip": int(clip is not None),
                "clip": float(clip) if clip is not None else 0.0, "act": pad(codes, 0), "alpha": pad(al, 0.0),
                "beta": pad(be, 0.0)}
    return fields


def _cap_recurrent(s, v, f):
    x, H = s[0], f["hidden_size"]
    dirs = 2 if f["direction"] == 2 else 1
    S, N = (x[1], x[0]) if f["layout"] else (x[0], x[1])
    ys = (N, S, dirs, H) if f["layout"] else (S, dirs, N, H)
    hs = (N, dirs, H) if f["layout"] else (dirs, N, H)
    return [ys, hs, hs][:3 if f["kind"] == 2 else 2]


def _unique(a, opset):
    return {**_optional_axis(a, opset), "sorted": int(a.get("sorted", 1))}



# ---------------------------------------------------------------------------
# output capacities: (input shapes, known input values or None, fields) -> shapes

Shapes = Sequence[tuple]


def _axis(axis: int, rank: int, op: str) -> int:
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise ShapeError(f"{op}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _scalar(v):
    return None if v is None or np.asarray(v).size != 1 else int(np.asarray(v).reshape(-1)[0])


def _cap_topk(s, v, f):
    x = s[0]
    ax = _axis(f["axis"], len(x), "TopK")
    k = _scalar(v[1])
    shape = tuple(x[:ax]) + (min(k, x[ax]) if k is not None and k >= 0 else x[ax],) + tuple(x[ax + 1:])
    return [shape, shape]


def _cap_nms(s, v, f):
    b, n = s[0][0], s[0][1]
    c = s[1][1]
    absent = len(s) <= 2 or s[2] is None      # omitted max_output_boxes_per_class means 0
    m = 0 if absent else _scalar(v[2])
    per = min(n, max(m, 0)) if m is not None else n
    return [(b * c * per, 3)]


def _cap_roialign(s, v, f):
    return [(s[1][0], s[0][1], f["output_height"], f["output_width"])]


def _cap_nonzero(s, v, f):
    return [(max(len(s[0]), 1), _numel(s[0]))]


def _cap_compress(s, v, f):
    x, nc = s[0], s[1][0]
    cond = v[1]
    kept = lambda dim: int(np.count_nonzero(np.asarray(cond).reshape(-1)[:dim])) if cond is not None else min(dim, nc)
    if not f["has_axis"]:
        return [(kept(_numel(x)),)]
    ax = _axis(f["axis"], len(x), "Compress")
    return [tuple(x[:ax]) + (kept(x[ax]),) + tuple(x[ax + 1:])]


def _cap_gathernd(s, v, f):
    x, ind, b = s[0], s[1], f["batch_dims"]
    return [tuple(ind[:-1]) + tuple(x[b + ind[-1]:])]


def _same_as_input(s, v, f):
    return [tuple(s[0])]


def _cap_unique(s, v, f):
    x = s[0]
    if not f["has_axis"]:
        n = _numel(x)
        return [(n,), (n,), (n,), (n,)]
    ax = _axis(f["axis"], len(x), "Unique")
    return [tuple(x), (x[ax],), (x[ax],), (x[ax],)]



def _cap_loss(s, v, f):
    return [tuple(s[1]) if f["reduction"] == 0 else (), tuple(s[0])]


def _cap_window(s, v, f):
    n = _scalar(v[0])
    if n is None:
        raise ShapeError("the window size must be a constant (its value is the output length); "
                         "fold it or bind the input that computes it with --shape")
    return [(max(n, 0),)]


def _window_dtype(d, f):
    from onnx.helper import tensor_dtype_to_np_dtype
    return [np.dtype(tensor_dtype_to_np_dtype(f["output_datatype"]))]


def _cap_attention(s, v, f):
    q, k, vv = s[0], s[1], s[2]
    past = s[4][2] if len(s) > 4 and s[4] is not None else 0
    if len(q) == 3:
        hq, hk = f["q_num_heads"], f["kv_num_heads"]
        if hq < 1 or hk < 1:
            raise ShapeError("Attention: 3-D inputs need the q_num_heads and kv_num_heads attributes")
        B, Sq, Skv, dk, dv = q[0], q[1], k[1], k[2] // hk, vv[2] // hk
        y = (B, Sq, hq * dv)
    else:
        B, hq, Sq, dk = q
        hk, Skv, dv = k[1], k[2], vv[3]
        y = (B, hq, Sq, dv)
    T = past + Skv
    return [y, (B, hk, T, dk), (B, hk, T, dv), (B, hq, Sq, T)]


def _cap_matmul(s, v, f):
    a, b = tuple(s[0]), tuple(s[3])
    ba, bb = a[:-2], b[:-2]
    n = max(len(ba), len(bb))
    ba, bb = (1,) * (n - len(ba)) + ba, (1,) * (n - len(bb)) + bb
    batch = tuple(0 if 0 in (x, y) else max(x, y) for x, y in zip(ba, bb))
    return [batch + (a[-2:-1] if len(a) >= 2 else ()) + (b[-1:] if len(b) >= 2 else ())]


def _cap_qconv(x_index, w_index):
    def cap(s, v, f):
        x, w = s[x_index], s[w_index]
        nd = len(x) - 2
        out = [x[0], w[0]]
        for i in range(nd):
            st, dl, k = f["strides"][i], f["dilations"][i], w[2 + i]
            span = (k - 1) * dl + 1
            if f["auto_pad"] in (1, 2):
                out.append(-(-x[2 + i] // st))
                continue
            pb, pe = (0, 0) if f["auto_pad"] == 3 else (f["pads"][i], f["pads"][6 + i])
            room = x[2 + i] + pb + pe - span
            out.append(room // st + 1 if room >= 0 else 0)
        return [tuple(out)]
    return cap


def _cap_maxunpool(s, v, f):
    if len(s) > 2 and s[2] is not None:
        if v[2] is None:
            raise ShapeError("MaxUnpool: output_shape must be a constant (it is the output's shape)")
        return [tuple(int(x) for x in np.asarray(v[2]).reshape(-1))]
    x = s[0]
    return [tuple(x[:2]) + tuple((x[2 + i] - 1) * f["strides"][i] + f["kernel_shape"][i] - f["pads"][i] - f["pads"][6 + i]
                                 for i in range(len(x) - 2))]


def _cap_affine_grid(s, v, f):
    if v[1] is None:
        raise ShapeError("AffineGrid: size must be a constant (it is the output's shape)")
    size = [int(x) for x in np.asarray(v[1]).reshape(-1)]
    return [(size[0], *size[2:], len(size) - 2)]


def _cap_col2im(s, v, f):
    if v[1] is None or v[2] is None:
        raise ShapeError("Col2Im: image_shape and block_shape must be constants (they give the output's shape)")
    img = [int(x) for x in np.asarray(v[1]).reshape(-1)]
    blk = int(np.prod(np.asarray(v[2]).reshape(-1)))
    return [(s[0][0], s[0][1] // max(blk, 1), *img)]


def _to_dtype(d, f):
    from onnx.helper import tensor_dtype_to_np_dtype
    return [np.dtype(tensor_dtype_to_np_dtype(f["to"]))]


def _cap_bitcast(s, v, f):
    x = tuple(s[0])
    a = f["_dtypes"][0].itemsize
    b = _to_dtype(None, f)[0].itemsize
    return [x if a == b else x + (a // b,) if a > b else x[:-1]]


# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    op: str
    fields: Callable[[dict, int], dict]                 # (node attrs, opset) -> struct fields
    capacity: Callable[[Shapes, list, dict], list]      # -> a shape per output (fields + "_dtypes": input dtypes)
    out_dtypes: Callable[[list, dict], list]            # (input dtypes, fields) -> output dtypes
    dtypes: tuple | None                                # accepted dtypes of input 0 (None: any fixed size)
    n_out: int = 1
    cname: str = ""                                     # C kernel (fz_op_<cname>) when not the op's name
    accepts: Callable | None = None                     # node -> bool: attribute combinations it implements
    struct_name: str = ""                               # attribute struct (fz_attrs_<name>) when shared

    @property
    def attrs_struct(self) -> str:
        return self.struct_name or self.c_name

    @property
    def c_name(self) -> str:
        return self.cname or self.op

    def struct(self, fields: dict):
        cls = ctypes_struct(self.attrs_struct)
        types = dict(cls._fields_)
        return cls(**{k: types[k](*v) if isinstance(v, (list, tuple)) else v for k, v in fields.items()})


_first = lambda d, f: [d[0]]
_int64 = lambda d, f: [np.dtype(np.int64)]

KERNELS: dict[str, Kernel] = {k.op: k for k in [
    Kernel("TopK", _topk, _cap_topk, lambda d, f: [d[0], np.dtype(np.int64)],
           NUMBERS + ("uint8", "int8", "uint32", "uint64"), 2),
    Kernel("NonMaxSuppression", _nms, _cap_nms, _int64, ("float32",)),
    Kernel("RoiAlign", _roialign, _cap_roialign, _first, FLOATS),
    Kernel("NonZero", lambda a, o: {"unused": 0}, _cap_nonzero, _int64, ANY),
    Kernel("Compress", _optional_axis, _cap_compress, _first, ANY),
    Kernel("GatherND", lambda a, o: {"batch_dims": int(a.get("batch_dims", 0))}, _cap_gathernd, _first, ANY),
    Kernel("ScatterND", _scatter_nd, _same_as_input, _first, ANY),
    Kernel("ScatterElements", _scatter_el, _same_as_input, _first, ANY),
    Kernel("ReverseSequence", lambda a, o: {"batch_axis": int(a.get("batch_axis", 1)),
                                            "time_axis": int(a.get("time_axis", 0))},
           _same_as_input, _first, ANY),
    Kernel("Unique", _unique, _cap_unique, lambda d, f: [d[0]] + [np.dtype(np.int64)] * 3,
           NUMBERS + ("int8", "uint8"), 4),
    Kernel("NegativeLogLikelihoodLoss", _loss, lambda s, v, f: _cap_loss(s, v, f)[:1], _first, FLOATS),
    Kernel("SoftmaxCrossEntropyLoss", _loss, _cap_loss, lambda d, f: [d[0], d[0]], FLOATS, 2),
    Kernel("Det", lambda a, o: {"unused": 0}, lambda s, v, f: [tuple(s[0][:-2])], _first, FLOATS),
    Kernel("HannWindow", _window(0), _cap_window, _window_dtype, ("int32", "int64"), cname="Window"),
    Kernel("HammingWindow", _window(1), _cap_window, _window_dtype, ("int32", "int64"), cname="Window"),
    Kernel("BlackmanWindow", _window(2), _cap_window, _window_dtype, ("int32", "int64"), cname="Window"),
    Kernel("TensorScatter", lambda a, o: {"axis": int(a.get("axis", -2)),
                                          "circular": _choice("TensorScatter", "mode", a.get("mode", "linear"),
                                                              {"linear": 0, "circular": 1})},
           _same_as_input, _first, ANY),
    Kernel("Attention", _attention, _cap_attention, lambda d, f: [d[0]] * 4, FLOATS, 4,
           accepts=lambda node: all(node.attrs.get(x) in (None, -1) for x in ("left_window_size", "right_window_size"))),
    Kernel("QLinearMatMul", lambda a, o: {"unused": 0}, _cap_matmul, lambda d, f: [d[7]], ("uint8", "int8")),
    Kernel("ConvInteger", _qconv, _cap_qconv(0, 1), lambda d, f: [np.dtype(np.int32)], ("uint8", "int8"),
           struct_name="QConv"),
    Kernel("QLinearConv", _qconv, _cap_qconv(0, 3), lambda d, f: [d[7]], ("uint8", "int8"), struct_name="QConv"),
    Kernel("BitCast", lambda a, o: {"to": int(a.get("to", 0))}, _cap_bitcast, _to_dtype, ANY),
    Kernel("MaxUnpool", _maxunpool, _cap_maxunpool, _first, ANY),
    Kernel("Scatter", _scatter_el, _same_as_input, _first, ANY, cname="ScatterElements"),
    Kernel("AffineGrid", lambda a, o: {"align_corners": int(a.get("align_corners", 0))}, _cap_affine_grid, _first,
           FLOATS),
    Kernel("Col2Im", lambda a, o: {"dilations": _spatial(a.get("dilations"), 6, 1), "strides": _spatial(a.get("strides"), 6, 1),
                                   "pads": _pads12(a.get("pads"))}, _cap_col2im, _first, FLOATS),
    Kernel("RNN", _recurrent(0), _cap_recurrent, lambda d, f: [d[0]] * 2, FLOATS, 2, cname="Recurrent"),
    Kernel("GRU", _recurrent(1), _cap_recurrent, lambda d, f: [d[0]] * 2, FLOATS, 2, cname="Recurrent"),
    Kernel("LSTM", _recurrent(2), _cap_recurrent, lambda d, f: [d[0]] * 3, FLOATS, 3, cname="Recurrent"),
    Kernel("DynamicQuantizeLinear", lambda a, o: {"unused": 0}, lambda s, v, f: [tuple(s[0]), (), ()],
           lambda d, f: [np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.uint8)], ("float32",), 3),
]}


def implemented() -> set[str]:
    """Kernel names defined in the C sources (a kernel the header declares but no
    .c defines is not offered)."""
    found = set()
    for f in os.listdir(HERE):
        if f.endswith(".c"):
            found.update(re.findall(r"^int fz_op_(\w+)\(", open(os.path.join(HERE, f)).read(), re.M))
    return found


def kernel_for(op: str) -> Kernel:
    k = KERNELS.get(op)
    if k is None:
        raise UnsupportedOpError(f"op '{op}' has no hand-written kernel in fusion/codegen/opaque")
    return k
