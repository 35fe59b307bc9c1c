"""The profile database: on disk, reused across runs, measured beats estimated."""
import json

import numpy as np
import pytest

import fusion
from fusion.errors import FusionError
from fusion.ir.builder import GraphBuilder
from fusion.plan.profile import (COST_MODEL, Candidate, CostModel, Measurement, Measurer, ProfileDB,
                                 default_path)
from fusion.targets import get_target


def _graph():
    b = GraphBuilder()
    x = b.input("x", "float32", [8, 32])
    y = b.matmul(x, np.ones((32, 32), np.float32))
    b.output(b.transpose(y, perm=[1, 0]))        # M2M -> Shuffle: a profile pair
    return b.build()


class Fake(Measurer):
    def __init__(self, source, ratio):
        self.source, self.ratio, self.calls = source, ratio, 0

    def measure(self, cand):
        self.calls += 1
        return Measurement(self.ratio * 1e-3, 1e-3, self.source)


def test_default_path_follows_fusion_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSION_CACHE", str(tmp_path))
    assert default_path() == str(tmp_path / "profile.json")
    g = _graph()
    p = fusion.plan(g)                      # default database, cost model
    assert p.stats["profile_lookups"] == 1
    data = json.loads((tmp_path / "profile.json").read_text())
    (entry,) = data["entries"].values()
    assert entry["source"] == COST_MODEL
    assert entry["key"]["classes"] == ["M2M", "Shuffle"] and entry["key"]["target"] == "host"
    assert entry["key"]["first"][0].startswith("MatMul{}(float32[8,32],float32[32,32]")


def test_reused_across_runs_and_targets_are_separate(tmp_path):
    path = str(tmp_path / "db.json")
    m = Fake("measured, host", 0.9)
    fusion.plan(_graph(), profile_db=ProfileDB(path, m))
    fusion.plan(_graph(), profile_db=ProfileDB(path, m))   # a fresh graph object, same key
    assert m.calls == 1
    fusion.plan(_graph(), "android-arm64", profile_db=ProfileDB(path, m))
    assert m.calls == 2
    assert len(ProfileDB(path)) == 2


def test_measured_value_replaces_cost_model_and_decides(tmp_path):
    path = str(tmp_path / "db.json")
    p = fusion.plan(_graph(), profile_db=ProfileDB(path))           # cost model says fuse
    assert len(p.blocks) == 1
    slow = Fake("measured, host", 1.3)
    db = ProfileDB(path, slow)
    p = fusion.plan(_graph(), profile_db=db)
    db.save()
    assert slow.calls == 1 and len(p.blocks) == 2
    assert "fused 1.3x slower (measured, host)" in p.refused[0].reason
    # Later runs with only the cost model keep the measurement.
    p = fusion.plan(_graph(), profile_db=ProfileDB(path))
    assert len(p.blocks) == 2


def test_save_merges_with_concurrent_writers(tmp_path):
    path = str(tmp_path / "db.json")
    g = _graph()
    a, b = ProfileDB(path), ProfileDB(path)
    fusion.plan(g, profile_db=a)
    fusion.plan(g, "opencl", profile_db=b)
    a.save()
    b.save()
    assert len(ProfileDB(path)) == 2


def test_unreadable_database_is_a_user_error(tmp_path):
    bad = tmp_path / "db.json"
    bad.write_text("{not json")
    with pytest.raises(FusionError, match="unreadable"):
        ProfileDB(str(bad))
    bad.write_text(json.dumps({"version": 99, "entries": {}}))
    with pytest.raises(FusionError, match="unknown format"):
        ProfileDB(str(bad))


def test_candidate_subgraph_is_standalone_and_runs():
    g = _graph()
    mm, tr = g.nodes
    cand = Candidate(g, [mm], [tr], (mm.opdef.mapping_of(mm), tr.opdef.mapping_of(tr)), get_target("host"))
    sub, first, second = cand.subgraph()
    sub.verify()
    assert [n.op for n in first] == ["MatMul"] and [n.op for n in second] == ["Transpose"]
    x = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    (want,) = fusion.run_reference(g, {"x": x}).values()
    (got,) = fusion.run_reference(sub, {"x": x}).values()
    np.testing.assert_allclose(got, want)
    m = CostModel().measure(cand)
    assert m.source == COST_MODEL and m.fused_s > 0 and m.separate_s > m.fused_s


def test_compile_and_time_needs_the_code_generator():
    from fusion.plan.profile import CompileAndTime
    try:
        import fusion.codegen  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(FusionError, match="code generator"):
            CompileAndTime()
        return
    g = _graph()
    mm, tr = g.nodes
    cand = Candidate(g, [mm], [tr], (mm.opdef.mapping_of(mm), tr.opdef.mapping_of(tr)), get_target("android-arm64"))
    m = CompileAndTime(repeat=2).measure(cand)
    assert m.source == "measured, host (for android-arm64)" and m.fused_s > 0 and m.separate_s > 0
