"""Golden tests (TVM style): for each rule family a small graph before and the
graph expected after `fusion.rewrite`, both written with GraphBuilder and
compared as nested expressions; the outputs must also agree numerically."""
import numpy as np

import fusion
from fusion.ir.builder import GraphBuilder
from fusion.ir.interpreter import run
from fusion.oracle import compare, random_inputs
from fusion.rewrite.textform import graph_text

F = np.float32


def _graph(fn, shapes):
    b = GraphBuilder("g")
    xs = [b.input(n, "float32", s) for n, s in shapes.items()]
    b.output(fn(b, *xs), names=["y"])
    return b.build()


def check(before, expected, shapes=None, strict_fp=False, ops=None):
    shapes = shapes or {"x": (2, 3), "y0": (2, 3), "z": (2, 3)}
    g = _graph(before, shapes)
    got = fusion.rewrite(g, strict_fp=strict_fp)
    got.verify()
    want = _graph(expected, shapes)
    assert graph_text(got) == graph_text(want), f"\nbefore:   {graph_text(g)}\ngot:      {graph_text(got)}\nexpected: {graph_text(want)}"
    feeds = random_inputs(g, seed=3)
    feeds = {k: np.abs(v) + F(0.5) for k, v in feeds.items()}   # positive: log/sqrt domains
    assert compare(run(got, feeds), run(g, feeds)).ok
    if ops is not None:
        assert got.op_histogram() == ops
    return got


# -- identity (derived from the op table's algebra) ---------------------------------
def test_identity_elements_and_involutions():
    check(lambda b, x, y, z: b.relu(b.add(b.mul(b.neg(b.neg(x)), F(1)), F(0))),
          lambda b, x, y, z: b.relu(x))
    check(lambda b, x, y, z: b.relu(b.relu(b.max(x, x))), lambda b, x, y, z: b.relu(x))


# -- associative ---------------------------------------------------------------------
def test_constants_meet_in_a_chain():
    check(lambda b, x, y, z: b.mul(b.mul(b.mul(x, F(2)), y), F(3)),
          lambda b, x, y, z: b.mul(b.mul(x, F(6)), y))


def test_dnnfusion_sqrt_pair():
    # (A*sqrt(B))*(sqrt(B)*C) -> A*B*C
    check(lambda b, x, y, z: b.mul(b.mul(x, b.sqrt(y)), b.mul(b.sqrt(y), z)),
          lambda b, x, y, z: b.mul(b.mul(x, y), z))


# -- distributive ---------------------------------------------------------------------
def test_factor_common_operand():
    # A*C + A*B -> A*(C+B); A + A*c -> A*(1+c), the constant folded
    check(lambda b, x, y, z: b.add(b.mul(x, z), b.mul(x, y)),
          lambda b, x, y, z: b.mul(x, b.add(z, y)))
    check(lambda b, x, y, z: b.add(x, b.mul(x, F(3))),
          lambda b, x, y, z: b.mul(x, F(4)))


def test_matmul_sharing():
    w1 = np.ones((3, 4), F)
    w2 = np.full((3, 4), 2, F)
    check(lambda b, x, y, z: b.add(b.matmul(x, w1), b.matmul(x, w2)),
          lambda b, x, y, z: b.matmul(x, np.full((3, 4), 3, F)))


# -- commutative ----------------------------------------------------------------------
def test_ops_move_through_reductions():
    ax = np.array([1])
    check(lambda b, x, y, z: b.reduce_sum(b.neg(x), ax), lambda b, x, y, z: b.neg(b.reduce_sum(x, ax)))
    check(lambda b, x, y, z: b.reduce_max(b.exp(x), ax), lambda b, x, y, z: b.exp(b.reduce_max(x, ax)))
    check(lambda b, x, y, z: b.reduce_mean(b.mul(x, F(3)), ax), lambda b, x, y, z: b.mul(b.reduce_mean(x, ax), F(3)))


def test_clip_from_min_max():
    check(lambda b, x, y, z: b.min(b.max(x, F(-1)), F(1)), lambda b, x, y, z: b.clip(x, F(-1), F(1)))


# -- power / exp / log ----------------------------------------------------------------
def test_power_identities():
    check(lambda b, x, y, z: b.pow(x, F(2)), lambda b, x, y, z: b.mul(x, x))
    check(lambda b, x, y, z: b.mul(b.exp(x), b.exp(y)), lambda b, x, y, z: b.exp(b.add(x, y)))
    check(lambda b, x, y, z: b.relu(b.exp(b.log(x))), lambda b, x, y, z: b.relu(x))


# -- division --------------------------------------------------------------------------
def test_division_by_constant():
    check(lambda b, x, y, z: b.div(x, F(4)), lambda b, x, y, z: b.mul(x, F(0.25)), strict_fp=True)
    check(lambda b, x, y, z: b.div(x, F(3)), lambda b, x, y, z: b.div(x, F(3)), strict_fp=True)
    check(lambda b, x, y, z: b.div(x, F(3)), lambda b, x, y, z: b.mul(x, F(1) / F(3)))


# -- reduce -----------------------------------------------------------------------------
def test_dnnfusion_reduceprod_exp():
    ax = np.array([1])
    check(lambda b, x, y, z: b.reduce_prod(b.exp(x), ax), lambda b, x, y, z: b.exp(b.reduce_sum(x, ax)))
    check(lambda b, x, y, z: b.sqrt(b.reduce_sum(b.mul(x, x), ax)), lambda b, x, y, z: b.reduce_l2(x, ax))


# -- linear -----------------------------------------------------------------------------
def test_conv_scale_and_shift_fold_into_weights():
    rng = np.random.default_rng(0)
    w, bias = rng.standard_normal((4, 2, 3, 3)).astype(F), rng.standard_normal(4).astype(F)
    s, t = rng.uniform(0.5, 2, (4, 1, 1)).astype(F), rng.standard_normal((4, 1, 1)).astype(F)
    shapes = {"x": (1, 2, 6, 6)}
    check(lambda b, x: b.add(b.mul(b.conv(x, w, bias), s), t),
          lambda b, x: b.conv(x, w * s.reshape(4, 1, 1, 1), bias * s.reshape(4) + t.reshape(4)), shapes)


def test_conv_batchnorm_folds():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 2, 3, 3)).astype(F)
    gamma, beta, mean = (rng.standard_normal(4).astype(F) for _ in range(3))
    var = rng.uniform(0.5, 2, 4).astype(F)
    s = gamma / np.sqrt(var + F(1e-5))
    check(lambda b, x: b.batch_normalization(b.conv(x, w), gamma, beta, mean, var),
          lambda b, x: b.conv(x, w * s.reshape(4, 1, 1, 1), (F(0) - mean) * s + beta), {"x": (1, 2, 6, 6)})


def test_transposes_fold_into_matmul():
    shapes = {"x": (3, 2), "y0": (4, 3)}
    check(lambda b, x, y: b.matmul(b.transpose(x, perm=[1, 0]), b.transpose(y, perm=[1, 0])),
          lambda b, x, y: b.transpose(b.matmul(y, x), perm=[1, 0]), shapes)


# -- recognize --------------------------------------------------------------------------
def test_gelu_softmax_layernorm_recognized():
    shapes = {"x": (2, 8)}
    check(lambda b, x: b.mul(b.mul(x, F(0.5)), b.add(b.erf(b.div(x, F(np.sqrt(2)))), F(1))),
          lambda b, x: b.gelu(x), shapes)
    ax = np.array([-1])

    def softmax(b, x):
        e = b.exp(b.sub(x, b.reduce_max(x, ax)))
        return b.div(e, b.reduce_sum(e, ax))
    check(softmax, lambda b, x: b.softmax(x, axis=-1), shapes)
    g, bt = np.linspace(0.5, 1.5, 8).astype(F), np.linspace(-1, 1, 8).astype(F)

    def ln(b, x):
        d = b.sub(x, b.reduce_mean(x, ax))
        var = b.reduce_mean(b.pow(d, F(2)), ax)
        return b.add(b.mul(b.div(d, b.sqrt(b.add(var, F(1e-5)))), g), bt)
    check(ln, lambda b, x: b.layer_normalization(x, g, bt, axis=1), shapes)


def test_sigmoid_recognized():
    check(lambda b, x, y, z: b.reciprocal(b.add(b.exp(b.neg(x)), F(1))), lambda b, x, y, z: b.sigmoid(x))


def test_gemm_scale_with_transposed_weight():
    w = np.arange(12, dtype=F).reshape(4, 3)          # transB=1: output columns are W's rows
    c, d = np.arange(4, dtype=F), np.array([1, 2, 3, 4], F)
    check(lambda b, x: b.mul(b.gemm(x, w, c, transB=1), d),
          lambda b, x: b.gemm(x, w * d.reshape(4, 1), c * d, transB=1), {"x": (2, 3)})
