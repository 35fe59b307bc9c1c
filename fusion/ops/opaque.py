"""Opaque ops: no index function can say what they compute (sorting,
suppression, data-dependent output sizes), so `lower` is None: the planner
never fuses them and the code generator calls a hand-written kernel
(fusion/codegen/opaque). Their reference semantics follow onnxruntime exactly,
including output order and tie-breaking."""
from __future__ import annotations

import numpy as np
import sympy

from fusion.errors import ShapeError
from fusion.ops.table import AttrSpec, Mapping, OpDef, attr_to_input, const_input, norm_axis, register


def data_dim(node, what: str):
    """A symbolic dim for an output size known only at run time."""
    return sympy.Symbol(f"{node.name}_{what}", integer=True, nonnegative=True)


# ---------------------------------------------------------------------------
# TopK: the k largest (smallest) along an axis; ties keep the lower index first

def _topk_k(node):
    k = const_input(node, 1)
    return None if k is None else int(np.asarray(k).reshape(-1)[0])


def _topk_infer(node):
    x = node.inputs[0]
    ax = norm_axis(node.attrs["axis"], x.rank, node)
    k = _topk_k(node)
    if k is not None and isinstance(x.shape[ax], int) and not 0 <= k <= x.shape[ax]:
        raise ShapeError(f"{node.label()}: k = {k} is out of range for axis {ax} of size {x.shape[ax]}")
    s = list(x.shape)
    s[ax] = k if k is not None else data_dim(node, "k")
    return [(x.dtype, tuple(s)), (np.dtype(np.int64), tuple(s))]


def _topk_reference(node, a):
    x = a[0]
    k = int(np.asarray(a[1]).reshape(-1)[0])
    ax = norm_axis(node.attrs["axis"], x.ndim, node)
    if not 0 <= k <= x.shape[ax]:
        raise ShapeError(f"{node.label()}: k = {k} is out of range for axis {ax} of size {x.shape[ax]}")
    key = x.astype(np.float64) if x.dtype.kind in "iub" else x
    # A stable sort keeps equal values in index order, as onnxruntime does.
    order = np.argsort(-key if node.attrs["largest"] else key, axis=ax, kind="stable")
    idx = np.take(order, np.arange(k), axis=ax)
    return [np.take_along_axis(x, idx, axis=ax), idx.astype(np.int64)]


register(OpDef(
    "TopK", inputs=("X", "K"), outputs=("Values", "Indices"),
    attrs={"axis": AttrSpec("int", -1), "largest": AttrSpec("int", 1), "sorted": AttrSpec("int", 1)},
    mapping=Mapping.OPAQUE, infer=_topk_infer, reference=_topk_reference, lower=None,
    normalize=lambda node, graph, opset: attr_to_input(node, graph, "k", 1) if opset < 10 else None,
    export_opset=11, category="opaque",
    flops=lambda node: int(np.prod([int(d) for d in node.inputs[0].shape])) * 8 if node.inputs[0].is_static else 0,
    doc="sorted=0 also returns sorted values (ONNX leaves that order open).",
))


# ---------------------------------------------------------------------------
# NonMaxSuppression: per batch and class, greedy by score (ties: lower box
# index first), dropping boxes whose IoU with a kept one exceeds the threshold.

def _scalar_input(a, i, default, dtype):
    if len(a) <= i or a[i] is None or np.asarray(a[i]).size == 0:
        return dtype(default)
    return dtype(np.asarray(a[i]).reshape(-1)[0])


def _corners(boxes, center):
    b = boxes.astype(np.float32)
    if center:
        xc, yc, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        half = np.float32(0.5)
        return yc - h * half, xc - w * half, yc + h * half, xc + w * half
    y1, x1, y2, x2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)


def _nms_reference(node, a):
    boxes, scores = a[0], a[1]
    max_out = _scalar_input(a, 2, 0, int)
    iou_t = _scalar_input(a, 3, 0.0, np.float32)
    has_score_t = len(a) > 4 and a[4] is not None and np.asarray(a[4]).size
    score_t = _scalar_input(a, 4, 0.0, np.float32)
    B, C, N = scores.shape
    if boxes.shape[0] != B or boxes.shape[1] != N or boxes.shape[2] != 4:
        raise ShapeError(f"{node.label()}: boxes {list(boxes.shape)} do not match scores {list(scores.shape)}")
    ymin, xmin, ymax, xmax = _corners(boxes, node.attrs["center_point_box"])
    area = (ymax - ymin) * (xmax - xmin)
    out = []
    if max_out <= 0:
        return [np.zeros((0, 3), np.int64)]
    for b in range(B):
        for c in range(C):
            s = scores[b, c]
            cand = np.arange(N) if not has_score_t else np.nonzero(s > score_t)[0]
            # highest score first; equal scores: lower index first
            cand = cand[np.lexsort((cand, -s[cand].astype(np.float64)))]
            # Greedy: a candidate survives unless a kept box overlaps it by IoU >
            # threshold; each kept box suppresses the rest at once (vectorized).
            kept = []
            gone = np.zeros(len(cand), bool)
            y0, x0, y1, x1, ar = ymin[b, cand], xmin[b, cand], ymax[b, cand], xmax[b, cand], area[b, cand]
            for k in range(len(cand)):
                if gone[k]:
                    continue
                kept.append(int(cand[k]))
                if len(kept) >= max_out:
                    break
                ih = np.minimum(y1[k], y1[k + 1:]) - np.maximum(y0[k], y0[k + 1:])
                iw = np.minimum(x1[k], x1[k + 1:]) - np.maximum(x0[k], x0[k + 1:])
                inter = ih * iw
                with np.errstate(all="ignore"):
                    iou = inter / (ar[k] + ar[k + 1:] - inter)
                hit = (ih > 0) & (iw > 0) & (ar[k] > 0) & (ar[k + 1:] > 0) & (iou > iou_t)
                gone[k + 1:] |= hit
            out.extend([b, c, i] for i in kept)
    return [np.array(out, dtype=np.int64).reshape(-1, 3)]


register(OpDef(
    "NonMaxSuppression", inputs=("boxes", "scores", "max_output_boxes_per_class?", "iou_threshold?",
                                 "score_threshold?"), outputs=("selected_indices",), since=10,
    attrs={"center_point_box": AttrSpec("int", 0)},
    mapping=Mapping.OPAQUE, infer=lambda node: [(np.dtype(np.int64), (data_dim(node, "selected"), 3))],
    reference=_nms_reference, lower=None, category="opaque",
))


# ---------------------------------------------------------------------------
# RoiAlign (onnxruntime's algorithm: bilinear samples on a grid per bin;
# mode max takes the max over samples of the largest weighted corner)

def _roialign_normalize(node, graph, opset):
    if opset < 16:  # RoiAlign-10 had no attribute and used no half-pixel offset
        node.attrs.setdefault("coordinate_transformation_mode", "output_half_pixel")


def _roialign_infer(node):
    x, rois = node.inputs[0], node.inputs[1]
    if x.rank != 4 or rois.rank != 2:
        raise ShapeError(f"{node.label()}: RoiAlign needs X [N,C,H,W] and rois [R,4], got {list(x.shape)}, {list(rois.shape)}")
    return [(x.dtype, (rois.shape[0], x.shape[1], int(node.attrs["output_height"]), int(node.attrs["output_width"])))]


def _roialign_reference(node, a):
    x, rois, bidx = a
    f = np.float32
    N, C, H, W = x.shape
    oh, ow = int(node.attrs["output_height"]), int(node.attrs["output_width"])
    scale = f(node.attrs["spatial_scale"])
    ratio = int(node.attrs["sampling_ratio"])
    half = node.attrs["coordinate_transformation_mode"] == "half_pixel"
    off = f(0.5) if half else f(0)
    is_max = node.attrs["mode"] == "max"
    out = np.zeros((rois.shape[0], C, oh, ow), dtype=x.dtype)
    for r in range(rois.shape[0]):
        b = int(bidx[r])
        sw, sh, ew, eh = (f(v) * scale - off for v in rois[r].astype(np.float32))
        rw, rh = ew - sw, eh - sh
        if not half:
            rw, rh = max(rw, f(1)), max(rh, f(1))
        bh, bw = f(rh / f(oh)), f(rw / f(ow))
        gh = ratio if ratio > 0 else int(np.ceil(rh / f(oh)))
        gw = ratio if ratio > 0 else int(np.ceil(rw / f(ow)))
        count = max(gh * gw, 1)
        img = x[b].astype(np.float32)
        for ph in range(oh):
            for pw in range(ow):
                acc = np.zeros(C, np.float32)
                first = True
                for iy in range(gh):
                    y = sh + f(ph) * bh + (f(iy) + f(0.5)) * bh / f(gh)
                    for ix in range(gw):
                        xx = sw + f(pw) * bw + (f(ix) + f(0.5)) * bw / f(gw)
                        if y < -1.0 or y > H or xx < -1.0 or xx > W:
                            vals = [np.zeros(C, np.float32)] * 4
                            ws = [f(0)] * 4
                        else:
                            yy, xc = max(y, f(0)), max(xx, f(0))
                            yl, xl = int(yy), int(xc)
                            if yl >= H - 1:
                                yl = yh = H - 1
                                yy = f(yl)
                            else:
                                yh = yl + 1
                            if xl >= W - 1:
                                xl = xh = W - 1
                                xc = f(xl)
                            else:
                                xh = xl + 1
                            ly, lx = yy - f(yl), xc - f(xl)
                            hy, hx = f(1) - ly, f(1) - lx
                            ws = [hy * hx, hy * lx, ly * hx, ly * lx]
                            vals = [img[:, yl, xl], img[:, yl, xh], img[:, yh, xl], img[:, yh, xh]]
                        if is_max:
                            v = np.maximum(np.maximum(ws[0] * vals[0], ws[1] * vals[1]),
                                           np.maximum(ws[2] * vals[2], ws[3] * vals[3]))
                            acc = v if first else np.maximum(acc, v)
                            first = False
                        else:
                            acc = acc + ws[0] * vals[0] + ws[1] * vals[1] + ws[2] * vals[2] + ws[3] * vals[3]
                out[r, :, ph, pw] = acc if is_max else acc / f(count)
    return [out]


register(OpDef(
    "RoiAlign", inputs=("X", "rois", "batch_indices"), since=10,
    attrs={"coordinate_transformation_mode": AttrSpec("string", "half_pixel"), "mode": AttrSpec("string", "avg"),
           "output_height": AttrSpec("int", 1), "output_width": AttrSpec("int", 1),
           "sampling_ratio": AttrSpec("int", 0), "spatial_scale": AttrSpec("float", 1.0)},
    mapping=Mapping.OPAQUE, infer=_roialign_infer, reference=_roialign_reference, lower=None,
    normalize=_roialign_normalize, export_opset=16, category="opaque",
))


# ---------------------------------------------------------------------------
# NonZero: [rank, count] indices of the non-zero elements in row-major order

def _nonzero_reference(node, a):
    x = np.asarray(a[0])
    if x.ndim == 0:
        return [np.zeros((0, int(bool(x))), np.int64)]
    return [np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)]


register(OpDef(
    "NonZero", inputs=("X",), since=9, mapping=Mapping.OPAQUE,
    infer=lambda node: [(np.dtype(np.int64), (node.inputs[0].rank, data_dim(node, "count")))],
    reference=_nonzero_reference, lower=None, category="opaque",
))
