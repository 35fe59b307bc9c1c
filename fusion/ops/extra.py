"""Further ops of the ONNX backend suite that the reference models do not use."""
from __future__ import annotations
