"""U-Net in plain torch, after Ronneberger et al. 2015: four down steps of two
3x3 conv + BatchNorm + ReLU and a 2x2 max pool, a 1024-channel bottom, four up
steps of a 2x2 stride-2 ConvTranspose, a skip Concat with the matching down
step and two 3x3 convs, and a 1x1 classifier (padded convs: 256x256 in, out)."""
from __future__ import annotations

import torch
from torch import nn


def double_conv(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                         nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, base=64, depth=4, in_ch=3, classes=2):
        super().__init__()
        chans = [base * 2 ** k for k in range(depth + 1)]
        self.down = nn.ModuleList([double_conv(in_ch, chans[0])] +
                                  [double_conv(chans[k], chans[k + 1]) for k in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2)
                                 for k in reversed(range(depth))])
        self.up_conv = nn.ModuleList([double_conv(2 * chans[k], chans[k]) for k in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], classes, 1)

    def forward(self, image):
        skips = []
        x = image
        for k, d in enumerate(self.down):
            x = d(x if k == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, conv in zip(self.up, self.up_conv):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def build(small: bool):
    size, base = (256, 64) if not small else (64, 8)
    model = UNet(base=base).eval()
    return model, (torch.randn(1, 3, size, size),), ["image"], ["mask_logits"], {"input_size": size}
