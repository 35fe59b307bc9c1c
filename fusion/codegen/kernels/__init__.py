"""Fast anchor kernels (GEMM, convolution, pooling) emitted as C for the code generator.

The interface is in api.py; docs/kernels.md describes the schedules."""
from fusion.codegen.kernels.api import KernelCode, Operand, conv, conv_transpose, matmul, pool

__all__ = ["KernelCode", "Operand", "matmul", "conv", "conv_transpose", "pool"]
