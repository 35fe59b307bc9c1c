"""Synthetic graphs shaped like the reference models, for planner tests and
timing before (and besides) the zoo: a BERT encoder with decomposed
LayerNorm and GELU, and a ResNet-style CNN. Sizes are parameters so the same
builders give tiny graphs for tests and 4,000-node graphs for timing."""
from __future__ import annotations

import numpy as np

from fusion.ir.builder import GraphBuilder
from fusion.ir.graph import Graph


def _w(rng, *shape):
    return (rng.standard_normal(shape) * 0.05).astype(np.float32)


def _layer_norm(b, rng, x, hidden):
    mean = b.reduce_mean(x, np.array([-1]))
    d = b.sub(x, mean)
    var = b.reduce_mean(b.pow(d, np.float32(2)), np.array([-1]))
    y = b.div(d, b.sqrt(b.add(var, np.float32(1e-5))))
    return b.add(b.mul(y, _w(rng, hidden)), _w(rng, hidden))


def bert_like(layers: int = 2, seq: int = 16, hidden: int = 64, heads: int = 4, ffn: int = 128,
              seed: int = 0) -> Graph:
    """About 80 nodes per layer (bert-base: 12 layers, seq 128, hidden 768)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("bert_like")
    x = b.input("x", "float32", [1, seq, hidden])
    mask = b.input("mask", "float32", [1, 1, 1, seq])
    dh = hidden // heads
    for _ in range(layers):
        h = _layer_norm(b, rng, x, hidden)

        def proj(t):
            y = b.add(b.matmul(t, _w(rng, hidden, hidden)), _w(rng, hidden))
            return b.transpose(b.reshape(y, np.array([1, seq, heads, dh])), perm=[0, 2, 1, 3])
        q, k, v = proj(h), proj(h), proj(h)
        kt = b.transpose(k, perm=[0, 1, 3, 2])
        s = b.add(b.div(b.matmul(q, kt), np.float32(np.sqrt(dh))), mask)
        a = b.matmul(b.softmax(s, axis=-1), v)
        a = b.reshape(b.transpose(a, perm=[0, 2, 1, 3]), np.array([1, seq, hidden]))
        x = b.add(x, b.add(b.matmul(a, _w(rng, hidden, hidden)), _w(rng, hidden)))
        h = _layer_norm(b, rng, x, hidden)
        f = b.add(b.matmul(h, _w(rng, hidden, ffn)), _w(rng, ffn))
        f = b.mul(b.mul(f, np.float32(0.5)), b.add(b.erf(b.div(f, np.float32(np.sqrt(2.0)))), np.float32(1.0)))
        x = b.add(x, b.add(b.matmul(f, _w(rng, ffn, hidden)), _w(rng, hidden)))
    b.output(_layer_norm(b, rng, x, hidden))
    return b.build()


def resnet_like(stages: int = 2, blocks: int = 2, channels: int = 8, size: int = 16, seed: int = 0) -> Graph:
    """Conv + bias + Relu units with residual adds; a stride-2 Conv between stages."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("resnet_like")
    x = b.input("x", "float32", [1, 3, size, size])
    c = channels
    x = b.relu(b.conv(x, _w(rng, c, 3, 3, 3), _w(rng, c), pads=[1, 1, 1, 1]))
    for s in range(stages):
        for _ in range(blocks):
            y = b.relu(b.conv(x, _w(rng, c, c, 3, 3), _w(rng, c), pads=[1, 1, 1, 1]))
            y = b.conv(y, _w(rng, c, c, 3, 3), _w(rng, c), pads=[1, 1, 1, 1])
            x = b.relu(b.add(x, y))
        if s + 1 < stages:
            x = b.relu(b.conv(x, _w(rng, 2 * c, c, 3, 3), _w(rng, 2 * c), pads=[1, 1, 1, 1], strides=[2, 2]))
            c *= 2
    b.output(b.reduce_mean(x, np.array([2, 3]), keepdims=0))
    return b.build()
