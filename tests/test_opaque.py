"""The hand-written opaque kernels (fusion/codegen/opaque) against onnxruntime
running a one-node model of the same op, plus the error paths (bad indices,
too-small outputs, wrong types must give a message, never a crash), and the
same cases once more under AddressSanitizer + UBSan (test_sanitizers)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from fusion.codegen.opaque.native import KernelError, run_kernel
from fusion.oracle import compare_arrays, run_onnxruntime

SANITIZED = bool(os.environ.get("FUSION_OPAQUE_LIB"))


def ort(op, inputs, attrs, n_out, opset):
    """onnxruntime on a one-node model; None inputs are omitted."""
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    feeds = {n: a for n, a in zip(names, inputs) if a is not None}
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
          for n, a in feeds.items()]
    outs = [onnx.ValueInfoProto(name=f"o{k}") for k in range(n_out)]
    node = helper.make_node(op, names, [o.name for o in outs], **attrs)
    model = helper.make_model(helper.make_graph([node], "g", vi, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    res = run_onnxruntime(model, feeds)
    return [res[o.name] for o in outs]


class Case:
    def __init__(self, name, op, inputs, attrs=None, n_out=1, opset=21, unordered=False):
        self.name, self.op, self.inputs, self.attrs = name, op, inputs, attrs or {}
        self.n_out, self.opset, self.unordered = n_out, opset, unordered

    def __repr__(self):
        return self.name


def _cases():
    r = np.random.default_rng(7)
    f32 = lambda *s: r.standard_normal(s).astype(np.float32)
    ties = lambda *s, dt=np.float32: r.integers(0, 4, s).astype(dt)
    K = lambda k: np.array([k], np.int64)
    c = []
    # TopK: both directions, ties (lower index first), the heap path (k << n),
    # k = 0 and k = n, every dtype, NaN, an empty slice dimension
    for largest in (0, 1):
        c.append(Case(f"topk_ties_l{largest}", "TopK", [ties(6, 40), K(7)], dict(largest=largest), 2))
        c.append(Case(f"topk_heap_l{largest}", "TopK", [ties(3, 200), K(5)], dict(largest=largest), 2))
        c.append(Case(f"topk_axis0_l{largest}", "TopK", [f32(9, 4, 3), K(9)], dict(axis=0, largest=largest), 2))
    c.append(Case("topk_mid_axis", "TopK", [f32(3, 17, 5), K(4)], dict(axis=-2), 2))
    c.append(Case("topk_k0", "TopK", [f32(4, 6), K(0)], {}, 2))
    c.append(Case("topk_nan", "TopK", [np.array([[1, np.nan, 3, np.nan, 2, -np.inf]], np.float32), K(4)], {}, 2))
    c.append(Case("topk_nan_smallest", "TopK", [np.array([[1, np.nan, 3, np.nan, 2]], np.float32), K(3)],
                  dict(largest=0), 2))
    c.append(Case("topk_empty", "TopK", [np.zeros((0, 5), np.float32), K(2)], {}, 2))
    for dt in (np.float64, np.int32, np.int64):
        c.append(Case(f"topk_{np.dtype(dt).name}", "TopK", [ties(5, 30, dt=dt), K(6)], {}, 2))
    c.append(Case("topk_unsorted", "TopK", [f32(4, 50), K(9)], dict(sorted=0), 2, unordered=True))

    # NonMaxSuppression
    def boxes(b, n, flip=False, center=False):
        y0, x0 = r.uniform(0, 10, (b, n)), r.uniform(0, 10, (b, n))
        h, w = r.uniform(0.5, 4, (b, n)), r.uniform(0.5, 4, (b, n))
        if center:
            return np.stack([x0, y0, w, h], -1).astype(np.float32)
        bx = np.stack([y0, x0, y0 + h, x0 + w], -1)
        if flip:  # corners given in either order
            sw = r.random((b, n)) < 0.5
            bx[sw] = bx[sw][:, [2, 3, 0, 1]]
        return bx.astype(np.float32)
    sc = lambda b, c_, n: r.random((b, c_, n)).astype(np.float32)
    M, I, S = (lambda m: np.array([m], np.int64)), (lambda v: np.array([v], np.float32)), (lambda v: np.array([v], np.float32))
    c.append(Case("nms_basic", "NonMaxSuppression", [boxes(2, 60), sc(2, 3, 60), M(10), I(0.4), S(0.2)]))
    c.append(Case("nms_flipped", "NonMaxSuppression", [boxes(1, 80, flip=True), sc(1, 2, 80), M(100), I(0.3)]))
    c.append(Case("nms_center", "NonMaxSuppression", [boxes(2, 50, center=True), sc(2, 2, 50), M(7), I(0.5)],
                  dict(center_point_box=1)))
    tied = np.round(sc(1, 2, 40) * 3) / 3   # many equal scores: lower box index first
    c.append(Case("nms_tied_scores", "NonMaxSuppression", [boxes(1, 40), tied.astype(np.float32), M(40), I(0.2)]))
    c.append(Case("nms_max0", "NonMaxSuppression", [boxes(1, 10), sc(1, 1, 10), M(0), I(0.5)]))
    c.append(Case("nms_no_max", "NonMaxSuppression", [boxes(1, 10), sc(1, 1, 10)]))
    c.append(Case("nms_iou0", "NonMaxSuppression", [boxes(1, 30), sc(1, 1, 30), M(30), I(0.0)]))
    c.append(Case("nms_iou1", "NonMaxSuppression", [boxes(1, 30), sc(1, 1, 30), M(30), I(1.0)]))
    c.append(Case("nms_no_boxes", "NonMaxSuppression", [np.zeros((1, 0, 4), np.float32), np.zeros((1, 3, 0), np.float32),
                                                        M(5), I(0.5)]))
    same = np.tile(np.array([[[0, 0, 1, 1]]], np.float32), (1, 5, 1))  # identical boxes: IoU exactly 1
    c.append(Case("nms_identical", "NonMaxSuppression", [same, sc(1, 1, 5), M(5), I(0.99)]))
    c.append(Case("nms_threshold_only", "NonMaxSuppression", [boxes(1, 20), sc(1, 2, 20), M(20), None, S(0.7)]))

    # RoiAlign
    X = f32(2, 3, 11, 13)
    # well-formed RoIs, some reaching past the map (onnxruntime fails on x2 < x1 in half_pixel mode)
    lo = r.uniform(-2, 12, (6, 2))
    rois = np.concatenate([lo, lo + r.uniform(0.3, 6, (6, 2))], 1).astype(np.float32)
    bi = np.array([0, 1, 1, 0, 1, 0], np.int64)
    for mode in ("avg", "max"):
        for ctm in ("half_pixel", "output_half_pixel"):
            c.append(Case(f"roialign_{mode}_{ctm}", "RoiAlign", [X, rois, bi],
                          dict(mode=mode, coordinate_transformation_mode=ctm, output_height=3, output_width=4,
                               sampling_ratio=0, spatial_scale=0.8)))
    c.append(Case("roialign_sampling2", "RoiAlign", [X, rois, bi], dict(output_height=5, output_width=2, sampling_ratio=2)))
    c.append(Case("roialign_f64", "RoiAlign", [X.astype(np.float64), rois.astype(np.float64), bi],
                  dict(output_height=4, output_width=4, spatial_scale=0.5)))
    c.append(Case("roialign_opset10", "RoiAlign", [X, rois, bi], dict(output_height=2, output_width=2), opset=10))

    # NonZero
    c.append(Case("nonzero_bool", "NonZero", [r.random((3, 4, 5)) < 0.3]))
    c.append(Case("nonzero_float", "NonZero", [np.array([[0, -0.0, np.nan], [1, 0, -2]], np.float32)]))
    c.append(Case("nonzero_int64", "NonZero", [ties(7, 3, dt=np.int64)]))
    c.append(Case("nonzero_scalar", "NonZero", [np.array(2.5, np.float32)]))
    c.append(Case("nonzero_empty", "NonZero", [np.zeros((0, 4), np.int32)]))

    # Compress
    x = f32(4, 5)
    c.append(Case("compress_flat", "Compress", [x, r.random(13) < 0.5]))
    c.append(Case("compress_axis0", "Compress", [x, np.array([1, 0, 1], bool)], dict(axis=0)))
    c.append(Case("compress_axis1_long", "Compress", [x, r.random(7) < 0.5], dict(axis=-1)))

    # GatherND, ScatterND, ScatterElements, ReverseSequence
    d = f32(4, 5, 6)
    c.append(Case("gathernd", "GatherND", [d, r.integers(-4, 4, (3, 2, 2)).astype(np.int64)]))
    c.append(Case("gathernd_full", "GatherND", [d, r.integers(0, 4, (7, 3)).astype(np.int64) % [4, 5, 6]]))
    c.append(Case("gathernd_batch", "GatherND", [d, r.integers(0, 5, (4, 3, 1)).astype(np.int64)], dict(batch_dims=1)))
    c.append(Case("gathernd_int64", "GatherND", [ties(5, 3, dt=np.int64), np.array([[4], [0]], np.int64)]))
    uniq = np.array([[0, 1], [3, 4], [2, 0]], np.int64)
    c.append(Case("scatternd_none", "ScatterND", [d, uniq, f32(3, 6)]))
    dup = np.array([[1], [3], [1], [-1]], np.int64)
    for red in ("add", "mul", "max", "min"):
        c.append(Case(f"scatternd_{red}", "ScatterND", [d, dup, f32(4, 5, 6)], dict(reduction=red), opset=18))
    c.append(Case("scatterel_axis1", "ScatterElements", [d, np.array([[[0], [4], [-1]]] * 2, np.int64),
                                                         f32(2, 3, 1)], dict(axis=1)))
    c.append(Case("scatterel_add", "ScatterElements", [ties(4, 4, dt=np.int32), np.array([[1, 1], [3, 1]], np.int64),
                                                       np.array([[5, 6], [7, 8]], np.int32)],
                  dict(axis=0, reduction="add"), opset=18))
    seq = f32(5, 3, 2)
    c.append(Case("reverseseq_time0", "ReverseSequence", [seq, np.array([5, 0, 3], np.int64)],
                  dict(batch_axis=1, time_axis=0)))
    c.append(Case("reverseseq_batch0", "ReverseSequence", [f32(3, 5, 2), np.array([1, 4, 5], np.int64)],
                  dict(batch_axis=0, time_axis=1)))
    # Unique: flat and along an axis, sorted and by first occurrence
    for srt in (1, 0):
        c.append(Case(f"unique_flat_s{srt}", "Unique", [ties(4, 6)], dict(sorted=srt), 4))
        c.append(Case(f"unique_axis0_s{srt}", "Unique", [ties(8, 2, dt=np.int64) % 2], dict(axis=0, sorted=srt), 4))
        c.append(Case(f"unique_axis1_s{srt}", "Unique", [ties(2, 7, 2) % 2], dict(axis=-2, sorted=srt), 4))
    c.append(Case("unique_f64", "Unique", [ties(20, dt=np.float64)], {}, 4))
    c.append(Case("unique_int8", "Unique", [ties(3, 5, dt=np.int8)], {}, 4))

    # losses: every reduction, class weights, ignore_index, extra dims
    logits, lab = f32(6, 5, 3, 2), r.integers(0, 5, (6, 3, 2)).astype(np.int64)
    lab[0, 0, 0] = lab[2, 1, 1] = -1
    w = r.random(5).astype(np.float32)
    for red in ("none", "sum", "mean"):
        c.append(Case(f"nll_{red}", "NegativeLogLikelihoodLoss", [f32(7, 4), r.integers(0, 4, 7).astype(np.int64)],
                      dict(reduction=red)))
        c.append(Case(f"nll_{red}_w_ignore", "NegativeLogLikelihoodLoss", [logits, lab, w],
                      dict(reduction=red, ignore_index=-1)))
        c.append(Case(f"sce_{red}", "SoftmaxCrossEntropyLoss", [logits, lab], dict(reduction=red, ignore_index=-1), 2))
    c.append(Case("sce_f64_weights", "SoftmaxCrossEntropyLoss", [f32(4, 6).astype(np.float64),
                                                                  r.integers(0, 6, 4).astype(np.int64),
                                                                  r.random(6)], {}, 2))
    # Det, windows, DynamicQuantizeLinear
    c.append(Case("det_batch", "Det", [f32(2, 3, 4, 4)]))
    c.append(Case("det_singular", "Det", [np.array([[[1, 2], [2, 4]], [[0, 1], [1, 0]]], np.float32)]))
    for kind in ("Hann", "Hamming", "Blackman"):
        for periodic in (0, 1):
            c.append(Case(f"{kind.lower()}_p{periodic}", f"{kind}Window", [np.array(10, np.int64)],
                          dict(periodic=periodic, output_datatype=1 if periodic else 11)))
    c.append(Case("hann_int64_size1", "HannWindow", [np.array(1, np.int32)], dict(periodic=1, output_datatype=7)))
    c.append(Case("blackman_uint8", "BlackmanWindow", [np.array(7, np.int64)], dict(output_datatype=2)))
    cache = f32(2, 3, 8, 4)
    c.append(Case("tensorscatter_linear", "TensorScatter", [cache, f32(2, 3, 3, 4), np.array([0, 5], np.int64)],
                  {}, opset=24))
    c.append(Case("tensorscatter_circular", "TensorScatter", [cache, f32(2, 3, 3, 4), np.array([6, 7], np.int64)],
                  dict(mode="circular"), opset=24))
    c.append(Case("tensorscatter_axis1", "TensorScatter", [f32(2, 5, 3), f32(2, 1, 3)], dict(axis=1), opset=24))
    # Attention: 4-D / 3-D, grouped KV heads, masks, causal, caches, padding, softcap, every qk output mode
    A = lambda name, ins, attrs, n_out=1, opset=23: c.append(Case(f"attention_{name}", "Attention", ins, attrs, n_out, opset))
    A("4d", [f32(2, 3, 4, 8), f32(2, 3, 6, 8), f32(2, 3, 6, 5)], {})
    A("gqa_causal", [f32(2, 4, 5, 8), f32(2, 2, 5, 8), f32(2, 2, 5, 8)], dict(is_causal=1))
    A("3d_gqa", [f32(2, 4, 16), f32(2, 6, 8), f32(2, 6, 8)], dict(q_num_heads=4, kv_num_heads=2))
    A("bool_mask", [f32(2, 3, 4, 8), f32(2, 3, 6, 8), f32(2, 3, 6, 5), r.random((4, 6)) < 0.7], {})
    A("float_mask", [f32(2, 3, 4, 8), f32(2, 3, 6, 8), f32(2, 3, 6, 5), f32(2, 1, 4, 6)], {})
    A("past_causal", [f32(2, 3, 4, 8), f32(2, 3, 4, 8), f32(2, 3, 4, 5), None, f32(2, 3, 3, 8), f32(2, 3, 3, 5)],
      dict(is_causal=1), 3)
    A("scale_softcap", [f32(1, 2, 3, 4) * 4, f32(1, 2, 5, 4) * 4, f32(1, 2, 5, 4)], dict(scale=0.3, softcap=2.0))
    for mode in range(4):
        A(f"qk_mode{mode}", [f32(1, 2, 3, 4), f32(1, 2, 5, 4), f32(1, 2, 5, 4), f32(3, 5)],
          dict(qk_matmul_output_mode=mode, softcap=1.5), 4)
    A("all_masked_row", [f32(1, 1, 2, 4), f32(1, 1, 3, 4), f32(1, 1, 3, 4),
                         np.array([[True, True, False], [False, False, False]])], {})
    A("causal_long_kv", [f32(1, 2, 3, 4), f32(1, 2, 5, 4), f32(1, 2, 5, 4)], dict(is_causal=1))
    A("nonpad_causal", [f32(2, 2, 3, 4), f32(2, 2, 5, 4), f32(2, 2, 5, 4), None, None, None, np.array([4, 5], np.int64)],
      dict(is_causal=1), 1, 24)
    # QLinearMatMul: uint8 and int8, per-column b parameters, batch broadcasting
    u8 = lambda *sh: r.integers(0, 256, sh).astype(np.uint8)
    i8 = lambda *sh: r.integers(-128, 128, sh).astype(np.int8)
    sc = lambda *sh: r.uniform(0.001, 0.05, sh).astype(np.float32)
    c.append(Case("qlinearmatmul_u8", "QLinearMatMul", [u8(5, 7), sc(), np.array(113, np.uint8), u8(7, 4), sc(),
                                                         np.array(98, np.uint8), np.array(0.4, np.float32),
                                                         np.array(120, np.uint8)]))
    c.append(Case("qlinearmatmul_i8_percol", "QLinearMatMul", [i8(2, 1, 3, 6), sc(), np.array(-3, np.int8), i8(6, 5),
                                                                sc(1, 5), i8(1, 5) // 8, np.array(0.9, np.float32),
                                                                np.array(4, np.int8)]))
    c.append(Case("qlinearmatmul_i8_batch", "QLinearMatMul", [i8(2, 1, 3, 6), sc(), np.array(-3, np.int8), i8(3, 6, 5),
                                                               sc(), np.array(7, np.int8), np.array(0.9, np.float32),
                                                               np.array(4, np.int8)]))
    c.append(Case("qlinearmatmul_mixed_1d", "QLinearMatMul", [u8(6), sc(), np.array(128, np.uint8), i8(6, 3), sc(),
                                                               np.array(0, np.int8), np.array(0.2, np.float32),
                                                               np.array(10, np.uint8)]))
    # ConvInteger / QLinearConv: padding, strides, dilations, groups, auto_pad, bias, per-channel weights
    c.append(Case("convinteger_pads", "ConvInteger", [u8(1, 2, 6, 5), u8(3, 2, 3, 3), np.array(100, np.uint8),
                                                       np.array(120, np.uint8)], dict(pads=[1, 0, 2, 1])))
    c.append(Case("convinteger_1d_i8", "ConvInteger", [i8(2, 3, 9), i8(4, 3, 2)], dict(strides=[2], dilations=[3])))
    c.append(Case("qlinearconv_u8", "QLinearConv", [u8(1, 4, 7, 7), sc(), np.array(120, np.uint8), u8(6, 2, 3, 3),
                                                     sc(6), np.array([128] * 6, np.uint8), np.array(0.5, np.float32),
                                                     np.array(7, np.uint8), r.integers(-500, 500, 6).astype(np.int32)],
                  dict(group=2, strides=[2, 1], auto_pad="SAME_UPPER")))
    c.append(Case("qlinearconv_i8", "QLinearConv", [i8(2, 3, 5, 6), sc(), np.array(-5, np.int8), i8(4, 3, 2, 2), sc(),
                                                     np.array(0, np.int8), np.array(0.7, np.float32),
                                                     np.array(-3, np.int8)], dict(dilations=[2, 1], pads=[0, 1, 1, 0])))
    # MaxUnpool from MaxPool's indices (computed here by onnxruntime), with and without output_shape; old Scatter
    pv, pi = ort("MaxPool", [f32(2, 3, 6, 4)], dict(kernel_shape=[2, 2], strides=[2, 2]), 2, 12)
    c.append(Case("maxunpool", "MaxUnpool", [pv, pi], dict(kernel_shape=[2, 2], strides=[2, 2])))
    pv, pi = ort("MaxPool", [f32(2, 3, 7, 5)], dict(kernel_shape=[2, 2], strides=[2, 2]), 2, 12)
    c.append(Case("maxunpool_output_shape", "MaxUnpool", [pv, pi, np.array([2, 3, 7, 5], np.int64)],
                  dict(kernel_shape=[2, 2], strides=[2, 2])))
    c.append(Case("scatter_opset10", "Scatter", [d, np.array([[[0], [4], [-1]]] * 2, np.int64), f32(2, 3, 1)],
                  dict(axis=1), opset=10))
    for ac in (0, 1):
        c.append(Case(f"affinegrid_2d_ac{ac}", "AffineGrid", [f32(2, 2, 3), np.array([2, 3, 4, 5], np.int64)],
                      dict(align_corners=ac), opset=20))
        c.append(Case(f"affinegrid_3d_ac{ac}", "AffineGrid", [f32(1, 3, 4), np.array([1, 1, 2, 3, 4], np.int64)],
                      dict(align_corners=ac), opset=20))
    c.append(Case("affinegrid_size1", "AffineGrid", [f32(1, 2, 3), np.array([1, 1, 1, 3], np.int64)],
                  dict(align_corners=1), opset=20))
    c.append(Case("col2im", "Col2Im", [f32(2, 3 * 4, 12), np.array([5, 6], np.int64), np.array([2, 2], np.int64)],
                  dict(strides=[2, 2], pads=[1, 1, 0, 1]), opset=18))
    c.append(Case("col2im_dilated", "Col2Im", [f32(1, 2 * 6, 9), np.array([5, 7], np.int64), np.array([2, 3], np.int64)],
                  dict(dilations=[2, 1], strides=[1, 2]), opset=18))
    # RNN / GRU / LSTM: directions, biases, initial states, sequence_lens, clip, peepholes, activations
    S_, N_, I_, H_ = 5, 3, 4, 6
    rw = lambda *sh: (r.standard_normal(sh) * 0.5).astype(np.float32)
    def rec(g, dirs=1):
        return [rw(S_, N_, I_), rw(dirs, g * H_, I_), rw(dirs, g * H_, H_), rw(dirs, 2 * g * H_)]
    R = lambda name, op, ins, attrs, n_out: c.append(Case(name, op, ins, dict(attrs, hidden_size=H_), n_out, 14))
    R("rnn", "RNN", rec(1), {}, 2)
    R("rnn_bidi_relu", "RNN", rec(1, 2), dict(direction="bidirectional", activations=["Relu", "Tanh"]), 2)
    R("gru", "GRU", rec(3), {}, 2)
    R("gru_linear_before_reset", "GRU", rec(3), dict(linear_before_reset=1), 2)
    R("gru_reverse", "GRU", rec(3), dict(direction="reverse"), 2)
    R("lstm_bidi", "LSTM", rec(4, 2), dict(direction="bidirectional"), 3)
    R("lstm_seqlens_init_peep", "LSTM", rec(4) + [np.array([5, 3, 1], np.int32), rw(1, N_, H_), rw(1, N_, H_),
                                                  rw(1, 3 * H_)], {}, 3)
    R("lstm_reverse_seqlens", "LSTM", rec(4) + [np.array([2, 5, 0], np.int32)], dict(direction="reverse"), 3)
    R("gru_empty_sequence", "GRU", rec(3) + [np.array([0, 5, 2], np.int32), rw(1, N_, H_)], {}, 2)
    R("lstm_clip_input_forget", "LSTM", rec(4), dict(clip=0.3, input_forget=1), 3)
    R("lstm_activations", "LSTM", rec(4), dict(activations=["HardSigmoid", "LeakyRelu", "Tanh"],
                                                activation_alpha=[0.3, 0.05], activation_beta=[0.4]), 3)
    c.append(Case("nll_all_ignored_mean", "NegativeLogLikelihoodLoss", [f32(3, 2), np.array([-1, -1, -1], np.int64)],
                  dict(ignore_index=-1)))
    c.append(Case("dql_zeros", "DynamicQuantizeLinear", [np.zeros(4, np.float32)], n_out=3))
    c.append(Case("dql_random", "DynamicQuantizeLinear", [f32(5, 7)], n_out=3))
    c.append(Case("dql_positive", "DynamicQuantizeLinear", [np.abs(f32(20)) + 1], n_out=3))
    c.append(Case("dql_ties", "DynamicQuantizeLinear", [np.array([-2.55, 0, 0.5, 1.5, 2.5, -1.27], np.float32)], n_out=3))
    return c


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_matches_onnxruntime(case):
    got = run_kernel(case.op, case.inputs, case.attrs, opset=case.opset)
    if SANITIZED:
        return  # the child process only checks that the sanitizers stay quiet
    want = ort(case.op, case.inputs, case.attrs, case.n_out, case.opset)
    assert len(got) >= len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        if case.unordered:  # sorted=0: the spec leaves the order open; compare the selected sets
            gi, wi = np.argsort(got[1], axis=-1), np.argsort(want[1], axis=-1)
            g, w = np.take_along_axis(g, gi, -1), np.take_along_axis(w, wi, -1)
        assert g.dtype == w.dtype, f"output {k}: {g.dtype} != {w.dtype}"
        d = compare_arrays(f"output {k}", g, w)
        assert d.ok, f"{case.name} output {k}: {d.message}\n got {g}\nwant {w}"


def test_attention_float64_is_exact():
    # onnxruntime's float64 Attention is ~1e-8 off numpy; ours is computed in double throughout
    r = np.random.default_rng(4)
    q, k, v = r.standard_normal((1, 2, 3, 4)), r.standard_normal((1, 2, 5, 4)), r.standard_normal((1, 2, 5, 6))
    (got,) = run_kernel("Attention", [q, k, v], {}, skip=(1, 2, 3))[:1]
    s = q @ np.swapaxes(k, -1, -2) / 2.0
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v
    assert compare_arrays("Y", got, want).ok


@pytest.mark.parametrize("src,dst,shape", [(np.float32, np.int32, (2, 3)), (np.float64, np.uint16, (3,)),
                                           (np.int8, np.float32, (2, 4)), (np.uint8, np.int8, ())])
def test_bitcast_is_numpy_view(src, dst, shape):
    # onnxruntime 1.32 has no BitCast kernel; numpy's view is the same definition
    x = np.random.default_rng(0).integers(0, 100, shape).astype(src)
    (got,) = run_kernel("BitCast", [x], {"to": helper.np_dtype_to_tensor_dtype(np.dtype(dst))})
    want = x.view(dst) if np.dtype(src).itemsize <= np.dtype(dst).itemsize else x.reshape(shape + (1,)).view(dst)
    want = want.reshape(got.shape) if np.dtype(src).itemsize < np.dtype(dst).itemsize else want
    assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == x.tobytes()


@pytest.mark.parametrize("op,g", [("GRU", 3), ("LSTM", 4)])
def test_recurrent_layout1_is_layout0_transposed(op, g):
    # onnxruntime has no batch-first (layout=1) recurrent kernels; the two layouts must agree
    r = np.random.default_rng(6)
    x, w, rr, b = (r.standard_normal(s).astype(np.float32) * 0.5 for s in ((4, 3, 5), (2, g * 6, 5), (2, g * 6, 6),
                                                                            (2, 12 * g)))
    h0 = r.standard_normal((2, 3, 6)).astype(np.float32)
    lens = np.array([4, 2, 3], np.int32)
    attrs = dict(hidden_size=6, direction="bidirectional")
    a = run_kernel(op, [x, w, rr, b, lens, h0], attrs)
    t = run_kernel(op, [x.transpose(1, 0, 2), w, rr, b, lens, h0.transpose(1, 0, 2)], dict(attrs, layout=1))
    np.testing.assert_allclose(t[0], a[0].transpose(2, 0, 1, 3), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t[1], a[1].transpose(1, 0, 2), rtol=1e-6, atol=1e-6)


def test_nms_selects_in_onnxruntime_order():
    # the order within a class is by score; equal scores keep box order
    b = np.array([[[0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 1, 1.05], [9, 9, 10, 10]]], np.float32)
    s = np.array([[[0.5, 0.9, 0.5, 0.9]]], np.float32)
    (got,) = run_kernel("NonMaxSuppression", [b, s, np.array([4]), np.array([0.5], np.float32)])
    assert got.tolist() == [[0, 0, 1], [0, 0, 3], [0, 0, 0]]


ERRORS = [
    ("TopK", lambda: [np.zeros((2, 3), np.float32), np.array([4])], {}, None, "K = 4 is outside"),
    ("TopK", lambda: [np.zeros((2, 3), np.float32), np.array([-1])], {}, None, "K = -1"),
    ("TopK", lambda: [np.zeros((2, 3), np.float32), np.array([1])], {"axis": 2}, [(2, 1), (2, 1)], "axis 2 is out of range"),
    ("TopK", lambda: [np.zeros((2, 3), np.float32), np.array([3])], {}, [(2, 2), (2, 3)], "needs 6 elements"),
    ("TopK", lambda: [np.zeros((2, 3), np.float16), np.array([1])], {}, [(2, 1), (2, 1)], "float16 is not supported"),
    ("NonMaxSuppression", lambda: [np.zeros((1, 3, 4), np.float32), np.zeros((1, 1, 3), np.float32), np.array([3]),
                                   np.array([1.5], np.float32)], {}, None, "iou_threshold must be in"),
    ("NonMaxSuppression", lambda: [np.zeros((1, 3, 4), np.float32), np.zeros((1, 1, 4), np.float32)], {}, [(0, 3)],
     "boxes have 3 boxes but scores 4"),
    ("NonMaxSuppression", lambda: [(np.random.rand(1, 9, 4) * [1, 1, 0, 0] + [0, 0, 5, 5]).astype(np.float32),
                                   np.random.rand(1, 1, 9).astype(np.float32), np.array([9]),
                                   np.array([1.0], np.float32)], {}, [(2, 3)],
     "more than 2 boxes selected"),
    ("NonMaxSuppression", lambda: [np.zeros((1, 3, 4), np.float32), np.zeros((1, 1, 3), np.float32)],
     {"center_point_box": 2}, None, "center_point_box must be 0 or 1"),
    ("RoiAlign", lambda: [np.zeros((2, 1, 4, 4), np.float32), np.zeros((1, 4), np.float32), np.array([2])], {}, None,
     r"batch_indices\[0\] = 2 is out of range"),
    ("RoiAlign", lambda: [np.zeros((2, 1, 4, 4), np.float32), np.zeros((1, 4), np.float32), np.array([-1])], {}, None,
     "out of range"),
    ("RoiAlign", lambda: [np.zeros((1, 1, 4, 4), np.float32), np.array([[0, 0, 1e12, 1e12]], np.float32),
                          np.array([0])], {}, None, "too large"),
    ("RoiAlign", lambda: [np.zeros((1, 1, 4), np.float32), np.zeros((1, 4), np.float32), np.array([0])], {},
     [(1, 1, 1, 1)], "X must be 4-D"),
    ("NonZero", lambda: [np.ones((3, 3), bool)], {}, [(2, 4)], "needs 18 elements"),
    ("Compress", lambda: [np.zeros((2, 2), np.float32), np.array([1, 1], np.int64)], {}, [(4,)], "must be a 1-D bool"),
    ("GatherND", lambda: [np.zeros((3, 4), np.float32), np.array([[3, 0]], np.int64)], {}, None,
     "index 3 is out of range for a dimension of size 3"),
    ("GatherND", lambda: [np.zeros((3, 4), np.float32), np.array([[0, -5]], np.int64)], {}, None, "index -5"),
    ("GatherND", lambda: [np.zeros((3, 4), np.float32), np.array([[0, 0, 0]], np.int64)], {}, [(1,)],
     r"must be in \[1, 2\]"),
    ("ScatterND", lambda: [np.zeros((3, 4), np.float32), np.array([[7]], np.int64), np.zeros((1, 4), np.float32)], {},
     None, "index 7"),
    ("ScatterND", lambda: [np.zeros((3, 4), np.float32), np.array([[1]], np.int64), np.zeros((1, 3), np.float32)], {},
     None, "updates must have shape"),
    ("ScatterElements", lambda: [np.zeros((3, 4), np.float32), np.array([[0, 9]], np.int64), np.zeros((1, 2), np.float32)],
     {"axis": 1}, None, "index 9 is out of range for axis 1"),
    ("ScatterElements", lambda: [np.zeros((3, 4), np.float32), np.zeros((1, 5), np.int64), np.zeros((1, 5), np.float32)],
     {"axis": 0}, None, "indices dimension 1"),
    ("ReverseSequence", lambda: [np.zeros((4, 2), np.float32), np.array([5, 1], np.int64)], {}, None,
     r"sequence_lens\[0\] = 5 is outside"),
    ("ReverseSequence", lambda: [np.zeros((4, 2), np.float32), np.array([1, 1], np.int64)],
     {"batch_axis": 0, "time_axis": 0}, None, "must be 0 and 1"),
    ("NegativeLogLikelihoodLoss", lambda: [np.zeros((2, 3), np.float32), np.array([1, 3], np.int64)], {}, None,
     "target 3 is outside"),
    ("SoftmaxCrossEntropyLoss", lambda: [np.zeros((2, 3), np.float32), np.array([-2, 0], np.int64)],
     {"ignore_index": -1}, None, "target -2 is outside"),
    ("SoftmaxCrossEntropyLoss", lambda: [np.zeros((2, 3, 4), np.float32), np.zeros((2, 5), np.int64)], {}, [(), (2, 3, 4)],
     "target dimension 1 differs"),
    ("Det", lambda: [np.zeros((2, 3), np.float32)], {}, [(1,)], r"shape \[\.\.\., M, M\]"),
    ("HannWindow", lambda: [np.array(-3, np.int64)], {}, [(1,)], "must not be negative"),
    ("DynamicQuantizeLinear", lambda: [np.zeros(3, np.float64)], {}, None, "x must be float32"),
    ("QLinearMatMul", lambda: [np.zeros((2, 3), np.uint8), np.float32(1), np.uint8(0), np.zeros((4, 2), np.uint8),
                               np.float32(1), np.uint8(0), np.float32(1), np.uint8(0)], {}, [(2, 2)],
     "inner dimensions differ"),
    ("Attention", lambda: [np.zeros((1, 3, 2, 4), np.float32), np.zeros((1, 2, 5, 4), np.float32),
                           np.zeros((1, 2, 5, 4), np.float32)], {}, [(1, 3, 2, 4)] * 4, "must be a multiple of KV heads"),
    ("Attention", lambda: [np.zeros((1, 2, 2, 4), np.float32), np.zeros((1, 2, 5, 4), np.float32),
                           np.zeros((1, 2, 5, 4), np.float32), None, None, None, np.array([6])], {}, None,
     r"nonpad_kv_seqlen\[0\] = 6"),
    ("ConvInteger", lambda: [np.zeros((1, 3, 4, 4), np.uint8), np.zeros((2, 2, 3, 3), np.uint8)], {"group": 2},
     [(1, 2, 2, 2)], "do not fit group 2"),
    ("QLinearConv", lambda: [np.zeros((1, 2, 4, 4), np.uint8), np.float32(1), np.uint8(0), np.zeros((2, 2, 3, 3), np.uint8),
                             np.ones(3, np.float32), np.uint8(0), np.float32(1), np.uint8(0)], {}, [(1, 2, 2, 2)],
     "per tensor"),
    ("BitCast", lambda: [np.zeros((2, 3), np.int8)], {"to": 1}, [(2,)], "last dimension must be 4"),
    ("MaxUnpool", lambda: [np.zeros((1, 1, 2, 2), np.float32), np.array([[[[0, 1], [2, 16]]]])],
     {"kernel_shape": [2, 2], "strides": [2, 2]}, None, "index 16 is outside the output of 16"),
    ("LSTM", lambda: [np.zeros((2, 1, 3), np.float32), np.zeros((1, 8, 3), np.float32), np.zeros((1, 8, 2), np.float32),
                      None, np.array([3], np.int32)], {"hidden_size": 2}, None, r"sequence_lens\[0\] = 3"),
    ("GRU", lambda: [np.zeros((2, 1, 3), np.float32), np.zeros((1, 6, 3), np.float32), np.zeros((1, 6, 3), np.float32)],
     {"hidden_size": 2}, None, "W must be"),
    ("TensorScatter", lambda: [np.zeros((2, 4, 3), np.float32), np.zeros((2, 2, 3), np.float32), np.array([0, 3])],
     {"axis": 1}, None, r"write_indices\[1\] = 3 does not fit"),
    ("TensorScatter", lambda: [np.zeros((2, 4, 3), np.float32), np.zeros((2, 2, 3), np.float32), np.array([0, -1])],
     {"axis": 1, "mode": "circular"}, None, r"write_indices\[1\] = -1"),
]


@pytest.mark.parametrize("op,make,attrs,cap,match", ERRORS, ids=[f"{e[0]}-{e[4][:24]}" for e in ERRORS])
def test_bad_inputs_give_an_error_not_a_crash(op, make, attrs, cap, match):
    with pytest.raises(KernelError, match=match):
        run_kernel(op, make(), attrs, capacity=cap)


def test_wrong_output_dtype_is_refused():
    with pytest.raises(KernelError, match="output 1 must be int64"):
        run_kernel("TopK", [np.zeros(4, np.float32), np.array([2])], {}, out_dtypes=[np.float32, np.int32])


def test_unused_outputs_are_skipped():
    x = np.array([[3, 1, 3, 2]], np.float32)
    v, i = run_kernel("TopK", [x, np.array([2])], {}, skip=(0,))
    assert v is None and i.tolist() == [[0, 2]]
    v, i = run_kernel("TopK", [x, np.array([2])], {}, skip=(1,))
    assert v.tolist() == [[3, 3]] and i is None
    y, idx, inv, cnt = run_kernel("Unique", [np.array([2, 1, 2, 5], np.int64)], {"sorted": 0}, skip=(1, 3))
    assert y.tolist() == [2, 1, 5] and idx is None and inv.tolist() == [0, 1, 0, 2] and cnt is None


def test_pad_to_capacity_matches_numpy():
    import ctypes
    from fusion.codegen.opaque.native import FzTensor, _tensor, load
    lib = load()
    r = np.random.default_rng(2)
    for _ in range(60):
        rank = int(r.integers(1, 5))
        cap = tuple(int(d) for d in r.integers(0, 5, rank))
        actual = tuple(int(r.integers(0, c + 1)) for c in cap)
        dt = [np.int64, np.float32, np.uint8][r.integers(3)]
        x = r.integers(1, 100, actual).astype(dt)
        buf = np.zeros(max(int(np.prod(cap)), 1), dt)
        buf[:x.size] = x.reshape(-1)
        t = _tensor(buf)
        t.rank = rank
        for d, n in enumerate(actual):
            t.shape[d] = n
        capv = (ctypes.c_int64 * 8)(*cap)
        assert lib.fz_opaque_pad_to_capacity(ctypes.byref(t), capv) == 0
        got = buf[:int(np.prod(cap))].reshape(cap)[tuple(slice(0, n) for n in actual)]
        np.testing.assert_array_equal(got, x)
    t = _tensor(np.zeros(6, np.float32))
    t.rank, t.shape[0], t.shape[1] = 2, 2, 3
    assert lib.fz_opaque_pad_to_capacity(ctypes.byref(t), (ctypes.c_int64 * 8)(2, 2)) != 0
    assert b"beyond the capacity" in lib.fz_opaque_last_error()


def test_empty_output_is_fine_even_without_data():
    (got,) = run_kernel("NonZero", [np.zeros((0, 3), np.float32)])
    assert got.shape == (2, 0)


NASTY = [
    ("NonMaxSuppression", [np.array([[[0, 0, 1, 1], [np.nan, 0, 1, 1], [0, 0, np.inf, 1], [-np.inf, 0, 1, np.nan]]],
                                    np.float32), np.array([[[np.nan, 0.5, np.inf, 0.5]]], np.float32), np.array([9]),
                           np.array([0.1], np.float32), np.array([np.nan], np.float32)], {}),
    ("NonMaxSuppression", [np.array([[[0, 0, -1, -1], [0, 0, 0, 0], [1, 1, 1, 1]]], np.float32),
                           np.array([[[1, 1, 1]]], np.float32), np.array([2 ** 62])], {"center_point_box": 1}),
    ("RoiAlign", [np.ones((1, 2, 3, 3), np.float32), np.array([[np.nan, 0, 2, 2], [0, np.inf, 2, 2], [5, 5, -5, -5],
                                                               [-1e9, -1e9, 1e9, 1e9]], np.float32),
                  np.zeros(4, np.int64)], {"sampling_ratio": 1, "output_height": 2, "output_width": 3}),
    ("RoiAlign", [np.ones((1, 1, 2, 2), np.float64), np.array([[3, 3, 1, 1], [0, 0, np.nan, 1]], np.float64),
                  np.zeros(2, np.int64)], {"mode": "max", "spatial_scale": 1e30}),
    ("TopK", [np.full((2, 5), np.nan, np.float32), np.array([5])], {"largest": 0}),
    ("GatherND", [np.zeros((0, 3), np.float32), np.zeros((2, 0), np.int64)], {}),
    ("ScatterElements", [np.zeros((2, 0), np.float32), np.zeros((2, 0), np.int64), np.zeros((2, 0), np.float32)],
     {"axis": 1}),
    ("Unique", [np.array([np.nan, 1, np.nan, -0.0, 0.0], np.float32)], {}),
    ("NonZero", [np.ones((1,) * 8, np.float32)], {}),
    ("SoftmaxCrossEntropyLoss", [np.array([[np.inf, 0], [np.nan, 1]], np.float32), np.array([0, -1], np.int64)],
     {"ignore_index": -1}),
    ("NegativeLogLikelihoodLoss", [np.zeros((2, 0), np.float32), np.array([-1, -1], np.int64)], {"ignore_index": -1}),
    ("Det", [np.full((2, 3, 3), np.nan, np.float32)], {}),
    ("Det", [np.zeros((0, 0), np.float32)], {}),
    ("DynamicQuantizeLinear", [np.array([np.nan, np.inf, -np.inf, 1], np.float32)], {}),
    ("BlackmanWindow", [np.array(0, np.int64)], {}),
    ("MaxUnpool", [np.ones((1, 1, 2, 2), np.float32), np.array([[[[-1, 3], [2 ** 40, 0]]]])], {"kernel_shape": [2, 2]}),
    ("Col2Im", [np.ones((1, 4, 0), np.float32), np.array([0, 3]), np.array([2, 2])], {}),
    ("Col2Im", [np.ones((1, 4, 4), np.float32), np.array([3, 3]), np.array([2, 2])], {"pads": [5, 5, 5, 5]}),
    ("AffineGrid", [np.full((1, 2, 3), np.nan, np.float32), np.array([1, 1, 0, 2])], {"align_corners": 1}),
    ("BitCast", [np.zeros((0, 4), np.int8)], {"to": 1}),
    ("QLinearConv", [np.zeros((1, 1, 3, 3), np.uint8), np.float32(0), np.uint8(0), np.zeros((1, 1, 5, 5), np.uint8),
                     np.float32(np.inf), np.uint8(0), np.float32(0), np.uint8(0)], {}),
]


@pytest.mark.parametrize("op,inputs,attrs", NASTY, ids=[f"{n[0]}-{i}" for i, n in enumerate(NASTY)])
def test_nasty_values_do_not_crash(op, inputs, attrs):
    try:
        run_kernel(op, inputs, attrs, capacity=[(1 << 12,)] * 4)
    except KernelError:
        pass


def _fuzz_case(r):
    """One mostly-valid random call: right structure, random sizes, indices
    a little out of range now and then, attributes anywhere near their domain."""
    dims = lambda n, lo=0: tuple(int(d) for d in r.integers(lo, 5, n))
    num = [np.float32, np.float64, np.int32, np.int64]
    anyt = num + [np.bool_, np.int8, np.float16, np.uint8]
    pick = lambda ts: ts[r.integers(len(ts))]
    rnd = lambda shape, dt: (r.standard_normal(shape) * 3).astype(dt)
    op = pick(["TopK", "NonMaxSuppression", "RoiAlign", "NonZero", "Compress", "GatherND", "ScatterND",
               "ScatterElements", "ReverseSequence", "Unique", "Attention", "QLinearMatMul",
               "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss", "Det", "TensorScatter",
               "DynamicQuantizeLinear", "HannWindow", "QLinearConv", "LSTM", "GRU", "MaxUnpool", "Col2Im"])
    rank = int(r.integers(1, 4))
    off = lambda: int(r.random() < 0.1)  # now and then a dimension one off
    if op == "Attention":
        b, hk, g, sq, skv, dk, dv, sp = (int(x) for x in r.integers(0, 4, 8))
        hq = hk * max(g, 1) + off()
        four = r.random() < 0.6
        if four:
            q, k, v = rnd((b, hq, sq, dk), np.float32), rnd((b, hk, skv, dk + off()), np.float32), rnd((b, hk, skv, dv), np.float32)
        else:
            q, k, v = rnd((b, sq, hq * dk), np.float32), rnd((b, skv, hk * dk), np.float32), rnd((b, skv, hk * dv), np.float32)
        T = sp + skv
        mask = None if r.random() < 0.4 else (r.random((sq, T + off())) < 0.7 if r.random() < 0.5
                                               else rnd((1, hq, sq, T), np.float32))
        past = [rnd((b, hk, sp, dk), np.float32), rnd((b, hk, sp, dv), np.float32)] if r.random() < 0.4 else [None, None]
        nonpad = r.integers(-1, T + 2, b).astype(np.int64) if r.random() < 0.3 else None
        return op, [q, k, v, mask, *past, nonpad], {"is_causal": int(r.integers(2)), "q_num_heads": hq,
                                                    "kv_num_heads": hk, "qk_matmul_output_mode": int(r.integers(4)),
                                                    "softcap": float(r.integers(0, 3))}
    if op == "QLinearMatMul":
        m, k_, n = (int(x) for x in r.integers(0, 5, 3))
        dt = pick([np.uint8, np.int8])
        q8 = lambda *sh: r.integers(0, 100, sh).astype(dt)
        f = lambda *sh: r.uniform(0.01, 1, sh).astype(np.float32)
        return op, [q8(2, m, k_), f(), q8(), q8(k_ + off(), n), f(n if r.random() < 0.5 else 1), q8(), f(), q8()], {}
    if op in ("SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"):
        n, c_, d = (int(x) for x in r.integers(0, 4, 3))
        x = rnd((n, c_, d), pick([np.float32, np.float64]))
        t = r.integers(-2, c_ + 1, (n, d + off())).astype(np.int64)
        w = r.random(c_ + off()).astype(x.dtype) if r.random() < 0.5 else None
        attrs = {"reduction": pick(["none", "sum", "mean"])}
        if r.random() < 0.5:
            attrs["ignore_index"] = -1
        return op, [x, t, w], attrs
    if op == "Det":
        m = int(r.integers(0, 5))
        return op, [rnd(dims(int(r.integers(0, 2))) + (m, m + off()), pick([np.float32, np.float64]))], {}
    if op == "TensorScatter":
        shp = dims(3, 1)
        upd = list(shp)
        upd[1] = int(r.integers(0, shp[1] + 2))
        dt = pick(anyt)
        return op, [rnd(shp, dt), rnd(tuple(upd), dt), r.integers(-1, shp[1] + 1, shp[0]).astype(np.int64)], \
            {"axis": 1, "mode": pick(["linear", "circular"])}
    if op == "DynamicQuantizeLinear":
        return op, [rnd(dims(rank), np.float32)], {}
    if op in ("LSTM", "GRU"):
        g = 4 if op == "LSTM" else 3
        S, N, I, H = (int(v) for v in r.integers(0, 4, 4))
        dirs = int(r.integers(1, 3))
        ins = [rnd((S, N, I), np.float32), rnd((dirs, g * H, I + off()), np.float32), rnd((dirs, g * H, H), np.float32),
               rnd((dirs, 2 * g * H), np.float32) if r.random() < 0.5 else None,
               r.integers(-1, S + 2, N).astype(np.int32) if r.random() < 0.5 else None,
               rnd((dirs, N, H), np.float32) if r.random() < 0.5 else None]
        return op, ins, {"hidden_size": H + off(), "direction": "bidirectional" if dirs == 2 else pick(["forward", "reverse"]),
                         "clip": 0.5} if r.random() < 0.3 else {"hidden_size": H,
                                                                 "direction": "bidirectional" if dirs == 2 else "forward"}
    if op == "MaxUnpool":
        x = rnd((1, 2) + dims(2, 1), np.float32)
        return op, [x, r.integers(-1, 4 * x.size + 2, x.shape).astype(np.int64)], {"kernel_shape": [2, 2], "strides": [2, 2]}
    if op == "Col2Im":
        img, blk = [int(v) for v in r.integers(0, 6, 2)], [int(v) for v in r.integers(1, 3, 2)]
        L = int(np.prod([max(i - b + 1, 0) for i, b in zip(img, blk)]))
        return op, [rnd((1, 2 * int(np.prod(blk)), L + off()), np.float32), np.array(img), np.array(blk)], {}
    if op == "QLinearConv":
        nd, g = int(r.integers(1, 3)), int(r.integers(1, 3))
        dt = pick([np.uint8, np.int8])
        q8 = lambda *sh: r.integers(0, 100, sh).astype(dt)
        f = lambda *sh: r.uniform(0.01, 1, sh).astype(np.float32)
        x = q8(int(r.integers(0, 3)), g * int(r.integers(1, 3)) + off(), *dims(nd))
        m = g * int(r.integers(0, 3))
        w = q8(m, max(x.shape[1] // g, 0) + off(), *dims(nd, 1))
        attrs = {"group": g, "strides": [int(v) for v in r.integers(1, 3, nd)],
                 "dilations": [int(v) for v in r.integers(1, 3, nd)],
                 "auto_pad": pick(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])}
        if attrs["auto_pad"] == "NOTSET":
            attrs["pads"] = [int(v) for v in r.integers(0, 3, 2 * nd)]
        return op, [x, f(), q8(), w, f(m if r.random() < 0.5 else 1), q8(), f(), q8(),
                    r.integers(-9, 9, m).astype(np.int32) if r.random() < 0.5 else None], attrs
    if op == "HannWindow":
        return op, [np.array(r.integers(-2, 9), pick([np.int32, np.int64]))], {"periodic": int(r.integers(2)),
                                                                              "output_datatype": int(pick([1, 11, 7, 2]))}
    if op == "TopK":
        x = rnd(dims(rank), pick(num))
        return op, [x, np.array([r.integers(-1, 6)])], {"axis": int(r.integers(-rank - 1, rank + 1)),
                                                        "largest": int(r.integers(2)), "sorted": int(r.integers(2))}
    if op == "NonMaxSuppression":
        b, n, c = (int(v) for v in r.integers(0, 4, 3))
        bx = r.uniform(-2, 6, (b, n, 4)).astype(np.float32)
        sc = r.random((b, c, n + int(r.random() < 0.1))).astype(np.float32)
        return op, [bx, sc, np.array([r.integers(-1, 5)]), np.array([r.uniform(-0.1, 1.1)], np.float32),
                    np.array([r.uniform(0, 1)], np.float32) if r.random() < 0.5 else None], \
            {"center_point_box": int(r.integers(0, 3) // 2 + (r.random() < 0.05))}
    if op == "RoiAlign":
        x = rnd(dims(4), pick([np.float32, np.float64]))
        nr = int(r.integers(0, 4))
        return op, [x, r.uniform(-3, 6, (nr, 4)).astype(x.dtype), r.integers(-1, 3, nr).astype(np.int64)], \
            {"output_height": int(r.integers(0, 3)), "output_width": int(r.integers(1, 3)),
             "sampling_ratio": int(r.integers(0, 3)), "mode": pick(["avg", "max"]),
             "spatial_scale": float(r.uniform(0.1, 2))}
    if op in ("NonZero", "Unique"):
        attrs = {"sorted": int(r.integers(2))}
        if op == "Unique" and r.random() < 0.5:
            attrs["axis"] = int(r.integers(-rank - 1, rank + 1))
        return op, [rnd(dims(rank), pick(anyt if op == "NonZero" else num))], attrs
    x = rnd(dims(rank, 1), pick(anyt))
    if op == "Compress":
        attrs = {"axis": int(r.integers(-rank - 1, rank + 1))} if r.random() < 0.6 else {}
        return op, [x, r.random(int(r.integers(0, 8))) < 0.5], attrs
    if op == "ReverseSequence":
        x = rnd(dims(int(r.integers(2, 4)), 1), pick(anyt))
        ba = int(r.integers(2))
        return op, [x, r.integers(-1, x.shape[1 - ba] + 2, x.shape[ba]).astype(np.int64)], \
            {"batch_axis": ba, "time_axis": 1 - ba if r.random() < 0.9 else ba}
    hi = lambda d: int(d) + int(r.random() < 0.1)
    if op == "GatherND":
        k = int(r.integers(1, rank + 1))
        lead = dims(int(r.integers(0, 3)))
        ind = np.stack([r.integers(-d, hi(d), lead) for d in x.shape[:k]], -1)
        return op, [x, ind.astype(np.int64)], {"batch_dims": int(r.random() < 0.2)}
    if op == "ScatterND":
        k = int(r.integers(1, rank + 1))
        lead = dims(int(r.integers(0, 3)))
        ind = np.stack([r.integers(-d, hi(d), lead) for d in x.shape[:k]], -1)
        upd = rnd(ind.shape[:-1] + x.shape[k:], x.dtype)
        return op, [x, ind.astype(np.int64), upd], {"reduction": pick(["none", "add", "mul", "max", "min"])}
    axis = int(r.integers(rank))
    shape = tuple(int(r.integers(0, d + 1 + (r.random() < 0.05))) for d in x.shape)
    ind = r.integers(-x.shape[axis], hi(x.shape[axis]), shape).astype(pick([np.int32, np.int64]))
    return op, [x, ind, rnd(shape, x.dtype)], {"axis": axis, "reduction": pick(["none", "add", "max"])}


def test_fuzz_no_crash():
    """Random calls straight into the C kernels with big flat capacities, so
    the C side does all the checking: each either works or says why."""
    from fusion.codegen.opaque import KERNELS
    r = np.random.default_rng(11)
    ok, failed = {}, {}
    for _ in range(1200):
        op, ins, attrs = _fuzz_case(r)
        out_dtypes = KERNELS[op].out_dtypes([None if a is None else a.dtype for a in ins], KERNELS[op].fields(attrs, 21))
        try:
            run_kernel(op, ins, attrs, capacity=[(1 << 12,)] * len(out_dtypes), out_dtypes=out_dtypes)
            ok[op] = ok.get(op, 0) + 1
        except KernelError:
            failed[op] = failed.get(op, 0) + 1
    assert len(ok) == 23 and len(failed) >= 16, (ok, failed)  # both paths taken, every kernel ran


@pytest.mark.skipif(SANITIZED, reason="this is the parent of the sanitized run")
def test_sanitizers_report_nothing(tmp_path):
    """Every case above once more with the kernels built with
    -fsanitize=address,undefined (no recovery: any report fails the run)."""
    from fusion.codegen.opaque.native import build
    from fusion.toolchain import find_tool
    cc = find_tool("cc", "CC")
    runtime = [subprocess.run([cc, f"-print-file-name={n}"], capture_output=True, text=True).stdout.strip()
               for n in ("libasan.so", "libubsan.so")]
    if not all(os.path.isabs(p) for p in runtime):
        pytest.skip("the C compiler has no sanitizer runtime")
    lib = build(sanitize=True)
    env = dict(os.environ, FUSION_OPAQUE_LIB=lib, LD_PRELOAD=":".join(runtime),
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=86",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-s",
                           __file__, "-k", "not sanitizers"], env=env, capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=600)
    err = proc.stdout + proc.stderr
    at = max(err.find("runtime error"), err.find("ERROR: AddressSanitizer"), 0)
    report = err[max(at - 300, 0):at + 2500] if at else err[-3000:]
    assert proc.returncode == 0, report
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr, report
