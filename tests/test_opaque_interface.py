"""The interface the code generator uses (supported / max_output_shapes /
call / c_sources / header), exercised the way the core does: import a
one-node ONNX model into a fusion Graph, paste the generated C into a small
driver, build it with the kernels through fusion.toolchain, run it through
ctypes and compare with onnxruntime."""
from __future__ import annotations

import ctypes
import os
import re

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import fusion
from fusion.codegen import opaque
from fusion.codegen.opaque.native import onnx_dtype
from fusion.oracle import compare_arrays, run_onnxruntime
from fusion.ops import get_op
from fusion.toolchain import compile_shared


def model_of(op, feeds, consts, attrs, n_out, opset=21, out_names=None, node_name=None):
    names = list(feeds) + list(consts)
    vi = [helper.make_tensor_value_info(n, onnx_dtype(a.dtype), a.shape) for n, a in feeds.items()]
    inits = [numpy_helper.from_array(a, n) for n, a in consts.items()]
    outs = out_names or [f"out{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, name=node_name or f"the {op}", **attrs)
    g = helper.make_graph([node], "g", vi, [onnx.ValueInfoProto(name=o) for o in outs], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def c_driver(node, caps, fn="run", include=True, layout="compact"):
    """A C function fn(in_ptrs, out_ptrs, out_shapes) around the pasted call."""
    ins, decls = [], []
    for i, v in enumerate(node.inputs):
        if v is None:
            ins.append(None)
            continue
        dims = ", ".join(str(int(d)) for d in v.shape) or "0"
        decls.append(f"    fz_tensor in{i} = {{in_ptrs[{i}], {onnx_dtype(v.dtype)}, {len(v.shape)}, {{{dims}}}}};")
        ins.append(f"in{i}")
    outs = []
    kernel = opaque.KERNELS[node.op]
    dtypes = kernel.out_dtypes([v.dtype if v is not None else None for v in node.inputs], opaque.attr_fields(node))
    for k, cap in enumerate(caps):
        if k >= len(node.outputs) or not node.outputs[k].name:
            outs.append(None)  # unused output: the kernel skips it
            continue
        dims = ", ".join(str(d) for d in cap) or "0"
        decls.append(f"    fz_tensor out{k} = {{out_ptrs[{k}], {onnx_dtype(dtypes[k])}, {len(cap)}, {{{dims}}}}};")
        outs.append(f"out{k}")
    file_scope, stmt = opaque.call(node, ins, outs, layout=layout)
    if layout != "compact":  # the same node twice in one file: keep its attrs static unique
        file_scope = re.sub(r"^(static const struct fz_attrs_\w+ )fz_attrs_", r"\1fz_attrs_cap_", file_scope)
        stmt = stmt.replace("&fz_attrs_", "&fz_attrs_cap_")
    back = [f"    out_shapes[{9 * k}] = out{k}.rank; for (int d = 0; d < 8; d++) out_shapes[{9 * k} + 1 + d] = out{k}.shape[d];"
            for k, o in enumerate(outs) if o]
    head = [f'#include "{os.path.basename(opaque.header())}"', "#include <stddef.h>"] if include else []
    return "\n".join([*head, file_scope,
                      f"int {fn}(void **in_ptrs, void **out_ptrs, long long *out_shapes) {{", *decls,
                      "    " + stmt.replace("\n", "\n    "), *back, "    return 0;", "}"])


def run_through_c(lib, fn, node, caps, feeds, padded=False):
    arrays = [np.ascontiguousarray(feeds[v.name] if v.name in feeds else v.const) for v in node.inputs]
    dtypes = opaque.KERNELS[node.op].out_dtypes([a.dtype for a in arrays], opaque.attr_fields(node))
    bufs = [np.zeros(max(int(np.prod(c)), 1), dt) for c, dt in zip(caps, dtypes)]
    in_ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    out_ptrs = (ctypes.c_void_p * len(bufs))(*[b.ctypes.data for b in bufs])
    shapes = (ctypes.c_longlong * (9 * len(bufs)))()
    rc = getattr(lib, fn)(in_ptrs, out_ptrs, shapes)
    assert rc == 0, lib.fz_opaque_last_error().decode()
    res = {}
    for k, v in enumerate(node.outputs):
        if v.name:
            shape = tuple(shapes[9 * k + 1 + d] for d in range(shapes[9 * k]))
            if padded:  # capacity strides: the actual tensor is the leading corner
                res[v.name] = bufs[k][:int(np.prod(caps[k]))].reshape(caps[k])[tuple(slice(0, d) for d in shape)]
            else:
                res[v.name] = bufs[k][:int(np.prod(shape))].reshape(shape)
    return res


r = np.random.default_rng(3)
CASES = {
    "topk_const_k": ("TopK", {"x": r.integers(0, 5, (3, 40)).astype(np.float32)}, {"k": np.array([6], np.int64)},
                     {"axis": 1, "largest": 0}, 2),
    "topk_runtime_k": ("TopK", {"x": r.standard_normal((2, 9, 3)).astype(np.float32), "k": np.array([4], np.int64)},
                       {}, {"axis": 1}, 2),
    "nms_consts": ("NonMaxSuppression",
                   {"boxes": np.sort(r.uniform(0, 10, (2, 30, 2, 2)), 2).reshape(2, 30, 4)[..., [0, 2, 1, 3]].astype(np.float32),
                    "scores": r.random((2, 3, 30)).astype(np.float32)},
                   {"max_out": np.array([4], np.int64), "iou": np.array([0.3], np.float32),
                    "score": np.array([0.1], np.float32)}, {}, 1),
    "roialign": ("RoiAlign", {"x": r.standard_normal((2, 4, 9, 9)).astype(np.float32),
                              "rois": np.array([[0, 0, 4, 4], [1, 2, 8.5, 7], [3, 3, 3.5, 9]], np.float32)},
                 {"bi": np.array([1, 0, 1], np.int64)},
                 {"mode": "max", "output_height": 3, "output_width": 2, "spatial_scale": 0.9}, 1),
    "nonzero": ("NonZero", {"x": r.random((4, 3, 2)) < 0.4}, {}, {}, 1),
    "unique_y_only": ("Unique", {"x": r.integers(0, 6, (20,)).astype(np.int64)}, {}, {"sorted": 0}, 1),
    "sce_logprob": ("SoftmaxCrossEntropyLoss", {"x": r.standard_normal((4, 5, 3)).astype(np.float32),
                                                "t": r.integers(0, 5, (4, 3)).astype(np.int64)}, {},
                    {"reduction": "mean", "ignore_index": 2}, 2),
    "nll_weights": ("NegativeLogLikelihoodLoss", {"x": r.standard_normal((6, 3)).astype(np.float32),
                                                  "t": r.integers(0, 3, 6).astype(np.int64)},
                    {"w": np.array([0.2, 1.0, 3.0], np.float32)}, {"reduction": "sum"}, 1),
    "det": ("Det", {"x": r.standard_normal((3, 5, 5)).astype(np.float32)}, {}, {}, 1),
    "hann": ("HannWindow", {}, {"size": np.array(16, np.int64)}, {"periodic": 0}, 1),
    "dql": ("DynamicQuantizeLinear", {"x": r.standard_normal((7, 3)).astype(np.float32)}, {}, {}, 3),
    "attention_3d": ("Attention", {"q": r.standard_normal((2, 3, 8)).astype(np.float32),
                                   "k": r.standard_normal((2, 5, 4)).astype(np.float32),
                                   "v": r.standard_normal((2, 5, 6)).astype(np.float32),
                                   "mask": r.random((3, 5)) < 0.8}, {},
                     {"q_num_heads": 4, "kv_num_heads": 2, "is_causal": 0}, 3, 23),
    "qlinearconv": ("QLinearConv", {"x": r.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)},
                    {"xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8),
                     "w": r.integers(0, 256, (4, 2, 3, 3)).astype(np.uint8), "ws": np.full(4, 0.01, np.float32),
                     "wz": np.full(4, 127, np.uint8), "ys": np.array(0.3, np.float32), "yz": np.array(9, np.uint8),
                     "b": np.arange(-2, 2).astype(np.int32) * 100},
                    {"group": 2, "strides": [2, 2], "pads": [1, 1, 0, 0]}, 1),
    "lstm": ("LSTM", {"x": r.standard_normal((4, 2, 3)).astype(np.float32)},
             {"w": r.standard_normal((2, 20, 3)).astype(np.float32) * 0.5,
              "r": r.standard_normal((2, 20, 5)).astype(np.float32) * 0.5,
              "b": r.standard_normal((2, 40)).astype(np.float32) * 0.1},
             {"hidden_size": 5, "direction": "bidirectional"}, 3, 14),
    "compress": ("Compress", {"x": r.standard_normal((3, 5)).astype(np.float32), "c": r.random(5) < 0.5}, {},
                 {"axis": 1}, 1),
}


def case(name):
    """(op, feeds, consts, attrs, n_out, opset): opset 21 unless the case says."""
    c = CASES[name]
    return (*c[:5], c[5] if len(c) > 5 else 21)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """Every case's call pasted into one C file (as a model library holds many
    nodes), built once with the kernels, -Wall -Werror."""
    parts, built = [f'#include "{os.path.basename(opaque.header())}"', "#include <stddef.h>"], {}
    for name in CASES:
        op, feeds, consts, attrs, n_out, opset = case(name)
        if get_op(op) is None:
            continue
        model = model_of(op, feeds, consts, attrs, n_out, opset=opset, node_name=f"{name} node")
        node = fusion.load(model).nodes[0]
        assert opaque.supported(node)
        caps = opaque.max_output_shapes(node)
        parts.append(c_driver(node, caps, fn=f"run_{name}", include=False))
        parts.append(c_driver(node, caps, fn=f"run_{name}_cap", include=False, layout="capacity"))
        built[name] = (model, node, caps)
    d = tmp_path_factory.mktemp("driver")
    (d / "driver.c").write_text("\n\n".join(parts))
    lib_path = str(d / "libdriver.so")
    compile_shared([str(d / "driver.c"), *opaque.c_sources()], lib_path,
                   extra_flags=["-Wall", "-Werror", "-I", os.path.dirname(opaque.header())])
    lib = ctypes.CDLL(lib_path)
    lib.fz_opaque_last_error.restype = ctypes.c_char_p
    return lib, built


@pytest.mark.parametrize("layout", ["compact", "capacity"])
@pytest.mark.parametrize("name", list(CASES))
def test_generated_call_matches_onnxruntime(driver, name, layout):
    lib, built = driver
    if name not in built:
        pytest.skip(f"{CASES[name][0]} is not in the op table yet")
    model, node, caps = built[name]
    feeds = CASES[name][1]
    fn = f"run_{name}" + ("_cap" if layout == "capacity" else "")
    got = run_through_c(lib, fn, node, caps, feeds, padded=layout == "capacity")
    want = run_onnxruntime(model, feeds)
    for k, (n, w) in enumerate(want.items()):
        d = compare_arrays(n, got[n], w)
        assert d.ok, f"{name} {n}: {d.message}\n got {got[n]}\nwant {w}"


def test_capacities():
    def node_of(name):
        op, feeds, consts, attrs, n_out, opset = case(name)
        return fusion.load(model_of(op, feeds, consts, attrs, n_out)).nodes[0]
    assert opaque.max_output_shapes(node_of("topk_const_k")) == [(3, 6), (3, 6)]      # K known: exact
    assert opaque.max_output_shapes(node_of("topk_runtime_k")) == [(2, 9, 3), (2, 9, 3)]  # bound
    assert opaque.max_output_shapes(node_of("nms_consts")) == [(2 * 3 * 4, 3)]
    assert opaque.max_output_shapes(node_of("roialign")) == [(3, 4, 3, 2)]
    assert opaque.max_output_shapes(node_of("nonzero")) == [(3, 24)]


def test_call_text():
    op, feeds, consts, attrs, n_out, opset = case("topk_const_k")
    node = fusion.load(model_of(op, feeds, consts, attrs, n_out)).nodes[0]
    file_scope, stmt = opaque.call(node, ["a", "b"], ["c", None], on_error="goto fail;")
    assert file_scope.startswith("static const struct fz_attrs_TopK fz_attrs_the_TopK_")
    assert ".axis = 1LL, .largest = 0, .sorted = 1" in file_scope
    assert "fz_op_TopK(fz_in, 2, fz_out, 2, &fz_attrs_the_TopK_" in stmt and "goto fail;" in stmt
    assert "c = fz_out[0];" in stmt and "fz_out[1];" not in stmt
    # unique per node, stable across calls
    assert opaque.call(node, ["a", "b"], ["c", "d"])[0] == file_scope


def test_c_literals():
    from fusion.codegen.opaque import _c_literal
    assert _c_literal("float", 0.1) == "0.10000000149011612f"
    assert _c_literal("float", float("inf")) == "__builtin_inff()"
    assert _c_literal("double", float("-inf")) == "-__builtin_inf()"
    assert _c_literal("int64_t[3]", [1, -2, 3]) == "{1LL, -2LL, 3LL}"


def test_supported_and_sources():
    op, feeds, consts, attrs, n_out, opset = case("nonzero")
    node = fusion.load(model_of(op, feeds, consts, attrs, n_out)).nodes[0]
    assert opaque.supported(node)
    assert all(os.path.isfile(p) and p.endswith(".c") for p in opaque.c_sources())
    assert os.path.isfile(opaque.header())
    node.op = "Relu"
    assert not opaque.supported(node)


def test_struct_fields_match_the_python_side():
    from fusion.codegen.opaque.kernels import KERNELS, struct_fields
    decl = struct_fields()
    for op, k in KERNELS.items():
        assert {n for _, n in decl[k.attrs_struct]} == set(k.fields({}, 21)), op


def test_window_size_must_be_constant():
    m = model_of("HannWindow", {"n": np.array(8, np.int64)}, {}, {}, 1, node_name="win")
    node = fusion.load(m).nodes[0]
    with pytest.raises(fusion.FusionError, match="node 'win'.*size must be a constant"):
        opaque.max_output_shapes(node)


def test_open_dimensions_are_a_clear_error():
    m = model_of("NonZero", {"x": np.zeros((2, 3), np.float32)}, {}, {}, 1)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    node = fusion.load(m).nodes[0]
    with pytest.raises(fusion.FusionError, match="open dimensions.*--shape"):
        opaque.max_output_shapes(node)
