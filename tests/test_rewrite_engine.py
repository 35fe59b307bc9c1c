"""The rule engine: greedy by FLOPs saved, matching modulo commutativity and
(bounded) associativity, no duplicated work, strict_fp, and the pass-by-pass
onnxruntime check that names the rule application that broke a model."""
import numpy as np

import fusion
from fusion.ir.builder import GraphBuilder
from fusion.ir.interpreter import run
from fusion.oracle import compare, random_inputs
from fusion.plan.synthetic import bert_like, resnet_like
from fusion.rewrite.engine import Engine
from fusion.rewrite.rule import Rule
from fusion.rewrite.rules import all_rules, get_rule
from fusion.rewrite.textform import graph_text

F = np.float32


def build(fn, n=3):
    b = GraphBuilder("g")
    xs = [b.input(f"x{i}", "float32", (4, 5)) for i in range(n)]
    b.output(fn(b, *xs), names=["y"])
    return b.build()


def test_best_saving_wins():
    # Both rules match Pow(x, 2); the one saving more FLOPs is applied.
    worse = Rule("pow2-abs", "test", ("Pow", "A", 2.0), ("Mul", ("Abs", "A"), ("Abs", "A")))
    g = build(lambda b, x, y, z: b.relu(b.pow(x, F(2))))
    eng = Engine([worse, get_rule("pow-two")])
    eng.run(g)
    g.remove_dead()
    assert dict(eng.fired) == {"pow-two": 1}
    assert graph_text(g) == "y = Relu(Mul(x0, x0))"


def test_no_duplicated_work():
    # A*B is needed elsewhere: factoring A*B + A*C would not save anything.
    def f(b, x, y, z):
        ab = b.mul(x, y)
        return b.sub(b.add(ab, b.mul(x, z)), ab)
    g = build(f)
    eng = Engine([get_rule("mul-add-factor")])
    eng.run(g)
    assert not eng.fired


def test_associative_matching_finds_pairs_anywhere_in_a_chain():
    g = build(lambda b, x, y, z: b.mul(b.mul(b.mul(b.sqrt(y), x), z), b.sqrt(y)))
    h = fusion.rewrite(g)
    assert h.op_histogram() == {"Mul": 2}
    feeds = {k: np.abs(v) for k, v in random_inputs(g).items()}
    assert compare(run(h, feeds), run(g, feeds)).ok


def test_commutative_matching():
    g = build(lambda b, x, y, z: b.add(b.mul(y, x), b.mul(z, x)))
    h = fusion.rewrite(g)
    assert h.op_histogram() == {"Mul": 1, "Add": 1}


def test_strict_fp_keeps_real_arithmetic_rules_out():
    def gelu(b, x, y, z):
        return b.mul(b.mul(x, F(0.5)), b.add(b.erf(b.div(x, F(np.sqrt(2)))), F(1)))
    g = build(gelu)
    assert "Gelu" in fusion.rewrite(g).op_histogram()
    assert "Gelu" not in fusion.rewrite(g, strict_fp=True).op_histogram()
    eng = Engine(all_rules(), strict_fp=True)
    assert all(r.exact for r in eng.rules)
    assert len(eng.rules) < len(all_rules())


def test_step_bound():
    g = build(lambda b, x, y, z: b.relu(b.relu(b.relu(b.relu(x)))))
    eng = Engine(all_rules(), max_steps=1)
    eng.run(g)
    assert sum(eng.fired.values()) == 1


def test_reference_graphs_rewrite_and_match_onnxruntime():
    from fusion.rewrite import rewrite_with_report
    from fusion.rewrite.check import check_rewrite
    g = bert_like(layers=1)
    h, rep = rewrite_with_report(g)
    h.verify()
    assert rep.nodes_after < rep.nodes_before and rep.flops_after <= rep.flops_before
    assert {"LayerNormalization", "Gelu", "Softmax"} <= set(h.op_histogram())
    res = check_rewrite(g)
    assert res.ok and res.steps, res.to_json()
    res = check_rewrite(resnet_like(stages=1, blocks=1))
    assert res.ok


def test_check_names_the_broken_rule_application():
    wrong = Rule("wrong-softplus", "test", ("Log", ("Add", ("Exp", "X"), 1.0)), ("Relu", "X"), exact=True)
    from fusion.rewrite.check import check_rewrite

    def f(b, x, y, z):
        return b.add(b.relu(b.relu(x)), b.log(b.add(b.exp(y), F(1))))
    g = build(f)
    res = check_rewrite(g, rules=[get_rule("relu-idempotent"), wrong])
    assert not res.ok
    assert res.first_bad == "round1:algebra"
    # greedy: the bigger saving (the wrong rule) went first, and bisection pins it
    assert "wrong-softplus" in res.culprit and "application 1 of 2" in res.culprit


def test_values_read_by_subgraphs_stay_alive():
    from fusion.ir.graph import Graph
    b = GraphBuilder("cf")
    x = b.input("x", "float32", (2, 3))
    c = b.input("c", "bool", ())
    inner = b.mul(b.neg(b.neg(x)), F(3))        # neg-involution would drop the Negs...
    branches = []
    for op in ("Exp", "Neg"):
        sg = Graph(op.lower())
        sg.parent = b.graph
        sg.outputs = [sg.add_node(op, [inner.producer.inputs[0]]).outputs[0]]   # ...but If reads Neg(Neg(x))
        branches.append(sg)
    y = b.graph.add_node("If", [c], {"then_branch": branches[0], "else_branch": branches[1]}).outputs[0]
    b.output(inner, y)
    g = b.build()
    h = fusion.rewrite(g)
    h.verify()
    for cond in (True, False):
        feeds = {"x": np.linspace(-1, 1, 6, dtype=F).reshape(2, 3), "c": np.array(cond)}
        assert compare(run(h, feeds), run(g, feeds)).ok
