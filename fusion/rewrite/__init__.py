"""Graph rewriting: proven algebraic rules plus structural clean-ups.

    g2 = fusion.rewrite(g)                     # a new Graph; g is untouched
    g2, report = rewrite_with_report(g)        # nodes/FLOPs before and after, rules fired

The pipeline runs rounds of passes until a round changes nothing (at most
MAX_ROUNDS): shape-arithmetic folding, constant folding, no-op removal,
Transpose/Reshape merging, common subexpressions, the algebraic rule engine
(fusion.rewrite.engine, rules in fusion.rewrite.rules), dead code. Every pass
leaves a graph that passes `graph.verify()`.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from fusion.ir.graph import Graph

MAX_ROUNDS = 4


@dataclass
class PassRun:
    name: str          # "round1:cse"
    changes: int
    seconds: float
    rules: dict = field(default_factory=dict)   # rule -> times fired (algebra passes)
    log: list = field(default_factory=list)     # [(rule, node)] in order (algebra passes)


@dataclass
class Report:
    nodes_before: int
    nodes_after: int
    flops_before: int
    flops_after: int
    seconds: float
    strict_fp: bool
    fired: Counter
    passes: list

    def to_json(self) -> dict:
        return {
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "flops_before": self.flops_before, "flops_after": self.flops_after,
            "seconds": round(self.seconds, 3), "strict_fp": self.strict_fp,
            "rules_fired": dict(self.fired.most_common()),
            "passes": [{"name": p.name, "changes": p.changes, "seconds": round(p.seconds, 4),
                        **({"rules": p.rules} if p.rules else {})} for p in self.passes],
        }


def passes(strict_fp: bool = False, rules=None):
    """[(name, fn(graph) -> (changes, PassRun extras))] of one round."""
    from fusion.rewrite import structural as S
    from fusion.rewrite.engine import Engine
    from fusion.rewrite.rules import all_rules

    def simple(fn):
        return lambda g, limit=None: (fn(g), {})

    def algebra(g, limit=None):
        eng = Engine(all_rules() if rules is None else rules, strict_fp=strict_fp, limit=limit)
        fired = eng.run(g)
        g.remove_dead()
        return sum(fired.values()), {"rules": dict(fired), "log": list(eng.log)}

    return [
        ("fold-shapes", simple(S.fold_shapes)),
        ("fold-constants", simple(S.fold_constants)),
        ("noop", simple(S.remove_noops)),
        ("merge-reorganize", simple(S.merge_reorganize)),
        ("cse", simple(S.cse)),
        ("algebra", algebra),
        ("dead-code", simple(S.dead_code)),
    ]


def run_passes(g: Graph, strict_fp: bool = False, verify: bool = True, rules=None, on_pass=None,
               max_rounds: int = MAX_ROUNDS, before_pass=None) -> list[PassRun]:
    """Run the pipeline on `g` in place. before_pass(name, graph) and
    on_pass(PassRun, graph) around each pass."""
    runs = []
    for r in range(1, max_rounds + 1):
        round_changes = 0
        for name, fn in passes(strict_fp, rules):
            if before_pass is not None:
                before_pass(f"round{r}:{name}", g)
            t = time.perf_counter()
            changes, extra = fn(g)
            run = PassRun(f"round{r}:{name}", changes, time.perf_counter() - t, extra.get("rules", {}),
                          extra.get("log", []))
            if verify and changes:
                g.verify()
            runs.append(run)
            round_changes += changes
            if on_pass is not None:
                on_pass(run, g)
        if not round_changes:
            break
    return runs


def rewrite_with_report(graph: Graph, strict_fp: bool = False, verify: bool = True, on_pass=None):
    from fusion.rewrite.build import node_flops
    t = time.perf_counter()
    g = graph.copy()
    nb, fb = len(g.nodes), sum(node_flops(n) for n in g.nodes)
    runs = run_passes(g, strict_fp=strict_fp, verify=verify, on_pass=on_pass)
    fired = Counter()
    for r in runs:
        fired.update(r.rules)
    rep = Report(nb, len(g.nodes), fb, sum(node_flops(n) for n in g.nodes), time.perf_counter() - t,
                 strict_fp, fired, runs)
    return g, rep


def rewrite(graph: Graph, strict_fp: bool = False) -> Graph:
    """Simplify a Graph with proven rules and structural passes; returns a new Graph.

    strict_fp=True keeps float results bit-for-bit where the rule set can
    promise it: rules exact only in real arithmetic (reassociation, domain
    assumptions, overflow changes) are left out."""
    g, _ = rewrite_with_report(graph, strict_fp=strict_fp)
    return g


# `fusion.rewrite` is both this package and the function `fusion.rewrite(graph)`:
# once any fusion.rewrite.* module is imported the attribute is the package,
# so the package itself is callable (as fusion.plan does).
import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallablePackage(_types.ModuleType):
    def __call__(self, graph, strict_fp: bool = False):
        return rewrite(graph, strict_fp=strict_fp)


_sys.modules[__name__].__class__ = _CallablePackage
