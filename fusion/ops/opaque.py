"""Opaque ops: no index function (data-dependent output or control): never fused, compiled as runtime kernels."""
from __future__ import annotations
