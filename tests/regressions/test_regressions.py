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
    "fuzz_7105_Mean_Sub_Sum_MatMul_Sin_Concat.onnx":
        "MatMul -> Sin -> Concat(.., graph input) with an elementwise prologue: 40 of 64 outputs wrong (0). "
        "Same family as above (fusion/codegen/anchors.py epilogue); the shrinker could not drop the prologue "
        "without the failure going away, so the prologue changes which kernel path is taken",
    "fuzz_100114_Gemm_Sigmoid_Concat.onnx":
        "Gemm -> Sigmoid -> Concat(graph input, ..): the graph input's piece of the Concat is wrong "
        "(fusion/codegen/anchors.py _gemm epilogue; same family as the MatMul/Conv -> Concat cases)",
    "fuzz_100312_Conv_Pad_Transpose.onnx":
        "Conv -> Pad(constant 1.0985) -> Transpose: the padding border is never written (0 instead of the pad "
        "value), 90 of 108 elements wrong. The fast-kernel epilogue stores only where an anchor element lands "
        "(fusion/codegen/anchors.py AnchorContext.epilogue/forward_indices: Pad's output is not onto)",
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
