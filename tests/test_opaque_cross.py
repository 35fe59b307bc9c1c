"""The kernels on ARM64: a C program with the inputs built in, cross-compiled
with aarch64-linux-gnu-gcc (-O3, FMA contraction on, as models are) and run
under qemu-aarch64, must print what the host build computes; and the kernels
must link as an Android library (clang, stub libc, -z defs: no symbol that a
phone's libc/libm lacks, e.g. no emulated-TLS helper)."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from fusion.codegen import opaque
from fusion.codegen.opaque import KERNELS
from fusion.codegen.opaque.kernels import struct_fields
from fusion.codegen.opaque.native import onnx_dtype, run_kernel
from fusion.oracle import compare_arrays
from fusion.targets import get_target

SYSROOT = "/usr/aarch64-linux-gnu"


def _cases():
    r = np.random.default_rng(5)
    lo = r.uniform(0, 8, (20, 2))
    boxes = np.concatenate([lo, lo + r.uniform(0.5, 4, (20, 2))], 1)[None].astype(np.float32)
    rois = np.array([[0, 0, 5, 5], [1.5, 2, 7, 6.5], [-1, 3, 4, 9]], np.float32)
    return [
        ("TopK", [r.integers(0, 5, (3, 50)).astype(np.float32), np.array([6], np.int64)], {"largest": 1}),
        ("TopK", [r.integers(0, 50, (40, 2)).astype(np.int64), np.array([3], np.int64)], {"axis": 0, "largest": 0}),
        ("NonMaxSuppression", [boxes, r.random((1, 3, 20)).astype(np.float32), np.array([5], np.int64),
                               np.array([0.3], np.float32), np.array([0.2], np.float32)], {}),
        ("RoiAlign", [r.standard_normal((1, 2, 8, 8)).astype(np.float32), rois, np.zeros(3, np.int64)],
         {"output_height": 3, "output_width": 3, "mode": "avg"}),
        ("RoiAlign", [r.standard_normal((1, 2, 8, 8)), rois.astype(np.float64), np.zeros(3, np.int64)],
         {"output_height": 2, "output_width": 4, "mode": "max", "sampling_ratio": 2}),
        ("NonZero", [r.random((3, 4, 5)) < 0.3], {}),
        ("Unique", [r.integers(0, 4, (6, 2)).astype(np.int32)], {"axis": 0, "sorted": 1}),
        ("GatherND", [r.standard_normal((4, 5)).astype(np.float32), np.array([[3, -1], [0, 2]], np.int64)], {}),
    ]


def _c_array(name, a):
    flat = a.reshape(-1)
    if a.dtype == np.bool_:
        ctype, vals = "uint8_t", [str(int(v)) for v in flat]
    elif a.dtype.kind == "f":
        ctype = {4: "float", 8: "double"}[a.itemsize]
        vals = [float(v).hex() + ("f" if a.itemsize == 4 else "") for v in flat]
    else:
        ctype = {1: "int8_t", 4: "int32_t", 8: "int64_t"}[a.itemsize]
        vals = [f"{int(v)}LL" for v in flat]
    return f"static {ctype} {name}[{max(len(vals), 1)}] = {{{', '.join(vals) or '0'}}};"


def program(cases, caps):
    """main(): each case's kernel on built-in inputs; prints shapes and values (%a: exact)."""
    top = ['#include <stdio.h>', '#include <inttypes.h>', '#include "fz_opaque.h"']
    body = []
    for c, ((op, ins, attrs), cap) in enumerate(zip(cases, caps)):
        k = KERNELS[op]
        fields = k.fields(attrs, 21)
        init = ", ".join(f".{n} = {float(fields[n]).hex() if t in ('float', 'double') else int(fields[n])}"
                         for t, n in struct_fields()[k.attrs_struct])
        top.append(f"static const struct fz_attrs_{k.attrs_struct} at{c} = {{{init}}};")
        body.append("    {")
        tin = []
        for i, a in enumerate(ins):
            top.append(_c_array(f"c{c}_in{i}", a))
            dims = ", ".join(str(d) for d in a.shape) or "0"
            tin.append(f"{{c{c}_in{i}, {onnx_dtype(a.dtype)}, {a.ndim}, {{{dims}}}}}")
        dts = k.out_dtypes([a.dtype for a in ins], fields)
        tout = []
        for j, (s, dt) in enumerate(zip(cap, dts)):
            top.append(_c_array(f"c{c}_out{j}", np.zeros(max(int(np.prod(s)), 1), dt)))
            tout.append(f"{{c{c}_out{j}, {onnx_dtype(dt)}, {len(s)}, {{{', '.join(map(str, s)) or '0'}}}}}")
        body.append(f"        fz_tensor in[] = {{{', '.join(tin)}}};")
        body.append(f"        fz_tensor out[] = {{{', '.join(tout)}}};")
        body.append(f"        if (fz_op_{k.c_name}(in, {len(tin)}, out, {len(tout)}, &at{c})) "
                    f"{{ printf(\"error %s\\n\", fz_opaque_last_error()); return 1; }}")
        for j, dt in enumerate(dts):
            fmt, cast = ("%a", "(double)") if np.dtype(dt).kind == "f" else ("%lld", "(long long)")
            body += [f"        printf(\"out {c} {j} %d\", out[{j}].rank);",
                     f"        for (int d = 0; d < out[{j}].rank; d++) printf(\" %lld\", (long long)out[{j}].shape[d]);",
                     f"        {{ long long n = 1; for (int d = 0; d < out[{j}].rank; d++) n *= out[{j}].shape[d];",
                     f"          printf(\" :\"); for (long long e = 0; e < n; e++) printf(\" {fmt}\", {cast}c{c}_out{j}[e]); }}",
                     "        printf(\"\\n\");"]
        body.append("    }")
    return "\n".join(top + ["int main(void) {"] + body + ["    return 0;", "}"]) + "\n"


def parse(text):
    res = {}
    for line in text.splitlines():
        if not line.startswith("out "):
            continue
        head, _, vals = line.partition(" :")
        parts = head.split()
        c, j, rank = int(parts[1]), int(parts[2]), int(parts[3])
        shape = tuple(int(x) for x in parts[4:4 + rank])
        nums = [float.fromhex(v) if ("p" in v or "x" in v or "nan" in v or "inf" in v) else int(v) for v in vals.split()]
        res[(c, j)] = np.array(nums).reshape(shape)
    return res


def _have(tool):
    from shutil import which
    return which(tool) is not None


@pytest.mark.skipif(not (_have("aarch64-linux-gnu-gcc") and _have("qemu-aarch64") and os.path.isdir(SYSROOT)),
                    reason="no aarch64 cross compiler / qemu-aarch64")
def test_arm64_under_qemu_matches_host(tmp_path):
    cases = _cases()
    host = [run_kernel(op, ins, attrs) for op, ins, attrs in cases]
    caps = [KERNELS[op].capacity([a.shape for a in ins], ins, {**KERNELS[op].fields(attrs, 21),
                                                               "_dtypes": [a.dtype for a in ins]})
            for op, ins, attrs in cases]
    src = tmp_path / "prog.c"
    src.write_text(program(cases, caps))
    exe = str(tmp_path / "prog")
    cmd = ["aarch64-linux-gnu-gcc", "-O3", "-std=gnu11", "-ffp-contract=fast", "-mcpu=cortex-a76", "-Wall",
           "-I", os.path.dirname(opaque.header()), "-o", exe, str(src), *opaque.c_sources(), "-lm", "-pthread"]
    b = subprocess.run(cmd, capture_output=True, text=True)
    assert b.returncode == 0, b.stderr[-2000:]
    run = subprocess.run(["qemu-aarch64", "-L", SYSROOT, exe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-1000:] + run.stderr[-1000:]
    arm = parse(run.stdout)
    for c, outs in enumerate(host):
        for j, h in enumerate(outs):
            a = arm[(c, j)].astype(h.dtype)
            d = compare_arrays(f"case {c} ({cases[c][0]}) output {j}", a, h)
            assert d.ok, d.message or f"shape {a.shape} vs {h.shape}"


@pytest.mark.skipif(not (_have("clang") and _have("ld.lld") and os.path.isdir(SYSROOT + "/include")),
                    reason="no clang / ld.lld / aarch64 headers")
def test_links_as_an_android_library(tmp_path):
    from fusion.device.cross import compile_shared, elf_info
    lib = str(tmp_path / "libkernels.so")
    compile_shared(opaque.c_sources(), lib, get_target("android-arm64"),
                   extra_flags=["-I", os.path.dirname(opaque.header())])
    info = elf_info(lib)
    assert "AArch64" in info["machine"]
    assert not [s for s in info["imported"] if "emutls" in s or s.startswith("__tls")], info["imported"]
