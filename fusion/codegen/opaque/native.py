"""Build the kernels into a standalone library and call one from Python
(ctypes): what the tests use, and a way to run a single opaque op on numpy
arrays without compiling a model.

    out = run_kernel("TopK", [x, np.array([3])], {"axis": -1})
"""
from __future__ import annotations

import ctypes
import os
import tempfile

import numpy as np

from fusion.codegen.opaque import c_sources, header
from fusion.codegen.opaque.kernels import kernel_for
from fusion.errors import FusionError

MAX_RANK = 8
SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined,float-cast-overflow",
                  "-fno-sanitize-recover=all"]


class KernelError(FusionError):
    """A kernel refused its inputs; the message is the kernel's."""


class FzTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("rank", ctypes.c_int32),
                ("shape", ctypes.c_int64 * MAX_RANK)]


def onnx_dtype(dtype) -> int:
    from onnx.helper import np_dtype_to_tensor_dtype
    return int(np_dtype_to_tensor_dtype(np.dtype(dtype)))


def cache_dir() -> str:
    base = os.environ.get("FUSION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fusion")
    d = os.path.join(base, "opaque")
    os.makedirs(d, exist_ok=True)
    return d


def build(sanitize: bool = False, out_dir: str | None = None) -> str:
    """Path of a shared library with every kernel, built once per source digest."""
    from fusion.toolchain import compile_shared, source_digest
    srcs = c_sources()
    deps = srcs + [header(), os.path.join(os.path.dirname(header()), "fz_internal.h")]
    flags = ["-I", os.path.dirname(header())] + (SANITIZE_FLAGS if sanitize else [])
    digest = source_digest(*[open(p, "rb").read() for p in deps], " ".join(flags))
    path = os.path.join(out_dir or cache_dir(), f"libfz_opaque-{digest}{'-asan' if sanitize else ''}.so")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
        os.close(fd)
        try:
            compile_shared(srcs, tmp, extra_flags=flags)
            os.replace(tmp, path)  # atomic: concurrent builders never see half a library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


_LIBS: dict[str, ctypes.CDLL] = {}


def load(path: str | None = None) -> ctypes.CDLL:
    """The kernels library: `path`, else $FUSION_OPAQUE_LIB, else a fresh build."""
    path = path or os.environ.get("FUSION_OPAQUE_LIB") or build()
    if path not in _LIBS:
        lib = ctypes.CDLL(path)
        lib.fz_opaque_last_error.restype = ctypes.c_char_p
        _LIBS[path] = lib
    return _LIBS[path]


def _tensor(a: np.ndarray | None) -> FzTensor:
    t = FzTensor()
    if a is None:
        return t  # dtype 0: absent
    if a.ndim > MAX_RANK:
        raise FusionError(f"rank {a.ndim} is above the kernels' limit of {MAX_RANK}")
    t.data = a.ctypes.data if a.size else None
    t.dtype = onnx_dtype(a.dtype)
    t.rank = a.ndim
    for i, d in enumerate(a.shape):
        t.shape[i] = d
    return t


def run_kernel(op: str, inputs: list, attrs: dict | None = None, *, opset: int = 21, lib=None,
               capacity: list | None = None, out_dtypes: list | None = None,
               skip: tuple[int, ...] = ()) -> list[np.ndarray | None]:
    """Run one kernel on numpy arrays (None: omitted optional input). `capacity`
    and `out_dtypes` override what the kernel spec computes (tests use them to
    give a kernel too little room or a wrong type); outputs numbered in `skip`
    are passed as absent (unused) and come back as None."""
    k = kernel_for(op)
    lib = lib or load()
    fields = k.fields(dict(attrs or {}), opset)
    arrays = [None if a is None else np.asarray(a, order="C") for a in inputs]  # (ascontiguousarray makes 0-d 1-d)
    if capacity is None:
        capacity = k.capacity([None if a is None else a.shape for a in arrays], arrays,
                              {**fields, "_dtypes": [None if a is None else a.dtype for a in arrays]})
    if out_dtypes is None:
        out_dtypes = k.out_dtypes([None if a is None else a.dtype for a in arrays], fields)
    bufs = [np.zeros(max(int(np.prod(s, dtype=np.int64)), 1), dtype=dt) for s, dt in zip(capacity, out_dtypes)]
    tin = (FzTensor * max(len(arrays), 1))(*[_tensor(a) for a in arrays])
    tout = (FzTensor * len(bufs))()
    for i, (b, s) in enumerate(zip(bufs, capacity)):
        if i in skip:
            continue  # left zeroed: dtype 0 marks it absent
        tout[i] = _tensor(b)
        tout[i].rank = len(s)
        for j, d in enumerate(s):
            tout[i].shape[j] = d
    struct = k.struct(fields)
    rc = lib[f"fz_op_{k.c_name}"](tin, len(arrays), tout, len(bufs), ctypes.byref(struct))
    if rc != 0:
        raise KernelError(lib.fz_opaque_last_error().decode(errors="replace"))
    out = []
    for i, (b, t) in enumerate(zip(bufs, tout)):
        if i in skip:
            out.append(None)
            continue
        shape = tuple(t.shape[j] for j in range(t.rank))
        out.append(b[:int(np.prod(shape, dtype=np.int64))].reshape(shape))
    return out
