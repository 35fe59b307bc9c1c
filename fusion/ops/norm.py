"""Normalization ops: LayerNormalization, InstanceNormalization, GroupNormalization, LpNormalization."""
from __future__ import annotations
