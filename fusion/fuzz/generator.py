"""Random valid ONNX graphs over the op table.

Elementwise ops come straight from the op table (`fusion.ops.all_ops()`):
each is probed once through its own numpy `scalar` to learn its arity, whether
it keeps float32, the input domain where it is finite (all reals, (0,1) or
(1,2): the generator then feeds it Sigmoid(x) or Sigmoid(x)+1), and whether it
jumps (Floor, Round, Sign: such ops only read graph inputs, where both sides
see the exact same numbers; after a MatMul a last-bit difference would flip
them). Structured ops (anchors, reshapes, shuffles, slicing) need shape-aware
attributes; each has a small builder below, used when the op table has it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx

from fusion.fuzz.spec import OPSET, GraphSpec, NodeSpec

INT64 = onnx.TensorProto.INT64
BOOL = onnx.TensorProto.BOOL

# Ops whose ONNX semantics the numpy probe cannot see: Mod on floats needs
# fmod=1; Cast/CastLike change dtype; Identity/Dropout are no-ops the importer drops.
_SKIP_ELEMENTWISE = {"Mod", "Identity"}


@dataclass(frozen=True)
class Elementwise:
    name: str
    arity: int
    domain: str          # "real", "unit" (0,1), "above1" (1,2)
    jumps: bool


def _probe(od, arity: int):
    from fusion.ops.mathns import NP
    try:
        attrs = od.fill_attrs({})
    except Exception:
        return None
    # the scalar's keyword arguments are the op's attributes
    grid = np.linspace(-3, 3, 61).astype(np.float32)
    domains = {"real": grid, "unit": (1 / (1 + np.exp(-grid))).astype(np.float32)}
    domains["above1"] = (domains["unit"] + 1).astype(np.float32)
    for dom, xs in domains.items():
        args = [xs] + [xs[::-1].copy() for _ in range(arity - 1)]
        try:
            with np.errstate(all="ignore"):
                y = np.asarray(od.scalar(NP, *args, **attrs))
                y2 = np.asarray(od.scalar(NP, *[a + np.float32(1e-3) for a in args], **attrs))
                y3 = np.asarray(od.scalar(NP, *[a - np.float32(1e-3) for a in args], **attrs))
        except Exception:
            return None
        if y.dtype != np.float32 or y.shape != xs.shape:
            return None
        if np.all(np.isfinite(y)) and np.all(np.abs(y) < 1e4):
            jumps = bool(np.max(np.abs(y2 - y3)) > 0.05 * max(1.0, float(np.max(np.abs(y)))))
            return dom, jumps
    return None


@functools.lru_cache(maxsize=1)
def elementwise_ops() -> tuple[Elementwise, ...]:
    """Every float elementwise op of the op table, with its probed domain."""
    from fusion.ops import all_ops
    out = []
    for od in all_ops():
        if od.domain or od.since > OPSET or od.category != "elementwise" or od.scalar is None or od.name in _SKIP_ELEMENTWISE:
            continue
        n_req = od.min_inputs()
        arity = n_req if n_req in (1, 2) else (2 if od.variadic_input else 0)
        if arity == 0:
            continue
        got = _probe(od, arity)
        if got:
            out.append(Elementwise(od.name, arity, *got))
    return tuple(out)


def table_has(name: str) -> bool:
    from fusion.ops import get_op
    return get_op(name) is not None


class _Gen:
    """Grows one GraphSpec: keeps a pool of float values, each action reads
    one or two of them (recent ones more often, so chains and diamonds form)."""

    def __init__(self, seed: int, max_nodes: int):
        self.rng = np.random.default_rng(seed)
        self.s = GraphSpec(seed=seed)
        self.max_nodes = max_nodes
        self.pool: list[str] = []
        self.raw: set[str] = set()   # graph inputs (exact values on both sides)
        self.k = 0

    # -- helpers --------------------------------------------------------------
    def name(self, what: str) -> str:
        self.k += 1
        return f"{what}{self.k}"

    def const(self, arr, dtype=None) -> str:
        n = self.name("c")
        a = np.asarray(arr, dtype=dtype)
        self.s.consts[n] = a
        self.s.shapes[n] = tuple(a.shape)
        if a.dtype == np.int64:
            self.s.dtypes[n] = INT64
        return n

    def node(self, op: str, ins: list[str], shape, attrs=None, pool=True) -> str:
        out = self.name("v")
        self.s.nodes.append(NodeSpec(op, ins, [out], dict(attrs or {})))
        self.s.shapes[out] = tuple(int(d) for d in shape)
        if pool:
            self.pool.append(out)
        return out

    def pick(self, rank=None, not_raw=False) -> str | None:
        cands = [v for v in self.pool if (rank is None or len(self.s.shapes[v]) in rank)]
        if not cands:
            return None
        # favour recent values (chains) but reach back (diamonds, shared inputs)
        w = np.arange(1, len(cands) + 1, dtype=float) ** 2
        return cands[self.rng.choice(len(cands), p=w / w.sum())]

    def shape(self, v) -> tuple:
        return self.s.shapes[v]

    def dims(self, rank: int) -> tuple:
        return tuple(int(d) for d in self.rng.choice([1, 2, 3, 4, 5, 6, 8], size=rank))

    def add_input(self, shape) -> str:
        n = f"in{len(self.s.inputs)}"
        self.s.inputs.append(n)
        self.s.shapes[n] = tuple(shape)
        self.pool.append(n)
        self.raw.add(n)
        return n

    def to_domain(self, v: str, dom: str) -> str:
        if dom == "real":
            return v
        # (0.05, 0.95) and (1.05, 1.95): away from the ends, where Atanh, Acosh
        # and friends turn a last-bit difference of Sigmoid into a large one
        u = self.node("Sigmoid", [v], self.shape(v), pool=False)
        u = self.node("Mul", [u, self.const(np.float32(0.9))], self.shape(v), pool=False)
        return self.node("Add", [u, self.const(np.float32(0.05 if dom == "unit" else 1.05))], self.shape(v), pool=False)

    # -- actions --------------------------------------------------------------
    def unary(self):
        ops = [e for e in elementwise_ops() if e.arity == 1]
        e = ops[self.rng.integers(len(ops))]
        v = self.pick()
        if e.jumps:
            raws = [x for x in self.pool if x in self.raw]
            if not raws:
                return
            v = raws[self.rng.integers(len(raws))]
        self.node(e.name, [self.to_domain(v, e.domain)], self.shape(v))

    def binary(self):
        ops = [e for e in elementwise_ops() if e.arity == 2]
        e = ops[self.rng.integers(len(ops))]
        a = self.pick()
        sa = self.shape(a)
        r = self.rng.random()
        if r < 0.35:   # broadcast against a constant (rank-reduced or with 1s): O2M
            sb = tuple(d if self.rng.random() < 0.5 else 1 for d in sa)[self.rng.integers(0, len(sa) + 1):]
            special = self.rng.random()
            if special < 0.3 and e.name in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"):
                val = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0, "Pow": 1.0}.get(e.name, 0.0)
                b = self.const(np.full(sb, val, np.float32))   # identity constants: rewrite rules fire
            else:
                b = self.const(self.rng.standard_normal(sb).astype(np.float32))
        elif r < 0.6:  # same value twice: x op x
            b = a
        else:
            same = [v for v in self.pool if self.shape(v) == sa or
                    (len(self.shape(v)) <= len(sa) and all(x in (1, y) for x, y in
                                                          zip(self.shape(v)[::-1], sa[::-1])))]
            b = same[self.rng.integers(len(same))]
        if e.jumps and not (a in self.raw and (b in self.raw or b in self.s.consts)):
            return
        out = np.broadcast_shapes(sa, self.shape(b))
        self.node(e.name, [self.to_domain(a, e.domain), self.to_domain(b, e.domain)], out)

    def matmul(self):
        a = self.pick(rank=(2, 3, 4))
        if a is None:
            return
        k = self.shape(a)[-1]
        n = int(self.rng.choice([1, 3, 4, 8]))
        w = self.const((self.rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))
        if self.rng.random() < 0.5 or not table_has("Gemm") or len(self.shape(a)) != 2:
            self.node("MatMul", [a, w], self.shape(a)[:-1] + (n,))
        else:
            b = self.const(self.rng.standard_normal((n,)).astype(np.float32))
            self.node("Gemm", [a, w, b], self.shape(a)[:-1] + (n,), {"alpha": 0.5, "beta": 1.0})

    def reduce(self):
        a = self.pick()
        sa = self.shape(a)
        from fusion.ops import all_ops
        reds = [od.name for od in all_ops() if od.category == "reduce" and od.name.startswith("Reduce")
                and od.name not in ("ReduceLogSum", "ReduceProd")]   # log of a sum of normals; products overflow
        op = reds[self.rng.integers(len(reds))]
        axes = sorted(set(int(x) for x in self.rng.integers(0, len(sa), size=self.rng.integers(1, len(sa) + 1))))
        keep = int(self.rng.random() < 0.6)
        out = tuple(1 if i in axes else d for i, d in enumerate(sa)) if keep else \
            tuple(d for i, d in enumerate(sa) if i not in axes)
        if not out:
            keep, out = 1, tuple(1 for _ in sa)
        self.node(op, [a, self.const(np.array(axes, np.int64))], out, {"keepdims": keep})

    def softmax(self):
        a = self.pick()
        op = "Softmax" if self.rng.random() < 0.7 or not table_has("LogSoftmax") else "LogSoftmax"
        self.node(op, [a], self.shape(a), {"axis": int(self.rng.integers(-len(self.shape(a)), len(self.shape(a))))})

    def conv_or_pool(self):
        a = self.pick(rank=(4,))
        if a is None:
            x = self.pick(rank=(2, 3))
            if x is None:
                return
            sx = self.shape(x)
            shape4 = (1,) * (4 - len(sx)) + sx
            a = self.node("Reshape", [x, self.const(np.array(shape4, np.int64))], shape4)
        n, c, h, w = self.shape(a)
        kh, kw = min(h, int(self.rng.integers(1, 4))), min(w, int(self.rng.integers(1, 4)))
        pad = int(self.rng.integers(0, 2)) if min(kh, kw) > 1 else 0
        stride = int(self.rng.integers(1, 3))
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        attrs = {"kernel_shape": [kh, kw], "pads": [pad] * 4, "strides": [stride, stride]}
        r = self.rng.random()
        if r < 0.5:
            m = int(self.rng.choice([1, 2, 4]))
            group = c if (self.rng.random() < 0.3 and m % 1 == 0) else 1
            m = c * m if group == c else m
            wt = self.const((self.rng.standard_normal((m, c // group, kh, kw)) / np.sqrt(c * kh * kw)).astype(np.float32))
            b = self.const(self.rng.standard_normal((m,)).astype(np.float32))
            self.node("Conv", [a, wt, b], (n, m, oh, ow), attrs | {"group": group})
        elif r < 0.75:
            self.node("MaxPool", [a], (n, c, oh, ow), attrs)
        elif r < 0.9:
            self.node("AveragePool", [a], (n, c, oh, ow), attrs | {"count_include_pad": int(self.rng.integers(0, 2))})
        else:
            self.node("GlobalAveragePool", [a], (n, c, 1, 1))

    def reshape(self):
        a = self.pick()
        sa = self.shape(a)
        total = int(np.prod(sa))
        r = self.rng.random()
        if r < 0.3 and table_has("Flatten"):
            ax = int(self.rng.integers(0, len(sa) + 1))
            out = (int(np.prod(sa[:ax])), int(np.prod(sa[ax:])))
            self.node("Flatten", [a], out, {"axis": ax})
            return
        if r < 0.5 and table_has("Unsqueeze"):
            ax = int(self.rng.integers(0, len(sa) + 1))
            out = sa[:ax] + (1,) + sa[ax:]
            if len(out) <= 5:
                self.node("Unsqueeze", [a, self.const(np.array([ax], np.int64))], out)
            return
        # random factorization of the element count into 1..4 dims, with -1/0 spellings
        fs, rest = [], total
        for _ in range(int(self.rng.integers(0, 3))):
            divs = [d for d in range(2, 9) if rest % d == 0]
            if not divs:
                break
            d = int(self.rng.choice(divs))
            fs.append(d)
            rest //= d
        fs.append(rest)
        self.rng.shuffle(fs)
        spec = list(fs)
        if self.rng.random() < 0.4:
            spec[int(self.rng.integers(len(spec)))] = -1
        self.node("Reshape", [a, self.const(np.array(spec, np.int64))], tuple(fs))

    def transpose(self):
        a = self.pick(rank=(2, 3, 4, 5))
        if a is None:
            return
        perm = [int(p) for p in self.rng.permutation(len(self.shape(a)))]
        self.node("Transpose", [a], tuple(self.shape(a)[p] for p in perm), {"perm": perm})

    def slice_concat(self):
        a = self.pick()
        sa = self.shape(a)
        ax = int(self.rng.integers(len(sa)))
        if self.rng.random() < 0.5 and sa[ax] > 1:
            lo = int(self.rng.integers(0, sa[ax]))
            hi = int(self.rng.integers(lo + 1, sa[ax] + 1))
            step = 1 if self.rng.random() < 0.7 else 2
            out = list(sa)
            out[ax] = len(range(lo, hi, step))
            self.node("Slice", [a, self.const(np.array([lo], np.int64)), self.const(np.array([hi], np.int64)),
                                self.const(np.array([ax], np.int64)), self.const(np.array([step], np.int64))], out)
        else:
            same = [v for v in self.pool if len(self.shape(v)) == len(sa) and
                    all(x == y for i, (x, y) in enumerate(zip(self.shape(v), sa)) if i != ax)]
            b = same[self.rng.integers(len(same))]
            out = list(sa)
            out[ax] = sa[ax] + self.shape(b)[ax]
            self.node("Concat", [a, b], out, {"axis": ax})

    def o2m(self):
        a = self.pick()
        sa = self.shape(a)
        r = self.rng.random()
        if r < 0.4 and table_has("Expand"):
            out = tuple(int(self.rng.choice([2, 3])) if d == 1 else d for d in sa)
            if self.rng.random() < 0.3 and len(out) < 4:
                out = (2,) + out
            self.node("Expand", [a, self.const(np.array(out, np.int64))], out)
        elif r < 0.8 and table_has("Gather"):
            ax = int(self.rng.integers(len(sa)))
            idx = self.rng.integers(-sa[ax], sa[ax], size=int(self.rng.integers(1, 5))).astype(np.int64)
            out = sa[:ax] + idx.shape + sa[ax + 1:]
            self.node("Gather", [a, self.const(idx)], out, {"axis": ax})
        elif table_has("Tile"):
            reps = [int(self.rng.integers(1, 3)) for _ in sa]
            self.node("Tile", [a, self.const(np.array(reps, np.int64))], tuple(d * r for d, r in zip(sa, reps)))

    def norm(self):
        a = self.pick()
        sa = self.shape(a)
        if table_has("LayerNormalization") and self.rng.random() < 0.6:
            ax = int(self.rng.integers(-len(sa), 0))
            ns = sa[ax:]
            g = self.const((1 + 0.1 * self.rng.standard_normal(ns)).astype(np.float32))
            b = self.const(self.rng.standard_normal(ns).astype(np.float32))
            self.node("LayerNormalization", [a, g, b], sa, {"axis": ax, "epsilon": 1e-5})
        elif len(sa) >= 2 and table_has("BatchNormalization"):
            c = sa[1]
            mk = lambda lo: self.const((lo + self.rng.random(c)).astype(np.float32))  # noqa: E731
            self.node("BatchNormalization", [a, mk(0.5), mk(-0.5), mk(-0.5), mk(0.5)], sa, {"epsilon": 1e-5})

    def where(self):
        a = self.pick()
        sa = self.shape(a)
        if a not in self.raw:
            return   # a comparison after float arithmetic may flip on a last-bit difference
        cond = self.node("Greater", [a, self.const(np.float32(0.0))], sa, pool=False)
        self.s.dtypes[cond] = BOOL
        b = self.pick()
        if self.shape(b) != sa:
            b = self.const(self.rng.standard_normal(sa).astype(np.float32))
        self.node("Where", [cond, a, b], sa)

    def shuffle4(self):
        """DepthToSpace / SpaceToDepth (Shuffle) on a rank-4 value."""
        a = self.pick(rank=(4,))
        if a is None:
            return
        n, c, h, w = self.shape(a)
        if c % 4 == 0 and table_has("DepthToSpace") and self.rng.random() < 0.5:
            mode = str(self.rng.choice(["DCR", "CRD"]))
            self.node("DepthToSpace", [a], (n, c // 4, h * 2, w * 2), {"blocksize": 2, "mode": mode})
        elif h % 2 == 0 and w % 2 == 0 and table_has("SpaceToDepth"):
            self.node("SpaceToDepth", [a], (n, c * 4, h // 2, w // 2), {"blocksize": 2})

    def pad_split(self):
        a = self.pick()
        sa = self.shape(a)
        r = self.rng.random()
        if r < 0.4 and table_has("Pad"):
            mode = str(self.rng.choice(["constant", "reflect", "edge"]))
            # begins then ends; reflect needs a dim longer than its pad
            pads = [int(self.rng.integers(0, 2)) if (mode != "reflect" or d > 1) else 0 for d in sa + sa]
            out = tuple(d + pads[i] + pads[i + len(sa)] for i, d in enumerate(sa))
            ins = [a, self.const(np.array(pads, np.int64))]
            if mode == "constant":
                ins.append(self.const(np.float32(self.rng.standard_normal())))
            self.node("Pad", ins, out, {"mode": mode})
        elif r < 0.7 and table_has("Split"):
            ax = int(self.rng.integers(len(sa)))
            if sa[ax] < 2:
                return
            first = int(self.rng.integers(1, sa[ax]))
            outs = [self.name("v"), self.name("v")]
            self.s.nodes.append(NodeSpec("Split", [a, self.const(np.array([first, sa[ax] - first], np.int64))],
                                         outs, {"axis": ax}))
            for o, d in zip(outs, (first, sa[ax] - first)):
                sh = list(sa)
                sh[ax] = d
                self.s.shapes[o] = tuple(sh)
                self.pool.append(o)
        elif r < 0.85 and table_has("CumSum"):
            ax = int(self.rng.integers(len(sa)))
            self.node("CumSum", [a, self.const(np.array(ax, np.int64))], sa,
                      {"exclusive": int(self.rng.integers(0, 2)), "reverse": int(self.rng.integers(0, 2))})
        elif 1 in sa and table_has("Squeeze") and len(sa) > 1:
            ax = [i for i, d in enumerate(sa) if d == 1][:1]
            self.node("Squeeze", [a, self.const(np.array(ax, np.int64))], tuple(d for i, d in enumerate(sa) if i not in ax))
        elif table_has("Trilu") and len(sa) >= 2:
            self.node("Trilu", [a, self.const(np.array(int(self.rng.integers(-1, 2)), np.int64))], sa,
                      {"upper": int(self.rng.integers(0, 2))})


ACTIONS = [("unary", 4), ("binary", 4), ("matmul", 2), ("reduce", 1.5), ("softmax", 1), ("conv_or_pool", 1.5),
           ("reshape", 2), ("transpose", 2), ("slice_concat", 1.5), ("o2m", 1.5), ("norm", 1), ("where", 0.5),
           ("shuffle4", 1), ("pad_split", 1.5)]


def generate(seed: int, max_nodes: int = 8) -> GraphSpec:
    """A random valid graph: 1-3 float32 inputs of rank 2-4, 2..max_nodes ops,
    1-3 outputs (the last value and some intermediate ones)."""
    g = _Gen(seed, max_nodes)
    rng = g.rng
    rank = int(rng.integers(2, 5))
    base = g.dims(rank)
    g.add_input(base)
    for _ in range(int(rng.integers(0, 3))):   # extra inputs broadcast against the first
        g.add_input(tuple(d if rng.random() < 0.7 else 1 for d in base)[int(rng.integers(0, 2)):])
    names = [a for a, _ in ACTIONS]
    w = np.array([x for _, x in ACTIONS])
    target = int(rng.integers(2, max_nodes + 1))
    tries = 0
    while len(g.s.nodes) < target and tries < 200:
        tries += 1
        act = names[rng.choice(len(names), p=w / w.sum())]
        try:
            getattr(g, act)()
        except (ValueError, IndexError):
            continue   # an action that did not fit the shapes at hand
        if any(int(np.prod(g.shape(v))) > 4096 for v in g.pool[-1:]):
            break   # keep tensors small: the point is coverage, not size
    made = [v for v in g.pool if v not in g.raw]
    if not made:
        g.unary()
        made = [v for v in g.pool if v not in g.raw]
    outs = [made[-1]]
    for v in made[:-1]:
        if rng.random() < 0.25 and len(outs) < 3:
            outs.append(v)
    g.s.outputs = outs
    return g.s.prune()
