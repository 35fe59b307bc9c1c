"""Random models with control flow (Loop, If) for differential testing of
the C backend against onnxruntime.

`generate(seed)` draws one model: a Loop whose trip count is a constant,
decided by data (a NonZero count, a TopK then NonZero count, Shape
arithmetic on a count, a clipped Cast of a data value) or absent (a loop
ended by its condition only), optionally stopped early by its condition;
1..3 carried values (same shape each iteration, computed by a random
straight-line graph of `fusion.fuzz.generator` on the carried value; or
growing by 1..3 rows per iteration through Concat on axis 0, optionally also
read elsewhere in the body: its row count and sum, its last row, a column sum
as a scan output; starting with a run-time number of rows); a carried value
of a run-time size fixed across iterations; one carried value read by
another's update; scan outputs (also of a run-time size); the iteration
number (Cast, a Gather index); outer values read by the body; sizes read
from data inside the body (Clip -> Cast -> ConstantOfShape / Resize sizes /
Slice starts / Pad pads); an If inside the body (same-shaped branches, and
differently shaped ones reading the outer input two levels down); and an If
with differently shaped branches at top level.

Every feature is drawn from the seed's random stream whether it is used or
not, so `generate(seed, drop={...})` is the same model with those features
switched off: `reduce` uses that to find the fewest features that still fail.

Each model runs on 3 inputs: all negative (NonZero counts 0, clipped sizes
0: 0 iterations, 0 rows) and two random ones. Verdicts: pass, mismatch and
crash (bugs: a wrong value or shape, a traceback, a run-time failure of a
model onnxruntime runs), refusal (a one-line `UnsupportedOpError`, counted
per reason), skip (the oracle's outputs are not finite) and invalid (the
generator made a model onnx.checker or onnxruntime rejects: a generator bug).
"""
from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from fusion.fuzz.spec import OPSET

F, I64, B = T.FLOAT, T.INT64, T.BOOL

FEATURES = ("trip_data", "cond_stop", "same", "gen_body", "grow", "grow_read", "scan", "iter_cast",
            "iter_gather", "outer_read", "size_cos", "size_resize", "size_slice", "size_pad",
            "if_body", "if_top", "post", "cross", "if_body_shapes", "grow_last", "grow_scan", "init_dyn",
            "same_dyn", "scan_dyn", "grow_gather", "cond_grow")

# straight-line actions that keep a carried value's computation small and static
_BODY_ACTIONS = ("unary", "binary", "matmul", "reduce", "softmax", "reshape", "transpose", "o2m",
                 "norm", "where", "slice_concat", "pattern")


class _G:
    """Nodes and initializers of one graph, with names unique in the model."""

    counter = [0]

    def __init__(self, tag: str):
        self.tag = tag
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def name(self, what: str) -> str:
        self.counter[0] += 1
        return f"{self.tag}_{what}{self.counter[0]}"

    def const(self, vals, dtype=np.float32) -> str:
        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(vals, dtype), n))
        return n

    def op(self, op: str, ins: list[str], n_out: int = 1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(h.make_node(op, ins, outs, name=self.name("n_" + op), **attrs))
        return outs[0] if n_out == 1 else outs


@dataclass
class Case:
    seed: int
    model: onnx.ModelProto
    feeds: list[dict]
    features: list[str]


def _feeds(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed + 104729)
    neg = -(np.abs(rng.standard_normal(n)) + 0.1).astype(np.float32)     # 0 iterations / 0 rows
    return [{"x": neg}] + [{"x": (rng.standard_normal(n) * 2).astype(np.float32)} for _ in range(2)]


def _gen_update(g: _G, rng, seed: int, carried: str, shape: tuple) -> str:
    """A random straight-line graph on the carried value (generator.py's
    actions), brought back to the carried shape."""
    from fusion.fuzz.generator import _Gen
    gen = _Gen(seed, 6)
    inp = gen.add_input(shape)
    gen.raw.discard(inp)   # not exact after one iteration: no Floor/Round/Sign on it
    for _ in range(int(rng.integers(1, 5))):
        act = _BODY_ACTIONS[int(gen.rng.integers(len(_BODY_ACTIONS)))]
        try:
            getattr(gen, act)()
        except (ValueError, IndexError):
            continue
        if any(int(np.prod(gen.shape(v))) > 1024 for v in gen.pool[-1:]):
            break
    made = [v for v in gen.pool if v != inp]
    if not made:
        return carried
    last = made[-1]
    s = gen.s
    s.outputs = [last]
    s.prune()
    ren = {inp: carried}
    for k in s.consts:
        ren[k] = g.name("k")
    for nd in s.nodes:
        for o in nd.outputs:
            ren[o] = g.name("v")
    for k, v in s.consts.items():
        g.inits.append(numpy_helper.from_array(v, ren[k]))
    for nd in s.nodes:
        g.nodes.append(h.make_node(nd.op, [ren.get(i, i) if i else "" for i in nd.inputs],
                                   [ren[o] for o in nd.outputs], name=g.name("n_" + nd.op), **nd.attrs))
    out = ren[last]
    if tuple(s.shapes[last]) != tuple(shape):
        out = g.op("Add", [carried, g.op("ReduceMean", [out], keepdims=0)])
    return out


def generate(seed: int, drop=frozenset()) -> Case:
    _G.counter[0] = 0   # names depend on the seed alone
    rng = np.random.default_rng(seed)
    draw = lambda p: bool(rng.random() < p)   # noqa: E731
    feat = {}

    def on(name, p):
        v = draw(p)   # always drawn: the stream does not depend on `drop`
        feat[name] = v and name not in drop
        return feat[name]

    # features added later draw from a stream of their own: the models of the
    # earlier ones (and the seeds of reported failures) stay what they were
    rng2 = np.random.default_rng(seed + 1_000_003)

    def on2(name, p):   # also drawn once per carried value: the feature is on if any draw is
        v = bool(rng2.random() < p) and name not in drop
        feat[name] = feat.get(name, False) or v
        return v

    n = int(rng.choice([4, 6, 8, 12]))
    top = _G("t")
    outputs: list[str] = []

    # -- trip count -------------------------------------------------------
    trip_kind = str(rng.choice(["nonzero", "topk", "shape", "clipcast", "condonly"]))
    use_data_trip = on("trip_data", 0.7)
    cond_stop = on("cond_stop", 0.35)
    if not use_data_trip:
        trip_kind = "const"
    if trip_kind == "condonly" and not cond_stop:
        trip_kind = "const"
    const_m = int(rng.integers(0, 6))

    def count_of(v):
        nz = top.op("NonZero", [top.op("Greater", [v, top.const(0.0)])])
        return top.op("Gather", [top.op("Shape", [nz]), top.const(1, np.int64)], axis=0)

    trip = ""
    if trip_kind == "const":
        trip = top.const(const_m, np.int64)
    elif trip_kind == "nonzero":
        trip = count_of("x")
    elif trip_kind == "topk":
        k = int(rng.integers(1, n + 1))
        vals, _ = top.op("TopK", ["x", top.const([k], np.int64)], 2, axis=0)
        trip = count_of(vals)
    elif trip_kind == "shape":
        c = count_of("x")
        how = int(rng.integers(4))
        if how == 0:
            trip = top.op("Add", [c, top.const(1, np.int64)])
        elif how == 1:
            trip = top.op("Mul", [c, top.const(2, np.int64)])
        elif how == 2:
            trip = top.op("Max", [top.op("Sub", [c, top.const(2, np.int64)]), top.const(0, np.int64)])
        else:
            trip = top.op("Div", [c, top.const(2, np.int64)])
    elif trip_kind == "clipcast":
        mx = top.op("ReduceMax", ["x"], keepdims=0)
        cl = top.op("Clip", [top.op("Mul", [mx, top.const(2.0)]), top.const(0.0), top.const(5.0)])
        trip = top.op("Cast", [cl], to=I64)
    # condonly: no trip count, the condition alone ends the loop

    init_cond_kind = int(rng.integers(3))
    if trip_kind == "condonly" or (cond_stop and init_cond_kind == 0):
        cond0 = top.op("Greater", [top.op("ReduceSum", ["x"], keepdims=0), top.const(-1.0)])
    elif init_cond_kind == 1 or cond_stop:
        cond0 = top.const(True, np.bool_)
    else:
        cond0 = ""

    # -- body -------------------------------------------------------------
    bd = _G("b")
    it, cin = bd.name("iter"), bd.name("cond_in")
    body_ins = [h.make_tensor_value_info(it, I64, []), h.make_tensor_value_info(cin, B, [])]
    body_outs_c, body_outs_s = [], []   # carried outputs, scan outputs
    loop_ins = [trip, cond0]
    loop_outs_c, loop_outs_s = [], []

    iter_cast = on("iter_cast", 0.5)
    iter_gather = on("iter_gather", 0.5)
    outer_read = on("outer_read", 0.5)
    fi = bd.op("Cast", [it], to=F) if iter_cast else None
    xi = None
    if iter_gather:
        idx = bd.op("Mod", [it, bd.const(n, np.int64)])
        xi = bd.op("Gather", ["x", idx], axis=0)     # x is an outer value

    # a scalar term from a size read from data inside the body
    size_terms = []
    kmax = int(rng.integers(1, 5))
    src = xi if xi is not None else (bd.op("ReduceMax", ["x"], keepdims=0) if outer_read else None)
    want = {s: on(s, 0.25) for s in ("size_cos", "size_resize", "size_slice", "size_pad")}
    if src is not None and any(want.values()):
        kf = bd.op("Clip", [bd.op("Mul", [src, bd.const(2.0)]), bd.const(0.0), bd.const(float(kmax))])
        k = bd.op("Cast", [kf], to=I64)
        k1 = bd.op("Unsqueeze", [k, bd.const([0], np.int64)])
        if want["size_cos"]:
            ones = bd.op("ConstantOfShape", [k1], value=numpy_helper.from_array(np.array([1.5], np.float32)))
            size_terms.append(bd.op("ReduceSum", [ones], keepdims=0))
        if want["size_resize"]:
            img = bd.const(rng.standard_normal((1, 1, 2, 2)))
            k11 = bd.op("Add", [k1, bd.const([1], np.int64)])
            sizes = bd.op("Concat", [bd.const([1, 1], np.int64), k11, k11], axis=0)
            mode = str(rng.choice(["nearest", "linear"]))
            r = bd.op("Resize", [img, "", "", sizes], mode=mode)
            # ReduceMean over run-time dims is a documented refusal: mostly ReduceSum
            size_terms.append(bd.op("ReduceMean" if rng.random() < 0.15 else "ReduceSum", [r], keepdims=0))
        if want["size_slice"]:
            sl = bd.op("Slice", ["x", k1, bd.const([n], np.int64), bd.const([0], np.int64)])
            size_terms.append(bd.op("ReduceSum", [sl], keepdims=0))
        if want["size_pad"]:
            pads = bd.op("Concat", [k1, bd.op("Sub", [bd.const([kmax], np.int64), k1])], axis=0)
            pd = bd.op("Pad", [bd.const(rng.standard_normal(3)), pads], mode="constant")
            wt = bd.const(rng.standard_normal(3 + kmax))
            size_terms.append(bd.op("ReduceSum", [bd.op("Mul", [pd, wt])], keepdims=0))

    if on2("if_body_shapes", 0.25):
        # an If inside the body whose branches differ in shape (reading the outer x from two levels down)
        src2 = xi if xi is not None else bd.op("ReduceMax", ["x"], keepdims=0)
        cnd = bd.op("Greater", [src2, bd.const(0.0)])
        tb, eb = _G("bst"), _G("bse")
        a = int(rng2.integers(1, n + 1))
        to = tb.op("Slice", ["x", tb.const([0], np.int64), tb.const([a], np.int64)])
        eo = eb.op("Concat", ["x", eb.op("Abs", ["x"])], axis=0)
        then_g = h.make_graph(tb.nodes, "then", [], [h.make_tensor_value_info(to, F, None)], tb.inits)
        else_g = h.make_graph(eb.nodes, "else", [], [h.make_tensor_value_info(eo, F, None)], eb.inits)
        y = bd.op("If", [cnd], then_branch=then_g, else_branch=else_g)
        size_terms.append(bd.op("ReduceSum", [y], keepdims=0))

    def scalar_terms():
        ts = list(size_terms)
        if fi is not None:
            ts.append(bd.op("Mul", [fi, bd.const(0.25)]))
        if xi is not None:
            ts.append(xi)
        return ts

    first_same = first_grow = None
    n_carried = int(rng.integers(1, 4))
    kinds = [str(rng.choice(["same", "grow"])) for _ in range(n_carried)]
    use_same, use_grow = on("same", 0.8), on("grow", 0.6)
    kinds = [kd for kd in kinds if (kd == "same" and use_same) or (kd == "grow" and use_grow)] or ["same"]
    if trip_kind == "condonly":
        kinds = ["same" for _ in kinds]   # growth needs a trip count bound
    gen_body = on("gen_body", 0.7)
    grow_read = on("grow_read", 0.4)
    counter_name = None
    same_names = {ci: f"b_carried{ci}" for ci, kd in enumerate(kinds)}
    cross = feat["cross"] = on2("cross", 0.4) and "same" in kinds and "grow" in kinds
    for ci, kd in enumerate(kinds):
        cname = same_names[ci]
        if kd == "same":
            dyn = on2("same_dyn", 0.2)
            shape = tuple(int(d) for d in rng.choice([1, 2, 3, 4], size=int(rng.integers(0, 3))))
            init = top.const(rng.standard_normal(shape) * 0.5)
            body_ins.append(h.make_tensor_value_info(cname, F, list(shape)))
            g_up = _G("unused") if dyn else bd   # a same_dyn value is built below; the draws stay
            v = _gen_update(g_up, rng, seed * 31 + ci, cname, shape) if gen_body else cname
            for t in scalar_terms():
                v = g_up.op("Add", [v, t])
            if outer_read and xi is None and shape == ():
                v = g_up.op("Add", [v, g_up.op("ReduceMean", ["x"], keepdims=0)])
            v = g_up.op("Tanh", [g_up.op("Add", [v, g_up.const(rng.standard_normal(shape) * 0.3)])])
            if dyn:
                # same shape every iteration, but a run-time one: (count of x > 0) elements
                nn = top.op("Unsqueeze", [count_of("x"), top.const([0], np.int64)])
                init = top.op("Slice", [top.const(rng2.standard_normal(n)), top.const([0], np.int64), nn])
                # declared with a named dim or with no shape: exporters write both
                body_ins[-1] = (h.make_tensor_value_info(cname, F, [f"{cname}_len"]) if rng2.random() < 0.5
                                else h.make_tensor_value_info(cname, F, None))
                v = cname
                for t in scalar_terms():
                    v = bd.op("Add", [v, t])
                v = bd.op("Tanh", [bd.op("Add", [bd.op("Mul", [v, bd.const(0.9)]), bd.const(0.1)])])
            elif first_same is None:
                first_same = (cname, v, shape)
        else:
            w = int(rng.integers(1, 5))
            r0 = int(rng.integers(0, 3))
            rows = int(rng.integers(1, 4))
            init = top.const(rng.standard_normal((r0, w)))
            body_ins.append(h.make_tensor_value_info(cname, F, [r0, w]))
            base = bd.const(rng.standard_normal((rows, w)))
            row = base
            for t in scalar_terms():
                row = bd.op("Add", [row, t])
            if cross:   # a row reads another carried value (the previous iteration's)
                other = next(j for j, kj in enumerate(kinds) if kj == "same")
                row = bd.op("Add", [row, bd.op("Mul", [bd.op("ReduceSum", [same_names[other]], keepdims=0),
                                                     bd.const(0.2)])])
            if grow_read:   # the carried value is also read: its row count and its sum
                cnt = bd.op("Gather", [bd.op("Shape", [cname]), bd.const(0, np.int64)], axis=0)
                row = bd.op("Add", [row, bd.op("Mul", [bd.op("Cast", [cnt], to=F), bd.const(0.1)])])
                row = bd.op("Add", [row, bd.op("Mul", [bd.op("ReduceSum", [cname], keepdims=0),
                                                     bd.const(0.01)])])
            if on2("grow_last", 0.3):   # the last row so far (none in the first iteration when r0 = 0)
                last = bd.op("Slice", [cname, bd.const([-1], np.int64), bd.const([1 << 62], np.int64),
                                       bd.const([0], np.int64)])
                row = bd.op("Add", [row, bd.op("Mul", [bd.op("ReduceSum", [last], keepdims=0), bd.const(0.5)])])
            if on2("grow_scan", 0.3):   # a column sum of the value so far, one scan row per iteration
                body_outs_s.append(bd.op("ReduceSum", [cname, bd.const([0], np.int64)], keepdims=0))
                loop_outs_s.append(top.name("scan"))
            gathered = r0 >= 1 and on2("grow_gather", 0.3)
            if gathered:
                # row i of the value so far (it has r0 + rows*i > i rows): Gather on a run-time axis
                got_row = bd.op("Gather", [cname, it], axis=0)
                row = bd.op("Add", [row, bd.op("Mul", [got_row, bd.const(0.3)])])
            v = bd.op("Concat", [cname, row], axis=0)
            if first_grow is None:
                first_grow = v
            if on2("init_dyn", 0.3) and not gathered:   # (0 rows at the start: nothing to gather)
                # starts with a run-time number of rows: the first (count of x > 0) rows of a constant
                cnt = top.op("Unsqueeze", [count_of("x"), top.const([0], np.int64)])
                init = top.op("Slice", [top.const(rng2.standard_normal((n, w))), top.const([0], np.int64), cnt,
                                        top.const([0], np.int64)])
                body_ins[-1] = h.make_tensor_value_info(cname, F, [f"{cname}_rows", w])
        loop_ins.append(init)
        body_outs_c.append(v)
        loop_outs_c.append(top.name("final"))

    # the first same-shape value through an If in the body
    if on("if_body", 0.35) and first_same is not None:
        cname, v, shape = first_same
        c = bd.op("Greater", [bd.op("ReduceSum", [cname], keepdims=0), bd.const(0.0)])
        tb, eb = _G("bt"), _G("be")
        to = tb.op("Mul", [v, tb.const(0.5)])
        eo = eb.op("Sub", [v, eb.const(rng.standard_normal(shape) * 0.1)])
        then_g = h.make_graph(tb.nodes, "then", [], [h.make_tensor_value_info(to, F, None)], tb.inits)
        else_g = h.make_graph(eb.nodes, "else", [], [h.make_tensor_value_info(eo, F, None)], eb.inits)
        y = bd.op("If", [c], then_branch=then_g, else_branch=else_g)
        body_outs_c[body_outs_c.index(v)] = y
        first_same = (cname, y, shape)

    if on("scan", 0.5):
        for _ in range(int(rng.integers(1, 3))):
            what = int(rng.integers(3))
            if what == 0 and first_same is not None:
                s = bd.op("Identity", [first_same[1]])   # a body output may not be listed twice
            elif what == 1 and fi is not None:
                s = bd.op("Mul", [fi, bd.const(rng.standard_normal(2))])
            else:
                s = bd.op("Add", [bd.const(rng.standard_normal(3)),
                                  bd.op("Cast", [it], to=F) if fi is None else fi])
            body_outs_s.append(s)
            loop_outs_s.append(top.name("scan"))
    if on2("scan_dyn", 0.25):
        # a scan output of a run-time size (fixed across iterations) made from an outer value
        nn = top.op("Unsqueeze", [count_of("x"), top.const([0], np.int64)])
        head = top.op("Slice", ["x", top.const([0], np.int64), nn])
        f_i = bd.op("Cast", [it], to=F)
        body_outs_s.append(bd.op("Add", [bd.op("Mul", [head, bd.const(0.5)]), f_i]))
        loop_outs_s.append(top.name("scan"))

    if cond_stop:
        # stop once a counter (or a same-shape carried value's sum) reaches a limit read from data
        lim = bd.op("Clip", [bd.op("Mul", [bd.op("ReduceMax", ["x"], keepdims=0), bd.const(2.0)]),
                             bd.const(-1.0), bd.const(6.0)])
        if trip_kind == "condonly" or first_same is None or rng.random() < 0.5:
            counter_name = bd.name("count")
            body_ins.append(h.make_tensor_value_info(counter_name, F, []))
            nxt = bd.op("Add", [counter_name, bd.const(1.0)])
            loop_ins.append(top.const(0.0))
            body_outs_c.append(nxt)
            loop_outs_c.append(top.name("final_count"))
            cout = bd.op("Less", [nxt, lim])
        else:
            cout = bd.op("Less", [bd.op("ReduceSum", [first_same[1]], keepdims=0),
                                  bd.op("Mul", [lim, bd.const(0.2)])])
        if first_grow is not None and on2("cond_grow", 0.4):
            # and also once the grown value's sum passes a limit
            big = bd.op("Less", [bd.op("ReduceSum", [first_grow], keepdims=0), bd.op("Mul", [lim, bd.const(3.0)])])
            cout = bd.op("And", [cout, big])
    else:
        cout = bd.op("Identity", [cin])

    body_out_vis = ([h.make_tensor_value_info(cout, B, [])]
                    + [h.make_tensor_value_info(v, F, None) for v in body_outs_c + body_outs_s])
    body = h.make_graph(bd.nodes, "body", body_ins, body_out_vis, bd.inits)
    top.nodes.append(h.make_node("Loop", loop_ins, loop_outs_c + loop_outs_s, name=top.name("n_Loop"), body=body))
    outputs += loop_outs_c + loop_outs_s

    if on("post", 0.4):   # consumers of the loop's (possibly run-time sized) results
        for o in loop_outs_c + loop_outs_s:
            outputs.append(top.op("ReduceSum", [top.op("Mul", [o, top.const(1.5)])], keepdims=0))

    if on("if_top", 0.4):
        # branches of different shapes: the If's output has a run-time size
        c = top.op("Greater", [top.op("ReduceSum", ["x"], keepdims=0), top.const(0.0)])
        tb, eb = _G("tt"), _G("te")
        a = int(rng.integers(1, n + 1))
        to = tb.op("Mul", [tb.op("Slice", ["x", tb.const([0], np.int64), tb.const([a], np.int64)]),
                           tb.const(2.0)])
        eo = eb.op("Concat", ["x", eb.op("Neg", ["x"])], axis=0)
        then_g = h.make_graph(tb.nodes, "then", [], [h.make_tensor_value_info(to, F, None)], tb.inits)
        else_g = h.make_graph(eb.nodes, "else", [], [h.make_tensor_value_info(eo, F, None)], eb.inits)
        y = top.op("If", [c], then_branch=then_g, else_branch=else_g)
        outputs.append(y)
        if rng.random() < 0.5:
            outputs.append(top.op("ReduceSum", [top.op("Exp", [y])], keepdims=0))

    g = h.make_graph(top.nodes, f"control{seed}", [h.make_tensor_value_info("x", F, [n])],
                     [h.make_tensor_value_info(o, F, None) for o in outputs], top.inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)], producer_name="fusion.fuzz.control")
    m.ir_version = 10
    _declare_output_ranks(m, _feeds(seed, n)[1])
    feats = [f"trip:{trip_kind}"] + [k for k, v in feat.items() if v]
    return Case(seed, m, _feeds(seed, n), feats)


def _declare_output_ranks(m: onnx.ModelProto, feeds: dict) -> None:
    """onnx.checker wants a shape on every graph output and ONNX shape
    inference cannot follow a Loop's growing values: declare each output's rank
    (onnxruntime's result) with symbolic dims."""
    from fusion.oracle import run_onnxruntime
    try:
        got = run_onnxruntime(m, feeds)
    except Exception:   # noqa: BLE001  (check_model reports the invalid model)
        return
    for o in m.graph.output:
        shp = o.type.tensor_type.shape
        shp.SetInParent()
        shp.dim.extend([onnx.TensorShapeProto.Dimension(dim_param=f"{o.name}_d{k}")
                        for k in range(got[o.name].ndim)])


# ---------------------------------------------------------------------------
# checking

CFLAGS = ["-O1"]   # as runner.py: tiny models build faster, the same code is checked


@dataclass
class Verdict:
    seed: int
    kind: str            # pass | mismatch | crash | refusal | skip | invalid
    message: str = ""
    features: list[str] = field(default_factory=list)

    @property
    def bug(self) -> bool:
        return self.kind in ("mismatch", "crash")


def reason(message: str) -> str:
    """A refusal's message without the names and numbers of one model."""
    r = re.sub(r"\([^()]*\[[^()]*\)", "(…)", message)   # a value with its shape
    r = re.sub(r"'[^']*'", "'…'", r)
    r = re.sub(r"\b\d+\b", "N", r)
    return r[:160]


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    return next((f"{f.filename.split('fusion/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(tb)
                 if "/fusion/" in f.filename), "?")


def check_model(model, feeds_list, seed: int = 0, features=(), cflags=None) -> Verdict:
    import fusion
    from fusion.errors import FusionError, UnsupportedOpError
    from fusion.oracle import compare, run_onnxruntime
    feats = list(features)
    try:
        onnx.checker.check_model(model)
        expected = [run_onnxruntime(model, f) for f in feeds_list]
    except Exception as e:   # noqa: BLE001
        return Verdict(seed, "invalid", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", feats)
    if not all(np.all(np.isfinite(v)) for exp in expected for v in exp.values() if v.dtype.kind == "f"):
        return Verdict(seed, "skip", "non-finite reference", feats)
    try:
        mod = fusion.compile(fusion.load(model), threads=1, profile_db=False, cflags=cflags or CFLAGS)
    except UnsupportedOpError as e:
        msg = str(e)
        if "\n" in msg.strip():
            return Verdict(seed, "crash", f"refusal of several lines: {msg[:300]}", feats)
        return Verdict(seed, "refusal", msg, feats)
    except FusionError as e:
        # a valid model: any other FusionError is a refusal too if it reads as one
        msg = str(e)
        if "\n" in msg.strip():
            return Verdict(seed, "crash", f"{type(e).__name__} of several lines: {msg[:300]}", feats)
        return Verdict(seed, "refusal", f"{type(e).__name__}: {msg}", feats)
    except Exception as e:   # noqa: BLE001
        return Verdict(seed, "crash", f"compile: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                                      f"(at {_where(e)})", feats)
    try:
        for k, (f, exp) in enumerate(zip(feeds_list, expected)):
            try:
                got = mod.run(f)
            except Exception as e:   # noqa: BLE001  (onnxruntime ran these inputs: a failure is a bug)
                return Verdict(seed, "crash", f"run on input {k}: {type(e).__name__}: "
                                              f"{str(e).splitlines()[0] if str(e) else ''} (at {_where(e)})", feats)
            got = dict(got)
            for name, e in exp.items():
                a = got.get(name)
                # a Loop that ran 0 times: ONNX does not say what a scan output's other dims
                # are (onnxruntime writes 0 where the body's shape is not static); no elements either way
                if (a is not None and e.size == 0 and np.asarray(a).size == 0 and e.ndim == np.ndim(a) >= 2
                        and e.shape[0] == np.shape(a)[0] == 0):
                    got[name] = np.empty(e.shape, e.dtype)
            rep = compare(got, exp)
            if not rep.ok:
                bad = [d for d in rep.outputs if not d.ok]
                return Verdict(seed, "mismatch", f"input {k}: " + "; ".join(f"{d.name}: {d.message}" for d in bad),
                               feats)
    finally:
        close = getattr(mod, "close", None)
        if close:
            close()
    return Verdict(seed, "pass", "", feats)


def check_seed(seed: int, drop=frozenset(), cflags=None) -> Verdict:
    c = generate(seed, drop)
    return check_model(c.model, c.feeds, seed, c.features, cflags)


def _same_failure(a: Verdict, b: Verdict) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "crash":
        return a.message.split(":")[0:2] == b.message.split(":")[0:2]
    return True


def reduce(seed: int, first: Verdict | None = None, log=None, drop=frozenset()) -> tuple[frozenset, Verdict]:
    """Switch features off one at a time while the model still fails the same way."""
    drop = frozenset(drop)
    first = first or check_seed(seed, drop)
    cur = first
    for f in FEATURES:
        if f not in cur.features:
            continue
        v = check_seed(seed, drop | {f})
        if _same_failure(first, v):
            drop, cur = drop | {f}, v
            if log:
                log(f"  seed {seed}: still fails without {f}")
    return drop, cur


@dataclass
class Campaign:
    models: int = 0
    counts: dict = field(default_factory=dict)
    refusals: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    features: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"models": self.models, "counts": self.counts, "refusals": self.refusals,
                "failures": self.failures, "features": self.features, "seconds": round(self.seconds, 1)}


def run(n: int, seed: int = 0, save_dir: str | None = None, do_reduce: bool = True, log=None,
        drop=frozenset()) -> Campaign:
    """Models seed..seed+n-1; `drop`: features to leave out (ones that hit a known bug)."""
    import os
    res = Campaign()
    t0 = time.time()
    for s in range(seed, seed + n):
        case = generate(s, drop)
        v = check_model(case.model, case.feeds, s, case.features)
        res.models += 1
        res.counts[v.kind] = res.counts.get(v.kind, 0) + 1
        for f in v.features:
            res.features[f] = res.features.get(f, 0) + 1
        if v.kind == "refusal":
            r = reason(v.message)
            res.refusals[r] = res.refusals.get(r, 0) + 1
        if v.bug or v.kind == "invalid":
            fail = {"seed": s, "kind": v.kind, "message": v.message, "features": v.features}
            if v.bug and do_reduce:
                gone, cur = reduce(s, v, log, drop)
                fail["dropped"] = sorted(gone)
                fail["features_left"] = cur.features
                case = generate(s, gone)
            if save_dir:
                os.makedirs(save_dir, exist_ok=True)
                fail["file"] = os.path.join(save_dir, f"control_{s}.onnx")
                onnx.save(case.model, fail["file"])
            res.failures.append(fail)
        if log:
            log(f"seed {s}: {v.kind}" + (f": {v.message[:200]}" if v.kind != "pass" else ""))
    res.seconds = time.time() - t0
    return res
