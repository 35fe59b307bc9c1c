"""Value-range analysis (fusion.ir.intervals): hand-built graphs with known
ranges, and run-time values from the interpreter that must land inside."""
import numpy as np
import pytest
import sympy
from onnx import TensorProto, helper

import fusion
from fusion.ir.builder import GraphBuilder
from fusion.ir.interpreter import run
from fusion.ir.intervals import value_ranges

INF = float("inf")


def _r(ranges, v):
    x = ranges.of(v)
    return None if x is None else (x[0].tolist(), x[1].tolist())


def _onnx(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    return fusion.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


def _f(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _c(name, a):
    return helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                              np.asarray(a).shape, np.asarray(a).reshape(-1).tolist())


def test_clip_mul_add_floor_cast_chain():
    b = GraphBuilder()
    x = b.input("x", "float32", [4])
    y = b.clip(x, np.float32(0), np.float32(1))
    z = b.floor(b.add(b.mul(y, np.float32(100)), np.float32(0.5)))
    c = b.cast(z, to=TensorProto.INT64)
    b.output(c, names=["c"])
    g = b.build()
    r = value_ranges(g)
    assert r.of(x) is None                         # a float input: nothing known
    assert _r(r, c) == ([0] * 4, [100] * 4)        # float widening never crosses an integer
    lo, hi = r.of(z.producer.inputs[0])            # the Add: widened outward, but only a little
    assert np.all(lo < 0.5) and np.all(lo > 0.49) and np.all(hi > 100.5) and np.all(hi < 100.51)


def test_cast_of_a_possibly_nan_float_is_unknown():
    b = GraphBuilder()
    x = b.input("x", "float32", [2])
    b.output(b.cast(b.floor(x), to=TensorProto.INT32), names=["c"])
    g = b.build()
    r = value_ranges(g)
    assert _r(r, g.outputs[0]) == ([-2 ** 31] * 2, [2 ** 31 - 1] * 2)   # int32: only its dtype's range
    assert r.may_be_nan(x)


def test_dtype_implied_input_ranges_and_int_arithmetic():
    b = GraphBuilder()
    u = b.input("u", "uint8", [3])
    k = b.input("k", "bool", [])
    w = b.cast(u, to=TensorProto.INT64)
    d = b.div(b.sub(w, np.int64(5)), np.int64(2))          # int Div: truncates (or floors)
    e = b.mul(b.cast(k, to=TensorProto.INT64), np.int64(-3))
    b.output(d, e, names=["d", "e"])
    g = b.build()
    r = value_ranges(g)
    assert _r(r, u) == ([0] * 3, [255] * 3)
    assert _r(r, d) == ([-3] * 3, [125] * 3)
    assert _r(r, e) == (-3, 0)


def test_uint8_sub_may_wrap():
    b = GraphBuilder()
    u = b.input("u", "uint8", [2])
    b.output(b.sub(u, np.uint8(3)), names=["s"])
    g = b.build()
    assert _r(value_ranges(g), g.outputs[0]) == ([0, 0], [255, 255])


def test_division_by_a_range_containing_zero_is_unknown():
    b = GraphBuilder()
    u = b.input("u", "uint8", [2])
    f = b.cast(u, to=TensorProto.FLOAT)
    q = b.div(np.array([1.0, 2.0], np.float32), f)
    i = b.div(np.array([7, -7], np.int64), b.cast(u, to=TensorProto.INT64))
    b.output(q, i, names=["q", "i"])
    g = b.build()
    r = value_ranges(g)
    assert r.of(q) is None and r.may_be_nan(q)
    # an integer divisor in [0, 255] is in [1, 255] whenever the division runs
    assert _r(r, i) == ([0, -7], [7, 0])


def test_gather_of_constant_indices_is_elementwise():
    b = GraphBuilder()
    u = b.input("u", "uint8", [4])
    x = b.input("x", "float32", [3, "n"])
    lim = b.min(b.cast(u, to=TensorProto.INT64), np.array([10, 20, 30, 40], np.int64))
    ga = b.gather(lim, np.array([3, 0, -2], np.int64), axis=0)
    s = b.shape(x)
    s0 = b.gather(s, np.array(0, np.int64), axis=0)
    s1 = b.gather(s, np.array(1, np.int64), axis=0)
    b.output(ga, s0, s1, names=["ga", "s0", "s1"])
    g = b.build()
    r = value_ranges(g)
    assert _r(r, ga) == ([0, 0, 0], [40, 10, 30])
    assert _r(r, s0) == (3, 3)
    assert _r(r, s1) == (0, INF)                 # a run-time dim, default [0, inf)
    n = x.shape[1]
    r2 = value_ranges(g, dim_range=lambda d: (1, 64) if d == n else None)
    assert _r(r2, s1) == (1, 64)


def test_dim_expressions_are_bounded_structurally():
    b = GraphBuilder()
    x = b.input("x", "float32", ["n", 4])
    b.output(b.shape(x), names=["s"])
    g = b.build()
    n = sympy.Symbol("n", integer=True, nonnegative=True)
    x.shape = (sympy.Min(20, n), 4)                 # as shape inference writes a clamped count
    r = value_ranges(g)
    assert _r(r, g.outputs[0]) == ([0, 4], [20, 4])
    r = value_ranges(g, dim_range=lambda d: (3, 7) if d == n else None)
    assert _r(r, g.outputs[0]) == ([3, 4], [7, 4])


def test_where_is_the_hull_of_both_branches_unless_the_condition_is_known():
    b = GraphBuilder()
    u = b.input("u", "uint8", [3])
    f = b.cast(u, to=TensorProto.FLOAT)
    c = b.less(f, np.float32(100))
    w = b.where(c, np.array([1, 2, 3], np.float32), b.neg(f))
    always = b.where(b.less_or_equal(f, np.float32(255)), np.array([7], np.float32), f)
    b.output(w, always, names=["w", "a"])
    g = b.build()
    r = value_ranges(g)
    assert _r(r, c) == ([0] * 3, [1] * 3)
    assert _r(r, w) == ([-255, -255, -255], [1, 2, 3])
    assert _r(r, always) == ([7] * 3, [7] * 3)


def test_reduce_max_elementwise_and_empty():
    b = GraphBuilder()
    u = b.input("u", "uint8", [])
    x = b.input("x", "int32", ["n"])
    w = b.sub(b.cast(u, to=TensorProto.INT64), np.int64(100))
    m = b.reduce_max(b.concat(b.unsqueeze(w, [0]), np.array([1], np.int64), axis=0), keepdims=0)
    e = b.reduce_min(b.clip(x, np.int32(0), np.int32(9)), keepdims=0)   # n may be 0: the int32 max
    b.output(m, e, names=["m", "e"])
    g = b.build()
    r = value_ranges(g)
    assert _r(r, m) == (1, 155)
    assert _r(r, e) == (0, 2 ** 31 - 1)
    r = value_ranges(g, dim_range=lambda d: (1, 8))
    assert _r(r, e) == (0, 9)


def _loop_model(trips):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["i", "two"], ["i2"]),
         helper.make_node("Add", ["i2", "base"], ["v"]),                  # base: an outer value
         helper.make_node("Min", ["acc_in", "v"], ["acc_out"]),         # stays inside [0, 255]
         helper.make_node("Add", ["grow_in", "one"], ["grow_out"]),     # leaves its initial range
         helper.make_node("Unsqueeze", ["v", "ax0"], ["scan"])],
        "body",
        [_f("i", [], TensorProto.INT64), _f("cond_in", [], TensorProto.BOOL),
         _f("acc_in", [], TensorProto.INT64), _f("grow_in", [], TensorProto.INT64)],
        [_f("cond_out", [], TensorProto.BOOL), _f("acc_out", [], TensorProto.INT64),
         _f("grow_out", [], TensorProto.INT64), _f("scan", [1], TensorProto.INT64)],
        initializer=[_c("two", np.array(2, np.int64)), _c("one", np.array(1, np.int64)),
                     _c("ax0", np.array([0], np.int64))])
    nodes = [helper.make_node("Cast", ["u"], ["base"], to=TensorProto.INT64),
             helper.make_node("Loop", ["M" if trips else "", "c", "base", "g0"], ["acc", "grow", "scans"], body=body)]
    inits = [_c("c", np.array(True)), _c("g0", np.array(0, np.int64))]
    if trips:
        inits.append(_c("M", np.array(trips, np.int64)))
    return _onnx(nodes, [_f("u", [], TensorProto.UINT8)],
                 [_f("acc", [], TensorProto.INT64), _f("grow", [], TensorProto.INT64),
                  _f("scans", ["k", 1], TensorProto.INT64)], inits)


def test_loop_body_reads_the_iteration_number():
    g = _loop_model(5)
    r = value_ranges(g)
    body = next(n for n in g.nodes if n.op == "Loop").attrs["body"]
    vals = {v.name: v for n in body.nodes for v in n.outputs}
    assert _r(r, body.inputs[0]) == (0, 4)
    assert _r(r, vals["i2"]) == (0, 8)
    assert _r(r, vals["v"]) == (0, 263)
    acc, grow, scans = g.outputs
    assert _r(r, body.inputs[2]) == (0, 255)         # carried, stays inside its initial range
    assert _r(r, acc) == (0, 255)
    assert r.of(body.inputs[3]) is None              # leaves it: unknown on the second pass
    assert _r(r, vals["grow_out"]) is None and r.of(grow) is None
    assert _r(r, scans) == (0, 263)


def test_loop_without_trip_count():
    g = _loop_model(None)
    r = value_ranges(g)
    body = next(n for n in g.nodes if n.op == "Loop").attrs["body"]
    assert _r(r, body.inputs[0]) == (0, INF)


def test_if_is_the_union_of_its_branches():
    def branch(name, val):
        return helper.make_graph([helper.make_node("Add", ["x64", val], [name + "_o"])], name, [],
                                 [_f(name + "_o", [], TensorProto.INT64)],
                                 initializer=[_c(val, np.array(10 if name == "t" else -5, np.int64))])
    nodes = [helper.make_node("Cast", ["u"], ["x64"], to=TensorProto.INT64),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("t", "tv"), else_branch=branch("e", "ev"))]
    g = _onnx(nodes, [_f("u", [], TensorProto.UINT8), _f("c", [], TensorProto.BOOL)],
              [_f("y", [], TensorProto.INT64)])
    r = value_ranges(g)
    assert _r(r, g.outputs[0]) == (-5, 265)
    t = next(n for n in g.nodes if n.op == "If").attrs["then_branch"]
    assert _r(r, t.outputs[0]) == (10, 265)


# ------------------------------------------------------------------ property

def _random_graph(seed):
    """A chain of random ops over dtype-bounded inputs (so ranges are finite)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    u = b.input("u", "uint8", [2, 3])
    s = b.input("s", "int8", [2, 3])
    pool = [b.cast(u, to=TensorProto.FLOAT), b.div(b.cast(s, to=TensorProto.FLOAT), np.float32(7))]
    ints = [b.cast(u, to=TensorProto.INT64), b.cast(s, to=TensorProto.INT64)]
    for _ in range(40):
        op = rng.choice(["add", "sub", "mul", "clip", "relu", "floor", "abs", "neg", "max", "min",
                         "sigmoid", "exp", "sqrt", "where", "cast", "reduce_max", "iadd", "idiv",
                         "concat", "gather", "round", "div", "mean"])
        x = pool[rng.integers(len(pool))]
        y = pool[rng.integers(len(pool))]
        k = np.float32(rng.uniform(-3, 3))
        if op in ("add", "sub", "mul", "max", "min", "mean"):
            v = getattr(b, op)(x, y)
        elif op == "div":
            v = b.div(x, b.add(b.abs(y), np.float32(0.5)))
        elif op == "clip":
            v = b.clip(x, np.float32(-abs(k)), np.float32(abs(k) + 1))
        elif op in ("relu", "floor", "abs", "neg", "sigmoid", "round"):
            v = getattr(b, op)(x)
        elif op == "exp":
            v = b.exp(b.clip(x, np.float32(-5), np.float32(5)))
        elif op == "sqrt":
            v = b.sqrt(b.abs(x))
        elif op == "where":
            v = b.where(b.greater(x, k), x, b.mul(y, k))
        elif op == "cast":
            ints.append(b.cast(x, to=TensorProto.INT64))
            continue
        elif op == "reduce_max":
            v = b.max(y, b.reduce_max(x, axes=[1], keepdims=1))
        elif op in ("iadd", "idiv"):
            i = ints[rng.integers(len(ints))]
            j = ints[rng.integers(len(ints))]
            w = b.add(i, j) if op == "iadd" else b.div(i, b.add(b.abs(j), np.int64(1)))
            ints.append(w)
            continue
        elif op == "concat":
            v = b.gather(b.concat(x, y, axis=0), np.array([3, 0], np.int64), axis=0)
        else:
            v = b.gather(x, np.array([-1, 0], np.int64), axis=0)
        pool.append(v)
    b.output(*(pool[2:] + ints[2:]))
    return b.build()


def _check_inside(ranges, env, values, where):
    checked = 0
    for v in values:
        a = env.get(id(v))
        rv = ranges.of(v)
        if a is None or rv is None or np.asarray(a).dtype == object:
            continue
        a = np.asarray(a, dtype=np.float64)
        if a.size == 0:
            continue
        lo, hi = rv
        ok = np.isnan(a) | ((a >= lo) & (a <= hi))
        assert np.all(ok), f"{where}: value '{v.name}' = {a.reshape(-1)[:8]} outside [{lo}, {hi}]"
        checked += 1
    return checked


@pytest.mark.parametrize("gseed", [0, 1, 2])
def test_random_graph_values_land_inside(gseed):
    g = _random_graph(gseed)
    r = value_ranges(g)
    values = [o for n in g.nodes for o in n.outputs]
    rng = np.random.default_rng(100 + gseed)
    checked = 0
    for _ in range(30):
        feeds = {"u": rng.integers(0, 256, (2, 3), dtype=np.uint8),
                 "s": rng.integers(-128, 128, (2, 3), dtype=np.int8)}
        if rng.random() < 0.3:   # the extremes of the dtype ranges
            feeds = {"u": rng.choice(np.array([0, 255], np.uint8), (2, 3)),
                     "s": rng.choice(np.array([-128, 127], np.int8), (2, 3))}
        env = {}
        run(g, feeds, env=env, keep=True)
        checked += _check_inside(r, env, values, f"graph seed {gseed}")
    assert checked > 30 * 20          # most values are bounded: the test checks something


@pytest.fixture(scope="module")
def maskrcnn():
    return fusion.load("zoo:mask-rcnn:small")


def _maskrcnn_check(g, n_inputs):
    r = value_ranges(g)
    loop = next(n for n in g.nodes if n.op == "Loop")
    body = loop.attrs["body"]
    main_values = [o for n in g.nodes for o in n.outputs]
    body_values = list(body.inputs) + [o for n in body.nodes for o in n.outputs]
    rng = np.random.default_rng(7)
    n_main = n_body = iters = 0
    for _ in range(n_inputs):
        img = rng.random((3, 128, 160), dtype=np.float32) * rng.uniform(0.5, 3)
        env = {}
        run(g, {"image": img}, env=env, keep=True)
        n_main += _check_inside(r, env, main_values, "main graph")
        # the interpreter does not keep body values: run the body once per iteration
        trips = int(env[id(loop.inputs[0])])
        carried = [env[id(v)] if v.const is None else v.const for v in loop.inputs[2:]]
        for i in range(trips):
            benv = dict(env)
            feeds = dict(zip([v.name for v in body.inputs], [np.array(i, np.int64), np.array(True)] + carried))
            out = run(body, feeds, env=benv, keep=True)
            n_body += _check_inside(r, benv, body_values, f"loop body, iteration {i}")
            carried = [out[v.name] for v in body.outputs[1:1 + len(carried)]]
            iters += 1
    assert n_main > 100 and (iters == 0 or n_body > 50)
    return iters


def test_maskrcnn_small_values_land_inside_quick(maskrcnn):
    _maskrcnn_check(maskrcnn, 1)


@pytest.mark.slow
def test_maskrcnn_small_values_land_inside(maskrcnn):
    assert _maskrcnn_check(maskrcnn, 30) > 0


def test_maskrcnn_body_int_ranges(maskrcnn):
    g = maskrcnn
    r = value_ranges(g)
    body = next(n for n in g.nodes if n.op == "Loop").attrs["body"]
    vals = {o.name: o for n in body.nodes for o in n.outputs}
    for name in ("w.3", "h.3"):
        lo, hi = r.of(vals[name])
        assert lo >= 1 and hi < 1000, name
    for name in ("x_0", "y_0"):
        lo, hi = r.of(vals[name])
        assert lo == 0 and hi < 1000, name
    lo, hi = r.of(vals["3013"])                  # the Resize sizes: [1, 1, h, w]
    assert lo.tolist()[:2] == [1, 1] and hi.tolist()[:2] == [1, 1] and np.all(lo[2:] >= 1)
    assert np.all(hi < 1000)


def test_run_time_dims_get_ranges_from_the_data_that_sets_them():
    b = GraphBuilder()
    u = b.input("u", "uint8", [2])
    x = b.input("x", "float32", [1, 1, 4, 4])
    hw = b.add(b.cast(u, to=TensorProto.INT64), np.int64(1))           # [1, 256]
    z = b.constant_of_shape(hw, value=np.array([0.0], np.float32))
    sizes = b.concat(np.array([1, 1], np.int64), hw, axis=0)
    y = b.resize(x, None, None, sizes, mode="linear")
    h = b.gather(b.shape(y), np.array(2, np.int64), axis=0)
    nz = b.non_zero(z)
    b.output(z, y, h, nz, names=["z", "y", "h", "nz"])
    g = b.build()
    r = value_ranges(g)
    d0, d1 = z.shape
    assert r.dim(d0) == (1, 256) and r.dim(d1) == (1, 256)
    assert r.dim(y.shape[2]) == (1, 256)
    assert _r(r, h) == (1, 256)                        # a Shape read of a derived dim
    assert r.dim(nz.shape[1]) == (0, 256 * 256)
    r = value_ranges(g, dim_range=lambda d: (2, 300) if d == d0 else None)
    assert r.dim(d0) == (2, 256)                       # the caller's range narrows the derived one


def test_maskrcnn_trip_count_is_bounded(maskrcnn):
    g = maskrcnn
    r = value_ranges(g)
    loop = next(n for n in g.nodes if n.op == "Loop")
    assert _r(r, loop.attrs["body"].inputs[0]) == (0, 19)     # at most 20 detections


def test_clip_and_max_with_finite_bounds_remove_nan():
    b = GraphBuilder()
    x = b.input("x", "float32", [2])
    c = b.cast(b.clip(x, np.float32(0), np.float32(10)), to=TensorProto.INT32)
    m = b.max(x, np.array([0], np.float32))
    p = b.add(x, np.array([1], np.float32))
    b.output(c, m, p, names=["c", "m", "p"])
    g = b.build()
    r = value_ranges(g)
    assert _r(r, c) == ([0, 0], [10, 10])
    assert _r(r, m) == ([0, 0], [INF, INF]) and not r.may_be_nan(m)
    assert r.of(p) is None and r.may_be_nan(p)


def test_float16_results_are_widened_more():
    b = GraphBuilder()
    u = b.input("u", "uint8", [])
    h = b.mul(b.cast(u, to=TensorProto.FLOAT16), np.float16(3.3))
    b.output(h, names=["h"])
    g = b.build()
    lo, hi = value_ranges(g).of(h)
    assert lo < 0 and 3.3 * 255 * 1.003 < hi < 3.3 * 255 * 1.01


def test_loop_dims_derived_on_a_rejected_pass_are_dropped():
    # the carried value starts at 1 and grows: a ConstantOfShape sized by it must not
    # keep the range [1, 1] of the first pass
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["n_in", "one"], ["n_out"]),
         helper.make_node("ConstantOfShape", ["n_in"], ["z"]),
         helper.make_node("Shape", ["z"], ["zs"]),
         helper.make_node("Identity", ["zs"], ["scan"])],
        "body",
        [_f("i", [], TensorProto.INT64), _f("cond_in", [], TensorProto.BOOL), _f("n_in", [1], TensorProto.INT64)],
        [_f("cond_out", [], TensorProto.BOOL), _f("n_out", [1], TensorProto.INT64), _f("scan", [1], TensorProto.INT64)],
        initializer=[_c("one", np.array([1], np.int64))])
    g = _onnx([helper.make_node("Loop", ["M", "c", "n0"], ["n", "scans"], body=body)], [],
              [_f("n", [1], TensorProto.INT64), _f("scans", ["k", 1], TensorProto.INT64)],
              [_c("M", np.array(4, np.int64)), _c("c", np.array(True)), _c("n0", np.array([1], np.int64))])
    r = value_ranges(g)
    body = g.nodes[0].attrs["body"]
    z = next(n for n in body.nodes if n.op == "ConstantOfShape").outputs[0]
    if not isinstance(z.shape[0], int):
        assert r.dim(z.shape[0]) is None or r.dim(z.shape[0])[1] == INF
    assert r.of(g.outputs[1]) is None or r.of(g.outputs[1])[1] == INF
    out = run(g, {})
    lo, hi = r.of(g.outputs[1]) or (-INF, INF)
    assert np.all(out["scans"] >= lo) and np.all(out["scans"] <= hi)
