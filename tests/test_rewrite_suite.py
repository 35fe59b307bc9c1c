"""Rewriting the ONNX backend test suite's models: every model fusion imports
is rewritten, verified, and run by the interpreter on the suite's inputs; the
outputs must equal the original graph's (fusion.oracle tolerances). The
`*_expanded` cases (ops written out as their ONNX function bodies: LayerNorm,
Softmax, GELU, reductions, ...) run in CI; all cases with -m slow."""
import warnings

import pytest

import fusion
from fusion.ir.interpreter import run
from fusion.oracle import compare


def _cases(pattern):
    from fusion.backend import suite_cases
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, case in suite_cases(("node",), pattern):
            if case.model is not None and case.data_sets:
                out.append(case)
    return out


def _check(case):
    try:
        g = fusion.load(case.model)
        feeds = {v.name: a for v, a in zip(g.inputs, case.data_sets[0][0])}
        ref = run(g, feeds)
    except Exception as e:  # noqa: BLE001 - not importable/runnable: not the rewriter's business
        return "skip", str(e)
    h = fusion.rewrite(g)
    h.verify()
    rep = compare(run(h, feeds), ref)
    return ("ok" if rep.ok else "fail"), str(rep)


def _sweep(pattern):
    fails, ok = [], 0
    for case in _cases(pattern):
        status, msg = _check(case)
        ok += status == "ok"
        if status == "fail":
            fails.append(f"{case.name}: {msg}")
    assert not fails, "\n".join(fails)
    return ok


def test_expanded_function_bodies_rewrite_correctly():
    assert _sweep(r"_expanded") >= 100


@pytest.mark.slow
def test_whole_node_suite_rewrites_correctly():
    assert _sweep(None) >= 1000
