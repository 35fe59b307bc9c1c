"""Structural passes, golden style: constant folding, no-op removal,
Transpose/Reshape merging, CSE, shape-arithmetic folding, dead code. Each
checks the graph after the pass, `verify()`, and that outputs are unchanged."""
import numpy as np

import fusion
from fusion.ir.builder import GraphBuilder
from fusion.ir.interpreter import run
from fusion.oracle import compare, random_inputs
from fusion.rewrite import structural as S
from fusion.rewrite.textform import graph_text

F = np.float32


def build(fn, shape=(2, 3, 4)):
    b = GraphBuilder("g")
    x = b.input("x", "float32", shape)
    b.output(fn(b, x), names=["y"])
    return b.build()


def same_outputs(g0, g1):
    g1.verify()
    feeds = random_inputs(g0, seed=1)
    assert compare(run(g1, feeds), run(g0, feeds)).ok


def test_constant_folding_through_the_interpreter():
    w = np.arange(6, dtype=F).reshape(2, 3)
    g = build(lambda b, x: b.matmul(x, b.transpose(b.mul(w, F(2)), perm=[1, 0])), (4, 3))
    h = g.copy()
    assert S.fold_constants(h) == 2
    assert graph_text(h) == "y = MatMul(x, [0,6,2,8,4,10])"   # (w*2)^T
    np.testing.assert_array_equal(h.nodes[0].inputs[1].const, (w * 2).T)
    same_outputs(g, h)


def test_folding_does_not_blow_up_constants():
    g = build(lambda b, x: b.add(x, b.expand(F(1), np.array([64, 128, 128]))), (64, 128, 128))
    h = g.copy()
    assert S.fold_constants(h) == 0   # a 1M-element Expand of a scalar stays an Expand


def test_noops_removed():
    def f(b, x):
        y = b.identity(x)
        y = b.dropout(y)
        y = b.cast(y, to=1)                                # float32 -> float32
        y = b.reshape(y, np.array([2, 3, 4]))
        y = b.expand(y, np.array([2, 3, 4]))
        y = b.transpose(y, perm=[0, 1, 2])
        y = b.slice(y, np.array([0]), np.array([100]), np.array([1]))
        return b.relu(y)
    g = build(f)
    h = g.copy()
    assert S.remove_noops(h) == 7
    h.remove_dead()
    assert graph_text(h) == "y = Relu(x)"
    same_outputs(g, h)


def test_output_name_kept_when_a_noop_is_the_output():
    g = build(lambda b, x: b.identity(b.relu(x)))
    h = fusion.rewrite(g)
    assert [v.name for v in h.outputs] == ["y"] and graph_text(h) == "y = Relu(x)"
    g = build(lambda b, x: b.identity(x))   # the output is the input: an Identity must stay
    h = fusion.rewrite(g)
    assert [v.name for v in h.outputs] == ["y"]
    same_outputs(g, h)


def test_transpose_and_reshape_chains_merge():
    g = build(lambda b, x: b.relu(b.transpose(b.transpose(x, perm=[1, 0, 2]), perm=[0, 2, 1])))
    h = g.copy()
    assert S.merge_reorganize(h) == 1
    assert graph_text(h) == "y = Relu(Transpose(x; perm=[1, 2, 0]))"
    same_outputs(g, h)
    g = build(lambda b, x: b.relu(b.transpose(b.transpose(x, perm=[1, 0, 2]), perm=[1, 0, 2])))
    h = fusion.rewrite(g)
    assert graph_text(h) == "y = Relu(x)"
    g = build(lambda b, x: b.relu(b.unsqueeze(b.reshape(b.flatten(x, axis=1), np.array([6, 4])), np.array([0]))))
    h = g.copy()
    assert S.merge_reorganize(h) == 2
    assert graph_text(h) == "y = Relu(Reshape(x, [1,6,4]))"
    same_outputs(g, h)


def test_cse_merges_equal_nodes_and_constants():
    def f(b, x):
        a = b.exp(b.add(x, F(1)))
        c = b.exp(b.add(x, F(1)))      # same op, same inputs (equal constants)
        return b.mul(a, c)
    g = build(f)
    h = g.copy()
    assert S.cse(h) == 2
    assert h.op_histogram() == {"Add": 1, "Exp": 1, "Mul": 1}
    same_outputs(g, h)


def test_shape_arithmetic_folds_once_shapes_are_bound():
    def f(b, x):
        s = b.shape(x)
        d0 = b.unsqueeze(b.gather(s, np.array(0)), np.array([0]))
        d1 = b.unsqueeze(b.gather(s, np.array(1)), np.array([0]))
        return b.reshape(x, b.concat(d0, d1, np.array([-1]), axis=0))
    g = build(f)
    h = g.copy()
    assert S.fold_shapes(h) >= 1
    h.remove_dead()
    assert graph_text(h) == "y = Reshape(x, [2,3,-1])"
    h = fusion.rewrite(g)
    # A Reshape to the same shape straight from input to output stays (the output keeps its name).
    assert graph_text(h) == "y = Reshape(x, [2,3,-1])"
    same_outputs(g, h)


def test_dead_code_and_every_pass_verifies():
    def f(b, x):
        b.exp(x)                   # unused
        return b.relu(x)
    g = build(f)
    h = fusion.rewrite(g)
    assert len(h.nodes) == 1
    from fusion.rewrite import run_passes
    k = g.copy()
    seen = []
    run_passes(k, on_pass=lambda run, gg: (gg.verify(), seen.append(run.name)))
    assert "round1:dead-code" in seen
