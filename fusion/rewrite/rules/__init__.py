"""All rewrite rules, by family. Each module defines `rules() -> [Rule]`.

Families follow DNNFusion (associative, distributive, commutative) plus what
exporters produce (identities from the op table, power/exp/log, division,
reductions, folding constants into linear ops, recognizing decomposed ops)."""
from __future__ import annotations

from functools import lru_cache

MODULES = ["table", "assoc", "distrib", "commut", "power", "division", "reduce", "linear", "recognize"]


@lru_cache(maxsize=None)
def _all():
    import importlib
    out = []
    for m in MODULES:
        out += importlib.import_module(f"fusion.rewrite.rules.{m}").rules()
    names = [r.name for r in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"rule names used twice: {sorted(dup)}")
    return tuple(out)


def all_rules(include_unavailable: bool = True) -> list:
    """Every rule; rules whose ops are not (yet) in the op table are listed but
    never fire (`rule.available()`)."""
    rs = list(_all())
    return rs if include_unavailable else [r for r in rs if r.available()]


def get_rule(name: str):
    for r in _all():
        if r.name == name:
            return r
    raise KeyError(name)
