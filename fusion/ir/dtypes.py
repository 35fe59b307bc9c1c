"""Element types: ONNX TensorProto codes <-> numpy dtypes <-> names."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

# onnx's own table is the source of truth for code <-> numpy.
def to_numpy(elem_type: int) -> np.dtype:
    if elem_type == TensorProto.BFLOAT16:
        raise ValueError("bfloat16 has no numpy dtype")
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def from_numpy(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def name(dtype: np.dtype) -> str:
    return np.dtype(dtype).name


FLOAT_TYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def is_int(dtype) -> bool:
    return np.dtype(dtype).kind in "iu"


# C spelling used by every backend that prints C-like code.
C_TYPES = {
    "float32": "float", "float64": "double", "float16": "_Float16",
    "int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
    "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t",
    "bool": "uint8_t",
}
