"""Faster R-CNN and Mask R-CNN from torchvision (ResNet50-FPN), with their real
post-processing (RPN TopK and NMS, RoiAlign, box decoding, per-class NMS,
mask pasting is left out as torchvision's ONNX path does), one 3x480x640
image in [0, 1] (min_size/max_size set so torchvision's resize keeps it).

Random weights give near-uniform class scores (about 1/91), below torchvision's
default box_score_thresh of 0.05, which would leave every output empty; the
threshold is lowered to 0.001 so the exported model returns detections."""
from __future__ import annotations

import torch
from torch import nn

SCORE_THRESH = 0.001


class Single(nn.Module):
    """One image in, plain tensors out."""

    def __init__(self, model, keys):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, image):
        out = self.model([image])[0]
        return tuple(out[k] for k in self.keys)


def build(name: str, small: bool):
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    h, w = (480, 640) if not small else (128, 160)
    backbone = resnet_fpn_backbone(backbone_name="resnet50" if not small else "resnet18", weights=None,
                                   trainable_layers=0)
    kw = dict(num_classes=91, min_size=h, max_size=w, box_score_thresh=SCORE_THRESH)
    if small:
        kw.update(rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_detections_per_img=20)
    cls, keys = (FasterRCNN, ["boxes", "labels", "scores"]) if name == "faster-rcnn" else \
        (MaskRCNN, ["boxes", "labels", "scores", "masks"])
    model = Single(cls(backbone, **kw), keys).eval()
    x = torch.rand(3, h, w)
    extra = {"input_size": [3, h, w], "box_score_thresh": SCORE_THRESH,
             "backbone": "resnet50-fpn" if not small else "resnet18-fpn"}
    return model, (x,), ["image"], keys, extra
