"""The index functions (`lower`) of the ops in fusion/ops/extra.py agree with
their numpy reference on every node of the ONNX backend suite that uses them:
`lower` is evaluated at every output position (fusion.ir.expr_eval) and
compared with `reference` on the suite's own inputs. This is what the code
generator relies on when it composes these ops into fused loops."""
import inspect
import warnings

import numpy as np
import pytest

from fusion.backend import FusionRep, _as_array, skip_reason, suite_cases
from fusion.errors import FusionError
from fusion.ir.expr_eval import run_lowered
from fusion.ir.interpreter import run
from fusion.ops import all_ops


def _extra_ops():
    out = set()
    for od in all_ops():
        fn = od.scalar or od.reference
        if od.lower is not None and fn is not None and inspect.getsourcefile(fn).endswith("extra.py"):
            out.add(od.name)
    return out


EXTRA = _extra_ops()

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    CASES = sorted(((c.name, c) for _, c in suite_cases(["node"])
                    if any(n.op_type in EXTRA for n in c.model.graph.node)), key=lambda t: t[0])


# Ops the suite has no test for: checked on built graphs below.
BUILT = {"GlobalLpPool"}


def test_extra_ops_with_loops_are_covered():
    covered = {n.op_type for _, c in CASES for n in c.model.graph.node} & EXTRA
    assert covered | BUILT == EXTRA, f"no test exercises: {sorted(EXTRA - covered - BUILT)}"


@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_lp_pool(p):
    import fusion
    from fusion.ir.builder import GraphBuilder
    from fusion.oracle import compare, run_onnxruntime
    b = GraphBuilder()
    x = b.input("x", "float32", [2, 3, 4, 5])
    b.output(b.global_lp_pool(x, p=p), names=["y"])
    g = b.build()
    n = g.nodes[0]
    a = np.random.default_rng(p).standard_normal((2, 3, 4, 5)).astype(np.float32)
    ours = fusion.run_reference(g, {"x": a})
    np.testing.assert_allclose(run_lowered(n, [a]), ours["y"], rtol=1e-5)
    np.testing.assert_allclose(ours["y"].reshape(2, 3), (np.abs(a) ** p).sum(axis=(2, 3)) ** (1 / p), rtol=1e-5)
    assert compare(ours, run_onnxruntime(fusion.to_onnx(g), {"x": a})).ok


@pytest.mark.parametrize("name,case", CASES, ids=[n for n, _ in CASES])
def test_lower_matches_reference(name, case):
    if skip_reason(case.model):
        pytest.skip(skip_reason(case.model))
    rep = FusionRep(case.model)
    rep._force_bind = True         # values of shape inputs are constants, as a compile sees them
    inputs = [np.asarray(_as_array(x)) for x in case.data_sets[0][0]]
    feeds = dict(zip(rep.input_names, inputs))
    try:
        g = rep._graph_for(feeds)
    except FusionError as e:
        pytest.skip(f"not imported: {str(e)[:100]}")
    env = {}
    run(g, {k: v for k, v in feeds.items() if k in {x.name for x in g.inputs}}, env=env, keep=True)
    checked = 0
    for n in g.nodes:
        if n.op not in EXTRA:
            continue
        args = [None if v is None else (v.const if v.const is not None else env[id(v)]) for v in n.inputs]
        want = env[id(n.outputs[0])]
        got = run_lowered(n, args)
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-4, atol=1e-5,
                                   equal_nan=True, err_msg=f"{n.label()}")
        checked += 1
    assert checked
