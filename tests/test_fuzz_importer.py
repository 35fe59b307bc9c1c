"""Byte-level fuzzing of the importer: mutated models loaded in a worker
process; anything but 'loaded' or a one-line FusionError is a finding."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from fusion.fuzz import importer


def test_mutations_change_the_bytes():
    rng = np.random.default_rng(0)
    seed = importer.seed_models(n=1)[0]
    outs = [importer.mutate(seed, rng) for _ in range(50)]
    assert len(set(outs)) > 40 and sum(o != seed for o in outs) >= 45


def test_verdicts(tmp_path):
    p = tmp_path / "cut.onnx"
    p.write_bytes(importer.seed_models(n=1)[0][:20])
    assert importer.load_verdict(str(p))["verdict"] == "clean"
    ok = tmp_path / "ok.onnx"
    ok.write_bytes(importer.seed_models(n=1)[0])
    assert importer.load_verdict(str(ok))["verdict"] == "ok"


def test_a_dying_worker_is_a_finding_not_the_end(monkeypatch):
    """A worker that segfaults counts as a crash and the fuzzer goes on."""
    real = importer._spawn_worker
    calls = []

    def spawn():
        calls.append(1)
        if len(calls) == 1:   # the first worker dies on its first input
            w = subprocess.Popen([sys.executable, "-c", "import os, sys; print('ready', flush=True); "
                                  "sys.stdin.readline(); os.abort()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True, bufsize=1)
            assert w.stdout.readline().strip() == "ready"
            return w
        return real()
    monkeypatch.setattr(importer, "_spawn_worker", spawn)
    res = importer.fuzz(4, seed=3)
    assert res.execs == 4 and len(calls) == 2
    assert [f["verdict"] for f in res.findings] == ["crash"]
    assert res.ok + res.clean == 3


def test_importer_fuzz_ci():
    res = importer.fuzz(150, seed=11)
    assert res.execs == 150
    assert res.clean > 50          # most mutants are broken files
    assert not res.findings, res.findings
