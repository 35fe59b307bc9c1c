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

    # -- wider coverage: anchor attributes, anchors in pairs, rewrite patterns ---
    def infer(self, op: str, ins: list[str], attrs: dict, n_out: int = 1) -> list[tuple]:
        """Output shapes by ONNX's own shape inference (pool ceil_mode, dilations,
        ConvTranspose, Resize: one formula fewer to get wrong here)."""
        from onnx import helper, numpy_helper
        vis = [helper.make_tensor_value_info(i, self.s.dtype(i), list(self.shape(i)))
               for i in dict.fromkeys(ins) if i and i not in self.s.consts]
        inits = [numpy_helper.from_array(self.s.consts[i], i) for i in dict.fromkeys(ins) if i in self.s.consts]
        outs = [f"_o{k}" for k in range(n_out)]
        g = helper.make_graph([helper.make_node(op, ins, outs, **attrs)], "probe", vis,
                              [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        got = []
        for o in m.graph.output:
            dims = o.type.tensor_type.shape.dim
            if not dims and not o.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
                raise ValueError(f"{op}: no static shape")
            got.append(tuple(int(d.dim_value) for d in dims))
        if any(int(np.prod(x)) == 0 for x in got):
            raise ValueError(f"{op}: empty output")
        return got

    def weights(self, shape, fan_in: int) -> str:
        return self.const((self.rng.standard_normal(shape) / np.sqrt(max(1, fan_in))).astype(np.float32))

    def gemm(self):
        """Gemm with alpha/beta, transA/transB and every bias shape Gemm broadcasts (or none)."""
        a = self.pick(rank=(2,))
        if a is None or not table_has("Gemm"):
            return
        ta, tb = int(self.rng.integers(0, 2)), int(self.rng.integers(0, 2))
        m, k = self.shape(a)[::-1] if ta else self.shape(a)
        n = int(self.rng.choice([1, 3, 4, 8]))
        if self.rng.random() < 0.3:   # B a computed value: both operands move at run time
            b = self.node("Transpose", [self.weights((k, n), k)], (n, k), {"perm": [1, 0]}, pool=False) if tb \
                else self.node("Mul", [self.weights((k, n), k), self.const(np.float32(1.5))], (k, n), pool=False)
        else:
            b = self.weights((n, k) if tb else (k, n), k)
        attrs = {"transA": ta, "transB": tb}
        if self.rng.random() < 0.6:
            attrs["alpha"] = float(self.rng.choice([0.5, 1.0, -2.0, 0.25]))
        ins = [a, b]
        if self.rng.random() < 0.8:
            cs = [(), (n,), (1, n), (m, 1), (m, n), (1, 1)][int(self.rng.integers(6))]
            ins.append(self.const(self.rng.standard_normal(cs).astype(np.float32)))
            if self.rng.random() < 0.6:
                attrs["beta"] = float(self.rng.choice([0.0, 1.0, 0.5, -1.0]))
        self.node("Gemm", ins, (m, n), attrs)

    def matmul_values(self):
        """MatMul of two computed values with batch broadcasting ((b,m,k) x (k,n),
        (1,m,k) x (b,k,n), (m,k) x (b,k,n)): attention-like products and
        broadcasting straight into an anchor."""
        a = self.pick(rank=(2, 3, 4))
        if a is None:
            return
        sa = self.shape(a)
        k = sa[-1]
        n = int(self.rng.choice([1, 2, 4, 5]))
        batch = sa[:-2]
        r = self.rng.random()
        if r < 0.35 and batch:   # B with batch dims of 1 (broadcast against A's)
            bs = tuple(1 if self.rng.random() < 0.5 else d for d in batch) + (k, n)
        elif r < 0.7 and len(sa) < 4:   # A broadcast against a batched B
            bs = (int(self.rng.choice([2, 3])),) + sa[:-2] + (k, n)
        else:
            bs = (k, n)
        src = self.pick()
        b = self.weights(bs, k)
        if src is not None and self.rng.random() < 0.5:   # B computed from a graph value
            s = self.node("ReduceMean", [src, self.const(np.arange(len(self.shape(src)), dtype=np.int64))],
                          (), {"keepdims": 0}, pool=False)
            b = self.node("Add", [b, s], bs, pool=False)
        out = np.broadcast_shapes(sa[:-2], bs[:-2]) + (sa[-2], n)
        self.node("MatMul", [a, b], out)

    def anchor_pair(self):
        """Two anchors with a Reshape or Transpose between them (MatMul -> Transpose ->
        MatMul, Conv -> Reshape -> MatMul/Gemm, MatMul -> Reshape -> Conv)."""
        r = self.rng.random()
        if r < 0.4:
            a = self.pick(rank=(2, 3, 4))
            if a is None:
                return
            sa = self.shape(a)
            n = int(self.rng.choice([2, 3, 4]))
            y = self.node("MatMul", [a, self.weights((sa[-1], n), sa[-1])], sa[:-1] + (n,))
            perm = list(range(len(sa)))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            t = self.node("Transpose", [y], tuple(self.shape(y)[p] for p in perm), {"perm": perm})
            st = self.shape(t)
            self.node("MatMul", [t, self.weights((st[-1], 3), st[-1])], st[:-1] + (3,))
        elif r < 0.75:
            a = self.pick(rank=(4,))
            if a is None:
                return
            nb, c, h, w = self.shape(a)
            m = int(self.rng.choice([2, 4]))
            y = self.node("Conv", [a, self.weights((m, c, 1, 1), c)], (nb, m, h, w), {"kernel_shape": [1, 1]})
            flat = self.node("Reshape", [y, self.const(np.array([nb, m * h * w], np.int64))], (nb, m * h * w))
            n = int(self.rng.choice([2, 5]))
            if self.rng.random() < 0.5 and table_has("Gemm"):
                self.node("Gemm", [flat, self.weights((m * h * w, n), m * h * w), self.const(np.zeros(n, np.float32))],
                          (nb, n), {"alpha": 1.0, "beta": 1.0})
            else:
                self.node("MatMul", [flat, self.weights((m * h * w, n), m * h * w)], (nb, n))
        else:
            a = self.pick(rank=(3,))
            if a is None:
                return
            b0, t, k = self.shape(a)
            c = int(self.rng.choice([2, 4]))
            y = self.node("MatMul", [a, self.weights((k, c), k)], (b0, t, c))
            tr = self.node("Transpose", [y], (b0, c, t), {"perm": [0, 2, 1]})
            x4 = self.node("Reshape", [tr, self.const(np.array([b0, c, t, 1], np.int64))], (b0, c, t, 1))
            kh = min(t, 2)
            self.node("Conv", [x4, self.weights((3, c, kh, 1), c * kh), self.const(np.zeros(3, np.float32))],
                      (b0, 3, t - kh + 1, 1), {"kernel_shape": [kh, 1]})

    def conv_pool_full(self):
        """Conv with dilations and asymmetric pads, ConvTranspose, pooling with ceil_mode,
        dilations, asymmetric pads; GlobalMaxPool, LpPool."""
        a = self.pick(rank=(4,))
        if a is None:
            return
        n, c, h, w = self.shape(a)
        kh, kw = min(h, int(self.rng.integers(1, 4))), min(w, int(self.rng.integers(1, 4)))
        dil = [int(self.rng.integers(1, 3)) if (k - 1) * 2 + 1 <= d else 1 for k, d in ((kh, h), (kw, w))]
        pads = [int(self.rng.integers(0, k)) for k in (kh, kw, kh, kw)]   # pads shorter than the kernel
        strides = [int(self.rng.integers(1, 3)) for _ in range(2)]
        r = self.rng.random()
        if r < 0.3:
            m = int(self.rng.choice([1, 2, 4]))
            attrs = {"kernel_shape": [kh, kw], "pads": pads, "strides": strides, "dilations": dil}
            ins = [a, self.weights((m, c, kh, kw), c * kh * kw)]
            if self.rng.random() < 0.7:
                ins.append(self.const(self.rng.standard_normal(m).astype(np.float32)))
            self.node("Conv", ins, self.infer("Conv", ins, attrs)[0], attrs)
        elif r < 0.45 and table_has("ConvTranspose"):
            m = int(self.rng.choice([1, 2, 3]))
            attrs = {"kernel_shape": [kh, kw], "strides": strides,
                     "pads": [min(p, k - 1) for p, k in zip(pads, (kh, kw, kh, kw))]}
            if self.rng.random() < 0.3:
                attrs["output_padding"] = [min(s - 1, 1) for s in strides]
            ins = [a, self.weights((c, m, kh, kw), c * kh * kw), self.const(self.rng.standard_normal(m).astype(np.float32))]
            self.node("ConvTranspose", ins, self.infer("ConvTranspose", ins, attrs)[0], attrs)
        elif r < 0.85:
            op = "MaxPool" if self.rng.random() < 0.55 else ("AveragePool" if self.rng.random() < 0.8 else "LpPool")
            attrs = {"kernel_shape": [kh, kw], "pads": pads, "strides": strides}
            if op != "LpPool":
                attrs["ceil_mode"] = int(self.rng.random() < 0.6)
            if op == "MaxPool" or (op == "AveragePool" and self.rng.random() < 0.3):
                attrs["dilations"] = dil
            if op == "AveragePool":
                attrs["count_include_pad"] = int(self.rng.integers(0, 2))
            if op == "LpPool":
                attrs["p"] = int(self.rng.choice([1, 2]))
            out = self.infer(op, [a], attrs)[0]
            if attrs.get("ceil_mode"):
                # onnxruntime (and fusion) drop a last window that would start inside the
                # end padding; onnx's shape inference (1.23) keeps it, so such a graph has
                # no shape both accept: draw another
                for d, (i, o) in enumerate(zip((h, w), out[2:])):
                    if (o - 1) * strides[d] >= i + pads[d]:
                        raise ValueError("ceil_mode window starts in the padding")
            self.node(op, [a], out, attrs)
        else:
            op = "GlobalMaxPool" if table_has("GlobalMaxPool") else "GlobalAveragePool"
            self.node(op, [a], (n, c, 1, 1))

    def more_ops(self):
        """InstanceNorm / GroupNorm, Clip with bound inputs, Resize, LpNormalization,
        MeanVarianceNormalization, ArgMax/Hardmax on graph inputs."""
        a = self.pick()
        sa = self.shape(a)
        r = self.rng.random()
        # Normalizing a group of one element is ill-conditioned: x - mean is 0 exactly
        # but onnxruntime's float rounding leaves ~1e-7, which 1/sqrt(eps) amplifies
        # past the tolerance (fusion and onnx.reference give the exact bias). Groups of
        # two or more elements are well-conditioned.
        spatial = int(np.prod(sa[2:]))
        if r < 0.15 and len(sa) >= 3 and spatial >= 2 and table_has("InstanceNormalization"):
            c = sa[1]
            ins = [a, self.const((1 + 0.1 * self.rng.standard_normal(c)).astype(np.float32)),
                   self.const(self.rng.standard_normal(c).astype(np.float32))]
            self.node("InstanceNormalization", ins, sa, {"epsilon": 1e-5})
        elif r < 0.25 and len(sa) >= 3 and sa[1] % 2 == 0 and spatial >= 2 and table_has("GroupNormalization"):
            c = sa[1]
            ins = [a, self.const((1 + 0.1 * self.rng.standard_normal(c)).astype(np.float32)),
                   self.const(self.rng.standard_normal(c).astype(np.float32))]
            self.node("GroupNormalization", ins, sa, {"epsilon": 1e-5, "num_groups": int(self.rng.choice([1, 2]))})
        elif r < 0.4 and table_has("Clip"):
            lo = self.const(np.float32(-abs(self.rng.standard_normal())))
            hi = self.const(np.float32(abs(self.rng.standard_normal())))
            which = int(self.rng.integers(0, 3))
            ins = [a, lo, hi] if which == 0 else ([a, lo] if which == 1 else [a, "", hi])
            self.node("Clip", ins, sa)
        elif r < 0.6 and len(sa) >= 3 and table_has("Resize"):
            mode = str(self.rng.choice(["nearest", "linear"]))
            # downscale only dims of 2 or more (a dim of 1 halved would be empty)
            scales = [1.0, 1.0] + [float(self.rng.choice([0.5, 1.0, 2.0, 3.0])) for _ in sa[2:]]
            scales = [sc if not (sc < 1 and d < 2) else 1.0 for sc, d in zip(scales, sa)]
            ctm = str(self.rng.choice(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]))
            attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
            if mode == "nearest":
                attrs["nearest_mode"] = str(self.rng.choice(["floor", "round_prefer_floor", "ceil"]))
            ins = [a, "", self.const(np.array(scales, np.float32))]
            self.node("Resize", ins, self.infer("Resize", ins, attrs)[0], attrs)
        elif r < 0.7 and table_has("LpNormalization"):
            self.node("LpNormalization", [a], sa, {"axis": int(self.rng.integers(-len(sa), len(sa))),
                                                   "p": int(self.rng.choice([1, 2]))})
        elif r < 0.8 and len(sa) >= 3 and sa[0] * spatial >= 2 and table_has("MeanVarianceNormalization"):
            self.node("MeanVarianceNormalization", [a], sa, {"axes": [0, 2] if len(sa) == 3 else [0, 2, 3]})
        elif a in self.raw and table_has("ArgMax"):
            # integer positions: only on graph inputs (both sides see the same numbers), and
            # made float again so they can flow on
            ax = int(self.rng.integers(len(sa)))
            op = "ArgMax" if self.rng.random() < 0.5 else "ArgMin"
            keep = int(self.rng.integers(0, 2))
            out = tuple(1 if i == ax else d for i, d in enumerate(sa)) if keep else tuple(d for i, d in enumerate(sa) if i != ax)
            if not out:
                return
            idx = self.node(op, [a], out, {"axis": ax, "keepdims": keep}, pool=False)
            self.s.dtypes[idx] = INT64
            self.node("Cast", [idx], out, {"to": onnx.TensorProto.FLOAT})

    def pattern(self):
        """Subgraphs the rewriter recognizes or simplifies: Gelu (erf), stable Softmax,
        LayerNorm spelled out, Transpose∘Transpose, Reshape∘Reshape, MatMul+Add (Gemm),
        Conv+BatchNorm, Conv*per-channel, A@B + A@C, Neg∘Neg, Abs∘Abs."""
        a = self.pick()
        sa = self.shape(a)
        f = lambda x: self.const(np.float32(x))   # noqa: E731
        r = int(self.rng.integers(10))
        if r == 0:
            h = self.node("Mul", [a, f(0.5)], sa, pool=False)
            d = self.node("Div", [a, f(1.4142135)], sa, pool=False)
            e = self.node("Add", [self.node("Erf", [d], sa, pool=False), f(1.0)], sa, pool=False)
            self.node("Mul", [h, e], sa)
        elif r == 1:
            ax = self.const(np.array([int(self.rng.integers(len(sa)))], np.int64))
            red = tuple(1 if i == int(self.s.consts[ax][0]) else dd for i, dd in enumerate(sa))
            mx = self.node("ReduceMax", [a, ax], red, {"keepdims": 1}, pool=False)
            e = self.node("Exp", [self.node("Sub", [a, mx], sa, pool=False)], sa, pool=False)
            sm = self.node("ReduceSum", [e, ax], red, {"keepdims": 1}, pool=False)
            self.node("Div", [e, sm], sa)
        elif r == 2:
            ax = self.const(np.array([len(sa) - 1], np.int64))
            red = sa[:-1] + (1,)
            mu = self.node("ReduceMean", [a, ax], red, {"keepdims": 1}, pool=False)
            dd = self.node("Sub", [a, mu], sa, pool=False)
            var = self.node("ReduceMean", [self.node("Pow", [dd, f(2.0)], sa, pool=False), ax], red,
                            {"keepdims": 1}, pool=False)
            sd = self.node("Sqrt", [self.node("Add", [var, f(1e-5)], red, pool=False)], red, pool=False)
            nrm = self.node("Div", [dd, sd], sa, pool=False)
            g = self.const((1 + 0.1 * self.rng.standard_normal(sa[-1])).astype(np.float32))
            b = self.const(self.rng.standard_normal(sa[-1]).astype(np.float32))
            self.node("Add", [self.node("Mul", [nrm, g], sa, pool=False), b], sa)
        elif r == 3 and len(sa) >= 2:
            p1 = [int(x) for x in self.rng.permutation(len(sa))]
            t1 = self.node("Transpose", [a], tuple(sa[p] for p in p1), {"perm": p1}, pool=False)
            inv = [int(x) for x in np.argsort(p1)] if self.rng.random() < 0.6 else \
                [int(x) for x in self.rng.permutation(len(sa))]
            self.node("Transpose", [t1], tuple(self.shape(t1)[p] for p in inv), {"perm": inv})
        elif r == 4:
            tot = int(np.prod(sa))
            r1 = self.node("Reshape", [a, self.const(np.array([tot], np.int64))], (tot,), pool=False)
            self.node("Reshape", [r1, self.const(np.array(sa, np.int64))], sa)
        elif r == 5:
            n = int(self.rng.choice([2, 3]))
            y = self.node("MatMul", [a, self.weights((sa[-1], n), sa[-1])], sa[:-1] + (n,), pool=False)
            self.node("Add", [y, self.const(self.rng.standard_normal(n).astype(np.float32))], sa[:-1] + (n,))
        elif r == 6 and len(sa) == 4:
            nb, c, hh, ww = sa
            m = int(self.rng.choice([2, 3]))
            y = self.node("Conv", [a, self.weights((m, c, 1, 1), c), self.const(np.zeros(m, np.float32))],
                          (nb, m, hh, ww), {"kernel_shape": [1, 1]}, pool=False)
            if self.rng.random() < 0.5:
                mk = lambda lo: self.const((lo + self.rng.random(m)).astype(np.float32))  # noqa: E731
                self.node("BatchNormalization", [y, mk(0.5), mk(-0.5), mk(-0.5), mk(0.5)], (nb, m, hh, ww),
                          {"epsilon": 1e-5})
            else:
                self.node("Mul", [y, self.const(self.rng.standard_normal((m, 1, 1)).astype(np.float32))], (nb, m, hh, ww))
        elif r == 7:
            n = int(self.rng.choice([2, 3]))
            y1 = self.node("MatMul", [a, self.weights((sa[-1], n), sa[-1])], sa[:-1] + (n,), pool=False)
            y2 = self.node("MatMul", [a, self.weights((sa[-1], n), sa[-1])], sa[:-1] + (n,), pool=False)
            self.node(str(self.rng.choice(["Add", "Sub"])), [y1, y2], sa[:-1] + (n,))
        elif r == 8:
            op = str(self.rng.choice(["Neg", "Abs", "Relu"]))
            self.node(op, [self.node(op, [a], sa, pool=False)], sa)
        else:
            # x*1 + 0 over a broadcast constant of 1s and 0s wider than x: the identity
            # must keep the broadcast shape
            wide = (2,) + sa if len(sa) < 4 else sa
            one = self.const(np.ones(wide, np.float32))
            self.node("Add", [self.node("Mul", [a, one], wide, pool=False), self.const(np.float32(0.0))], wide)



ACTIONS = [("unary", 4), ("binary", 4), ("matmul", 2), ("reduce", 1.5), ("softmax", 1), ("conv_or_pool", 1.5),
           ("reshape", 2), ("transpose", 2), ("slice_concat", 1.5), ("o2m", 1.5), ("norm", 1), ("where", 0.5),
           ("shuffle4", 1), ("pad_split", 1.5),
           ("gemm", 1), ("matmul_values", 1), ("anchor_pair", 1), ("conv_pool_full", 1.5), ("more_ops", 1.5),
           ("pattern", 2)]


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
