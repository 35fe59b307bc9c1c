"""Check a Plan against the rules the planner promises (tests and codegen use
it): every node in exactly one block, blocks listed in dependence order (so
no cycle among blocks and every block convex), at most one Many-to-Many
anchor per block, no opaque op fused, the target's limits kept, and a
decision for every data edge."""
from __future__ import annotations

from fusion.errors import FusionError
from fusion.ops.table import Mapping
from fusion.plan.mapping import node_class
from fusion.plan.types import Plan, block_io
from fusion.targets import Target, get_target


def verify_plan(plan: Plan, target: Target | str | None = None) -> None:
    g = plan.graph
    t = target if isinstance(target, Target) else get_target(target or plan.target)
    where: dict[int, int] = {}
    for k, b in enumerate(plan.blocks):
        for n in b.nodes:
            if id(n) in where:
                raise FusionError(f"plan: {n.label()} is in two blocks")
            where[id(n)] = k
    for n in g.nodes:
        if id(n) not in where:
            raise FusionError(f"plan: {n.label()} is in no block")
    for k, b in enumerate(plan.blocks):
        for n in b.nodes:
            for v in n.all_inputs():
                p = v.producer
                if p is not None and id(p) in where and where[id(p)] > k:
                    raise FusionError(f"plan: block b{b.id} reads '{v.name}' from a later block "
                                      f"(blocks out of order, or a cycle among blocks)")
        anchors = [n for n in b.nodes if node_class(n)[0] == Mapping.M2M]
        if len(anchors) > 1:
            raise FusionError(f"plan: block b{b.id} has {len(anchors)} Many-to-Many anchors")
        if len(b.nodes) > 1 and any(node_class(n)[0] == Mapping.OPAQUE for n in b.nodes):
            raise FusionError(f"plan: block b{b.id} fuses an opaque op")
        if len(b.nodes) > t.max_block_ops:
            raise FusionError(f"plan: block b{b.id} has {len(b.nodes)} ops (max {t.max_block_ops})")
        ins, outs = block_io(g, b.nodes)
        if {id(v) for v in ins} != {id(v) for v in b.inputs} or {id(v) for v in outs} != {id(v) for v in b.outputs}:
            raise FusionError(f"plan: block b{b.id} lists inputs/outputs that differ from its nodes'")
        if t.max_kernel_args and len(b.nodes) > 1:
            n_args = sum(1 for v in ins if not (v.const is not None and v.const.size == 1)) + len(outs)
            if n_args > t.max_kernel_args:
                raise FusionError(f"plan: block b{b.id} takes {n_args} kernel arguments (max {t.max_kernel_args})")
    edges = {(id(v.producer), id(n), id(v)) for n in g.nodes for v in n.all_inputs()
             if v.producer is not None and id(v.producer) in where}
    decided = {(id(d.producer), id(d.consumer), id(d.value)) for d in plan.decisions}
    missing = edges - decided
    if missing:
        raise FusionError(f"plan: {len(missing)} data edges have no decision")
    for d in plan.decisions:
        same = where[id(d.producer)] == where[id(d.consumer)]
        if d.fused != same or not d.reason:
            raise FusionError(f"plan: decision for {d.producer.name} -> {d.consumer.name} disagrees with the blocks")
