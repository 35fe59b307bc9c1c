"""MobileNetV1-SSD in plain torch, after Howard et al. 2017 (MobileNetV1) and
Liu et al. 2016 (SSD), in the layout of the widely used 300x300 VOC model:
a MobileNetV1 backbone (depthwise-separable convs with BatchNorm and ReLU),
four extra feature layers, 3x3 class/box heads on six feature maps (6 priors
per location), softmax scores, box decoding against the priors, per-class
NonMaxSuppression and the top 200 detections."""
from __future__ import annotations

import math

import torch
from torch import nn

NUM_CLASSES = 21  # VOC: background + 20
PRIORS_PER_CELL = 6


def conv_bn(i, o, s):
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


def conv_dw(i, o, s):
    return nn.Sequential(
        nn.Conv2d(i, i, 3, s, 1, groups=i, bias=False), nn.BatchNorm2d(i), nn.ReLU(inplace=True),
        nn.Conv2d(i, o, 1, 1, 0, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


def mobilenet_v1(width: float):
    c = lambda n: max(8, int(n * width))  # noqa: E731
    cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
           (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1),
           (512, 1024, 2), (1024, 1024, 1)]
    layers = [conv_bn(3, c(32), 2)] + [conv_dw(c(i), c(o), s) for i, o, s in cfg]
    return nn.ModuleList(layers), c


class MultiClassNMS(torch.autograd.Function):
    """ONNX NonMaxSuppression over [1, N, 4] boxes and [1, C, N] scores -> [K, 3] indices."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou, score_threshold):
        import tvshim
        out = []
        for c in range(scores.shape[1]):
            s = scores[0, c]
            idx = torch.nonzero(s > score_threshold).flatten()
            keep = idx[tvshim._nms(boxes[0, idx], s[idx], iou)][:max_per_class]
            out.append(torch.stack([torch.zeros_like(keep), torch.full_like(keep, c), keep], 1))
        return torch.cat(out).long()

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.long)),
                    g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float)),
                    g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float)),
                    center_point_box_i=0)


class MobileNetV1SSD(nn.Module):
    def __init__(self, size=300, width=1.0, num_classes=NUM_CLASSES, top_k=200):
        super().__init__()
        self.base, c = mobilenet_v1(width)
        self.num_classes, self.top_k = num_classes, top_k
        ex = [(c(1024), c(256), c(512)), (c(512), c(128), c(256)), (c(256), c(128), c(256)),
              (c(256), c(128), c(256))]
        self.extras = nn.ModuleList([nn.Sequential(nn.Conv2d(i, m, 1), nn.ReLU(inplace=True),
                                                   nn.Conv2d(m, o, 3, 2, 1), nn.ReLU(inplace=True))
                                     for i, m, o in ex])
        chans = [c(512), c(1024), c(512), c(256), c(256), c(256)]
        self.cls = nn.ModuleList([nn.Conv2d(ch, PRIORS_PER_CELL * num_classes, 3, padding=1) for ch in chans])
        self.reg = nn.ModuleList([nn.Conv2d(ch, PRIORS_PER_CELL * 4, 3, padding=1) for ch in chans])
        with torch.no_grad():
            sizes = [f.shape[-1] for f in self.features(torch.zeros(1, 3, size, size))]
        self.register_buffer("priors", make_priors(sizes))

    def features(self, x):
        feats = []
        for i, layer in enumerate(self.base):
            x = layer(x)
            if i == 11:
                feats.append(x)
        feats.append(x)
        for e in self.extras:
            x = e(x)
            feats.append(x)
        return feats

    def forward(self, image):
        confs, locs = [], []
        for f, cls, reg in zip(self.features(image), self.cls, self.reg):
            confs.append(cls(f).permute(0, 2, 3, 1).reshape(1, -1, self.num_classes))
            locs.append(reg(f).permute(0, 2, 3, 1).reshape(1, -1, 4))
        conf, loc = torch.cat(confs, 1), torch.cat(locs, 1)
        scores = torch.softmax(conf, dim=2)
        p = self.priors
        cxcy = loc[..., :2] * 0.1 * p[:, 2:] + p[:, :2]
        wh = torch.exp(loc[..., 2:] * 0.2) * p[:, 2:]
        boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=2)          # [1, N, 4] corners
        cls_scores = scores[:, :, 1:].transpose(1, 2).contiguous()         # [1, C-1, N], no background
        sel = MultiClassNMS.apply(boxes, cls_scores, self.top_k, 0.45, 0.01)
        label, box = sel[:, 1], sel[:, 2]
        det_scores = cls_scores[0][label, box]
        det_boxes = boxes[0][box]
        order = torch.topk(det_scores, k=det_scores.shape[0]).indices[: self.top_k]
        return det_boxes[order], det_scores[order], label[order] + 1


def make_priors(sizes, s_min=0.2, s_max=0.95):
    """Prior boxes (cx, cy, w, h) in [0, 1], 6 per cell: aspect ratios 1, 1', 2, 1/2, 3, 1/3."""
    m = len(sizes)
    scales = [s_min + (s_max - s_min) * k / (m - 1) for k in range(m)] + [1.0]
    out = []
    for k, f in enumerate(sizes):
        s, s2 = scales[k], math.sqrt(scales[k] * scales[k + 1])
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) / f, (i + 0.5) / f
                out.append([cx, cy, s, s])
                out.append([cx, cy, s2, s2])
                for r in (2.0, 3.0):
                    q = math.sqrt(r)
                    out.append([cx, cy, s * q, s / q])
                    out.append([cx, cy, s / q, s * q])
    return torch.tensor(out, dtype=torch.float32).clamp(0.0, 1.0)


def build(small: bool):
    size, width = (160, 0.25) if small else (300, 1.0)
    model = MobileNetV1SSD(size=size, width=width).eval()
    x = torch.randn(1, 3, size, size)
    return model, (x,), ["image"], ["boxes", "scores", "labels"], {"input_size": size, "width": width}
