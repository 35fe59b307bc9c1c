"""MatMul / Gemm anchors on the shared packed GEMM (gemm.py)."""
from __future__ import annotations

import numpy as np

from fusion.codegen.kernels.api import KernelCode, Operand
from fusion.codegen.kernels.gemm import gemm


def matmul(name: str, *, batch, M: int, N: int, K: int, A: Operand, B: Operand, epilogue, target) -> KernelCode | None:
    batch = [int(d) for d in (batch or ())]
    if min([M, N, K] + batch, default=1) <= 0:
        return None                      # empty tensors: the core's plain loop handles them
    if A.dtype != "float32" or B.dtype != "float32":
        return None
    nb = len(batch)
    a_const = b_const = None
    # Constants are packed at compile time; a constant with batch dims (rare) is read like any operand.
    if A.const is not None and np.ndim(A.const) == 2 and tuple(np.shape(A.const)) == (M, K):
        a_const = np.asarray(A.const, np.float32)[None]
    if B.const is not None and np.ndim(B.const) == 2 and tuple(np.shape(B.const)) == (K, N):
        b_const = np.asarray(B.const, np.float32)[None]

    def bidx(shape, bv):
        """Batch indices for an operand of `shape` (numpy broadcasting: aligned right, size-1 dims read 0)."""
        own = list(shape[:-2])
        bv = list(bv[len(bv) - len(own):]) if own else []
        return [v if d != 1 else "0" for v, d in zip(bv, own)]

    def a_elem(bv, m, k):
        return A.c_expr(bidx(A.shape, bv) + [m, k])

    def b_elem(bv, k, n):
        return B.c_expr(bidx(B.shape, bv) + [k, n])

    def epi(bv, m, n, acc):
        return epilogue(list(bv) + [m, n], acc)

    kind = "gemm" if b_const is not None else "batched gemm (both operands at run time)"
    return gemm(name, batch=batch, M=M, N=N, K=K, target=target, epilogue=epi,
                a_const=a_const, a_elem=None if a_const is not None else a_elem,
                b_const=b_const, b_elem=None if b_const is not None else b_elem, what=kind)
