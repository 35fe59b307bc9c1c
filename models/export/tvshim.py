"""Make torchvision importable beside the CPU build of torch.

The torchvision wheel that matches torch 2.13.0 is a CUDA build whose compiled
ops (torchvision::nms, roi_align, ...) fail to load against the CPU torch, and
transformers imports torchvision whenever it is installed. Defining the op
schemas ourselves, with pure-torch kernels for the two the detection models
call (nms, roi_align), makes both packages import and trace. Import this module
before torchvision or transformers.
"""
from __future__ import annotations

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                 "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward": "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
                           "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
                           "int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align": "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                    "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward": "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
                              "float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
                              "SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool": "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward": "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
                          "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
                          "SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool": "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                   "SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward": "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
                             "float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
                             "SymInt channels, SymInt height, SymInt width) -> Tensor",
    "qroi_align": "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                  "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "deform_conv2d": "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
                     "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
                     "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward": "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, "
                               "Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, "
                               "SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
                               "SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
}

_lib = None


def _nms(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score."""
    import numpy as np
    order = torch.argsort(scores, descending=True, stable=True).numpy()
    if order.size == 0:
        return torch.zeros(0, dtype=torch.long)
    b = dets.detach().numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    removed = np.zeros(b.shape[0], dtype=bool)
    for i in order:
        if removed[i]:
            continue
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2) - np.maximum(x1[i], x1), 0, None)
        h = np.clip(np.minimum(y2[i], y2) - np.maximum(y1[i], y1), 0, None)
        inter = w * h
        removed |= inter / (area[i] + area - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def _roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    import importlib
    mod = importlib.import_module("torchvision.ops.roi_align")
    # torchvision wraps its pure-torch version in a lazy torch.compile, which tracing refuses.
    fn = getattr(mod._roi_align, "__wrapped__", mod._roi_align)
    return fn(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def install() -> None:
    global _lib
    if _lib is not None:
        return
    if hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        try:
            torch.ops.torchvision.nms.default
            _lib = "native"
            return
        except Exception:
            pass
    _lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        _lib.define(schema)
    _lib.impl("nms", _nms, "CPU")
    _lib.impl("roi_align", _roi_align, "CPU")
    # torchvision checks a flag set when its _C library loaded; ours stands in for it.
    import sys
    from tvshim_flag import _has_ops
    import torchvision.extension
    original = torchvision.extension._has_ops
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("torchvision") and getattr(mod, "_has_ops", None) is original:
            mod._has_ops = _has_ops


install()
