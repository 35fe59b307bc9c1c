"""The zoo: storage format, deterministic fill, inputs, CLI, and every small
variant against onnxruntime (full sizes: the slow tests at the end, or
`fusion zoo check`)."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fusion
from fusion import zoo
from fusion.errors import FusionError
from fusion.oracle import compare, run_onnxruntime
from fusion.zoo import registry, roles, sampling, store
from fusion.zoo.check import output_health

SMALL = [pytest.param(n, id=n) for n in zoo.NAMES]


def _have(name, small=True):
    return os.path.exists(registry.model_path(name, small))


@functools.lru_cache(maxsize=None)
def _filled(name):
    """The small variant with weights (shared by the tests; never modified)."""
    return zoo.load(name, small=True)


# ---------------------------------------------------------------------------
# names and files

def test_names_in_dnnfusion_order():
    assert zoo.NAMES == ["efficientnet-b0", "vgg-16", "mobilenetv1-ssd", "yolo-v4", "c3d", "s3d", "u-net",
                         "faster-rcnn", "mask-rcnn", "tinybert", "distilbert", "albert", "bert-base",
                         "mobilebert", "gpt-2"]
    assert len(set(zoo.NAMES)) == 15


def test_every_model_is_bundled_full_and_small():
    missing = [f"{n}{':small' if s else ''}" for n in zoo.NAMES for s in (False, True) if not _have(n, s)]
    assert not missing, f"not exported: {missing}"


def test_bundled_files_stay_small():
    total = sum(os.path.getsize(os.path.join(registry.DATA_DIR, f))
                for f in os.listdir(registry.DATA_DIR) if f.endswith(".onnx.gz"))
    assert total < 20e6, f"zoo files take {total / 1e6:.1f} MB (budget 20 MB)"


def test_stored_files_carry_no_large_float_data():
    for f in os.listdir(registry.DATA_DIR):
        if not f.endswith(".onnx.gz"):
            continue
        m = store.load(os.path.join(registry.DATA_DIR, f))
        for t in m.graph.initializer:
            if store.is_marked(t):
                assert not t.raw_data and not t.float_data, (f, t.name)


def test_bad_names_are_one_line_errors():
    with pytest.raises(FusionError, match="did you mean 'tinybert'"):
        zoo.resolve("zoo:tinybrt")
    with pytest.raises(FusionError, match="unknown variant"):
        zoo.resolve("zoo:tinybert:huge")


# ---------------------------------------------------------------------------
# deterministic sampling and fill

def test_sampling_stream_is_pinned():
    # Same bytes on every machine and numpy release: built from PCG64's raw words only.
    a = sampling.normal(sampling.seed_for("m", "w"), (1000,))
    u = sampling.uniform(sampling.seed_for("m", "v"), (1000,), 0.5, 1.5)
    assert hashlib.sha256(a.tobytes()).hexdigest()[:16] == PINNED_NORMAL
    assert hashlib.sha256(u.tobytes()).hexdigest()[:16] == PINNED_UNIFORM
    big = sampling.normal(1, (200_000,))
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01 and np.abs(big).max() < 3.47
    assert 0.5 <= u.min() and u.max() < 1.5


PINNED_NORMAL = "c39e19a69875f079"
PINNED_UNIFORM = "d67db27c061df049"


def _toy_detector() -> onnx.ModelProto:
    """conv-BN-relu, a residual conv, and a score head feeding NonMaxSuppression."""
    f, c = TensorProto.FLOAT, 64
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w1", z(c, 3, 3, 3)), ("g", z(c) + 1), ("b", z(c)), ("m", z(c)), ("v", z(c) + 1),
        ("w2", z(c, c, 3, 3)), ("wh", z(1, c, 1, 1)), ("eps", z(1) + 1e-3),
        ("boxes", np.tile(np.array([0, 0, 1, 1], np.float32), (1, 64, 1)))]]
    inits.append(helper.make_tensor("shape", TensorProto.INT64, [3], [1, 1, 64]))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["res"]),
        helper.make_node("Conv", ["res", "wh"], ["logit0"]),
        helper.make_node("Add", ["logit0", "eps"], ["logit"]),
        helper.make_node("Reshape", ["logit", "shape"], ["l2"]),
        helper.make_node("Sigmoid", ["l2"], ["score"]),
        helper.make_node("NonMaxSuppression", ["boxes", "score"], ["sel"]),
    ]
    g = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", f, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("score", f, [1, 1, 64]),
                           helper.make_tensor_value_info("sel", TensorProto.INT64, ["k", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_strip_keeps_shapes_constants_and_kept_floats():
    m = _toy_detector()
    s = store.strip(m, keep={"boxes"})
    byname = {t.name: t for t in s.graph.initializer}
    assert set(store.stripped_names(s)) == {"w1", "g", "b", "m", "v", "w2", "wh"}
    assert numpy_helper.to_array(byname["eps"]).tolist() == pytest.approx([1e-3])  # too small to strip: verbatim
    assert list(byname["w2"].dims) == [64, 64, 3, 3] and byname["w2"].data_type == TensorProto.FLOAT
    assert numpy_helper.to_array(byname["shape"]).tolist() == [1, 1, 64]
    assert numpy_helper.to_array(byname["boxes"]).shape == (1, 64, 4)


def test_roles_follow_the_graph():
    m = _toy_detector()
    names = ["w1", "g", "b", "m", "v", "w2", "wh"]
    r = roles.plan_recipes(m, names)
    assert r["v"].kind == "uniform" and r["v"].a > 0          # BN variance positive
    assert r["w1"].b == pytest.approx(np.sqrt(2 / 27))        # He-normal over fan-in 3*3*3
    assert "residual" in r["w2"].role and r["w2"].b < np.sqrt(2 / 576)
    assert "head" in r["wh"].role and r["wh"].b < 0.1 * np.sqrt(2 / 64)


def test_fill_is_deterministic_and_seeded_by_name():
    m = store.strip(_toy_detector())
    a, b = store.fill(m, "toy"), store.fill(m, "toy")
    assert store.weights_digest(a) == store.weights_digest(b)
    assert store.weights_digest(store.fill(m, "other")) != store.weights_digest(a)
    onnx.checker.check_model(a)
    out = run_onnxruntime(a, {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)})
    s = out["score"]
    assert np.isfinite(s).all() and 0.2 < s.min() and s.max() < 0.8 and s.std() > 0  # not saturated


@pytest.mark.parametrize("name", ["tinybert", "mobilenetv1-ssd"])
def test_zoo_fill_is_stable(name):
    if not _have(name):
        pytest.fail(f"{name}: small variant not exported")
    assert store.weights_digest(zoo.load(name, True)) == store.weights_digest(_filled(name))


# ---------------------------------------------------------------------------
# inputs

def test_token_inputs_are_realistic():
    if not _have("bert-base"):
        pytest.fail("bert-base small not exported")
    feeds = zoo.random_inputs("bert-base", small=True, seed=3)
    vocab = zoo.facts("bert-base", True).get("vocab", 30522)
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.dtype == np.int64 and 0 <= ids.min() and ids.max() < vocab
    assert mask[0, 0] == 1 and mask[0, -1] == 0 and 0.5 < mask.mean() < 1
    assert set(np.unique(feeds["token_type_ids"])) == {0, 1}
    again = zoo.random_inputs("bert-base", small=True, seed=3)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)


def test_oracle_uses_zoo_inputs_through_metadata():
    if not _have("tinybert"):
        pytest.fail("tinybert small not exported")
    m = zoo.resolve("zoo:tinybert:small")
    assert {p.key: p.value for p in m.metadata_props}["fusion.zoo"] == "tinybert:small"
    g = fusion.load("zoo:tinybert:small")  # through fusion's importer
    feeds = fusion.oracle.random_inputs(g, seed=5)
    want = zoo.random_inputs("tinybert", small=True, seed=5)
    assert sorted(feeds) == sorted(want) and all(np.array_equal(feeds[k], want[k]) for k in want)


# ---------------------------------------------------------------------------
# every small variant: loads, checks, runs healthy in onnxruntime, matches the interpreter

@pytest.mark.parametrize("name", SMALL)
def test_small_variant_runs_healthy_in_onnxruntime(name):
    if not _have(name):
        pytest.fail(f"{name}: small variant not exported")
    m = _filled(name)
    onnx.checker.check_model(m)
    out = run_onnxruntime(m, zoo.random_inputs(name, small=True))
    assert not output_health(out), output_health(out)


@pytest.mark.parametrize("name", SMALL)
def test_small_variant_interpreter_matches_onnxruntime(name):
    if not _have(name):
        pytest.fail(f"{name}: small variant not exported")
    g = fusion.load(_filled(name))
    assert g.metadata["fusion.zoo"] == f"{name}:small"
    feeds = fusion.oracle.random_inputs(g, seed=0)  # the zoo's realistic inputs, through the metadata tag
    expected = run_onnxruntime(_filled(name), feeds)
    rep = compare(fusion.run_reference(g, feeds), expected)
    assert rep.ok, str(rep)


# ---------------------------------------------------------------------------
# CLI

def _cli(capsys, *args):
    from fusion.cli import main
    rc = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


def test_cli_list_json_and_export(tmp_path, capsys):
    r = _cli(capsys, "zoo", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == zoo.NAMES
    tb = next(x for x in rows if x["name"] == "tinybert")
    if tb["available"]:
        assert 14e6 < tb["params"] < 15e6  # TinyBERT-4: 14.5M parameters
    out = tmp_path / "tb.onnx"
    r = _cli(capsys, "zoo", "export", "tinybert", "--small", "-o", str(out))
    assert r.returncode == 0, r.stderr
    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    assert store.weights_digest(m) == store.weights_digest(_filled("tinybert"))


def test_cli_errors_are_one_line(capsys):
    r = _cli(capsys, "zoo", "check", "nosuchmodel")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "zoo list" in r.stderr


# ---------------------------------------------------------------------------
# full size: slow (or `fusion zoo check`)

@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL)
def test_full_size_check(name):
    from fusion.zoo.check import check
    r = check(name, small=False)
    assert r.ok, (r.error, r.health, r.compare and r.compare.get("text"))


# ---------------------------------------------------------------------------
# near-tie decisions (fusion/zoo/pin.py): a box corner 2.9999998 in one executor
# and 3.0000002 in the other truncates to pixel 2 or 3; that may follow
# onnxruntime only when the inputs agree within tolerance and the op itself is right

def _decision_model():
    """t = x * s; y = Cast<int64>(t); z = Cast<float>(y) + t; k = TopK(t, 2)."""
    X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    outs = [helper.make_tensor_value_info("y", TensorProto.INT64, [3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("kv", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("ki", TensorProto.INT64, [2])]
    nodes = [helper.make_node("Mul", ["x", "s"], ["t"], name="scale"),
             helper.make_node("Cast", ["t"], ["y"], name="corner", to=TensorProto.INT64),
             helper.make_node("Cast", ["y"], ["yf"], name="back", to=TensorProto.FLOAT),
             helper.make_node("Add", ["yf", "t"], ["z"], name="use"),
             helper.make_node("TopK", ["t", "k"], ["kv", "ki"], name="top", axis=0),
             helper.make_node("Shape", ["x"], ["sh"], name="shape"),
             helper.make_node("Floor", ["t"], ["fl"], name="floor")]
    inits = [numpy_helper.from_array(np.array([1.0], np.float32), "s"),
             numpy_helper.from_array(np.array([2], np.int64), "k")]
    g = helper.make_graph(nodes, "decide", [X], outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


_X = np.array([0.5, 2.9999998, 2.9999995], np.float32)


def _theirs(t):
    """What another executor would compute from its own (slightly different) `t`."""
    t = np.asarray(t, np.float32)
    order = np.argsort(-t, kind="stable")[:2]
    return {"x": _X, "t": t, "y": t.astype(np.int64), "yf": t.astype(np.int64).astype(np.float32),
            "kv": t[order], "ki": order.astype(np.int64), "fl": np.floor(t)}


def test_decision_nodes_are_the_discontinuous_ones():
    from fusion.zoo.pin import decision_nodes
    g = fusion.load(_decision_model())
    assert sorted(n.name for n in decision_nodes(g)) == ["corner", "floor", "top"]


def test_near_tie_decision_follows_the_other_executor():
    from fusion.zoo.pin import pinned_reference
    g = fusion.load(_decision_model())
    theirs = _theirs([0.5, 3.0000002, 3.0000005])  # within float noise of ours, across the boundary
    outs, pins, refused = pinned_reference(g, {"x": _X}, theirs)
    assert not refused, refused
    assert [p.node for p in pins] == ["corner", "top", "floor"]
    corner = pins[0]
    assert (corner.differ, corner.total) == (2, 3)
    assert "2.9999998 -> 2" in corner.detail and "3.0000002 -> 3" in corner.detail, corner.detail
    np.testing.assert_array_equal(outs["y"], [0, 3, 3])
    # downstream continuous values use the pinned decision with the interpreter's own floats
    np.testing.assert_array_equal(outs["z"], np.float32([0.5, 3 + 2.9999998, 3 + 2.9999995]))
    # TopK: onnxruntime's order, values read from the interpreter's own input
    np.testing.assert_array_equal(outs["ki"], theirs["ki"])
    np.testing.assert_array_equal(outs["kv"], _X[theirs["ki"]])
    # without a disagreement nothing is pinned
    outs, pins, refused = pinned_reference(g, {"x": _X}, _theirs(_X))
    assert not pins and not refused
    np.testing.assert_array_equal(outs["y"], [0, 2, 2])


def test_decision_is_not_pinned_when_its_inputs_really_differ():
    from fusion.zoo.pin import pinned_reference
    g = fusion.load(_decision_model())
    theirs = _theirs([0.5, 3.5, 2.9999995])  # 0.5 apart: beyond float32 tolerance
    outs, pins, refused = pinned_reference(g, {"x": _X}, theirs)
    assert not any(p.node == "corner" for p in pins)
    assert any("'corner'" in r and "beyond tolerance" in r for r in refused), refused
    np.testing.assert_array_equal(outs["y"], [0, 2, 2])


def test_decision_is_not_pinned_when_the_op_disagrees_on_the_same_inputs():
    from fusion.zoo.pin import pinned_reference
    g = fusion.load(_decision_model())
    theirs = _theirs([0.5, 3.0000002, 2.9999995])
    theirs["y"] = np.array([0, 4, 2], np.int64)  # not what Cast gives for 3.0000002: an op bug, not noise
    outs, pins, refused = pinned_reference(g, {"x": _X}, theirs)
    assert not any(p.node == "corner" for p in pins)
    assert any("'corner'" in r and "own inputs" in r for r in refused), refused


def test_decision_values_come_from_onnxruntime():
    from fusion.zoo.pin import decision_values, pinned_reference
    m = _decision_model()
    g = fusion.load(m)
    theirs = decision_values(m, g, {"x": _X})
    assert {"t", "y", "ki", "kv", "fl"} <= set(theirs)
    outs, pins, refused = pinned_reference(g, {"x": _X}, theirs)
    assert not pins and not refused  # the interpreter and onnxruntime agree on this one exactly
    assert compare(outs, run_onnxruntime(m, {"x": _X})).ok


def test_check_reports_pins_only_when_they_make_it_pass(monkeypatch):
    from fusion.zoo import check as zcheck, pin
    m = _decision_model()
    g = fusion.load(m)
    outs = ["y", "z", "kv", "ki"]
    for t, ok in (([0.5, 3.0000002, 3.0000005], True), ([0.5, 3.5, 2.9999995], False)):
        theirs = _theirs(t)
        theirs["z"] = theirs["yf"] + theirs["t"]
        monkeypatch.setattr(pin, "decision_values", lambda *a, _t=theirs: _t)
        ort = {k: theirs[k] for k in outs}
        rep = compare(fusion.run_reference(g, {"x": _X}), ort)
        assert not rep.ok
        res = zcheck.CheckResult("decide", False)
        final = zcheck._with_pins(res, m, g, {"x": _X}, ort, rep)
        assert final.ok == ok, str(final)
        if ok:
            assert any(p.startswith("Cast 'corner'") for p in res.pinned) and not res.unpinned
        else:
            assert final is rep and any("beyond tolerance" in r for r in res.unpinned), res.unpinned


def _other_executor_outputs(t):
    th = _theirs(t)
    return {"y": th["y"], "z": th["yf"] + _X, "kv": th["kv"], "ki": th["ki"]}


def test_compiled_outputs_explained_by_near_ties(monkeypatch):
    """`fusion run --check` / eval: compiled outputs that differ from onnxruntime pass only
    when they are the interpreter's and the interpreter matches once near-ties are pinned."""
    from fusion.zoo import pin
    m = _decision_model()
    t = [0.5, 3.0000002, 3.0000005]   # the other executor lands across the pixel boundary
    monkeypatch.setattr(pin, "decision_values", lambda model, g, feeds: _theirs(t))
    monkeypatch.setattr("fusion.oracle.run_onnxruntime", lambda model, feeds: _other_executor_outputs(t))
    got = fusion.compile(fusion.load(m), threads=1, profile_db=False).run({"x": _X})
    tie = pin.explain_near_ties(m, {"x": _X}, got)
    assert tie.ok and len(tie.pins) == 3, tie.lines()
    assert any("Cast 'corner'" in ln for ln in tie.lines())
    # a compiled output that is not the interpreter's is never explained away
    bad = dict(got, z=got["z"] + np.float32(0.25))
    tie = pin.explain_near_ties(m, {"x": _X}, bad)
    assert not tie.ok and "not explained" in tie.lines()[0]
