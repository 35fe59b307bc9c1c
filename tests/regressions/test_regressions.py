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
XFAIL: dict[str, str] = {}

# Fixed (fusion/codegen/anchors.py, 2026-12-07), kept as regressions:
#   fuzz_800675_Conv_Mean_Reshape, fuzz_900544_Conv_Abs: the flat epilogue (offset j passed as the
#   innermost spatial index) on outputs whose innermost dim has extent 1, where j is printed as 0;
#   fuzz_600838_MaxPool_Pow_Concat: a Concat block's rest task read the anchor (Pow(v, v) of the
#   pooled values), which exists only inside the kernel.

# Fixed (fusion/ops/movement.py, 2026-12-07 round 2), kept as a regression: fuzz_1578_Resize (nearest,
#   align_corners, floor): x * ((in-1)/(out-1)) in float32 lands just below an integer (23 * (7/23) =
#   6.9999995 -> pixel 6) where onnxruntime's x * (in-1) / (out-1) is exact (7); found by the slow
#   `fusion fuzz --graphs 2000 --seed 1 --max-nodes 16` campaign.

# Fixed (fusion/codegen/anchors.py, checkpoint 6), kept as regressions: a fast
# anchor kernel's epilogue stored only where an anchor element lands, so block
# outputs not onto the anchor (Concat with another input, constant Pad) were
# left partly unwritten:
#   fuzz_1084_MatMul_Concat, fuzz_5226_Conv_Concat, fuzz_7105_..._MatMul_Sin_Concat,
#   fuzz_100114_Gemm_Sigmoid_Concat, fuzz_100312_Conv_Pad_Transpose.

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
