"""YOLOv4 in plain torch, after Bochkovskiy et al. 2020: a CSPDarknet53 backbone
(Conv-BN-Mish, cross-stage-partial stages of 1, 2, 8, 8, 4 residual blocks), an
SPP block (max pools 5, 9, 13), a PANet neck (nearest up-sampling, Concat,
Conv-BN-LeakyReLU), three heads at strides 8, 16, 32 for 416x416 input (80
classes, 3 anchors each) and the box decoding (sigmoid centres with the grid,
exp sizes with the anchors, objectness x class scores)."""
from __future__ import annotations

import torch
from torch import nn

ANCHORS = [[(12, 16), (19, 36), (40, 28)], [(36, 75), (76, 55), (72, 146)],
           [(142, 110), (192, 243), (459, 401)]]
STRIDES = [8, 16, 32]


class CBA(nn.Module):
    def __init__(self, i, o, k=1, s=1, act="mish"):
        super().__init__()
        self.conv = nn.Conv2d(i, o, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(o)
        self.act = nn.Mish() if act == "mish" else nn.LeakyReLU(0.1)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Res(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.a, self.b = CBA(c, hidden, 1), CBA(hidden, c, 3)

    def forward(self, x):
        return x + self.b(self.a(x))


class CSPStage(nn.Module):
    def __init__(self, i, o, n, first=False):
        super().__init__()
        h = o if first else o // 2
        self.down = CBA(i, o, 3, 2)
        self.split0, self.split1 = CBA(o, h, 1), CBA(o, h, 1)
        self.blocks = nn.Sequential(*[Res(h, o // 2 if first else h) for _ in range(n)], CBA(h, h, 1))
        self.fuse = CBA(2 * h, o, 1)

    def forward(self, x):
        x = self.down(x)
        return self.fuse(torch.cat([self.blocks(self.split1(x)), self.split0(x)], 1))


def cbl(i, o, k=1, s=1):
    return CBA(i, o, k, s, act="leaky")


def five(i, o):
    """The neck's five alternating 1x1 / 3x3 Conv-BN-LeakyReLU layers."""
    return nn.Sequential(cbl(i, o), cbl(o, 2 * o, 3), cbl(2 * o, o), cbl(o, 2 * o, 3), cbl(2 * o, o))


class YOLOv4(nn.Module):
    def __init__(self, size=416, width=1.0, blocks=(1, 2, 8, 8, 4), classes=80):
        super().__init__()
        c = lambda n: max(4, int(n * width))  # noqa: E731
        self.classes = classes
        self.stem = CBA(3, c(32), 3)
        chans = [c(64), c(128), c(256), c(512), c(1024)]
        self.stages = nn.ModuleList([CSPStage(c(32) if k == 0 else chans[k - 1], chans[k], n, first=k == 0)
                                     for k, n in enumerate(blocks)])
        c5, c4, c3 = chans[4], chans[3], chans[2]
        self.spp_in = nn.Sequential(cbl(c5, c4), cbl(c4, c5, 3), cbl(c5, c4))
        self.pools = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13)])
        self.spp_out = nn.Sequential(cbl(4 * c4, c4), cbl(c4, c5, 3), cbl(c5, c4))
        self.up5, self.lat4, self.td4 = cbl(c4, c3), cbl(c4, c3), five(c4, c3)
        self.up4, self.lat3, self.td3 = cbl(c3, c3 // 2), cbl(c3, c3 // 2), five(c3, c3 // 2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.down3, self.bu4 = cbl(c3 // 2, c3, 3, 2), five(c4, c3)
        self.down4, self.bu5 = cbl(c3, c4, 3, 2), five(c5, c4)
        out = 3 * (5 + classes)
        self.heads = nn.ModuleList([nn.Sequential(cbl(ch, 2 * ch, 3), nn.Conv2d(2 * ch, out, 1))
                                    for ch in (c3 // 2, c3, c4)])
        with torch.no_grad():
            sizes = [size // s for s in STRIDES]
        for k, (n, s) in enumerate(zip(sizes, STRIDES)):
            ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            self.register_buffer(f"grid{k}", torch.stack([xs, ys], -1).float().reshape(1, 1, n, n, 2))
            self.register_buffer(f"anchor{k}", torch.tensor(ANCHORS[k], dtype=torch.float32).reshape(1, 3, 1, 1, 2))

    def forward(self, image):
        x = self.stem(image)
        feats = []
        for st in self.stages:
            x = st(x)
            feats.append(x)
        p3, p4, p5 = feats[2], feats[3], feats[4]
        s = self.spp_in(p5)
        s = self.spp_out(torch.cat([m(s) for m in reversed(self.pools)] + [s], 1))
        t4 = self.td4(torch.cat([self.lat4(p4), self.upsample(self.up5(s))], 1))
        t3 = self.td3(torch.cat([self.lat3(p3), self.upsample(self.up4(t4))], 1))
        b4 = self.bu4(torch.cat([self.down3(t3), t4], 1))
        b5 = self.bu5(torch.cat([self.down4(b4), s], 1))
        boxes, scores = [], []
        for k, (f, head) in enumerate(zip((t3, b4, b5), self.heads)):
            y = head(f)
            n = y.shape[-1]
            y = y.reshape(1, 3, 5 + self.classes, n, n).permute(0, 1, 3, 4, 2)
            xy = (torch.sigmoid(y[..., 0:2]) * 1.05 - 0.025 + getattr(self, f"grid{k}")) * STRIDES[k]
            wh = torch.exp(y[..., 2:4]) * getattr(self, f"anchor{k}")
            conf = torch.sigmoid(y[..., 4:5]) * torch.sigmoid(y[..., 5:])
            boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(1, -1, 4))
            scores.append(conf.reshape(1, -1, self.classes))
        return torch.cat(boxes, 1), torch.cat(scores, 1)


def build(small: bool):
    size, width, blocks = (416, 1.0, (1, 2, 8, 8, 4)) if not small else (128, 0.125, (1, 1, 1, 1, 1))
    model = YOLOv4(size=size, width=width, blocks=blocks).eval()
    return model, (torch.randn(1, 3, size, size),), ["image"], ["boxes", "scores"], {"input_size": size}
