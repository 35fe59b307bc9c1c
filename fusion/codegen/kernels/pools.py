"""Max / average pooling (1-D/2-D/3-D, strides, pads, dilations, ceil-mode
outputs) and global pooling.

Windowed pooling: per (image, channel) the input plane is copied once into a
buffer padded with the neutral value (-inf for max, 0 for average) large
enough for every window, so the window loops carry no bounds checks and the
producers fused into the read run once per element; each output row is then
reduced separably: along W first (once per plane row; rows are stored split
into stride phases so each tap reads contiguously), then along D and H over
whole contiguous rows; every loop vectorizes across the output width. Average divisors are per-dimension counts computed at compile
time (count_include_pad counts the padded positions, not the positions past
the padding that ceil mode adds), as onnxruntime does.

Global pooling reduces each plane with independent lane accumulators."""
from __future__ import annotations

from fusion.codegen.kernels.api import KernelCode, Operand
from fusion.codegen.kernels.common import HEADERS, indent, phase_copy, phase_offset


def _counts(o_n, i_n, k, s, pb, pe, d, include_pad) -> list[int]:
    lo, hi = (-pb, i_n + pe) if include_pad else (0, i_n)
    return [sum(1 for t in range(k) if lo <= o * s - pb + t * d < hi) for o in range(o_n)]


def pool(name: str, *, kind: str, node_geometry: dict, X: Operand, count_include_pad: bool, epilogue,
         target) -> KernelCode | None:
    if kind not in ("max", "avg") or X.dtype != "float32" or len(X.shape) not in (3, 4, 5):
        return None
    s = len(X.shape) - 2
    N, C = int(X.shape[0]), int(X.shape[1])
    inp = [int(v) for v in X.shape[2:]]
    geo = node_geometry
    kern = [int(v) for v in (geo.get("kernel") or inp)]
    st = [int(v) for v in (geo.get("strides") or [1] * s)]
    pads = [int(v) for v in (geo.get("pads") or [0] * (2 * s))]
    dil = [int(v) for v in (geo.get("dilations") or [1] * s)]
    out = [int(v) for v in (geo.get("out") or [1] * s)]
    if len(kern) != s or min(inp + out + [N, C]) <= 0:
        return None
    if kern == inp and out == [1] * s and not any(pads):
        return _global(name, kind, N, C, inp, X, epilogue, target)
    one, zero = [1] * (3 - s), [0] * (3 - s)
    I, K, S, D, O = one + inp, one + kern, one + st, one + dil, one + out
    PB, PE = zero + pads[:s], zero + pads[s:]
    # buffer reach: every window of every output, and at least the padded input
    P = [max((o - 1) * st_ + (k - 1) * d + 1, 1) for o, st_, k, d in zip(O, S, K, D)]
    # rows stored as S[2] stride phases (see common.phase_offset): every W tap reads contiguously
    Wq = -(-P[2] // S[2])
    Wr = S[2] * Wq
    plane = P[0] * P[1] * Wr
    fill = "-INFINITY" if kind == "max" else "0.0f"
    x = X.c_expr(["fz_n", "fz_c"] + ["fz_id", "fz_ih", "fz_iw"][3 - s:])
    ov = ["fz_od", "fz_oh", "fz_ow"][3 - s:]
    epi = epilogue(["fz_n", "fz_c"] + ov, "fz_v")
    sc = "fz_v = fz_x > fz_v ? fz_x : fz_v;" if kind == "max" else "fz_v += fz_x;"
    if kind == "avg":
        cnts = [_counts(O[i], I[i], K[i], S[i], PB[i], PE[i], D[i], count_include_pad) for i in range(3)]
        tables = "".join(f"static const float {name}_cnt{i}[{len(c)}] = {{{', '.join(f'{v}.0f' for v in c)}}};\n"
                         for i, c in enumerate(cnts))
        fin = lambda v, ow: f"{v} / ({name}_cnt0[fz_od] * {name}_cnt1[fz_oh] * {name}_cnt2[{ow}])"  # noqa: E731
    else:
        tables = ""
        fin = lambda v, ow: v  # noqa: E731
    f = f"""{HEADERS}{tables}
struct {name}_task {{ const struct {name}_args *A; }};
static void {name}_work(void *fz_arg, int64_t fz_it0, int64_t fz_it1) {{
    const struct {name}_args *A = ((const struct {name}_task *)fz_arg)->A;
    float *fz_pl = fzk_alloc({plane});
    float *fz_rw = fzk_alloc({P[0] * P[1] * O[2]});
    float *fz_row = fzk_alloc({O[2]});
    for (int64_t fz_it = fz_it0; fz_it < fz_it1; fz_it++) {{
        int64_t fz_c = fz_it % {C}, fz_n = fz_it / {C};
        for (int64_t fz_pd = 0; fz_pd < {P[0]}; fz_pd++)
        for (int64_t fz_ph = 0; fz_ph < {P[1]}; fz_ph++) {{
            float *fz_o = fz_pl + (fz_pd * {P[1]} + fz_ph) * {Wr};
            int64_t fz_id = fz_pd - {PB[0]}, fz_ih = fz_ph - {PB[1]};
            (void)fz_id; (void)fz_ih;
            if (fz_id < 0 || fz_id >= {I[0]} || fz_ih < 0 || fz_ih >= {I[1]}) {{
                for (int64_t fz_pw = 0; fz_pw < {Wr}; fz_pw++) fz_o[fz_pw] = {fill};
                continue;
            }}
{indent(phase_copy(x, PB[2], I[2], P[2], S[2], Wq, fill), 12)}
        }}
        /* separable: first reduce along W (strided taps, once per plane row), then along D and H
           (whole contiguous rows, vectorized over the output width) */
        for (int64_t fz_pr = 0; fz_pr < {P[0] * P[1]}; fz_pr++) {{
            const float *fz_s = fz_pl + fz_pr * {Wr};
            float *fz_r = fz_rw + fz_pr * {O[2]};
            memcpy(fz_r, fz_s, {4 * O[2]});
            for (int64_t fz_kw = 1; fz_kw < {K[2]}; fz_kw++) {{
                const float *fz_t = fz_s + {phase_offset("fz_kw * " + str(D[2]), S[2], Wq)};
                for (int64_t fz_ow = 0; fz_ow < {O[2]}; fz_ow++) {{ float fz_x = fz_t[fz_ow]; float fz_v = fz_r[fz_ow]; {sc} fz_r[fz_ow] = fz_v; }}
            }}
        }}
        for (int64_t fz_od = 0; fz_od < {O[0]}; fz_od++)
        for (int64_t fz_oh = 0; fz_oh < {O[1]}; fz_oh++) {{
            memcpy(fz_row, fz_rw + ((fz_od * {S[0]}) * {P[1]} + fz_oh * {S[1]}) * {O[2]}, {4 * O[2]});
            for (int64_t fz_kd = 0; fz_kd < {K[0]}; fz_kd++)
            for (int64_t fz_kh = 0; fz_kh < {K[1]}; fz_kh++) {{
                if (fz_kd == 0 && fz_kh == 0) continue;
                const float *fz_t = fz_rw + ((fz_od * {S[0]} + fz_kd * {D[0]}) * {P[1]} + fz_oh * {S[1]} + fz_kh * {D[1]}) * {O[2]};
                for (int64_t fz_ow = 0; fz_ow < {O[2]}; fz_ow++) {{ float fz_x = fz_t[fz_ow]; float fz_v = fz_row[fz_ow]; {sc} fz_row[fz_ow] = fz_v; }}
            }}
            for (int64_t fz_ow = 0; fz_ow < {O[2]}; fz_ow++) {{
                float fz_v = {fin("fz_row[fz_ow]", "fz_ow")};
{indent(epi, 16)}
            }}
        }}
    }}
    free(fz_rw);
    free(fz_pl);
    free(fz_row);
}}
"""
    body = f"{{ struct {name}_task fz_task = {{ A }}; fz_parallel_for({N * C}, {name}_work, &fz_task); }}\n"
    sched = (f"{kind} pool {'x'.join(map(str, kern))}, padded plane per (image, channel), separable "
             f"(W taps, then D/H taps over whole rows), {N * C} work items")
    return KernelCode(functions=f, body=body, weights={}, schedule=sched)


def _global(name, kind, N, C, inp, X: Operand, epilogue, target) -> KernelCode:
    s = len(inp)
    one = [1] * (3 - s)
    I = one + inp
    T = 2 * max(1, target.vector_bits // 32)
    x = X.c_expr(["fz_n", "fz_c"] + ["fz_id", "fz_ih", "fz_iw"][3 - s:])
    zeros = ["0"] * s
    epi = epilogue(["fz_n", "fz_c"] + zeros, "fz_v")
    if kind == "max":
        init, acc_l, comb = "-INFINITY", "fz_l[fz_t] = fz_x > fz_l[fz_t] ? fz_x : fz_l[fz_t];", \
            "fz_v = fz_l[fz_t] > fz_v ? fz_l[fz_t] : fz_v;"
        fin = ""
    else:
        init, acc_l, comb = "0.0f", "fz_l[fz_t] += fz_x;", "fz_v += fz_l[fz_t];"
        fin = f"fz_v = fz_v / {float(I[0] * I[1] * I[2])}f;"
    f = f"""{HEADERS}
struct {name}_task {{ const struct {name}_args *A; }};
static void {name}_work(void *fz_arg, int64_t fz_it0, int64_t fz_it1) {{
    const struct {name}_args *A = ((const struct {name}_task *)fz_arg)->A;
    for (int64_t fz_it = fz_it0; fz_it < fz_it1; fz_it++) {{
        int64_t fz_c = fz_it % {C}, fz_n = fz_it / {C};
        /* {T} independent lane accumulators: vectorizable without reassociating one sum */
        float fz_l[{T}];
        for (int fz_t = 0; fz_t < {T}; fz_t++) fz_l[fz_t] = {init};
        float fz_v = {init};
        for (int64_t fz_id = 0; fz_id < {I[0]}; fz_id++)
        for (int64_t fz_ih = 0; fz_ih < {I[1]}; fz_ih++) {{
            int64_t fz_iw0 = 0;
            for (; fz_iw0 + {T} <= {I[2]}; fz_iw0 += {T})
                for (int fz_t = 0; fz_t < {T}; fz_t++) {{ int64_t fz_iw = fz_iw0 + fz_t; float fz_x = {x}; {acc_l} }}
            for (int64_t fz_iw = fz_iw0; fz_iw < {I[2]}; fz_iw++) {{
                float fz_x = {x}; {"fz_v = fz_x > fz_v ? fz_x : fz_v;" if kind == "max" else "fz_v += fz_x;"}
            }}
        }}
        for (int fz_t = 0; fz_t < {T}; fz_t++) {comb}
        {fin}
{indent(epi, 8)}
    }}
}}
"""
    body = f"{{ struct {name}_task fz_task = {{ A }}; fz_parallel_for({N * C}, {name}_work, &fz_task); }}\n"
    sched = f"global {kind} pool, {T} lane accumulators per (image, channel), {N * C} work items"
    return KernelCode(functions=f, body=body, weights={}, schedule=sched)
