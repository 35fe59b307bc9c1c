"""Vision models: torchvision definitions and the plain-torch ones (ssd.py, yolo.py,
c3d.py, unet.py). build(name, small) -> (module, args, input names, output names,
extra facts, use_dynamo). Classification and segmentation models use the dynamo
exporter; the detection models, whose post-processing has data-dependent
shapes (NMS, TopK over a variable number of boxes), the legacy one."""
from __future__ import annotations

import torch
from torch import nn


def _efficientnet(small: bool):
    from torchvision.models import efficientnet as E
    if not small:
        return E.efficientnet_b0(weights=None), 224
    settings, last = E._efficientnet_conf("efficientnet_b0", width_mult=0.5, depth_mult=0.34)
    return E.EfficientNet(settings, 0.2, last_channel=last, num_classes=100), 64


def _vgg(small: bool):
    from torchvision.models import vgg
    if not small:
        return vgg.vgg16(weights=None), 224
    cfg = [8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M"]
    m = vgg.VGG(vgg.make_layers(cfg), num_classes=10)
    m.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                 nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    return m, 64


def _s3d(small: bool):
    from torchvision.models.video import s3d
    m = s3d(weights=None)
    if not small:
        return m, (16, 224, 224)
    # The stem and the first two separable inception blocks, same pooling and classifier ops.
    m.features = m.features[:7]
    m.classifier[1] = nn.Conv3d(480, 400, kernel_size=1)
    return m, (8, 64, 64)


def build(name: str, small: bool, seed: int = 0):
    torch.manual_seed(seed)
    if name == "mobilenetv1-ssd":
        import ssd
        return (*ssd.build(small), False)
    if name == "c3d":
        import c3d
        return (*c3d.build(small), True)
    if name == "u-net":
        import unet
        return (*unet.build(small), True)
    if name == "yolo-v4":
        import yolo
        return (*yolo.build(small), True)
    if name in ("faster-rcnn", "mask-rcnn"):
        import rcnn
        return (*rcnn.build(name, small), False)
    if name == "efficientnet-b0":
        m, size = _efficientnet(small)
    elif name == "vgg-16":
        m, size = _vgg(small)
    elif name == "s3d":
        m, (t, h, w) = _s3d(small)
        x = torch.randn(1, 3, t, h, w)
        return m.eval(), (x,), ["clip"], ["logits"], {"input_size": [t, h, w]}, True
    else:
        raise KeyError(f"no export recipe for {name}")
    x = torch.randn(1, 3, size, size)
    return m.eval(), (x,), ["image"], ["logits"], {"input_size": size}, True
