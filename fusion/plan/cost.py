"""An analytical cost model for one kernel (a set of nodes run as one loop nest).

Roofline: time = max(flops / peak, bytes / bandwidth) + launch overhead, with
what fusion changes made explicit:

* bytes: a fused kernel reads its block inputs and writes its block outputs
  once; intermediates inside the block do not touch memory;
* recomputation: the code generator composes index functions, so a value
  inlined into the reads of a consumer is recomputed every time it is read
  (`recompute_rates`): an elementwise producer inlined into a MatMul's reads
  runs once per multiply-add, a Conv followed by a nearest-neighbour Resize
  runs the Conv once per Resize output;
* access order: a Shuffle inside a kernel with a Many-to-Many anchor makes
  the anchor read or write its data in permuted order (strided, not
  vectorizable): those bytes count `STRIDED_PENALTY` times.

The constants are rough on purpose: the model only has to rank "fused" against
"separate" for the same ops. Measurements through the real code generator
replace it (fusion.plan.profile.Measurer); the source of every number is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

from fusion.ir.graph import Graph, Node
from fusion.ops.table import Mapping
from fusion.plan.mapping import node_class, reads_per_output
from fusion.plan.types import block_io
from fusion.targets import Target

CLOCK_HZ = 2.0e9           # assumed core clock (targets do not record one)
DRAM_BYTES_PER_S = {"cpu": 15e9, "gpu": 25e9}
CACHE_SPEEDUP = 4.0        # a working set that fits in L2 streams this much faster
LAUNCH_S = {"cpu": 2e-6, "gpu": 10e-6}
STRIDED_PENALTY = 2.0


@dataclass
class KernelCost:
    flops: float
    extra_flops: float       # recomputation caused by fusing
    bytes: float
    time_s: float

    def to_json(self) -> dict:
        return {"flops": self.flops, "extra_flops": self.extra_flops, "bytes": self.bytes, "time_s": self.time_s}


def peak_flops(t: Target) -> float:
    return max(1, t.cores) * t.vector_lanes_f32 * 2 * CLOCK_HZ


def node_flops(n: Node) -> float:
    od = n.opdef
    if od is None:
        return 0.0
    try:
        return float(od.flops(n))
    except Exception:
        return 0.0


def _size(v) -> int:
    return v.size if v is not None and v.shape is not None and v.is_static else 1


def _nbytes(v) -> int:
    return v.nbytes if v is not None and v.shape is not None and v.is_static and v.dtype is not None else 0


def read_factor(consumer: Node, slot: int, cls: Mapping) -> float:
    """How many times the consumer reads each element of its input `slot`
    (averaged): 1 for One-to-One, Reorganize and Shuffle ops; from the index
    function for the others (a Conv reads each input element Cout*k*k times)."""
    if cls in (Mapping.O2O, Mapping.REORG, Mapping.SHUFFLE):
        return 1.0
    v = consumer.inputs[slot]
    per_out = reads_per_output(consumer).get(slot, 1.0)
    return max(1.0, per_out * _size(consumer.outputs[0]) / max(1, _size(v)))


def recompute_rates(graph: Graph, nodes: list[Node], classes: dict[int, Mapping] | None = None,
                    outputs: set[int] | None = None) -> dict[int, float]:
    """{id(node): evaluations per element of its output} when `nodes` run as
    one kernel. 1.0 means computed once; reads at the same index are shared
    (the code generator finds common subexpressions)."""
    inside = {id(n) for n in nodes}
    if outputs is None:
        _, outs = block_io(graph, nodes)
        outputs = {id(v) for v in outs}
    rate: dict[int, float] = {}
    for n in reversed(nodes):
        r = 1.0 if any(id(v) in outputs for v in n.outputs) else 0.0
        for v in n.outputs:
            for c, slot in v.uses:
                if id(c) in inside:
                    cc = classes[id(c)] if classes is not None else node_class(c)[0]
                    r = max(r, rate.get(id(c), 1.0) * read_factor(c, slot, cc))
        rate[id(n)] = max(r, 1.0)
    return rate


def kernel_cost(graph: Graph, nodes: list[Node], target: Target,
                classes: dict[int, Mapping] | None = None) -> KernelCost:
    ins, outs = block_io(graph, nodes)
    cls = classes if classes is not None else {id(n): node_class(n)[0] for n in nodes}
    rates = recompute_rates(graph, nodes, cls, {id(v) for v in outs})
    flops = extra = 0.0
    for n in nodes:
        f = node_flops(n)
        flops += f * rates[id(n)]
        extra += f * (rates[id(n)] - 1.0)
    in_bytes = sum(_nbytes(v) for v in ins)
    out_bytes = sum(_nbytes(v) for v in outs)
    moved = float(in_bytes + out_bytes)
    if len(nodes) > 1 and any(cls[id(n)] == Mapping.M2M for n in nodes):
        for n in nodes:
            if cls[id(n)] == Mapping.SHUFFLE:
                moved += (STRIDED_PENALTY - 1.0) * _nbytes(n.outputs[0])
    bw = DRAM_BYTES_PER_S.get(target.kind, 15e9)
    if moved <= max(target.l2_bytes, 1):
        bw *= CACHE_SPEEDUP
    t = max(flops / peak_flops(target), moved / bw) + LAUNCH_S.get(target.kind, 2e-6)
    return KernelCost(flops, extra, moved, t)


def compare(graph: Graph, first: list[Node], second: list[Node], target: Target,
            classes: dict[int, Mapping] | None = None, order: dict[int, int] | None = None) -> tuple[float, float]:
    """(fused seconds, separate seconds) for running first+second as one kernel
    versus as two. `order`: {id(node): topological position}, if the caller has it."""
    pos = order if order is not None else {id(n): k for k, n in enumerate(graph.nodes)}
    nodes = sorted(first + second, key=lambda n: pos[id(n)])
    fused = kernel_cost(graph, nodes, target, classes).time_s
    sep = kernel_cost(graph, first, target, classes).time_s + kernel_cost(graph, second, target, classes).time_s
    return fused, sep
