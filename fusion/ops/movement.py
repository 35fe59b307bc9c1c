"""Data movement as index arithmetic: Slice, Split, Pad, Tile, Expand, Resize, DepthToSpace, SpaceToDepth."""
from __future__ import annotations
