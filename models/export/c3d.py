"""C3D in plain torch, after Tran et al. 2015 ("Learning Spatiotemporal Features
with 3D Convolutional Networks"): eight 3x3x3 convolutions with ReLU, five max
pools (the first spatial only), two 4096-wide fully connected layers with
dropout, and a classifier (Sports-1M: 487 classes); input 1x3x16x112x112."""
from __future__ import annotations

import torch
from torch import nn


class C3D(nn.Module):
    def __init__(self, width=1.0, frames=16, size=112, fc=4096, num_classes=487):
        super().__init__()
        c = lambda n: max(4, int(n * width))  # noqa: E731
        conv = lambda i, o: [nn.Conv3d(i, o, 3, padding=1), nn.ReLU(inplace=True)]  # noqa: E731
        self.features = nn.Sequential(
            *conv(3, c(64)), nn.MaxPool3d((1, 2, 2), (1, 2, 2)),
            *conv(c(64), c(128)), nn.MaxPool3d(2, 2),
            *conv(c(128), c(256)), *conv(c(256), c(256)), nn.MaxPool3d(2, 2),
            *conv(c(256), c(512)), *conv(c(512), c(512)), nn.MaxPool3d(2, 2),
            *conv(c(512), c(512)), *conv(c(512), c(512)), nn.MaxPool3d(2, 2, padding=(0, 1, 1)))
        with torch.no_grad():
            n = self.features(torch.zeros(1, 3, frames, size, size)).numel()
        self.classifier = nn.Sequential(
            nn.Linear(n, fc), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(fc, num_classes))

    def forward(self, clip):
        return self.classifier(torch.flatten(self.features(clip), 1))


def build(small: bool):
    frames, size = (16, 112) if not small else (16, 32)
    model = C3D(width=1.0 if not small else 0.125, frames=frames, size=size,
                fc=4096 if not small else 128).eval()
    x = torch.randn(1, 3, frames, size, size)
    return model, (x,), ["clip"], ["logits"], {"input_size": [frames, size, size]}
