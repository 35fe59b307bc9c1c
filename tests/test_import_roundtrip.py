"""Import -> export round trip on the ONNX backend suite's node models.

Every node model fusion imports (and does not skip for a representation
reason) is exported again with `fusion.to_onnx`; onnx.checker must accept it
and onnxruntime, run on the exported model, must give the suite's expected
outputs. Where onnxruntime cannot run the suite's *own* model either (no
kernel for that type, training ops), only the checker part applies.

CI exports two models per distinct op combination; `pytest -m slow` runs the rest.
"""
import warnings

import numpy as np
import onnx
import pytest

import fusion
from fusion.backend import FusionRep, _as_array, skip_reason, suite_cases
from fusion.errors import FusionError
from fusion.oracle import run_onnxruntime

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    CASES = {case.name: case for _, case in suite_cases(["node"])}


def _ci_sample() -> list[str]:
    """Two cases per distinct set of op types: every op and attribute-free variant is
    exported in CI; the full sweep is the slow test below."""
    seen: dict = {}
    out = []
    for name in sorted(CASES):
        sig = tuple(sorted({n.op_type for n in CASES[name].model.graph.node}))
        if seen.get(sig, 0) < 2:
            seen[sig] = seen.get(sig, 0) + 1
            out.append(name)
    return out


CI_CASES = _ci_sample()


def _ort(model, feeds):
    return run_onnxruntime(model, feeds)


@pytest.mark.parametrize("name", CI_CASES)
def test_roundtrip(name):
    _roundtrip(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(CASES) - set(CI_CASES)))
def test_roundtrip_all(name):
    """The rest of the node suite: `pytest -m slow tests/test_import_roundtrip.py -n 2`."""
    _roundtrip(name)


def _roundtrip(name):
    from onnx.backend.test.runner import Runner
    case = CASES[name]
    if skip_reason(case.model):
        pytest.skip(skip_reason(case.model))
    inputs, refs = case.data_sets[0]
    inputs = [np.asarray(_as_array(x)) for x in inputs]
    refs = [_as_array(x) for x in refs]
    try:
        rep = FusionRep(case.model)
        feeds = dict(zip(rep.input_names, inputs))
        g = rep._graph_for(feeds)
    except FusionError as e:
        pytest.skip(f"fusion does not import it yet: {str(e)[:120]}")
    m = fusion.to_onnx(g)
    onnx.checker.check_model(m)
    names = {v.name for v in g.inputs}
    feeds = {k: v for k, v in feeds.items() if k in names}
    try:
        outs = _ort(m, feeds)
    except Exception as e:
        try:
            _ort(case.model, dict(zip(rep.input_names, inputs)))
        except Exception:
            pytest.skip(f"onnxruntime cannot run the suite's own model either: {str(e)[:120]}")
        raise
    outs = [outs[v.name] for v in g.outputs]
    try:
        Runner.assert_similar_outputs(refs, outs, rtol=case.rtol, atol=case.atol)
    except AssertionError:
        own = _ort(case.model, dict(zip(rep.input_names, inputs)))
        try:
            Runner.assert_similar_outputs(refs, [own[o.name] for o in case.model.graph.output],
                                          rtol=case.rtol, atol=case.atol)
        except AssertionError:
            pytest.skip("onnxruntime disagrees with the suite's expected outputs on the suite's own model")
        raise
