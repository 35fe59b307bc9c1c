"""Standalone microbenchmark of the anchor kernels:
`python -m fusion.codegen.kernels.bench [--threads N] [--quick] [--only NAME] [--json]`.

Each case is built in the test harness (harness.py) with a plain store as
epilogue (and the bias for convolutions), timed in C after a warm-up, and set against the same op in onnxruntime (ORT_ENABLE_ALL,
same thread count) and, for GEMMs, numpy's BLAS. GFLOP/s counts 2 per
multiply-add; the peak is measured by peak.py on the same machine. Runs of
ours and onnxruntime alternate; the table shows the best run of each (the
JSON also has medians): on a shared machine the best run is the one that had
the cores to itself."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from fusion.codegen.kernels.api import Operand
from fusion.codegen.kernels.harness import Harness, flat, offset
from fusion.targets import host


def _time_pair(ours, theirs, reps: int, cpu: bool = False, budget_s: float = 3.0) -> tuple[list[float], list[float]]:
    """Alternate single runs of ours and theirs after a warm-up of each, so both see the same machine
    load. Wall clock (ours timed in C), or with cpu=True the calling thread's CPU time (single-threaded
    runs only: both execute on the calling thread, and time spent descheduled by other load is left out)."""
    def once(fn):
        t0 = time.thread_time() if cpu else time.perf_counter()
        fn()
        return (time.thread_time() if cpu else time.perf_counter()) - t0
    ours_once = (lambda: once(lambda: ours(1))) if cpu else (lambda: ours(1)[0])
    ours_once()
    theirs()
    a, b = [], []
    t_end = time.perf_counter() + budget_s
    for i in range(reps):
        a.append(ours_once())
        b.append(once(theirs))
        if i >= 2 and time.perf_counter() > t_end:
            break
    return [1e3 * x for x in a], [1e3 * x for x in b]


def _ort(op_nodes, inputs: dict, inits: dict, threads: int):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        op_nodes, "bench",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(["y"], inputs)


def _case_gemm(label, M, N, K, threads, quick, batch=(), const_b=True):
    from onnx import helper
    from fusion.codegen.kernels import matmul
    rng = np.random.default_rng(0)
    a = rng.standard_normal(tuple(batch) + (M, K)).astype(np.float32)
    b = rng.standard_normal((K, N) if const_b else tuple(batch) + (K, N)).astype(np.float32)
    oshape = tuple(batch) + (M, N)
    kc = matmul("bg", batch=batch, M=M, N=N, K=K, A=Operand(a.shape, flat("a", a.shape)),
                B=Operand(b.shape, flat("b", b.shape), const=b if const_b else None),
                epilogue=lambda i, acc: f"A->y[{offset(oshape, i)}] = {acc};", target=host())
    h = Harness("bg", kc, ["a", "b", "y"])
    h.set_threads(threads)
    y = np.zeros(oshape, np.float32)
    feeds = dict(a=a, b=b, y=y)
    ours = lambda reps: h.time(feeds, reps)  # noqa: E731
    ort_in = {"a": a} if const_b else {"a": a, "b": b}
    ort_fn = _ort([helper.make_node("MatMul", ["a", "b"], ["y"])], ort_in, {"b": b} if const_b else {}, threads)
    ref = a @ b
    return dict(name=label, flops=2.0 * M * N * K * int(np.prod(batch or (1,))), run=ours, ort=ort_fn,
                numpy=lambda: a @ b, check=lambda: float(np.abs(y - ref).max() / (np.abs(ref).max() + 1e-30)),
                schedule=kc.schedule)


def _case_conv(label, N, C, H, W, M, k, stride, pad, group, threads):
    from onnx import helper
    from fusion.codegen.kernels import conv
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((M, C // group, k, k)) / np.sqrt(C // group * k * k)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    OH = (H + 2 * pad - k) // stride + 1
    OW = (W + 2 * pad - k) // stride + 1
    oshape = (N, M, OH, OW)
    geo = {"spatial": 2, "group": group, "kernel": [k, k], "strides": [stride] * 2, "pads": [pad] * 4,
           "dilations": [1, 1], "out": [OH, OW]}
    kc = conv("bc", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
              bias=Operand((M,), None, const=bias), epilogue=lambda i, acc: f"A->y[{offset(oshape, i)}] = {acc};",
              target=host())
    h = Harness("bc", kc, ["x", "y"])
    h.set_threads(threads)
    y = np.zeros(oshape, np.float32)
    feeds = dict(x=x, y=y)
    attrs = dict(kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4, group=group)
    ort_fn = _ort([helper.make_node("Conv", ["x", "w", "bias"], ["y"], **attrs)], {"x": x},
                  {"w": w, "bias": bias}, threads)
    ref = ort_fn()[0]
    return dict(name=label, flops=2.0 * N * M * OH * OW * (C // group) * k * k, run=lambda reps: h.time(feeds, reps), ort=ort_fn,
                numpy=None, check=lambda: float(np.abs(y - ref).max() / (np.abs(ref).max() + 1e-30)),
                schedule=kc.schedule)


def _case_conv3d(label, C, D, H, W, M, threads):
    from onnx import helper
    from fusion.codegen.kernels import conv
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, C, D, H, W)).astype(np.float32)
    w = (rng.standard_normal((M, C, 3, 3, 3)) / np.sqrt(C * 27)).astype(np.float32)
    oshape = (1, M, D, H, W)
    geo = {"spatial": 3, "group": 1, "kernel": [3, 3, 3], "strides": [1, 1, 1], "pads": [1] * 6,
           "dilations": [1, 1, 1], "out": [D, H, W]}
    kc = conv("b3", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), W=Operand(w.shape, None, const=w),
              bias=None, epilogue=lambda i, acc: f"A->y[{offset(oshape, i)}] = {acc};", target=host())
    h = Harness("b3", kc, ["x", "y"])
    h.set_threads(threads)
    y = np.zeros(oshape, np.float32)
    feeds = dict(x=x, y=y)
    ort_fn = _ort([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3, 3], pads=[1] * 6)], {"x": x},
                  {"w": w}, threads)
    ref = ort_fn()[0]
    return dict(name=label, flops=2.0 * M * D * H * W * C * 27, run=lambda reps: h.time(feeds, reps), ort=ort_fn,
                numpy=None, check=lambda: float(np.abs(y - ref).max() / (np.abs(ref).max() + 1e-30)),
                schedule=kc.schedule)


def _case_convt(label, C, H, W, M, threads):
    from onnx import helper
    from fusion.codegen.kernels import conv_transpose
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((C, M, 2, 2)) / np.sqrt(C)).astype(np.float32)
    oshape = (1, M, 2 * H, 2 * W)
    geo = {"spatial": 2, "group": 1, "kernel": [2, 2], "strides": [2, 2], "pads": [0] * 4, "dilations": [1, 1],
           "out": [2 * H, 2 * W]}
    kc = conv_transpose("bt", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)),
                        W=Operand(w.shape, None, const=w), bias=None,
                        epilogue=lambda i, acc: f"A->y[{offset(oshape, i)}] = {acc};", target=host())
    h = Harness("bt", kc, ["x", "y"])
    h.set_threads(threads)
    y = np.zeros(oshape, np.float32)
    feeds = dict(x=x, y=y)
    ort_fn = _ort([helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                  {"x": x}, {"w": w}, threads)
    ref = ort_fn()[0]
    return dict(name=label, flops=2.0 * C * M * 4 * H * W, run=lambda reps: h.time(feeds, reps), ort=ort_fn,
                numpy=None, check=lambda: float(np.abs(y - ref).max() / (np.abs(ref).max() + 1e-30)),
                schedule=kc.schedule)


def _case_pool(label, N, C, H, W, k, stride, pad, threads):
    from onnx import helper
    from fusion.codegen.kernels import pool
    x = np.random.default_rng(2).standard_normal((N, C, H, W)).astype(np.float32)
    OH, OW = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    oshape = (N, C, OH, OW)
    geo = {"spatial": 2, "kernel": [k, k], "strides": [stride] * 2, "pads": [pad] * 4, "out": [OH, OW]}
    kc = pool("bp", kind="max", node_geometry=geo, X=Operand(x.shape, flat("x", x.shape)), count_include_pad=False,
              epilogue=lambda i, acc: f"A->y[{offset(oshape, i)}] = {acc};", target=host())
    h = Harness("bp", kc, ["x", "y"])
    h.set_threads(threads)
    y = np.zeros(oshape, np.float32)
    feeds = dict(x=x, y=y)
    ort_fn = _ort([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[stride] * 2,
                                    pads=[pad] * 4)], {"x": x}, {}, threads)
    ref = ort_fn()[0]
    return dict(name=label, flops=float(N * C * OH * OW * k * k), run=lambda reps: h.time(feeds, reps), ort=ort_fn, numpy=None,
                check=lambda: float(np.abs(y - ref).max()), schedule=kc.schedule)


CASES = {
    "bert-ffn": lambda t, q: _case_gemm("BERT-base FFN 128x768 . 768x3072", 128, 3072, 768, t, q),
    "gpt2-lm-head": lambda t, q: _case_gemm("GPT-2 LM head 128x768 . 768x50257" if not q else
                                            "GPT-2 LM head 32x768 . 768x50257", 128 if not q else 32, 50257, 768, t, q),
    "attention-qk": lambda t, q: _case_gemm("attention QK^T 12x(128x64 . 64x128), run-time B", 128, 128, 64, t, q,
                                            batch=(12,), const_b=False),
    "conv3x3": lambda t, q: _case_conv("conv 3x3 256->256 @56x56" if not q else "conv 3x3 256->256 @28x28",
                                       1, 256, 56 if not q else 28, 56 if not q else 28, 256, 3, 1, 1, 1, t),
    "conv1x1": lambda t, q: _case_conv("conv 1x1 64->256 @56x56", 1, 64, 56, 56, 256, 1, 1, 0, 1, t),
    "conv3d": lambda t, q: _case_conv3d("C3D conv 3x3x3 64->128 @8x28x28", 64, 8, 28, 28, 128, t),
    "convtranspose2x2": lambda t, q: _case_convt("U-Net ConvTranspose 2x2/2 128->64 @32x32", 128, 32, 32, 64, t),
    "depthwise3x3": lambda t, q: _case_conv("depthwise 3x3 32ch @112x112", 1, 32, 112, 112, 32, 3, 1, 1, 32, t),
    "conv1x1-7x7": lambda t, q: _case_conv("conv 1x1 1152->192 @7x7 (few output positions)", 1, 1152, 7, 7, 192, 1, 1,
                                           0, 1, t),
    "conv1x1-14x14": lambda t, q: _case_conv("conv 1x1 112->672 @14x14", 1, 112, 14, 14, 672, 1, 1, 0, 1, t),
    "conv3x3-14x14": lambda t, q: _case_conv("conv 3x3 512->512 @14x14", 1, 512, 14, 14, 512, 3, 1, 1, 1, t),
    "depthwise5x5-14x14": lambda t, q: _case_conv("depthwise 5x5 672ch @14x14", 1, 672, 14, 14, 672, 5, 1, 2, 672, t),
    "maxpool3x3s2": lambda t, q: _case_pool("maxpool 3x3/2 64ch @112x112", 1, 64, 112, 112, 3, 2, 1, t),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fusion.codegen.kernels.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=host().cores)
    ap.add_argument("--quick", action="store_true", help="smaller shapes, fewer runs")
    ap.add_argument("--only", action="append", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time single-threaded runs by CPU time of the calling thread (needs --threads 1): "
                         "a fair comparison on a machine busy with other work")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time measures one thread: use it with --threads 1")
    from fusion.codegen.kernels.peak import measure_peak
    peak = measure_peak(args.threads, cpu_time=args.cpu_time)
    rows = []
    if not args.json:
        print(f"measured FP32 peak, {args.threads} thread(s): {peak:.1f} GFLOP/s (python -m fusion.codegen.kernels.peak)"
              + ("; times are CPU time of the calling thread" if args.cpu_time else "; times are wall clock"))
        print(f"{'case':44s} {'fusion ms':>9s} {'GFLOP/s':>8s} {'%peak':>6s} {'ORT ms':>8s} {'ORT/fus':>7s} "
              f"{'numpy ms':>8s}  max err")
    reps = 5 if args.quick else args.reps
    for key in (args.only or list(CASES)):
        c = CASES[key](args.threads, args.quick)
        ours, ort_t = _time_pair(c["run"], c["ort"], reps, cpu=args.cpu_time)
        err = c["check"]()
        # numpy's BLAS may run on its own threads: wall clock only
        np_t = _time_pair(c["run"], c["numpy"], 3)[1] if c["numpy"] and not args.cpu_time else None
        # best run: this machine is shared, and the best run is the one that had the cores to itself
        ms, ort_ms = min(ours), min(ort_t)
        np_ms = min(np_t) if np_t else None
        gf = c["flops"] / ms / 1e6
        row = dict(case=key, name=c["name"], ms=ms, median_ms=statistics.median(ours), gflops=gf,
                   peak_fraction=gf / peak, ort_ms=ort_ms, ort_median_ms=statistics.median(ort_t),
                   ort_over_fusion=ort_ms / ms, numpy_ms=np_ms, max_err=err, schedule=c["schedule"])
        rows.append(row)
        if not args.json:
            print(f"{c['name'][:44]:44s} {ms:9.2f} {gf:8.1f} {100 * gf / peak:5.0f}% {ort_ms:8.2f} {ort_ms / ms:7.2f} "
                  f"{(f'{np_ms:8.2f}' if np_ms else '       -')}  {err:.1e}")
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"threads": args.threads, "peak_gflops": peak, "cpu_time": args.cpu_time, "cases": rows},
                         indent=1))
    else:
        print("ORT/fus > 1: fusion faster. The %peak column is against the measured FMA peak; pooling and depthwise "
              "are memory-bound (GFLOP/s counts window taps).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
