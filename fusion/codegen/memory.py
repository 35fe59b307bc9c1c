"""The memory planner: intermediate tensors share one arena by liveness.

A value lives from the block that writes it to the last block that reads
it (inclusive at both ends, so a block's inputs and outputs never share
memory). Offsets are assigned greedily, largest first, at the lowest
64-byte-aligned offset that does not overlap a value alive at the same time.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass
class Interval:
    key: object
    size: int
    first: int    # index of the writing block
    last: int     # index of the last reading block
    offset: int = -1


def plan_memory(intervals: list[Interval]) -> int:
    """Assign offsets in place; return the arena size in bytes (peak)."""
    placed: list[Interval] = []
    peak = 0
    for iv in sorted(intervals, key=lambda x: (-x.size, x.first)):
        busy = sorted((p.offset, p.offset + align(p.size)) for p in placed
                      if not (p.last < iv.first or iv.last < p.first))
        off = 0
        need = align(max(iv.size, 1))
        for b, e in busy:
            if off + need <= b:
                break
            off = max(off, e)
        iv.offset = off
        placed.append(iv)
        peak = max(peak, off + need)
    return peak


def naive_bytes(intervals: list[Interval]) -> int:
    """What the arena would be without reuse (for the report)."""
    return sum(align(max(iv.size, 1)) for iv in intervals)
