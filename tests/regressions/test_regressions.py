"""Every saved minimal failing graph (fuzz_*.onnx here, written by `fusion fuzz
--save tests/regressions`) compiled for the host and compared with onnxruntime
on the inputs it failed with. Known open bugs are in XFAIL (strict: when the
bug is fixed the test fails until its entry is removed)."""
from __future__ import annotations

import glob
import os

import onnx
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# file -> what is wrong, and where
XFAIL = {
    "fuzz_1084_MatMul_Concat.onnx":
        "MatMul whose consumer Concat also reads a graph input: the fast-kernel epilogue stores only the "
        "anchor's piece of the Concat output, the other piece is never written (garbage). "
        "fusion/codegen/anchors.py AnchorContext.epilogue/forward_indices should refuse (plain loop nest) "
        "when a block output is not covered by the anchor's elements",
    "fuzz_5226_Conv_Concat.onnx":
        "the same bug through the Conv kernel: Conv -> Concat(conv, graph input) writes only the Conv's rows "
        "of the Concat output (fusion/codegen/anchors.py epilogue, fast conv path)",
}

FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(HERE, "fuzz_*.onnx")))


def test_xfail_entries_exist():
    assert set(XFAIL) <= set(FILES), f"XFAIL names missing files: {set(XFAIL) - set(FILES)}"


@pytest.mark.parametrize("fname", [
    pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=XFAIL[f])) if f in XFAIL else f
    for f in FILES])
def test_regression(fname):
    import fusion
    from fusion.fuzz.campaign import feeds_for
    from fusion.fuzz.runner import CFLAGS
    from fusion.oracle import compare, run_onnxruntime
    m = onnx.load(os.path.join(HERE, fname))
    feeds = feeds_for(m)
    expected = run_onnxruntime(m, feeds)
    mod = fusion.compile(fusion.load(m), target="host", threads=1, profile_db=False, cflags=CFLAGS)
    rep = compare(mod.run(feeds), expected)
    assert rep.ok, str(rep)
