"""Golden tests for the planner: small graphs in, expected blocks out.

Blocks are written as op chains in block order, e.g. ["Conv+Add+Relu", "MatMul"].
"""
import numpy as np
import pytest

import fusion
from fusion.ir.builder import GraphBuilder
from fusion.plan import verify_plan
from fusion.plan.profile import Measurement, Measurer, ProfileDB


def blocks(plan):
    return ["+".join(n.op for n in b.nodes) for b in plan.blocks]


def refused(plan):
    return sorted((d.producer.op, d.consumer.op, d.code) for d in plan.refused)


class Fixed(Measurer):
    """A measurer that reports the same fused/separate ratio for everything."""
    source = "test"

    def __init__(self, ratio):
        self.ratio = ratio
        self.calls = 0

    def measure(self, cand):
        self.calls += 1
        return Measurement(self.ratio, 1.0, "test")


def plan_of(g, ratio=0.5, tmp_path=None, **kw):
    db = ProfileDB(str(tmp_path / "p.json") if tmp_path else "/nonexistent/p.json", Fixed(ratio),
                   readonly=tmp_path is None)
    p = fusion.plan(g, kw.pop("target", "host"), profile_db=db, **kw)
    verify_plan(p, kw.get("target"))
    return p


# ---------------------------------------------------------------------------
# Every pair of the fusion table: first op -> second op, nothing else.
# One op per class, for a tensor t of any shape:
#   O2O Relu | O2M Mul by a [.., 1, 1] graph input (broadcast, not a constant)
#   M2M ReduceSum over the last axis | Reorg Reshape merging the last two axes
#   Shuffle Transpose of the last two axes

def _apply(b, cls, t):
    shape = t.shape
    if cls == "O2O":
        return b.relu(t)
    if cls == "O2M":
        s = b.input(f"s{len(b.graph.inputs)}", "float32", list(shape[:-2]) + [1] * 2)
        return b.mul(t, s)
    if cls == "M2M":
        return b.reduce_sum(t, np.array([-1]), keepdims=1)
    if cls == "Reorg":
        return b.reshape(t, np.array(list(shape[:-2]) + [-1]))
    if cls == "Shuffle":
        r = len(shape)
        return b.transpose(t, perm=list(range(r - 2)) + [r - 1, r - 2])
    raise ValueError(cls)


def _pair_graph(first, second):
    b = GraphBuilder(f"{first}_{second}")
    x = b.input("x", "float32", [1, 4, 8, 8])
    b.output(_apply(b, second, _apply(b, first, x)))
    return b.build()


# first, second, blocks when a profile says fused is faster, ... when slower
PAIRS = """
O2O     O2O      1  1
O2O     O2M      1  1
O2O     M2M      1  1
O2O     Reorg    1  1
O2O     Shuffle  1  1
O2M     O2O      1  1
O2M     O2M      1  1
O2M     M2M      2  2
O2M     Reorg    1  2
O2M     Shuffle  1  2
M2M     O2O      1  1
M2M     O2M      1  2
M2M     M2M      2  2
M2M     Reorg    1  2
M2M     Shuffle  1  2
Reorg   O2O      1  1
Reorg   O2M      1  2
Reorg   M2M      1  2
Reorg   Reorg    1  1
Reorg   Shuffle  1  1
Shuffle O2O      1  1
Shuffle O2M      1  2
Shuffle M2M      1  2
Shuffle Reorg    1  1
Shuffle Shuffle  1  1
"""
PAIR_ROWS = [ln.split() for ln in PAIRS.strip().splitlines()]


@pytest.mark.parametrize("first,second,faster,slower", PAIR_ROWS, ids=[f"{r[0]}-{r[1]}" for r in PAIR_ROWS])
def test_every_class_pair(first, second, faster, slower):
    g = _pair_graph(first, second)
    for ratio, want in ((0.5, faster), (1.5, slower)):
        p = plan_of(g, ratio)
        assert len(p.blocks) == int(want), (ratio, blocks(p), [d.reason for d in p.refused])
        (d,) = p.decisions
        if want == "2":
            code = {("O2M", "M2M"): "never-pair", ("M2M", "M2M"): "two-anchors"}.get((first, second), "profile-slower")
            assert d.code == code, d.reason
        if d.code == "profile-slower":
            assert "1.5x slower (test)" in d.reason


def test_profile_pairs_are_measured_once_and_stored(tmp_path):
    g = _pair_graph("M2M", "Shuffle")
    m = Fixed(0.8)
    db = ProfileDB(str(tmp_path / "p.json"), m)
    p = fusion.plan(g, profile_db=db)
    assert blocks(p) == ["ReduceSum+Transpose"]
    assert "profile: fused 1.2x faster, test" in p.decisions[0].reason
    db.save()
    again = ProfileDB(str(tmp_path / "p.json"), m)
    fusion.plan(g, profile_db=again)
    assert m.calls == 1 and again.hits == 1


# ---------------------------------------------------------------------------
# Whole graphs

def test_conv_bias_relu_residual():
    b = GraphBuilder()
    x = b.input("x", "float32", [1, 8, 16, 16])
    w = np.full((8, 8, 3, 3), 0.01, np.float32)
    y = b.relu(b.add(b.conv(x, w, pads=[1, 1, 1, 1]), np.ones((8, 1, 1), np.float32)))
    z = b.relu(b.add(b.conv(y, w, pads=[1, 1, 1, 1]), y))
    b.output(z)
    p = plan_of(b.build())
    assert blocks(p) == ["Conv+Add+Relu", "Conv+Add+Relu"]
    # The bias is a constant broadcast: One-to-One, fused "always".
    assert p.blocks[0].anchor.op == "Conv" and p.blocks[0].mapping.short == "M2M"
    assert p.blocks[0].to_json()["roles"] == ["anchor", "epilogue", "epilogue"]
    assert refused(p) == [("Relu", "Add", "two-anchors"), ("Relu", "Conv", "two-anchors")]


def test_multi_output_block_when_an_intermediate_is_needed_outside():
    b = GraphBuilder()
    x, y = b.input("x", "float32", [4, 8]), b.input("y", "float32", [4, 8])
    a = b.add(x, y)
    b.output(b.relu(a), a)
    p = plan_of(b.build())
    assert blocks(p) == ["Add+Relu"]
    assert [v.name for v in p.blocks[0].outputs] == [p.graph.outputs[1].name, p.graph.outputs[0].name]


def test_cycle_through_an_opaque_op_is_refused():
    b = GraphBuilder()
    x = b.input("x", "float32", [4, 8])
    a = b.relu(x)
    node = b.graph.add_node("PlanTestOpaque", [a], domain="test.plan", infer=False)
    u = node.outputs[0]
    u.dtype, u.shape = np.dtype("float32"), (4, 8)
    b.output(b.add(a, u))
    p = plan_of(b.build(verify=False))  # verify() rejects ops outside the op table
    assert blocks(p) == ["Relu", "PlanTestOpaque", "Add"]
    assert refused(p) == [("PlanTestOpaque", "Add", "opaque"), ("Relu", "Add", "cycle"),
                          ("Relu", "PlanTestOpaque", "opaque")]
    assert p.blocks[1].opaque


def test_cycle_through_another_block():
    # Sigmoid feeds a MatMul chain and the final Add; fusing it with the Add
    # would wrap the MatMuls' blocks inside. (Nor can it be the first MatMul's
    # prologue: the Add needs it too.)
    b = GraphBuilder()
    x = b.input("x", "float32", [4, 8])
    a = b.sigmoid(x)
    m = b.matmul(b.matmul(a, np.eye(8, dtype=np.float32)), np.eye(8, dtype=np.float32))
    b.output(b.add(a, m))
    p = plan_of(b.build())
    assert blocks(p) == ["Sigmoid", "MatMul", "MatMul+Add"]
    assert refused(p) == [("MatMul", "MatMul", "two-anchors"), ("Sigmoid", "Add", "cycle"),
                          ("Sigmoid", "MatMul", "prologue-output")]


def test_prologue_output_is_refused():
    # Relu inlined into the ReduceSum's reads cannot also be stored for the
    # graph output by the same loop nest.
    b = GraphBuilder()
    x = b.input("x", "float32", [4, 8])
    r = b.relu(x)
    b.output(b.reduce_sum(r, np.array([1])), r)
    p = plan_of(b.build())
    assert blocks(p) == ["Relu", "ReduceSum"]
    assert refused(p) == [("Relu", "ReduceSum", "prologue-output")]


def test_prologue_without_recompute_is_fused():
    b = GraphBuilder()
    x = b.input("x", "float32", [4, 8])
    b.output(b.reduce_sum(b.exp(x), np.array([1])))
    p = plan_of(b.build())
    assert blocks(p) == ["Exp+ReduceSum"]
    assert p.blocks[0].to_json()["roles"] == ["prologue", "anchor"]


def test_outputs_of_different_sizes_are_refused():
    b = GraphBuilder()
    x, y = b.input("x", "float32", [4, 8]), b.input("y", "float32", [4, 1])
    s = b.sigmoid(y)
    b.output(b.mul(x, s), s)
    p = plan_of(b.build())
    assert blocks(p) == ["Sigmoid", "Mul"]
    assert refused(p) == [("Sigmoid", "Mul", "output-space")]


def test_recompute_inside_a_big_anchor_is_refused():
    # Erf inlined into the MatMul's reads would run 512 times per element.
    b = GraphBuilder()
    x = b.input("x", "float32", [64, 512])
    b.output(b.matmul(b.erf(x), np.ones((512, 512), np.float32)))
    p = fusion.plan(b.build(), profile_db=False)   # the cost model decides
    assert blocks(p) == ["Erf", "MatMul"]
    (d,) = p.refused
    assert d.code == "recompute" and "512x per element" in d.reason and "cost model" in d.reason
    # A measurement overrides the model, as for profile pairs.
    assert blocks(plan_of(b.build(), ratio=0.9)) == ["Erf+MatMul"]


def test_epilogue_is_preferred_to_prologue():
    # Relu between two MatMuls joins the first one (applied at its store),
    # not the second (recomputed at every read).
    b = GraphBuilder()
    x = b.input("x", "float32", [8, 16])
    w = np.ones((16, 16), np.float32)
    b.output(b.matmul(b.relu(b.matmul(x, w)), w))
    assert blocks(plan_of(b.build())) == ["MatMul+Relu", "MatMul"]


def test_max_ops_per_block():
    b = GraphBuilder()
    t = b.input("x", "float32", [4, 8])
    for _ in range(6):
        t = b.relu(t)
    b.output(t)
    p = plan_of(b.build(), max_block_ops=4)
    assert [len(bl.nodes) for bl in p.blocks] in ([4, 2], [2, 4])
    assert [d.code for d in p.refused] == ["max-ops"]
    assert "exceed 4 per block" in p.refused[0].reason


def test_max_kernel_args():
    # Each Add reads one more input: with at most 4 arguments a block can hold
    # two Adds (3 inputs + 1 output).
    b = GraphBuilder()
    xs = [b.input(f"x{i}", "float32", [4, 8]) for i in range(5)]
    t = xs[0]
    for x in xs[1:]:
        t = b.add(t, x)
    b.output(t)
    g = b.build()
    assert blocks(plan_of(g)) == ["Add+Add+Add+Add"]
    p = plan_of(g, target="opencl", max_kernel_args=4)
    assert blocks(p) == ["Add+Add", "Add+Add"]
    assert [d.code for d in p.refused] == ["max-args"]
    assert "more than 4 (opencl)" in p.refused[0].reason


def test_register_pressure():
    # 20 values computed before any is consumed: more live values than the
    # 16 vector registers of an SSE/NEON-class target.
    b = GraphBuilder()
    x = b.input("x", "float32", [4, 8])
    ts = [b.add(x, np.float32(i)) for i in range(20)]
    t = ts[0]
    for u in ts[1:]:
        t = b.mul(t, u)
    b.output(t)
    p = plan_of(b.build(), target="opencl")  # 16 vector registers
    assert len(p.blocks) > 1
    assert "registers" in {d.code for d in p.refused}
    assert any("vector registers" in d.reason for d in p.refused)


def test_opaque_ops_are_never_fused_but_planned():
    b = GraphBuilder()
    x = b.input("x", "float32", [4, 8])
    node = b.graph.add_node("PlanTestOpaque", [b.relu(x)], domain="test.plan", infer=False)
    u = node.outputs[0]
    u.dtype, u.shape = np.dtype("float32"), (4, 8)
    b.output(b.relu(u))
    p = plan_of(b.build(verify=False))
    assert blocks(p) == ["Relu", "PlanTestOpaque", "Relu"]
    assert all(d.code == "opaque" for d in p.refused) and len(p.refused) == 2


def test_every_edge_has_a_reason_and_json_has_the_contract_keys():
    from fusion.plan.synthetic import bert_like
    p = plan_of(bert_like(1))
    j = p.to_json()
    assert {"nodes", "blocks", "refused", "blocks_detail"} <= set(j)
    assert j["nodes"] == len(p.graph.nodes) and j["blocks"] == len(p.blocks)
    assert all(d["reason"] for d in j["refused"] + j["fused"])
    before, after = p.intermediate_bytes()
    assert after < before


def test_no_merge_phase_gives_more_or_equal_blocks():
    from fusion.plan.synthetic import bert_like, resnet_like
    for g in (bert_like(1), resnet_like()):
        assert len(plan_of(g, merge_blocks=False).blocks) >= len(plan_of(g).blocks)


@pytest.mark.parametrize("seed", range(40))
def test_random_dags_give_valid_plans(seed):
    # Random DAGs of shape-preserving ops with many cross edges: every block
    # must be convex and the blocks must have a dependence order
    # (verify_plan checks both, and that every edge has a decision).
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    vals = [b.input("x", "float32", [4, 8]), b.input("y", "float32", [4, 8])]
    w = np.full((8, 8), 0.1, np.float32)
    for _ in range(int(rng.integers(5, 40))):
        pick = lambda: vals[int(rng.integers(max(0, len(vals) - 8), len(vals)))]  # noqa: E731
        k = int(rng.integers(0, 6))
        if k == 0:
            vals.append(b.relu(pick()))
        elif k == 1:
            vals.append(b.add(pick(), pick()))
        elif k == 2:
            vals.append(b.mul(pick(), pick()))
        elif k == 3:
            vals.append(b.matmul(pick(), w))
        elif k == 4:
            vals.append(b.softmax(pick(), axis=-1))
        else:
            vals.append(b.sub(pick(), b.reduce_mean(pick(), np.array([1]))))
    b.output(*[v for v in vals[2:] if not v.uses])
    g = b.build()
    for kw in ({}, {"max_block_ops": 3}, {"merge_blocks": False}):
        p = plan_of(g, ratio=float(rng.choice([0.5, 1.5])), **kw)
        assert sum(len(bl.nodes) for bl in p.blocks) == len(g.nodes)
