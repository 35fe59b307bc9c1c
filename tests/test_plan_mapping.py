"""Mapping types derived from the op table's index functions agree with the
declared ones, on small concrete nodes: the ONNX backend test suite's node
tests (every op fusion imports), plus elementwise ops built here."""
import numpy as np
import pytest

import fusion
from fusion.ir.builder import GraphBuilder
from fusion.ops import all_ops
from fusion.ops.table import Mapping, OpDef, OPS, register
from fusion.plan.mapping import declared_mapping, derive_mapping, node_class
from fusion.plan.table import FUSION_TABLE, Rule, format_table, lookup

# Node tests where the node is legitimately finer than its op's declared class.
PER_NODE = {
    "test_transpose_all_permutations_0": "identity permutation: a plain copy (O2O), not a shuffle",
}


@pytest.fixture(scope="module")
def backend_nodes():
    from onnx.backend.test.case.node import collect_testcases
    out = []
    for case in collect_testcases():
        try:
            g = fusion.load(case.model)
        except Exception:  # ops fusion does not import yet
            continue
        for n in g.nodes:
            if n.opdef is not None and n.opdef.lower is not None:
                out.append((case.name, n))
    return out


def _out_elements(n) -> int:
    total = 0
    for v in n.outputs:
        try:
            total += int(np.prod([int(d) for d in v.shape])) if v.shape is not None else 10 ** 9
        except (TypeError, ValueError):
            total += 10 ** 9
    return total


def _sample(backend_nodes, per_op: int = 4):
    """The smallest few nodes of each op type: deriving a class evaluates the index
    function at every output position, and a handful of 6-D reductions and expanded
    attention nodes would take minutes; the slow test checks every node."""
    by_op: dict = {}
    for case, n in sorted(backend_nodes, key=lambda cn: _out_elements(cn[1])):
        if len(by_op.setdefault(n.op, [])) < per_op or case in PER_NODE:
            by_op[n.op].append((case, n))
    return [cn for v in by_op.values() for cn in v]


def test_derived_equals_declared_on_onnx_node_tests(backend_nodes):
    _check_derived_equals_declared(_sample(backend_nodes))


@pytest.mark.slow
def test_derived_equals_declared_on_every_onnx_node_test(backend_nodes):
    _check_derived_equals_declared(backend_nodes)


def _check_derived_equals_declared(backend_nodes):
    wrong, checked = [], set()
    for case, n in backend_nodes:
        d = derive_mapping(n)
        if d is None:
            continue
        checked.add(n.op)
        if d != declared_mapping(n) and case not in PER_NODE:
            wrong.append(f"{case}: {n.op} declared {declared_mapping(n).short}, derived {d.short}")
    assert not wrong, "\n".join(wrong)
    assert {"Add", "Conv", "MatMul", "Transpose", "Concat", "Softmax", "ReduceSum", "Where"} <= checked


def test_per_node_exceptions_are_still_real(backend_nodes):
    seen = {case: n for case, n in backend_nodes if case in PER_NODE}
    assert set(seen) == set(PER_NODE)
    for case, n in seen.items():
        assert derive_mapping(n) != declared_mapping(n)


def _elementwise_node(od, shapes):
    b = GraphBuilder()
    n_in = len([i for i in od.inputs if not i.endswith("?")]) or 2
    dt = "bool" if od.name in ("And", "Or", "Xor", "Not") else \
        "int32" if od.name.startswith("Bitwise") or od.name == "BitShift" else "float32"
    ins = [b.input(f"x{i}", dt, shapes[min(i, len(shapes) - 1)]) for i in range(n_in)]
    attrs = {"to": 1} if od.name == "Cast" else {"direction": "LEFT"} if od.name == "BitShift" else {}
    if od.name == "Where":
        ins[0] = b.input("c", "bool", shapes[0])
    b.op(od.name, *ins, **attrs)
    return b.graph.nodes[-1]


# Ops whose lower is known to raise TypeError (none at the moment; CastLike was fixed).
KNOWN_BROKEN: set = set()


@pytest.mark.parametrize("od", [od for od in all_ops() if od.scalar is not None and od.lower is not None
                                and od.name not in KNOWN_BROKEN], ids=lambda od: od.name)
def test_elementwise_same_shape_and_broadcast(od):
    same = _elementwise_node(od, [(2, 3)])
    assert derive_mapping(same) == declared_mapping(same) == Mapping.O2O
    if len(same.inputs) > 1:
        bc = _elementwise_node(od, [(2, 3), (3,)])
        assert derive_mapping(bc) == declared_mapping(bc) == Mapping.O2M


def test_shape_ops_and_anchors():
    b = GraphBuilder()
    x = b.input("x", "float32", [2, 3, 4])
    b.reshape(x, np.array([6, 4]))
    b.transpose(x, perm=[2, 0, 1])
    b.concat(x, x, axis=1)
    b.matmul(x, b.input("m", "float32", [4, 2]))
    b.softmax(x, axis=-1)
    b.reduce_mean(x, np.array([1]))
    want = ["Reorg", "Shuffle", "O2O", "M2M", "M2M", "M2M"]
    got = [derive_mapping(n).short for n in b.graph.nodes]
    assert got == want == [declared_mapping(n).short for n in b.graph.nodes]


def test_planner_class_constant_broadcast_is_one_to_one():
    b = GraphBuilder()
    x = b.input("x", "float32", [1, 4, 8, 8])
    b.add(x, np.ones((4, 1, 1), np.float32))            # bias: constant
    b.add(x, b.input("s", "float32", [1, 4, 1, 1]))    # computed broadcast
    b.clip(x, np.float32(0), np.float32(6))            # Relu6: scalar constants
    a, s, c = b.graph.nodes
    assert node_class(a) == (Mapping.O2O, "constant broadcast")
    assert node_class(s) == (Mapping.O2M, "declared")
    assert node_class(c) == (Mapping.O2O, "constant broadcast")


def test_undeclared_mapping_is_derived():
    from fusion.ops.shape import reorganize_lower
    od = register(OpDef("PlanTestFlatten", domain="test.plan", inputs=("X",),
                        infer=lambda node: [(node.inputs[0].dtype, (node.inputs[0].size,))],
                        reference=lambda node, a: [a[0].reshape(-1)], lower=reorganize_lower))
    try:
        b = GraphBuilder()
        x = b.input("x", "float32", [2, 3])
        b.op("PlanTestFlatten", x, domain="test.plan")
        n = b.graph.nodes[-1]
        assert od.mapping == Mapping.OPAQUE            # nothing declared
        assert node_class(n) == (Mapping.REORG, "derived")
    finally:
        del OPS[od.key]


def test_opaque_ops():
    b = GraphBuilder()
    x = b.input("x", "float32", [2, 3])
    node = b.graph.add_node("PlanTestNothing", [x], domain="test.plan", infer=False)
    assert node_class(node)[0] == Mapping.OPAQUE
    for od in all_ops():
        if od.lower is None:
            assert od.opaque


def test_fusion_table_is_the_design_table():
    O2O, O2M, M2M, RE, SH = Mapping.O2O, Mapping.O2M, Mapping.M2M, Mapping.REORG, Mapping.SHUFFLE
    assert len(FUSION_TABLE) == 25
    assert lookup(O2M, M2M).rule == lookup(M2M, M2M).rule == Rule.NEVER
    assert lookup(M2M, SH).rule == Rule.PROFILE and lookup(M2M, SH).result == M2M
    assert lookup(SH, RE).rule == Rule.ALWAYS and lookup(SH, RE).result == RE
    assert lookup(RE, O2M).result == O2M and lookup(RE, O2M).rule == Rule.PROFILE
    assert all(lookup(O2O, c).rule == Rule.ALWAYS and lookup(O2O, c).result == c for c in (O2O, O2M, M2M, RE, SH))
    assert lookup(Mapping.OPAQUE, O2O).rule == Rule.NEVER
    assert "never" in format_table()


@pytest.mark.parametrize("name", sorted(KNOWN_BROKEN))
def test_known_broken_ops_are_still_broken(name):
    # When this fails the op was fixed: drop it from KNOWN_BROKEN.
    from fusion.ops import get_op
    with pytest.raises(TypeError):
        derive_mapping(_elementwise_node(get_op(name), [(2, 3)]))
