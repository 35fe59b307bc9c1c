"""The anchor-kernel interface between fusion/codegen (the core) and this package.

The core turns each planned block into one C function
`static void NAME(const struct NAME_args *A)`. When the block's anchor is a
MatMul/Gemm, a Conv or a pooling op it asks here for a fast kernel; `None`
means "not handled", and the core emits its own plain loop nest.

Caller expressions (Operand.c_expr results, epilogue statements) reference data
only through the pointer `A`; every worker function generated here declares
`const struct NAME_args *A` before using them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Operand:
    shape: tuple[int, ...]                 # logical shape the kernel indexes
    c_expr: Callable[[list[str]], str]     # C expression (float) of the element at the given index (C int64 exprs)
    const: "np.ndarray | None" = None      # compile-time value (weights): the kernel may pre-pack it
    dtype: str = "float32"


@dataclass
class KernelCode:
    functions: str                         # C at file scope, emitted before the block function
    body: str                              # C statements inside the block function
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # packed constants -> `const float *NAME;` args fields
    schedule: str = ""                     # one line for the report


Epilogue = Callable[[list[str], str], str]


def _fast_math():
    """Kernels are C that includes fz_runtime.h: the caller's expressions printed while one is
    generated (operands, epilogues) may use its vectorizable math functions (fz_expf ...)."""
    try:
        from fusion.codegen.cprint import fast_math
    except ImportError:   # a core without them: libm names
        import contextlib
        return contextlib.nullcontext()
    return fast_math()


def _scoped(epilogue: Epilogue) -> Epilogue:
    """The caller's statements in their own block: names they declare cannot clash with the kernel's.
    An epilogue with `flat_spatial = True` (conv and pooling outputs [n, c, *spatial]) may be called
    with the spatial index (0, ..., 0, j), j the row-major offset in the spatial dims: the caller
    promises the statements depend on the spatial position only through that offset."""
    def scoped(index, acc):
        return "{\n" + epilogue(list(index), acc) + "\n}"
    scoped.flat_spatial = bool(getattr(epilogue, "flat_spatial", False))
    return scoped


def matmul(name: str, *, batch, M: int, N: int, K: int, A: Operand, B: Operand, epilogue: Epilogue,
           target) -> KernelCode | None:
    """Batched GEMM: out[*batch, m, n] = sum_k A[*batch, m, k] * B[*batch, k, n], then epilogue.

    B.const set (shape [K, N], no batch dims) is pre-packed; otherwise both operands are read at
    run time through c_expr (attention's QK^T and PV)."""
    from fusion.codegen.kernels import matmuls as _mm
    with _fast_math():
        return _mm.matmul(name, batch=batch, M=M, N=N, K=K, A=A, B=B, epilogue=_scoped(epilogue), target=target)


def conv(name: str, *, node_geometry: dict, X: Operand, W: Operand, bias: Operand | None, epilogue: Epilogue,
         target) -> KernelCode | None:
    """Conv (1-D/2-D/3-D, strides, pads, dilations, groups, depthwise); W must be const."""
    from fusion.codegen.kernels import convs as _conv
    with _fast_math():
        return _conv.conv(name, node_geometry=node_geometry, X=X, W=W, bias=bias, epilogue=_scoped(epilogue),
                          target=target)


def pool(name: str, *, kind: str, node_geometry: dict, X: Operand, count_include_pad: bool, epilogue: Epilogue,
         target) -> KernelCode | None:
    """Max/average pooling (1-D/2-D/3-D) and global pooling."""
    from fusion.codegen.kernels import pools as _pool
    with _fast_math():
        return _pool.pool(name, kind=kind, node_geometry=node_geometry, X=X, count_include_pad=count_include_pad,
                          epilogue=_scoped(epilogue), target=target)


def conv_transpose(name: str, *, node_geometry: dict, X: Operand, W: Operand, bias: Operand | None,
                   epilogue: Epilogue, target) -> KernelCode | None:
    """ConvTranspose, same conventions as conv: X [n, c, *spatial_in], W [c, m/group, *k] (const),
    epilogue index [n, m, *spatial_out]; node_geometry as for conv ("out" includes output_padding;
    "output_padding" is read only when "out" is missing)."""
    from fusion.codegen.kernels import convs as _conv
    with _fast_math():
        return _conv.conv_transpose(name, node_geometry=node_geometry, X=X, W=W, bias=bias,
                                    epilogue=_scoped(epilogue), target=target)
