"""The loop-nest program: what lowering produces and every printer prints.

A block becomes one `Function`: statements over loops, lets, accumulators and
stores, with expressions in fusion.ir.expr's language. Lowering decides
*what* is computed where (composition, CSE, hoisting, which loop runs in
parallel); printers (C now; LLVM and OpenCL later) only spell it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fusion.ir import expr as E


class Temp(E.Expr):
    """A named scalar computed by a Let or an accumulator (Decl)."""
    __slots__ = ("name",)

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, dtype
        self._hash = None

    def _key(self):
        return (self.name, self.dtype)


class Sym(E.Expr):
    """A run-time integer known only when the model runs (a data-dependent
    extent: the actual size behind a compile-time upper bound)."""
    __slots__ = ("name", "bound")

    def __init__(self, name: str, bound: int):
        self.name, self.bound, self.dtype = name, int(bound), E.INDEX
        self._hash = None

    def _key(self):
        return (self.name, self.bound)


@dataclass
class Let:
    temp: Temp
    value: E.Expr


@dataclass
class Decl:
    """A mutable accumulator initialised to `init`."""
    temp: Temp
    init: E.Expr


@dataclass
class Update:
    """acc = op(acc, value); argmax/argmin also keep the position in `pos_temp`."""
    temp: Temp
    op: str                      # sum prod max min any all argmax argmin
    value: E.Expr
    pos_temp: Temp | None = None
    pos: E.Expr | None = None


@dataclass
class Store:
    buffer: str                  # argument name of the output buffer
    index: E.Expr                # flat element index
    value: E.Expr
    dtype: str
    cond: E.Expr | None = None   # store only where this holds (an epilogue output covering part of the anchor)


@dataclass
class Loop:
    var: E.Var
    extent: int | E.Expr         # an int, or a run-time expression (Sym) for data-dependent sizes
    body: list = field(default_factory=list)


@dataclass
class Raw:
    """Target-specific text (a fast kernel's body)."""
    text: str


@dataclass
class Buffer:
    name: str
    dtype: str
    shape: tuple[int, ...]       # capacity (compile-time upper bound for data-dependent dims)
    role: str                    # in | out | weight
    value: str = ""              # the IR value it holds (for comments)


@dataclass
class Function:
    """One fused kernel. Iteration: `outer` vars are flattened into one range
    [0, prod(outer extents)) that may be split across threads; `body` runs for
    each point of it (inner loops are inside body)."""
    name: str
    buffers: list[Buffer]
    outer: list[E.Var]
    outer_extents: list[int | E.Expr]
    body: list
    parallel: bool = False
    prelude: list = field(default_factory=list)   # statements run once, before the parallel range
    functions: str = ""                           # extra file-scope text (fast kernels)
    raw_body: str | None = None                   # whole body given as text (fast kernels)
    schedule: str = ""                            # one line for the report
    comment: str = ""

    def buffer(self, name: str) -> Buffer:
        return next(b for b in self.buffers if b.name == name)
