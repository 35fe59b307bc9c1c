"""The fusion table (DNNFusion, Table 3): what fusing a first op (row) with a
second op (column) yields, and whether to do it.

    X      always fused, result class X (within the target's limits)
    X?     legal, fused only when a profile (measured or cost model) says the
           fused kernel is no slower
    never  not fused

This text is the table; `FUSION_TABLE` is parsed from it, so what you read
here is what the planner does.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from fusion.ops.table import Mapping

TABLE_TEXT = """
first \\ second  O2O      O2M      M2M      Reorg    Shuffle
O2O              O2O      O2M      M2M      Reorg    Shuffle
O2M              O2M      O2M      never    O2M?     O2M?
M2M              M2M      M2M?     never    M2M?     M2M?
Reorg            Reorg    O2M?     M2M?     Reorg    Reorg
Shuffle          Shuffle  O2M?     M2M?     Reorg    Shuffle
"""


class Rule(str, enum.Enum):
    ALWAYS = "always"
    PROFILE = "profile"
    NEVER = "never"


@dataclass(frozen=True)
class Entry:
    result: Mapping | None   # None for never
    rule: Rule

    def __str__(self) -> str:
        if self.rule == Rule.NEVER:
            return "never"
        return self.result.short + (" (profile)" if self.rule == Rule.PROFILE else "")


_BY_SHORT = {m.short: m for m in Mapping}


def _parse(text: str) -> dict[tuple[Mapping, Mapping], Entry]:
    rows = [ln.split() for ln in text.strip().splitlines()]
    cols = [_BY_SHORT[c] for c in rows[0][3:]]
    out = {}
    for row in rows[1:]:
        first = _BY_SHORT[row[0]]
        for second, cell in zip(cols, row[1:]):
            if cell == "never":
                out[(first, second)] = Entry(None, Rule.NEVER)
            elif cell.endswith("?"):
                out[(first, second)] = Entry(_BY_SHORT[cell[:-1]], Rule.PROFILE)
            else:
                out[(first, second)] = Entry(_BY_SHORT[cell], Rule.ALWAYS)
    return out


FUSION_TABLE: dict[tuple[Mapping, Mapping], Entry] = _parse(TABLE_TEXT)
CLASSES = [Mapping.O2O, Mapping.O2M, Mapping.M2M, Mapping.REORG, Mapping.SHUFFLE]


def lookup(first: Mapping, second: Mapping) -> Entry:
    """The table entry; an opaque op on either side is never fused."""
    if first == Mapping.OPAQUE or second == Mapping.OPAQUE:
        return Entry(None, Rule.NEVER)
    return FUSION_TABLE[(first, second)]


def format_table() -> str:
    w = 15
    lines = ["first \\ second".ljust(16) + "".join(c.short.ljust(w) for c in CLASSES)]
    for a in CLASSES:
        lines.append(a.short.ljust(16) + "".join(str(lookup(a, b)).ljust(w) for b in CLASSES))
    return "\n".join(lines)
