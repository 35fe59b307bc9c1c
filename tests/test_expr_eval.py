"""The index-expression evaluator on edge cases: reductions over nothing."""
import numpy as np
import pytest

from fusion.ir import expr as E
from fusion.ir.expr_eval import evaluate


@pytest.mark.parametrize("op,dtype,want", [
    ("max", "float32", -np.inf), ("min", "float32", np.inf),
    ("max", "int32", np.iinfo(np.int32).min), ("min", "int64", np.iinfo(np.int64).max),
    ("max", "uint8", 0), ("min", "uint8", 255),
    ("max", "bool", False), ("min", "bool", True),
    ("sum", "int32", 0), ("prod", "float32", 1.0)])
def test_empty_reduction_starts_at_the_identity(op, dtype, want):
    k = E.Var("k", 0)
    body = E.Cast(E.Const(1.0, "float32"), dtype)
    r = evaluate(E.Reduce(op, (k,), body), {}, load=None)
    assert r.dtype == np.dtype(dtype)
    assert r == np.asarray(want).astype(dtype)
