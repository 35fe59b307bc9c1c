"""What the planner hands to code generation: a Plan of Blocks, with reasons.

This file is the contract between fusion/plan and fusion/codegen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fusion.ir.graph import Graph, Node, Value
from fusion.ops.table import Mapping


@dataclass
class Block:
    """Nodes that become one fused kernel (one loop nest)."""
    id: int
    nodes: list[Node]                 # topological order within the block
    anchor: Node | None = None        # the block's Many-to-Many op, if any (at most one)
    mapping: Mapping = Mapping.O2O    # class of the fused block (fusion table result)
    inputs: list[Value] = field(default_factory=list)    # read from outside: graph inputs, constants, other blocks
    outputs: list[Value] = field(default_factory=list)   # needed outside: graph outputs or read by other blocks
    saved_bytes: int = 0              # bytes of intermediates that no longer go through memory
    opaque: bool = False              # an opaque op alone (NMS, TopK, control flow): runtime kernel

    @property
    def name(self) -> str:
        ops = []
        for n in self.nodes:
            if n.op not in ops:
                ops.append(n.op)
        return f"b{self.id}_" + "_".join(ops[:4]) + ("_etc" if len(ops) > 4 else "")

    def roles(self) -> dict[int, str]:
        """{id(node): "prologue" | "anchor" | "epilogue"}: prologue ops feed the
        anchor (inline them into its reads), epilogue ops consume it (apply
        them at its store). Without an anchor every op is "epilogue"."""
        if self.anchor is None:
            return {id(n): "epilogue" for n in self.nodes}
        inside = {id(n) for n in self.nodes}
        up: set[int] = set()
        stack = [self.anchor]
        while stack:
            n = stack.pop()
            for v in n.all_inputs():
                p = v.producer
                if p is not None and id(p) in inside and id(p) not in up:
                    up.add(id(p))
                    stack.append(p)
        return {id(n): "anchor" if n is self.anchor else "prologue" if id(n) in up else "epilogue"
                for n in self.nodes}

    def to_json(self) -> dict:
        roles = self.roles()
        return {"id": self.id, "name": self.name, "ops": [n.op for n in self.nodes],
                "nodes": [n.name for n in self.nodes],
                "anchor": self.anchor.name if self.anchor is not None else None,
                "class": self.mapping.short, "opaque": self.opaque,
                "inputs": [v.name for v in self.inputs], "outputs": [v.name for v in self.outputs],
                "saved_bytes": self.saved_bytes,
                "roles": [roles[id(n)] for n in self.nodes]}


@dataclass
class Decision:
    """Why an edge producer -> consumer was fused or not."""
    producer: Node
    consumer: Node
    value: Value
    fused: bool
    code: str        # fused | never-pair | cycle | two-anchors | opaque | max-ops | max-args | registers | profile-slower | ...
    reason: str      # one human sentence, e.g. "profile: fused kernel 1.3x slower (measured, host)"

    def to_json(self) -> dict:
        return {"producer": self.producer.name, "producer_op": self.producer.op,
                "consumer": self.consumer.name, "consumer_op": self.consumer.op,
                "value": self.value.name, "fused": self.fused, "code": self.code, "reason": self.reason}


@dataclass
class Plan:
    graph: Graph
    blocks: list[Block]               # in an order that respects data dependences
    decisions: list[Decision] = field(default_factory=list)
    target: str = "host"
    stats: dict = field(default_factory=dict)   # planner counters (attempts, merges, seconds)

    def block_of(self) -> dict[int, Block]:
        return {id(n): b for b in self.blocks for n in b.nodes}

    @property
    def refused(self) -> list[Decision]:
        return [d for d in self.decisions if not d.fused]

    def intermediate_bytes(self) -> tuple[int, int]:
        """(before, after): bytes of intermediate results (computed values that
        are not graph outputs) written to memory unfused, and with this plan
        (only values crossing block boundaries)."""
        graph_outs = {id(v) for v in self.graph.outputs}

        def nb(v):
            return v.nbytes if v.shape is not None and v.is_static and v.dtype is not None else 0
        before = sum(nb(v) for n in self.graph.nodes for v in n.outputs if id(v) not in graph_outs)
        after = sum(nb(v) for b in self.blocks for v in b.outputs if id(v) not in graph_outs)
        return before, after

    def to_json(self) -> dict:
        before, after = self.intermediate_bytes()
        return {"nodes": len(self.graph.nodes), "blocks": len(self.blocks), "target": self.target,
                "fusion_rate": round(len(self.graph.nodes) / max(len(self.blocks), 1), 3),
                "intermediate_bytes": {"before": before, "after": after}, "stats": dict(self.stats),
                "refused": [d.to_json() for d in self.refused],
                "fused": [d.to_json() for d in self.decisions if d.fused],
                "blocks_detail": [b.to_json() for b in self.blocks]}


def block_io(graph: Graph, nodes: list[Node]) -> tuple[list[Value], list[Value]]:
    """Inputs read from outside `nodes` and outputs needed outside them."""
    inside = {id(n) for n in nodes}
    produced = {id(v) for n in nodes for v in n.outputs}
    ins: dict[int, Value] = {}
    for n in nodes:
        for v in n.all_inputs():
            if id(v) not in produced:
                ins.setdefault(id(v), v)
    graph_outs = {id(v) for v in graph.outputs}
    outs = []
    for n in nodes:
        for v in n.outputs:
            if id(v) in graph_outs or any(id(c) not in inside for c, _ in v.uses):
                outs.append(v)
    return list(ins.values()), outs


def nodes_subgraph(graph: Graph, nodes: list[Node], inputs: list[Value], outputs: list[Value],
                   name: str) -> tuple[Graph, dict[int, Node]]:
    """A standalone graph of `nodes` (in topological order): `inputs` read from
    outside become graph inputs (constants stay constants), `outputs` the graph
    outputs. Returns the graph and {id(original node): new node}. Used to time a
    fusion candidate and to check one block alone."""
    h = Graph(name, dict(graph.opset))
    vmap: dict[int, Value] = {}
    for v in inputs:
        if v.const is not None:
            vmap[id(v)] = h.const(v.const, v.name)
        else:
            w = h.add_input(v.name, v.dtype, v.shape)
            w.known = v.known
            vmap[id(v)] = w
    nmap: dict[int, Node] = {}
    for n in nodes:
        outs = []
        for v in n.outputs:
            w = Value(v.name, v.dtype, v.shape)
            w.known = v.known
            vmap[id(v)] = w
            outs.append(w)
        m = Node(n.op, [vmap[id(v)] if v is not None else None for v in n.inputs], outs,
                 dict(n.attrs), n.name, n.domain)
        h._attach(m)
        nmap[id(n)] = m
    h.outputs = [vmap[id(v)] for v in outputs]
    return h, nmap


def unfused_plan(graph: Graph, target: str = "host") -> Plan:
    """Every node its own block: the baseline, and a fallback for debugging."""
    from fusion.ops import get_op
    blocks = []
    for k, n in enumerate(graph.nodes):
        od = get_op(n.op, n.domain)
        m = od.mapping_of(n) if od is not None else Mapping.OPAQUE
        ins, outs = block_io(graph, [n])
        blocks.append(Block(k, [n], n if m == Mapping.M2M else None, m, ins, outs, 0,
                            opaque=od is None or od.opaque))
    return Plan(graph, blocks, [], target)
