"""Neural-network ops: BatchNormalization, normalization layers, Dropout."""
from __future__ import annotations
