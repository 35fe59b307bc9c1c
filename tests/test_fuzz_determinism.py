"""The same model and flags give byte-identical artifacts (model.c,
weights.bin, libmodel.so) in two fresh processes."""
from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from fusion.fuzz.generator import generate
from fusion.fuzz.spec import merge

COMPILE = """
import sys, fusion
fusion.compile(sys.argv[1], target="host", threads=1, profile_db=False, out_dir=sys.argv[2], use_cache=False)
"""
ARTIFACTS = ["model.c", "model.h", "weights.bin", "libmodel.so"]


def _two_fresh_builds(model: str, tmp_path):
    outs = []
    for k in range(2):
        d = tmp_path / f"build{k}"
        env_hash = {"PYTHONHASHSEED": str(k + 1)}   # set and dict orders differ between the runs
        import os
        p = subprocess.run([sys.executable, "-c", COMPILE, model, str(d)], capture_output=True, text=True,
                           timeout=900, env=dict(os.environ, **env_hash, FUSION_CACHE=str(tmp_path / f"cache{k}")))
        assert p.returncode == 0, p.stderr[-3000:]
        outs.append(d)
    return outs


def _same(a, b):
    diff = [f for f in ARTIFACTS if (a / f).read_bytes() != (b / f).read_bytes()]
    assert not diff, f"differ between two fresh processes: {diff}"


def test_fuzz_batch_is_deterministic(tmp_path):
    m = merge([generate(300 + k, max_nodes=10) for k in range(10)])
    path = tmp_path / "batch.onnx"
    onnx.save(m, path)
    _same(*_two_fresh_builds(str(path), tmp_path))


@pytest.mark.slow
def test_tinybert_small_is_deterministic(tmp_path):
    """pytest -m slow tests/test_fuzz_determinism.py (about 40 s)"""
    _same(*_two_fresh_builds("zoo:tinybert:small", tmp_path))
