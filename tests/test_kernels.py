"""Anchor kernels (fusion/codegen/kernels) built standalone in a C harness and
compared with numpy (GEMM) and onnxruntime (Conv, pooling) on odd shapes."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.codegen.kernels import Operand, conv, matmul, pool
from fusion.codegen.kernels.harness import Harness, flat, offset
from fusion.oracle import compare, run_onnxruntime
from fusion.targets import get_target, host

HOST = host()
# a 128-bit, 32-register target (NEON-like blocking) still runs here: only the vector width differs
NEON_LIKE = get_target("host", vector_bits=128, vector_registers=32, l1_bytes=64 * 1024, l2_bytes=256 * 1024)
SCALAR = get_target("host", vector_bits=32, vector_registers=16)


def _check(got, want):
    rep = compare({"y": got}, {"y": want})
    assert rep.ok, str(rep)


def relu_store(field, shape, bias_field=None, bias_dim=-1):
    """Epilogue: (+ bias[index[bias_dim]]) then relu, stored row-major into A->field."""
    def epi(idx, acc):
        b = f" + A->{bias_field}[{idx[bias_dim]}]" if bias_field else ""
        return f"{{ float fz_e = {acc}{b}; A->{field}[{offset(shape, idx)}] = fz_e > 0.0f ? fz_e : 0.0f; }}"
    return epi


def plain_store(field, shape):
    return lambda idx, acc: f"A->{field}[{offset(shape, idx)}] = {acc};"


# ---------------------------------------------------------------------------
# GEMM

@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 13, 5), (37, 45, 70), (130, 70, 300), (300, 50, 512)])
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul_odd_shapes_bias_relu(M, N, K, const_b):
    rng = np.random.default_rng(M * 1000 + N + K)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    kc = matmul("mm", batch=(), M=M, N=N, K=K, A=Operand((M, K), flat("a", (M, K))),
                B=Operand((K, N), flat("b", (K, N)), const=b if const_b else None),
                epilogue=relu_store("y", (M, N), "bias"), target=HOST)
    assert kc is not None and ("_pb" in "".join(kc.weights)) == const_b
    out = np.full((M, N), np.nan, np.float32)
    Harness("mm", kc, ["a", "b", "bias", "y"]).run(dict(a=a, b=b, bias=bias, y=out))
    _check(out, np.maximum(a @ b + bias, 0))


@pytest.mark.parametrize("target", [HOST, NEON_LIKE, SCALAR], ids=["host", "neon-like", "scalar"])
def test_matmul_transposed_read_and_targets(target):
    """A read through a transposed expression (A stored [K, M]); each target's blocking."""
    M, N, K = 23, 29, 41
    rng = np.random.default_rng(1)
    at = rng.standard_normal((K, M)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    kc = matmul("mt", batch=(), M=M, N=N, K=K,
                A=Operand((M, K), lambda i: f"A->at[({i[1]}) * {M} + ({i[0]})]"),
                B=Operand((K, N), flat("b", (K, N)), const=b), epilogue=plain_store("y", (M, N)), target=target)
    out = np.zeros((M, N), np.float32)
    Harness("mt", kc, ["at", "b", "y"]).run(dict(at=at, b=b, y=out))
    _check(out, at.T @ b)


def test_matmul_batch_broadcast_runtime_b():
    """Attention-like: A [2, 3, M, K], B [3, K, N] broadcast over the first batch dim, both at run time;
    B read transposed (K^T) from a [3, N, K] buffer; 2 threads."""
    M, N, K = 17, 19, 24
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, M, K)).astype(np.float32)
    bt = rng.standard_normal((3, N, K)).astype(np.float32)
    shape = (2, 3, M, N)
    kc = matmul("bm", batch=(2, 3), M=M, N=N, K=K, A=Operand((2, 3, M, K), flat("a", (2, 3, M, K))),
                B=Operand((3, K, N), lambda i: f"A->bt[(({i[0]}) * {N} + ({i[2]})) * {K} + ({i[1]})]"),
                epilogue=lambda idx, acc: f"A->y[{offset(shape, idx)}] = 0.5f * {acc};", target=HOST)
    out = np.zeros(shape, np.float32)
    h = Harness("bm", kc, ["a", "bt", "y"])
    h.set_threads(2)
    h.run(dict(a=a, bt=bt, y=out))
    _check(out, 0.5 * (a @ np.swapaxes(bt, 1, 2)[None]))


# ---------------------------------------------------------------------------
# Convolution and pooling, against onnxruntime

def _ort_node(op, x, w=None, b=None, **attrs):
    import onnx
    from onnx import TensorProto, helper
    inits, ins = [], ["x"]
    for nm, arr in (("w", w), ("b", b)):
        if arr is not None:
            inits.append(onnx.numpy_helper.from_array(arr, nm))
            ins.append(nm)
    node = helper.make_node(op, ins, ["y"], **attrs)
    graph = helper.make_graph([node], "k", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return run_onnxruntime(model, {"x": x})["y"]


CONVS = [
    # (N, C, spatial_in, M, kernel, strides, pads, dilations, group)
    (1, 8, (9, 11), 12, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),          # 1x1 as GEMM
    (2, 5, (10, 9), 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),           # 3x3 pad 1, batch 2
    (1, 6, (13, 12), 9, (3, 2), (2, 3), (1, 0, 2, 1), (1, 2), 1),          # strides, asymmetric pads, dilation
    (1, 8, (9, 9), 12, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),           # grouped (3 out channels / group)
    (1, 6, (40, 37), 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),          # depthwise
    (1, 4, (21, 71), 8, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),          # depthwise x2 multiplier, stride 2
    (1, 5, (7, 7), 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 5),            # depthwise, a row narrower than a vector
    (1, 3, (9, 150), 3, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 3),          # depthwise 5x5/2: full + partial blocks
    (1, 40, (5, 5), 96, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),         # few positions: transposed GEMM
    (1, 16, (7, 6), 50, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),          # transposed, padded strided 3x3
    (2, 8, (5, 5), 192, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),          # transposed, 2 groups, batch 2
    (1, 10, (5, 5), 64, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),          # transposed, dilated: strip packer
    (1, 12, (20,), 64, (3,), (1,), (1, 1), (1,), 1),                        # transposed 1-D
    (1, 3, (17,), 5, (4,), (2,), (1, 2), (1,), 1),                          # 1-D
    (1, 3, (5, 6, 7), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1), 1),  # 3-D 3x3x3
    (1, 4, (4, 5, 6), 5, (1, 1, 1), (1, 1, 1), (0, 0, 0, 0, 0, 0), (1, 1, 1), 1),  # 3-D 1x1x1
    (1, 4, (4, 7, 6), 4, (3, 3, 3), (1, 2, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1), 4),  # 3-D depthwise
]


@pytest.mark.parametrize("case", CONVS, ids=lambda c: f"C{c[1]}M{c[3]}k{'x'.join(map(str, c[4]))}g{c[8]}")
def test_conv_against_onnxruntime(case):
    n, c, sp, m, k, st, pads, dil, grp = case
    rng = np.random.default_rng(len(sp) * 100 + m)
    x = rng.standard_normal((n, c) + sp).astype(np.float32)
    w = rng.standard_normal((m, c // grp) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    want = np.maximum(_ort_node("Conv", x, w, b, kernel_shape=list(k), strides=list(st), pads=list(pads),
                                dilations=list(dil), group=grp), 0)
    geo = {"spatial": len(sp), "N": n, "C": c, "M": m, "group": grp, "kernel": list(k), "strides": list(st),
           "pads": list(pads), "dilations": list(dil), "out": list(want.shape[2:])}
    # the input read through a non-trivial expression: x * 1 + 0 computed from a scale buffer
    kc = conv("cv", node_geometry=geo, X=Operand(x.shape, lambda i: f"({flat('x', x.shape)(i)} * A->one[0])"),
              W=Operand(w.shape, lambda i: "0", const=w), bias=Operand((m,), lambda i: "0", const=b),
              epilogue=relu_store("y", want.shape), target=HOST)
    assert kc is not None
    P = int(np.prod(want.shape[2:]))
    if P < 30 and m // grp >= 50:   # few positions, many channels: the transposed schedule
        assert "transposed gemm" in kc.schedule, kc.schedule
    out = np.full(want.shape, np.nan, np.float32)
    h = Harness("cv", kc, ["x", "one", "y"])
    h.set_threads(2)
    h.run(dict(x=x, one=np.ones(1, np.float32), y=out))
    _check(out, want)


@pytest.mark.parametrize("case", [
    (1, 24, (14, 14), 24, (3, 3), (1, 1), 24, "direct conv"),          # depthwise: one loop per plane
    (1, 7, (11, 13), 20, (3, 3), (2, 1), 1, "implicit gemm"),          # one loop per finished tile row
    (1, 40, (5, 5), 96, (1, 1), (1, 1), 1, "transposed gemm"),         # per element, no division
], ids=["direct", "implicit", "transposed"])
def test_conv_flat_spatial_epilogue(case):
    """An epilogue marked flat_spatial is called with the spatial index (0, 0, j): the kernels
    must pass the row-major offset j of every output position exactly once."""
    n, c, sp, m, k, st, grp, kind = case
    rng = np.random.default_rng(21)
    x = rng.standard_normal((n, c) + sp).astype(np.float32)
    w = rng.standard_normal((m, c // grp) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    pads = [1, 1, 1, 1] if k != (1, 1) else [0, 0, 0, 0]
    want = _ort_node("Conv", x, w, b, kernel_shape=list(k), strides=list(st), pads=pads, group=grp)
    shape = want.shape
    calls = []

    def epi(idx, acc):
        calls.append(list(idx))
        return f"A->y[{offset(shape, idx)}] = {acc} > 0.0f ? {acc} : 0.1f * {acc};"
    epi.flat_spatial = True
    geo = {"group": grp, "kernel": list(k), "strides": list(st), "pads": pads, "dilations": [1, 1],
           "out": list(shape[2:])}
    kc = conv("fl", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
              bias=Operand((m,), None, const=b), epilogue=epi, target=HOST)
    assert kind in kc.schedule and calls and all(i[2] == "0" for i in calls), (kc.schedule, calls[:2])
    out = np.full(shape, np.nan, np.float32)
    h = Harness("fl", kc, ["x", "y"])
    h.set_threads(2)
    h.run(dict(x=x, y=out))
    _check(out, np.where(want > 0, want, 0.1 * want))


def test_conv_runtime_bias_and_neon_blocking():
    x = np.random.default_rng(5).standard_normal((1, 7, 8, 9)).astype(np.float32)
    w = np.random.default_rng(6).standard_normal((10, 7, 3, 3)).astype(np.float32)
    b = np.random.default_rng(7).standard_normal(10).astype(np.float32)
    want = _ort_node("Conv", x, w, b, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    geo = {"spatial": 2, "group": 1, "kernel": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
           "dilations": [1, 1], "out": [8, 9]}
    kc = conv("cb", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
              bias=Operand((10,), lambda i: f"A->b[{i[0]}]"), epilogue=plain_store("y", want.shape), target=NEON_LIKE)
    out = np.zeros(want.shape, np.float32)
    Harness("cb", kc, ["x", "b", "y"]).run(dict(x=x, b=b, y=out))
    _check(out, want)


def test_conv_without_constant_weights_is_declined():
    x = Operand((1, 2, 4, 4), flat("x", (1, 2, 4, 4)))
    assert conv("c", node_geometry={"group": 1}, X=x, W=Operand((2, 2, 1, 1), flat("w", (2, 2, 1, 1))), bias=None,
                epilogue=plain_store("y", (1, 2, 4, 4)), target=HOST) is None


POOLS = [
    # (op, spatial_in, kernel, strides, pads, extra attrs)
    ("MaxPool", (13, 45), (3, 3), (1, 1), (1, 1, 1, 1), {}),
    ("MaxPool", (14, 75), (3, 3), (2, 2), (0, 1, 1, 0), {"ceil_mode": 1}),
    ("MaxPool", (12, 40), (2, 3), (1, 1), (0, 0, 0, 0), {"dilations": [2, 2]}),
    ("AveragePool", (13, 41), (3, 3), (2, 1), (1, 1, 1, 1), {"count_include_pad": 1}),
    ("AveragePool", (13, 41), (3, 3), (2, 1), (1, 1, 1, 1), {"count_include_pad": 0}),
    ("AveragePool", (11, 12), (2, 2), (2, 2), (0, 0, 0, 0), {"ceil_mode": 1}),
    ("MaxPool", (19,), (3,), (2,), (1, 1), {}),
    ("MaxPool", (5, 8, 9), (2, 2, 2), (2, 2, 2), (0, 0, 0, 0, 0, 0), {}),
    ("AveragePool", (5, 8, 36), (3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1), {"count_include_pad": 0}),
]


@pytest.mark.parametrize("case", POOLS, ids=lambda c: f"{c[0]}{'x'.join(map(str, c[2]))}s{c[3][0]}")
def test_pool_against_onnxruntime(case):
    op, sp, k, st, pads, extra = case
    x = np.random.default_rng(len(sp) + sum(sp)).standard_normal((2, 3) + sp).astype(np.float32)
    want = _ort_node(op, x, kernel_shape=list(k), strides=list(st), pads=list(pads), **extra) * 2.0
    geo = {"spatial": len(sp), "kernel": list(k), "strides": list(st), "pads": list(pads),
           "dilations": extra.get("dilations", [1] * len(sp)), "out": list(want.shape[2:])}
    kc = pool("pl", kind="max" if op == "MaxPool" else "avg", node_geometry=geo,
              X=Operand(x.shape, lambda i: f"(2.0f * {flat('x', x.shape)(i)})"),
              count_include_pad=bool(extra.get("count_include_pad", 0)),
              epilogue=plain_store("y", want.shape), target=HOST)
    out = np.full(want.shape, np.nan, np.float32)
    h = Harness("pl", kc, ["x", "y"])
    h.set_threads(2)
    h.run(dict(x=x, y=out))
    _check(out, want)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("sp", [(7, 9), (37,), (3, 4, 21)])
def test_global_pool(op, sp):
    x = np.random.default_rng(3).standard_normal((2, 5) + sp).astype(np.float32)
    want = _ort_node(op, x)
    geo = {"spatial": len(sp), "kernel": list(sp), "strides": [1] * len(sp), "pads": [0] * (2 * len(sp)),
           "out": [1] * len(sp)}
    kc = pool("gp", kind="max" if "Max" in op else "avg", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)),
              count_include_pad=False, epilogue=relu_store("y", want.shape), target=HOST)
    assert kc.schedule.startswith("global")
    out = np.full(want.shape, np.nan, np.float32)
    Harness("gp", kc, ["x", "y"]).run(dict(x=x, y=out))
    _check(out, np.maximum(want, 0))


# ---------------------------------------------------------------------------
# aarch64 (NEON, 128-bit): cross-compiled and run under qemu-aarch64

def _have_cross():
    import shutil
    return shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")


@pytest.mark.skipif(not _have_cross(), reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (./setup.sh)")
def test_aarch64_gemm_conv_pool_under_qemu():
    from fusion.codegen.kernels.harness import run_cross
    arm = get_target("linux-arm64")
    rng = np.random.default_rng(11)
    M, N, K = 19, 27, 33
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    kc = matmul("am", batch=(), M=M, N=N, K=K, A=Operand((M, K), flat("a", (M, K))),
                B=Operand((K, N), flat("b", (K, N)), const=b), epilogue=plain_store("y", (M, N)), target=arm)
    assert "8x12" in kc.schedule                      # NEON blocking: 8 rows x 3 vectors of 4 lanes
    got = run_cross("am", kc, ["a", "y"], dict(a=a, y=np.zeros((M, N), np.float32)), threads=2)
    _check(got["y"], a @ b)

    x = rng.standard_normal((1, 6, 11, 35)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    want = _ort_node("Conv", x, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=6)
    geo = {"group": 6, "kernel": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "out": [11, 35]}
    kc = conv("ad", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
              bias=None, epilogue=plain_store("y", want.shape), target=arm)
    got = run_cross("ad", kc, ["x", "y"], dict(x=x, y=np.zeros(want.shape, np.float32)))
    _check(got["y"], want)

    want = _ort_node("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    geo = {"kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "out": list(want.shape[2:])}
    kc = pool("ap", kind="max", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), count_include_pad=False,
              epilogue=plain_store("y", want.shape), target=arm)
    got = run_cross("ap", kc, ["x", "y"], dict(x=x, y=np.zeros(want.shape, np.float32)))
    _check(got["y"], want)


CONV_TRANSPOSES = [
    # (N, C, spatial_in, M, kernel, strides, pads, dilations, output_padding, group)
    (1, 6, (5, 7), 5, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (0, 0), 1),         # U-Net upsampling: GEMM + scatter
    (2, 4, (5, 6), 6, (2, 2), (2, 2), (1, 0, 0, 1), (1, 1), (0, 0), 2),         # same, cropped by pads, groups
    (1, 5, (6, 5), 7, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (1, 1), 1),         # general gather form
    (1, 4, (9,), 6, (3,), (1,), (1, 2), (2,), (0,), 2),                          # 1-D, dilation, groups
    (1, 3, (3, 4, 5), 4, (2, 2, 2), (2, 2, 2), (0,) * 6, (1, 1, 1), (0, 0, 0), 1),  # 3-D 2x2x2/2
]


@pytest.mark.parametrize("case", CONV_TRANSPOSES, ids=lambda c: f"k{'x'.join(map(str, c[4]))}s{c[5][0]}g{c[9]}")
def test_conv_transpose_against_onnxruntime(case):
    from fusion.codegen.kernels import conv_transpose
    n, c, sp, m, k, st, pads, dil, opad, grp = case
    rng = np.random.default_rng(sum(sp) + m)
    x = rng.standard_normal((n, c) + sp).astype(np.float32)
    w = rng.standard_normal((c, m // grp) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    want = np.maximum(_ort_node("ConvTranspose", x, w, b, kernel_shape=list(k), strides=list(st), pads=list(pads),
                                dilations=list(dil), output_padding=list(opad), group=grp), 0)
    geo = {"spatial": len(sp), "group": grp, "kernel": list(k), "strides": list(st), "pads": list(pads),
           "dilations": list(dil), "out": list(want.shape[2:])}
    kc = conv_transpose("ct", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
                        bias=Operand((m,), None, const=b), epilogue=relu_store("y", want.shape), target=HOST)
    assert ("scatter" in kc.schedule) == (k == st)
    out = np.full(want.shape, np.nan, np.float32)
    h = Harness("ct", kc, ["x", "y"])
    h.set_threads(2)
    h.run(dict(x=x, y=out))
    _check(out, want)


def test_conv_single_group_one_output_is_threaded_gemm():
    """U-Net's last layer (64 -> 1 channel) stays on the threaded GEMM path, and is right."""
    x = np.random.default_rng(8).standard_normal((1, 9, 13, 21)).astype(np.float32)
    w = np.random.default_rng(9).standard_normal((1, 9, 3, 3)).astype(np.float32)
    want = _ort_node("Conv", x, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    geo = {"group": 1, "kernel": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "out": [13, 21]}
    kc = conv("c1", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
              bias=None, epilogue=plain_store("y", want.shape), target=HOST)
    assert "gemm" in kc.schedule
    out = np.zeros(want.shape, np.float32)
    h = Harness("c1", kc, ["x", "y"])
    h.set_threads(2)
    h.run(dict(x=x, y=out))
    _check(out, want)


def test_matmul_constant_a_runtime_b_reuses_b_panels():
    """Constant A (weights on the left), run-time B: items span all M blocks (5 here), each packed B
    chunk serves all of them; 2 threads."""
    M, N, K = 300, 37, 512
    rng = np.random.default_rng(12)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    kc = matmul("ca", batch=(), M=M, N=N, K=K, A=Operand((M, K), flat("a", (M, K)), const=a),
                B=Operand((K, N), flat("b", (K, N))), epilogue=plain_store("y", (M, N)), target=NEON_LIKE)
    # NEON_LIKE's 256K L2 gives several M blocks whatever the host's caches are
    assert "all M blocks per item" in kc.schedule and "MC=64 " in kc.schedule
    out = np.zeros((M, N), np.float32)
    h = Harness("ca", kc, ["b", "y"])
    h.set_threads(2)
    h.run(dict(b=b, y=out))
    _check(out, a @ b)


@pytest.mark.parametrize("c, hw, m, k, want", [
    (672, 14, 112, 1, True),     # normal: 7 items of one 32-column strip each, weights streamed 7 times
    (512, 14, 512, 3, True),
    (256, 28, 256, 3, False),    # 128-column items: the normal schedule reuses its A blocks
    (64, 56, 256, 1, False),
    (64, 14, 16, 1, False),      # 16 channels pad to a 32-wide strip: twice the work transposed
    (512, 19, 126, 3, False),    # SSD's head: a 6.6 MB im2col (over L2) and fewer channels than positions
    (1024, 10, 126, 3, True),    # 126 channels >= 100 positions: the weights are the larger operand
])
def test_transposed_schedule_choice(c, hw, m, k, want):
    """The transposed GEMM is also chosen when the normal schedule's work items would be a single
    NR strip each (and the transposed padding is no worse), for an AVX-512-like target with 2 cores."""
    from fusion.codegen.kernels.convs import Geo, _positions_as_rows
    t = get_target("host", vector_bits=512, vector_registers=32, cores=2, l1_bytes=32 * 1024, l2_bytes=1 << 20)
    p = (k - 1) // 2
    g = Geo({"group": 1, "kernel": [k, k], "strides": [1, 1], "pads": [p] * 4, "dilations": [1, 1]},
            (1, c, hw, hw), (m, c, k, k))
    assert _positions_as_rows(g, t) is want


def test_conv_transposed_by_strip_rule_against_onnxruntime():
    """A conv the one-strip rule sends to the transposed schedule on AVX-512 (on the build machine
    whichever schedule it gets), with a padded 3x3 window, against onnxruntime."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 64, 10, 10)).astype(np.float32)
    w = rng.standard_normal((40, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    want = np.maximum(_ort_node("Conv", x, w, b, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 0)
    for t in (HOST, get_target("host", vector_bits=512, vector_registers=32, cores=2)):
        kc = conv("cs", node_geometry={"group": 1, "kernel": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
                                       "dilations": [1, 1], "out": [10, 10]},
                  X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
                  bias=Operand((40,), None, const=b), epilogue=relu_store("y", want.shape), target=t)
        if t is not HOST:
            assert "transposed gemm" in kc.schedule, kc.schedule
        out = np.full(want.shape, np.nan, np.float32)
        h = Harness("cs", kc, ["x", "y"])
        h.set_threads(2)
        h.run(dict(x=x, y=out))
        _check(out, want)


def test_gemm_groups_even_out_two_threads():
    """N = 10 strips of 32 on a 2-core target: groups of one strip (10 items, 5 + 5) rather than
    of two (5 items, 3 + 2 on two threads); the result is unchanged."""
    t = get_target("host", vector_bits=512, vector_registers=32, cores=2, l1_bytes=32 * 1024, l2_bytes=1 << 20)
    M, N, K = 49, 320, 64
    rng = np.random.default_rng(13)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    kc = matmul("ge", batch=(), M=M, N=N, K=K, A=Operand((M, K), flat("a", (M, K))),
                B=Operand((K, N), flat("b", (K, N)), const=b), epilogue=plain_store("y", (M, N)), target=t)
    assert "10 work items" in kc.schedule, kc.schedule
    out = np.full((M, N), np.nan, np.float32)
    h = Harness("ge", kc, ["a", "y"])
    h.set_threads(2)
    h.run(dict(a=a, y=out))
    _check(out, a @ b)
