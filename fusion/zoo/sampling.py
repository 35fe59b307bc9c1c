"""Deterministic random numbers: the same bytes on every machine.

numpy promises a stable stream only for the raw bits of a bit generator, not
for `Generator.standard_normal` (its algorithms may change between releases,
and its tails call libm). So values are built from PCG64's raw 64-bit words
with exact integer and IEEE arithmetic only:

* uniform in [0, 1): the top 53 bits of a word, times 2**-53 (exact);
* "normal": the sum of the four 16-bit quarters of a word, each a uniform,
  centred and scaled to unit variance (Irwin-Hall with n=4: bounded at
  +-3.46 sigma, which also keeps random weights free of outliers).
"""
from __future__ import annotations

import hashlib

import numpy as np

_CHUNK = 1 << 22  # words per step: bounds temporary memory for 100M-element tensors


def seed_for(*parts: str) -> int:
    """A 128-bit seed from strings (model name, initializer name)."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(h[:16], "little")


def _words(seed: int, n: int):
    bg = np.random.PCG64(seed)
    done = 0
    while done < n:
        k = min(_CHUNK, n - done)
        yield done, bg.random_raw(k)  # uint64, stable across numpy versions
        done += k


def uniform(seed: int, shape, low: float = 0.0, high: float = 1.0, dtype=np.float32) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    out = np.empty(n, dtype=dtype)
    for at, w in _words(seed, n):
        u = (w >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        out[at:at + len(w)] = low + (high - low) * u
    return out.reshape(shape)


_SCALE = np.sqrt(3.0) / 65536.0  # sum of 4 U(0,1) has variance 1/3


def normal(seed: int, shape, mean: float = 0.0, std: float = 1.0, dtype=np.float32) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    out = np.empty(n, dtype=np.float32)
    k = np.float32(std * _SCALE)
    for at, w in _words(seed, n):
        # The sum of a word's four 16-bit quarters (order-free, so endianness does not matter);
        # integers below 2**18 and one rounding per IEEE float32 op: exact and portable.
        q = w.view(np.uint16)
        s = q[0::4].astype(np.int32)
        s += q[1::4]
        s += q[2::4]
        s += q[3::4]
        z = (s - np.int32(2 * 65536 - 2)).astype(np.float32)  # +0.5 per quarter centres each uniform
        out[at:at + len(w)] = np.float32(mean) + k * z
    return out.reshape(shape).astype(dtype, copy=False)
