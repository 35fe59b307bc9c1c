"""The ONNX backend suite's node tests for this table's shape, movement,
indexing, pooling, normalization, reduction, opaque and control-flow ops:
the interpreter reproduces the suite's expected outputs, and every index
function reproduces the reference at every output position.

Expected outputs come from ONNX's own reference implementation; where it and
onnxruntime (our oracle) disagree we follow onnxruntime (listed below)."""
import sys

import numpy as np
import pytest

import fusion
from fusion.oracle import compare
from test_ops_common import check_lowered

OPS = set("""Gemm BatchNormalization MaxPool AveragePool GlobalAveragePool GlobalMaxPool Flatten Squeeze
Unsqueeze Gather Slice Split Shape Size Expand Pad ConstantOfShape Range Constant LayerNormalization Dropout
Resize Upsample ConvTranspose Tile Trilu CumSum ArgMax ArgMin InstanceNormalization GatherElements GatherND
ScatterND ScatterElements Einsum DepthToSpace SpaceToDepth OneHot TopK NonMaxSuppression RoiAlign NonZero
If Loop Scan Reshape Transpose Concat ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceSumSquare Softmax LogSoftmax Conv MatMul""".split())

# Not supported by design: a one-line error at import names the reason.
REFUSED = {
    "training": ["test_batchnorm_example_training_mode", "test_batchnorm_epsilon_training_mode",
                      "test_training_dropout_default", "test_training_dropout_default_mask", "test_training_dropout",
                      "test_training_dropout_mask", "test_training_dropout_zero_ratio",
                      "test_training_dropout_zero_ratio_mask"],
    "unsupported element type": ["test_einsum_batch_matmul_bfloat16", "test_einsum_sum_bfloat16",
                                 "test_einsum_transpose_bfloat16", "test_onehot_with_bfloat16_values",
                                 "test_range_bfloat16_type_positive_delta"],
    "not supported": ["test_if_seq", "test_if_opt", "test_loop13_seq", "test_loop16_seq_none", "test_scan_sum",
                      "test_resize_downsample_scales_linear_antialias", "test_resize_downsample_sizes_linear_antialias",
                      "test_resize_downsample_scales_cubic_antialias", "test_resize_downsample_sizes_cubic_antialias"],
}
# onnxruntime and ONNX's reference disagree: align_corners when downscaling by
# a scale whose output length is rounded (ORT uses the rounded length).
ORT_DIFFERS = {"test_resize_downsample_scales_linear_align_corners", "test_resize_downsample_scales_cubic_align_corners"}
# The expression evaluator starts an empty bool max-reduction at True (from -inf).
LOWER_KNOWN = {"test_reduce_max_empty_set_bool"}


@pytest.fixture(scope="module")
def cases():
    from onnx.backend.test.case.node import collect_testcases
    out = []
    for case in collect_testcases():
        ops = {n.op_type for n in case.model.graph.node}
        if ops & OPS and (len(case.model.graph.node) == 1 or ops <= OPS):
            out.append(case)
    return out


def _feeds(case, ins):
    m = case.model
    init = {t.name for t in m.graph.initializer}
    return {v.name: a for v, a in zip([i for i in m.graph.input if i.name not in init], ins)}


def test_backend_node_cases(cases):
    refused = {n: why for why, names in REFUSED.items() for n in names}
    failures, passed, lowered = [], 0, 0
    for case in cases:
        name = case.name
        try:
            g = fusion.load(case.model)
        except fusion.FusionError as e:
            if name in refused and refused[name] in str(e) and "\n" not in str(e):
                continue
            failures.append(f"{name}: import: {e}")
            continue
        assert name not in refused, f"{name} imports now: drop it from REFUSED"
        try:
            for k, (ins, outs) in enumerate(case.data_sets):
                feeds = _feeds(case, ins)
                got = fusion.run_reference(g, feeds)
                want = {o.name: a for o, a in zip(case.model.graph.output, outs)}
                rep = compare(got, want)
                if name in ORT_DIFFERS:
                    assert not rep.ok, f"{name} agrees with ONNX's reference now: drop it from ORT_DIFFERS"
                elif not rep.ok:
                    raise AssertionError(str(rep))
                if k == 0 and name not in LOWER_KNOWN:
                    lowered += check_lowered(g, feeds)
            passed += 1
        except Exception as e:  # collect them all, report together
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)
    assert passed > 450 and lowered > 450, (passed, lowered)
