"""The fusion planner: DNNFusion's greedy seed-and-grow, with a reason for
every decision.

1. Seeds: unfused One-to-One ops, smallest intermediate result first (then
   the other fusible ops, so a chain of Reshapes or a lone Conv can grow too).
2. Grow the seed's block into its successors, recursively, then into its
   predecessors, recursively, one op at a time. Only ops still alone in their
   block are taken.
3. Merge adjacent blocks while the same rules allow it (an extension: it
   catches what the order of seeds left apart, e.g. an elementwise tail that
   became its own block before its anchor's block reached it).

Every attempt checks, in this order (the first failure is the reason):

* opaque      an op with no index function (NMS, TopK, control flow)
* two-anchors two Many-to-Many ops in one block
* never-pair  the fusion table says never (e.g. One-to-Many -> Many-to-Many)
* max-ops     the target's max ops per block
* cycle       the merged block would not be convex: some path leaves it and
              comes back (exact, on the graph of blocks)
* prologue-output  a value computed inside the anchor's reads (upstream of
              the anchor) is needed outside: it would have to be computed
              twice or in a second loop nest
* output-space block outputs with different element counts (no single loop
              nest computes them all)
* max-args    kernel arguments (tensor inputs + outputs) above the target's cap
* registers   estimated live values above the vector register file
* recompute   fusing makes an op run several times per element (inlined into
              a consumer that reads each element many times) and the cost
              model says the fused kernel is slower
* profile-slower  a "(profile)" pair whose fused kernel measured (or
              estimated) slower than the separate ones

The cycle check keeps a topological order of the block graph and, for a merge
of blocks A -> B, searches only the blocks between them in that order
(Pearce-Kelly style): merges cost time proportional to the region they touch,
not to the graph.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from fusion.errors import FusionError
from fusion.ir.graph import Graph, Node, Value
from fusion.ops.table import Mapping
from fusion.plan import cost as C
from fusion.plan.mapping import node_class
from fusion.plan.profile import Candidate, ProfileDB
from fusion.plan.table import Rule, lookup
from fusion.plan.types import Block, Decision, Plan, block_io
from fusion.targets import Target, get_target


def _bytes(v: Value) -> int:
    return v.nbytes if v.shape is not None and v.is_static and v.dtype is not None else 0


def _elems(v: Value) -> int | None:
    return v.size if v.shape is not None and v.is_static else None


@dataclass
class _Attempt:
    fused: bool
    code: str
    reason: str


class Planner:
    def __init__(self, graph: Graph, target: Target, profile_db: ProfileDB | None = None,
                 merge_blocks: bool = True, progress=None):
        self.g = graph
        self.t = target
        self.db = profile_db
        self.merge_blocks = merge_blocks
        self.progress = progress
        nodes = graph.nodes
        self.nodes = nodes
        self.index = {id(n): i for i, n in enumerate(nodes)}
        self.cls: list[Mapping] = []
        self.cls_src: list[str] = []
        for n in nodes:
            c, s = node_class(n)
            self.cls.append(c)
            self.cls_src.append(s)
        self.cls_by_id = {id(n): self.cls[i] for i, n in enumerate(nodes)}
        # Data edges between nodes (constants and graph inputs are not edges).
        self.edges: list[tuple[int, int, Value]] = []
        self.cons: list[list[tuple[int, Value]]] = [[] for _ in nodes]
        self.prods: list[list[tuple[int, Value]]] = [[] for _ in nodes]
        for j, n in enumerate(nodes):
            seen = set()
            for v in n.all_inputs():
                p = v.producer
                if p is None or id(p) not in self.index or (id(p), id(v)) in seen:
                    continue
                seen.add((id(p), id(v)))
                i = self.index[id(p)]
                self.edges.append((i, j, v))
                self.cons[i].append((j, v))
                self.prods[j].append((i, v))
        # Block graph: one block per node to start with.
        N = len(nodes)
        self.blk = list(range(N))
        self.members: dict[int, list[int]] = {i: [i] for i in range(N)}
        self.succ: dict[int, set[int]] = {i: {j for j, _ in self.cons[i]} for i in range(N)}
        self.pred: dict[int, set[int]] = {i: {j for j, _ in self.prods[i]} for i in range(N)}
        self.order: list[int | None] = list(range(N))
        self.pos: dict[int, int] = {i: i for i in range(N)}
        self.bclass: dict[int, Mapping] = {i: self.cls[i] for i in range(N)}
        self.anchors: dict[int, list[int]] = {i: [i] if self.cls[i] == Mapping.M2M else [] for i in range(N)}
        self.attempts: dict[tuple[int, int, int], _Attempt] = {}
        self.join_reason: dict[int, str] = {}   # block id -> last reason it grew
        self.graph_outs = {id(v) for v in graph.outputs}
        # small integer tensors whose elements size later tensors (shape_infer.resolve_value_dims):
        # model_run reads them between kernels, so each is stored by the block computing it
        self.stored = {id(v) for v, _ in (getattr(graph, "value_sources", None) or {}).values()}
        self.stats = {"attempts": 0, "merges": 0, "profile_lookups": 0}

    # ------------------------------------------------------------------ checks
    def _creates_cycle(self, a: int, b: int):
        """a -> b is an edge of the block graph. Is there another path a ~> b?
        Returns (blocking block or None, forward set F)."""
        pb = self.pos[b]
        seen: set[int] = set()
        stack = [x for x in self.succ[a] if x != b and self.pos[x] < pb]
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            if b in self.succ[x]:
                return x, seen
            for y in self.succ[x]:
                if y != b and y not in seen and self.pos[y] < pb:
                    stack.append(y)
        return None, seen

    def _backward(self, a: int, b: int) -> set[int]:
        pa = self.pos[a]
        seen: set[int] = set()
        stack = [x for x in self.pred[b] if x != a and self.pos[x] > pa]
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            for y in self.pred[x]:
                if y != a and y not in seen and self.pos[y] > pa:
                    stack.append(y)
        return seen

    def _sorted_nodes(self, idxs) -> list[Node]:
        return [self.nodes[i] for i in sorted(idxs)]

    def _registers(self, nodes: list[Node], has_anchor: bool) -> int:
        """Peak number of values live at once in the fused loop body (one
        vector register each), walking the block's ops in order."""
        inside = {id(n) for n in nodes}
        last_use: dict[int, int] = {}
        for k, n in enumerate(nodes):
            for v in n.all_inputs():
                if v.producer is not None and id(v.producer) in inside:
                    last_use[id(v)] = k
        live: set[int] = set()
        peak = 0
        for k, n in enumerate(nodes):
            operands = sum(1 for v in n.inputs if v is not None and not (v.const is not None and v.const.size == 1))
            peak = max(peak, len(live) + operands + 1)
            for v in n.inputs:
                if v is not None and last_use.get(id(v)) == k:
                    live.discard(id(v))
            for v in n.outputs:
                if id(v) in last_use:
                    live.add(id(v))
        return peak

    def _kernel_args(self, ins: list[Value], outs: list[Value]) -> int:
        # Scalar constants become literals in the kernel; everything else is a buffer argument.
        return sum(1 for v in ins if not (v.const is not None and v.const.size == 1)) + len(outs)

    def _upstream_of(self, anchor: int, inside: set[int]) -> set[int]:
        """Nodes of the block that feed the anchor (its prologue)."""
        out: set[int] = set()
        stack = [i for i, _ in self.prods[anchor] if i in inside]
        while stack:
            i = stack.pop()
            if i in out:
                continue
            out.add(i)
            stack.extend(p for p, _ in self.prods[i] if p in inside)
        return out

    def _label(self, b: int) -> str:
        ms = self.members[b]
        if len(ms) == 1:
            n = self.nodes[ms[0]]
            return f"{n.op} '{n.name}'"
        return f"block of {len(ms)} ops ({'+'.join(dict.fromkeys(self.nodes[i].op for i in ms[:4]))}" \
               f"{'...' if len(ms) > 4 else ''})"

    def check(self, a: int, b: int, defer_recompute: bool = False) -> tuple[_Attempt, Mapping | None]:
        """May block a (producer side) and block b (consumer side) be one block?"""
        ca, cb = self.bclass[a], self.bclass[b]
        la, lb = self._label(a), self._label(b)
        if ca == Mapping.OPAQUE or cb == Mapping.OPAQUE:
            op = self.nodes[self.members[a if ca == Mapping.OPAQUE else b][0]]
            return _Attempt(False, "opaque", f"opaque: {op.op} has no index function (not a loop nest); "
                                             f"it runs as its own kernel"), None
        for x, y in ((a, b), (b, a)) if self.stored else ():
            for i in self.members[x]:
                for j, v in self.cons[i]:
                    if id(v) in self.stored and self.blk[j] == y:
                        return _Attempt(False, "stored-size", f"stored-size: '{v.name}' sizes later tensors; it is "
                                                              f"stored, and read between kernels"), None
        if self.anchors[a] and self.anchors[b]:
            x, y = self.nodes[self.anchors[a][0]], self.nodes[self.anchors[b][0]]
            return _Attempt(False, "two-anchors", f"two-anchors: {x.op} '{x.name}' and {y.op} '{y.name}' are both "
                                                  f"Many-to-Many; a block has at most one"), None
        e = lookup(ca, cb)
        if e.rule == Rule.NEVER:
            return _Attempt(False, "never-pair", f"never-pair: {ca.short} -> {cb.short} ({la} -> {lb}) is never "
                                                 f"fused (fusion table)"), None
        na, nb = len(self.members[a]), len(self.members[b])
        if na + nb > self.t.max_block_ops:
            return _Attempt(False, "max-ops", f"max-ops: {na + nb} ops would exceed {self.t.max_block_ops} "
                                              f"per block ({self.t.name})"), None
        x, _ = self._creates_cycle(a, b)
        if x is not None:
            return _Attempt(False, "cycle", f"cycle: {la} also reaches {lb} through {self._label(x)}; "
                                            f"fusing would make a path leave the block and re-enter it"), None
        idxs = self.members[a] + self.members[b]
        nodes = self._sorted_nodes(idxs)
        ins, outs = block_io(self.g, nodes)
        anchors = self.anchors[a] + self.anchors[b]
        if anchors:
            up = self._upstream_of(anchors[0], set(idxs))
            for v in outs:
                if self.index[id(v.producer)] in up:
                    an = self.nodes[anchors[0]]
                    return _Attempt(False, "prologue-output",
                                    f"prologue-output: '{v.name}' would be computed inside the reads of {an.op} "
                                    f"'{an.name}' but is also needed outside the block"), None
        sizes = {_elems(v) for v in outs}
        if len(sizes) > 1 and None not in sizes:
            return _Attempt(False, "output-space", "output-space: block outputs would have different sizes ("
                            + ", ".join(f"{v.name}: {_elems(v)}" for v in outs[:4])
                            + "); one loop nest cannot compute them all"), None
        if self.t.max_kernel_args:
            n_args = self._kernel_args(ins, outs)
            if n_args > self.t.max_kernel_args:
                return _Attempt(False, "max-args", f"max-args: the fused kernel would take {n_args} arguments, "
                                                   f"more than {self.t.max_kernel_args} ({self.t.name})"), None
        budget = self.t.vector_registers - (self.t.vector_registers // 2 if anchors else 0)
        regs = self._registers(nodes, bool(anchors))
        if regs > budget:
            return _Attempt(False, "registers", f"registers: about {regs} values live at once, more than the "
                                                f"{budget} vector registers free{' beside the anchor' if anchors else ''}"
                                                f" ({self.t.name})"), None
        result = e.result
        why = f"{ca.short} + {cb.short} -> {result.short}"
        rates = C.recompute_rates(self.g, nodes, self.cls_by_id, {id(v) for v in outs})
        worst = max(nodes, key=lambda n: rates[id(n)] * (C.node_flops(n) > 0))
        if rates[id(worst)] > 1.0 and C.node_flops(worst) > 0:
            if defer_recompute:
                return _Attempt(False, "recompute",
                                f"recompute: {worst.op} '{worst.name}' would run {rates[id(worst)]:.0f}x per element; "
                                f"deferred until every block has grown (an epilogue costs nothing)"), None
            # The same question as a profile pair: is the fused kernel slower?
            fused, sep, src = self._measure(a, b, ca, cb)
            if fused > sep:
                return _Attempt(False, "recompute",
                                f"recompute: {worst.op} '{worst.name}' would run {rates[id(worst)]:.0f}x per element; "
                                f"fused {fused / sep:.1f}x slower ({src})"), None
            why += f"; recomputes {worst.op} {rates[id(worst)]:.0f}x, still {sep / fused:.1f}x faster ({src})"
            if e.rule == Rule.PROFILE:
                return _Attempt(True, "fused", why + " (profile pair)"), result
        if e.rule == Rule.PROFILE:
            fused, sep, src = self._measure(a, b, ca, cb)
            if fused > sep:
                return _Attempt(False, "profile-slower", f"profile-slower: {ca.short} -> {cb.short} fused "
                                                         f"{fused / sep:.1f}x slower ({src})"), None
            return _Attempt(True, "fused", why + f" (profile: fused {sep / max(fused, 1e-12):.1f}x faster, "
                                                 f"{src})"), result
        return _Attempt(True, "fused", why + " (always)"), result

    def _measure(self, a: int, b: int, ca: Mapping, cb: Mapping) -> tuple[float, float, str]:
        """(fused s, separate s, source) for blocks a and b: from the profile
        database (measuring when it has no value), else the cost model."""
        fa, fb = self._sorted_nodes(self.members[a]), self._sorted_nodes(self.members[b])
        if self.db is None:
            fused, sep = C.compare(self.g, fa, fb, self.t, self.cls_by_id, self.index)
            return fused, sep, "cost model"
        self.stats["profile_lookups"] += 1
        m = self.db.lookup(Candidate(self.g, fa, fb, (ca, cb), self.t, self.cls_by_id))
        return m.fused_s, m.separate_s, m.source

    # ----------------------------------------------------------------- merging
    def _merge(self, a: int, b: int, keep: int, result: Mapping) -> int:
        """Merge block b into a (a -> b edge); the merged block gets id `keep`."""
        _, F = self._creates_cycle(a, b)
        Bk = self._backward(a, b)
        pa, pb = self.pos[a], self.pos[b]
        region = [x for x in self.order[pa + 1:pb] if x is not None]
        seq = [x for x in region if x in Bk] + [x for x in region if x not in Bk and x not in F] + [keep] + \
              [x for x in region if x in F]
        for k in range(pa, pb + 1):
            self.order[k] = None
        for k, x in enumerate(seq):
            self.order[pa + k] = x
            self.pos[x] = pa + k
        other = b if keep == a else a
        del self.pos[other]
        succ = (self.succ[a] | self.succ[b]) - {a, b}
        pred = (self.pred[a] | self.pred[b]) - {a, b}
        for x in self.succ[other]:
            if x in (a, b):
                continue
            self.pred[x].discard(other)
            self.pred[x].add(keep)
        for x in self.pred[other]:
            if x in (a, b):
                continue
            self.succ[x].discard(other)
            self.succ[x].add(keep)
        self.succ[keep], self.pred[keep] = succ, pred
        del self.succ[other], self.pred[other]
        self.members[keep] = sorted(self.members[a] + self.members[b])
        for i in self.members[other]:
            self.blk[i] = keep
        del self.members[other]
        self.anchors[keep] = self.anchors[a] + self.anchors[b]
        del self.anchors[other]
        self.bclass[keep] = result
        del self.bclass[other]
        self.stats["merges"] += 1
        return keep

    def try_edge(self, i: int, j: int, v: Value, keep_side: str, defer_recompute: bool = False) -> bool:
        """Try to fuse along the edge node i -> node j. keep_side: which
        block's id survives ('producer' or 'consumer')."""
        a, b = self.blk[i], self.blk[j]
        if a == b:
            return False
        self.stats["attempts"] += 1
        att, result = self.check(a, b, defer_recompute)
        self.attempts[(i, j, id(v))] = att
        if not att.fused:
            return False
        keep = a if keep_side == "producer" else b
        self._merge(a, b, keep, result)
        return True

    # ------------------------------------------------------------------- phases
    def _alone(self, i: int) -> bool:
        return len(self.members[self.blk[i]]) == 1

    def grow(self, seed: int) -> None:
        b = self.blk[seed]
        queue = deque(self.members[b])
        while queue:  # successors, recursively
            n = queue.popleft()
            for j, v in self.cons[n]:
                if self.blk[j] != self.blk[n] and self._alone(j):
                    if self.try_edge(n, j, v, "producer", defer_recompute=True):
                        queue.append(j)
        queue = deque(self.members[self.blk[seed]])
        while queue:  # then predecessors, recursively
            n = queue.popleft()
            for i, v in self.prods[n]:
                if self.blk[i] != self.blk[n] and self._alone(i):
                    if self.try_edge(i, n, v, "consumer", defer_recompute=True):
                        queue.append(i)

    def seeds(self) -> list[int]:
        def key(i):
            c = self.cls[i]
            tier = 0 if c == Mapping.O2O else 1 if c in (Mapping.REORG, Mapping.SHUFFLE, Mapping.O2M) else 2
            return (tier, sum(_bytes(v) for v in self.nodes[i].outputs), i)
        return sorted((i for i in range(len(self.nodes)) if self.cls[i] != Mapping.OPAQUE), key=key)

    def run(self) -> None:
        seeds = self.seeds()
        prog = self.progress
        for k, s in enumerate(seeds):
            if self._alone(s):
                self.grow(s)
            if prog is not None and k % 200 == 0:
                prog.step(f"seed {k}", 200)
        if self.merge_blocks:
            for _ in range(4):
                merged = 0
                for i, j, v in self.edges:
                    if self.blk[i] != self.blk[j] and self.try_edge(i, j, v, "producer"):
                        merged += 1
                if not merged:
                    break

    # ------------------------------------------------------------------ result
    def result(self) -> Plan:
        blocks: list[Block] = []
        bid_of: dict[int, int] = {}
        for b in self.order:
            if b is None:
                continue
            nodes = self._sorted_nodes(self.members[b])
            ins, outs = block_io(self.g, nodes)
            out_ids = {id(v) for v in outs}
            saved = sum(_bytes(v) for n in nodes for v in n.outputs
                        if id(v) not in out_ids and id(v) not in self.graph_outs)
            anchor = self.nodes[self.anchors[b][0]] if self.anchors[b] else None
            opaque = self.bclass[b] == Mapping.OPAQUE
            bid_of[b] = len(blocks)
            blocks.append(Block(len(blocks), nodes, anchor, self.bclass[b], ins, outs, saved, opaque=opaque))
        decisions = []
        for i, j, v in self.edges:
            p, c = self.nodes[i], self.nodes[j]
            att = self.attempts.get((i, j, id(v)))
            same = self.blk[i] == self.blk[j]
            if same:
                if att is not None and att.fused:
                    decisions.append(Decision(p, c, v, True, "fused", att.reason))
                else:
                    decisions.append(Decision(p, c, v, True, "fused", f"fused: both ops joined block "
                                                                      f"b{bid_of[self.blk[i]]} through other edges"))
            elif att is not None and not att.fused:
                decisions.append(Decision(p, c, v, False, att.code, att.reason))
            else:
                decisions.append(Decision(p, c, v, False, "other-block",
                                          f"other-block: {p.op} is in b{bid_of[self.blk[i]]}, {c.op} in "
                                          f"b{bid_of[self.blk[j]]}; merging them was not tried"))
        return Plan(self.g, blocks, decisions, self.t.name)


def plan(graph: Graph, target: str | Target = "host", *, profile_db: ProfileDB | str | None = None,
         merge_blocks: bool = True, max_block_ops: int | None = None, max_kernel_args: int | None = None,
         progress=None) -> Plan:
    """Fuse `graph` for `target`: blocks, each with its anchor and class, and a
    reason for every fused or refused edge.

    profile_db: a ProfileDB, a path, or None for the default database
    ($FUSION_CACHE/profile.json or ~/.cache/fusion/profile.json); False: no
    database, the cost model decides and nothing is stored."""
    if not isinstance(graph, Graph):
        raise FusionError(f"fusion.plan expects a fusion Graph (fusion.load(...)), got {type(graph).__name__}")
    t = target if isinstance(target, Target) else get_target(target)
    over = {}
    if max_block_ops is not None:
        over["max_block_ops"] = max_block_ops
    if max_kernel_args is not None:
        over["max_kernel_args"] = max_kernel_args
    if over:
        from dataclasses import replace
        t = replace(t, **over)
    if profile_db is False:
        db = None
    elif isinstance(profile_db, ProfileDB):
        db = profile_db
    else:
        db = ProfileDB(profile_db)
    t0 = time.perf_counter()
    p = Planner(graph, t, db, merge_blocks=merge_blocks, progress=progress)
    p.run()
    result = p.result()
    result.stats.update(p.stats, seconds=round(time.perf_counter() - t0, 3))
    if db is not None:
        db.save()   # new measurements are kept for the next run (merged with concurrent writers)
    return result
