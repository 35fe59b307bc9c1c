"""The rule engine: greedy by FLOPs saved, to a fixed point.

Every (node, rule) pair whose pattern matches at that node is priced by
building its replacement detached: saved = FLOPs of the nodes that die
(the root, and matched nodes no one else reads) minus FLOPs of the new nodes.
A match is worth applying only if it improves (FLOPs saved, then fewer
nodes, then fewer intermediate bytes) - so no two rules can undo each other
forever. The best match over the whole graph is applied first; matches sit in
a heap, and after an edit only the nodes around it (new nodes and up to
(pattern depth) consumers downstream of every touched value) are matched again.
"""
from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass

from fusion.ops import get_op
from fusion.rewrite.build import BuildError, Builder, node_flops, value_bytes
from fusion.rewrite.pattern import Matcher, flatten, needed_ops


@dataclass
class Candidate:
    rule: object
    match: object
    builder: Builder
    new_root: object
    dead: list
    gain: tuple        # (flops saved, nodes removed, bytes removed)


_ALG: dict = {}


def _algebra(op):
    a = _ALG.get(op, False)
    if a is False:
        od = get_op(op)
        a = _ALG[op] = od.algebra if od is not None else None
    return a


def _ac(op) -> bool:
    a = _algebra(op)
    return a is not None and a.commutative and a.associative


class Engine:
    def __init__(self, rules, strict_fp: bool = False, max_steps: int = 100_000, limit: int | None = None,
                 on_apply=None):
        self.strict_fp = strict_fp
        self.rules = [r for r in rules if r.available() and (r.exact or not strict_fp)]
        self.by_op = defaultdict(list)
        for k, r in enumerate(self.rules):
            self.by_op[r.root_op].append(r)
        self.max_steps = max_steps
        self.limit = limit            # stop after this many applications (pass-by-pass bisection)
        self.on_apply = on_apply
        self.fired: Counter = Counter()
        self.log: list[tuple[str, str]] = []   # (rule, root node name) in order applied

        assoc = {}

        def assoc_ok(op):
            r = assoc.get(op)
            if r is None:
                alg = _algebra(op)
                r = assoc[op] = alg is not None and alg.associative and (alg.float_exact or not strict_fp)
            return r
        self.matcher = Matcher(_algebra, assoc_ok)
        # A change can complete a match rooted up to a pattern's depth downstream.
        self.depths = {id(r): _depth(r.pattern) for r in self.rules}
        self.order = {id(r): k for k, r in enumerate(self.rules)}
        self.depth = max(list(self.depths.values()) + [1])
        # Cheap pre-check per rule: op types that must feed the root.
        self.needs = {id(r): needed_ops(r.pattern, _ac(r.root_op) and assoc_ok(r.root_op)) for r in self.rules}
        # Index: root op -> one needed operand op (None: needs none) -> rules.
        self.by_key: dict = defaultdict(lambda: defaultdict(list))
        for r in self.rules:
            need = self.needs[id(r)]
            self.by_key[r.root_op][min(need) if need else None].append(r)

    # ------------------------------------------------------------------
    def best_at(self, node, graph, dist: int = 0) -> Candidate | None:
        """Best match at `node`; `dist`: the nearest change is that far upstream,
        so only rules deeper than that can have a new match here."""
        best = None
        dk = node.outputs[0].dtype.kind if node.outputs and node.outputs[0].dtype is not None else "?"
        keyed = self.by_key.get(node.op)
        if keyed is None:
            return None
        have = _feeding_ops(node)
        # Only rules whose key operand op (see __init__) feeds this node.
        cands = list(keyed.get(None, ()))
        for op in have:
            cands += keyed.get(op, ())
        cands.sort(key=lambda r: self.order[id(r)])
        for rule in cands:
            if dk not in rule.dtypes or self.depths[id(rule)] <= dist:
                continue
            if not self.needs[id(rule)] <= have:
                continue
            n_tries = 0
            for m in self.matcher.match(rule.pattern, node):
                n_tries += 1
                if n_tries > 64:
                    break
                if not rule.check(m):
                    continue
                c = self.price(rule, m, graph)
                if c is not None and (best is None or c.gain > best.gain):
                    best = c
                    break  # first profitable match of a rule at a node
        return best

    def price(self, rule, m, graph) -> Candidate | None:
        root = m.root
        b = Builder()
        try:
            new = rule.build(b, m)
            if new is None:
                return None
            for r in m.rest:
                new = b.op(root.op, new, r)
        except BuildError:
            return None
        old = root.outputs[0]
        if new is old or new.dtype != old.dtype or not _same_shape(new.shape, old.shape):
            return None
        dead = _dying(m.nodes, root, graph)
        if dead is None:
            return None
        # A matched node that survives (read elsewhere) and is re-created by the
        # replacement would duplicate work: the pricing counts that.
        saved = sum(node_flops(n) for n in dead) - b.flops()
        nodes = len(dead) - len(b.nodes)
        byts = (sum(value_bytes(v) for n in dead for v in n.outputs) - b.out_bytes()
                + _const_bytes(dead) - _const_bytes(b.nodes))
        gain = (saved, nodes, byts)
        fused_ok = rule.fuses and nodes > 0 and byts >= 0 and saved >= -sum(node_flops(n) for n in dead) // 4
        if not fused_ok and (gain < (0, 0, 0) or (gain == (0, 0, 0) and not rule.canonical)):
            return None
        return Candidate(rule, m, b, new, dead, gain)

    # ------------------------------------------------------------------
    def run(self, graph) -> Counter:
        seq = itertools.count()
        version: dict = {}
        heap: list = []

        def visit(n, dist=0):
            if n.graph is not graph or n.op not in self.by_op:
                return
            c = self.best_at(n, graph, dist)
            if c is not None:
                # Entries of a node stay valid until it is popped (then it is matched in full).
                heapq.heappush(heap, (tuple(-g for g in c.gain), next(seq), version.setdefault(n, 0), n))

        graph._rw_no_subgraphs = not any(n.subgraphs() for n in graph.nodes)
        # Values read by If/Loop bodies have no entry in use-lists: never let them die.
        graph._rw_captured = set() if graph._rw_no_subgraphs else {
            id(v) for n in graph.nodes for v in n.captured()}
        for n in list(graph.nodes):
            visit(n)
        steps = 0
        while heap and steps < self.max_steps:
            if self.limit is not None and sum(self.fired.values()) >= self.limit:
                break
            _, _, ver, n = heapq.heappop(heap)
            if n.graph is not graph or version.get(n) != ver:
                continue
            c = self.best_at(n, graph)   # re-match: the graph around it may have changed
            version[n] = ver + 1
            if c is None:
                continue
            touched = self.apply(c, graph)
            steps += 1
            for m, d in _around(touched, depth=self.depth):
                visit(m, d)
        graph._rw_no_subgraphs = False
        return self.fired

    def apply(self, c: Candidate, graph) -> list:
        root = c.match.root
        old = root.outputs[0]
        c.builder.materialize(graph, root, [c.new_root])
        new = c.new_root
        leaves = [v for v in c.match.binds.values() if hasattr(v, "uses")] + list(c.match.rest)
        replace_value(graph, old, new)
        for n in c.dead:
            if n.graph is graph and not any(v.uses for v in n.outputs) and not any(v in graph.outputs for v in n.outputs):
                graph.remove_node(n)
                n.graph = None   # mark it gone: queued matches at it are stale
        self.fired[c.rule.name] += 1
        self.log.append((c.rule.name, root.name))
        if self.on_apply is not None:
            self.on_apply(c)
        touched = list(c.builder.nodes) + [new.producer] if new.producer is not None else list(c.builder.nodes)
        for v in leaves + [new]:
            # Constants and graph inputs never sit inside a match: their readers
            # are unaffected (and a shared constant can have hundreds).
            if v is not None and v.producer is not None:
                touched.append(v.producer)
                touched.extend(n for n, _ in v.uses)
        return [n for n in touched if n is not None and n.graph is graph]


def replace_value(graph, old, new) -> None:
    """Readers of `old` read `new`. A graph output keeps its name (the model's
    interface): `new` takes the name, or, when `new` is an input, a constant
    or another output, an Identity produces `old` from `new`."""
    if old not in graph.outputs:
        if getattr(graph, "_rw_no_subgraphs", False):
            for n, i in list(old.uses):   # no If/Loop bodies to look into: skip the scan
                graph.set_input(n, i, new)
        else:
            graph.replace_uses(old, new)
        return
    for n, i in list(old.uses):
        graph.set_input(n, i, new)
    if new.producer is not None and new not in graph.outputs and new not in graph.inputs:
        graph.outputs = [new if v is old else v for v in graph.outputs]
        name = old.name
        graph.values.pop(new.name, None)
        old.name = graph._unique(name + "_old")
        graph.values.pop(name, None)
        graph.values[old.name] = old
        new.name = name
        graph.values[name] = new
        return
    p = old.producer
    if p is None:
        return
    tmp = graph.new_value(old.dtype, old.shape, name=old.name + "_old")
    p.outputs[p.outputs.index(old)] = tmp
    tmp.producer = p
    old.producer = None
    graph.add_node("Identity", [new], outputs=[old], before=p)


def _depth(p) -> int:
    from fusion.rewrite.pattern import PNode
    if not isinstance(p, PNode):
        return 0
    return 1 + max([_depth(a) for a in p.args] + [0])


def _feeding_ops(node) -> set:
    ops = {v.producer.op for v in node.inputs if v is not None and v.producer is not None}
    if _ac(node.op):
        leaves, _ = flatten(node)
        ops |= {v.producer.op for v in leaves if v is not None and v.producer is not None}
    return ops


def _const_bytes(nodes) -> int:
    return sum(value_bytes(v) for n in nodes for v in n.inputs if v is not None and v.const is not None)


def _dying(nodes, root, graph):
    """Matched nodes that die once the root's readers move: fixed point of
    'every output has no readers outside the dying set'."""
    dead = {id(root): root}
    cand = [n for n in nodes if n is not root]
    changed = True
    while changed:
        changed = False
        for n in cand:
            if id(n) in dead:
                continue
            ok = True
            for v in n.outputs:
                if v in graph.outputs or id(v) in getattr(graph, "_rw_captured", ()):
                    ok = False
                    break
                for u, _ in v.uses:
                    if id(u) not in dead:
                        ok = False
                        break
                if not ok:
                    break
            if ok:
                dead[id(n)] = n
                changed = True
    return list(dead.values())


def _around(nodes, depth: int):
    """(node, distance) for nodes up to `depth` consumers downstream."""
    out, seen = [], set()
    frontier = list(nodes)
    for d in range(depth + 1):
        nxt = []
        for n in frontier:
            if id(n) in seen:
                continue
            seen.add(id(n))
            out.append((n, d))
            for v in n.outputs:
                nxt.extend(u for u, _ in v.uses)
        frontier = nxt
    return out


def _same_shape(a, b) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False
    try:
        return all(bool(x == y) for x, y in zip(a, b))
    except TypeError:
        return False
