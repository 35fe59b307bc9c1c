"""The reference models (small variants): every node's index function equals
its reference semantics on real data, and the interpreter equals onnxruntime.
This is what the code generator relies on when it composes `lower`s.
Two fast models run in CI; the rest are @slow:

    .venv/bin/python -m pytest -q -p no:xdist -m slow tests/test_ops_zoo.py
"""
import numpy as np
import pytest

import fusion
from fusion.ir.expr_eval import run_lowered
from fusion.ir.interpreter import run
from fusion.oracle import compare, random_inputs, run_onnxruntime

FAST = ["efficientnet-b0", "vgg-16"]
SLOW = ["mobilenetv1-ssd", "yolo-v4", "c3d", "s3d", "u-net", "faster-rcnn", "mask-rcnn", "tinybert",
        "distilbert", "albert", "bert-base", "mobilebert", "gpt-2"]


def _check(name):
    from fusion import zoo
    g = fusion.load(f"zoo:{name}:small")
    feeds = random_inputs(g)
    env: dict = {}
    ours = run(g, feeds, env=env, keep=True)
    rep = compare(ours, run_onnxruntime(zoo.resolve(f"zoo:{name}:small"), feeds))
    assert rep.ok, f"{name}: {rep}"
    checked, bad = 0, []
    for n in g.nodes:
        # opaque ops, control flow and values sized at run time have no loop nest
        if n.opdef.lower is None or n.subgraphs() or not all(v is None or v.is_static for v in n.inputs + n.outputs):
            continue
        args = [None if v is None else (v.const if v.const is not None else env[id(v)]) for v in n.inputs]
        for k, v in enumerate(n.outputs):
            want = env.get(id(v))
            if want is None or want.size == 0:
                continue
            got = run_lowered(n, args, k)
            ok = np.allclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True) if want.dtype.kind == "f" \
                else np.array_equal(got, want)
            if not ok:
                bad.append(f"{n.label()} output {k}")
            checked += 1
    assert not bad, f"{name}: lowered != reference for " + ", ".join(bad)
    # most nodes have a static loop nest (detection heads after NMS do not: ~75% in the R-CNNs)
    assert checked >= 0.7 * len(g.nodes), (checked, len(g.nodes))


@pytest.mark.parametrize("name", FAST)
def test_zoo_model_lowering_and_oracle(name):
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_zoo_model_lowering_and_oracle_slow(name):
    _check(name)
