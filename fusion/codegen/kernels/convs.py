"""Convolution anchors (1-D/2-D/3-D, strides, pads, dilations, groups).

Three schedules:
  * implicit GEMM (all but depthwise-like convs, incl. 1x1 and 3x3x3):
    per (image, group), out[m, p] = W[m, (c,kd,kh,kw)] . X_cols[(c,kd,kh,kw), p]
    with W pre-packed as the GEMM's A panels and the input columns packed per NC
    chunk straight from X (im2col one panel at a time, never the whole matrix).
    The packer splits each output row into the part whose reads fall inside
    the input (no bounds checks: a plain copy for stride 1) and the padded ends.
  * transposed implicit GEMM (few output positions, many channels: EfficientNet's
    7x7 and 14x14 stages): out^T[p, m] = cols^T[p, k] . W^T[k, m], so the positions
    pad to MR rows instead of NR-column strips and the channels split over cores.
  * direct (depthwise and grouped convs with 1-2 output channels per group): per
    (image, group) the group's input planes are copied once into a zero-padded
    buffer (the fused producers run once per element; rows split into stride
    phases so strided taps read contiguously), then every output row is a sum
    of shifted rows, vectorized over the output width.
"""
from __future__ import annotations

import numpy as np

from fusion.codegen.kernels.api import KernelCode, Operand
from fusion.codegen.kernels.common import HEADERS, blocking, indent, phase_copy as _phase_copy, phase_offset as _ph, vec_type
from fusion.codegen.kernels.gemm import fit_columns, gemm


class Geo:
    """Geometry normalized to three spatial dims (leading ones of size 1)."""

    def __init__(self, g: dict, xshape, wshape):
        s = len(xshape) - 2
        self.spatial = s
        pad1 = [1] * (3 - s)
        pad0 = [0] * (3 - s)
        self.N, self.C = int(xshape[0]), int(xshape[1])
        self.M, self.Cg = int(wshape[0]), int(wshape[1])
        self.G = int(g.get("group", 1))
        self.inp = pad1 + [int(v) for v in xshape[2:]]
        self.k = pad1 + [int(v) for v in wshape[2:]]
        self.st = pad1 + [int(v) for v in (g.get("strides") or [1] * s)]
        pads = [int(v) for v in (g.get("pads") or [0] * (2 * s))]
        self.pb = pad0 + pads[:s]
        self.pe = pad0 + pads[s:]
        self.dl = pad1 + [int(v) for v in (g.get("dilations") or [1] * s)]
        out = g.get("out")
        if out is None:
            out = [(self.inp[3 - s + i] + self.pb[3 - s + i] + self.pe[3 - s + i]
                    - (self.dl[3 - s + i] * (self.k[3 - s + i] - 1) + 1)) // self.st[3 - s + i] + 1 for i in range(s)]
        self.out = pad1 + [int(v) for v in out]
        self.Mg = self.M // self.G

    def sp_index(self, d: str, h: str, w: str) -> list[str]:
        """The spatial part of an index of this rank."""
        return [d, h, w][3 - self.spatial:]


def _bias(name: str, bias: Operand | None):
    """(C expr of the bias of output channel `oc`, weights): a constant bias goes into the weights."""
    if bias is None:
        return (lambda oc: "0.0f"), {}
    if bias.const is not None:
        return (lambda oc: f"A->{name}_bias[{oc}]"), {f"{name}_bias": np.asarray(bias.const, np.float32).reshape(-1)}
    return (lambda oc: bias.c_expr([oc])), {}


def conv(name: str, *, node_geometry: dict, X: Operand, W: Operand, bias: Operand | None, epilogue,
         target) -> KernelCode | None:
    if W.const is None or X.dtype != "float32" or len(X.shape) not in (3, 4, 5):
        return None
    wc = np.asarray(W.const, np.float32)
    if wc.ndim != len(X.shape):
        return None
    g = Geo(node_geometry, X.shape, wc.shape)
    if g.G <= 0 or g.C != g.Cg * g.G or g.M % g.G or min(g.out + g.inp + [g.N, g.M]) <= 0:
        return None
    bias_at, weights = _bias(name, bias)
    if g.Mg <= 2 and g.G > 1:   # depthwise-like; one group with 1-2 outputs is a thin GEMM, still threaded
        kc = _direct(name, g, X, wc, bias_at, epilogue, target)
    elif _positions_as_rows(g, target):
        kc = _transposed_gemm(name, g, X, wc, bias_at, epilogue, target)
    else:
        kc = _implicit_gemm(name, g, X, wc, bias_at, epilogue, target)
    kc.weights.update(weights)
    return kc


def _implicit_gemm(name, g: Geo, X: Operand, wc, bias_at, epilogue, target, transposed: bool = False) -> KernelCode:
    """wc: the GEMM's A, [G, Mg, Cg*KD*KH*KW]. transposed: ConvTranspose in gather form, input column
    for output o and tap k is i = (o + pad - k*dil) / stride when that divides exactly and is in range."""
    KD, KH, KW = g.k
    ID, IH, IW = g.inp
    OD, OH, OW = g.out
    SD, SH, SW = g.st
    PD, PH, PW = g.pb
    DD, DH, DW = g.dl
    Kdim = g.Cg * KD * KH * KW
    Ncols = OD * OH * OW
    a = wc.reshape(g.G, g.Mg, Kdim)

    def b_pack(bv, panel, n0, nlen):
        row, col = panel.row, panel.col
        x = X.c_expr([bv[0], f"({bv[1]}) * {g.Cg} + fz_c"] + g.sp_index("fz_id", "fz_ih", "fz_iw"))
        if transposed:
            return _gather_pack(g, x, panel, n0, nlen)
        return f"""{{ /* input columns [{n0}, {n0}+{nlen}) of the implicit im2col matrix */
    int64_t fz_k = 0;
    for (int64_t fz_c = 0; fz_c < {g.Cg}; fz_c++)
    for (int64_t fz_kd = 0; fz_kd < {KD}; fz_kd++)
    for (int64_t fz_kh = 0; fz_kh < {KH}; fz_kh++)
    for (int64_t fz_kw = 0; fz_kw < {KW}; fz_kw++, fz_k++) {{
        float *fz_row = {row("fz_k")};
        /* output columns ow in [wlo, whi) read inside the input row */
        int64_t fz_wlo = fzk_cdiv({PW} - fz_kw * {DW}, {SW}), fz_whi = fzk_fdiv({IW - 1 + PW} - fz_kw * {DW}, {SW}) + 1;
        int64_t fz_j = 0, fz_p = {n0};
        while (fz_j < {nlen}) {{
            int64_t fz_ow0 = fz_p % {OW}, fz_r = fz_p / {OW};
            int64_t fz_oh = fz_r % {OH}, fz_od = fz_r / {OH};
            int64_t fz_e = fzk_min({OW}, fz_ow0 + {nlen} - fz_j);
            int64_t fz_id = fz_od * {SD} - {PD} + fz_kd * {DD}, fz_ih = fz_oh * {SH} - {PH} + fz_kh * {DH};
            int64_t fz_jb = fz_j - fz_ow0;  /* column of output position fz_ow: fz_jb + fz_ow */
            (void)fz_id; (void)fz_ih;
            if (fz_id < 0 || fz_id >= {ID} || fz_ih < 0 || fz_ih >= {IH}) {{
                for (int64_t fz_ow = fz_ow0; fz_ow < fz_e; fz_ow++) fz_row[{col("fz_jb + fz_ow")}] = 0.0f;
            }} else {{
                int64_t fz_lo = fzk_max(fz_ow0, fzk_min(fz_wlo, fz_e)), fz_hi = fzk_max(fz_lo, fzk_min(fz_whi, fz_e));
                for (int64_t fz_ow = fz_ow0; fz_ow < fz_lo; fz_ow++) fz_row[{col("fz_jb + fz_ow")}] = 0.0f;
                for (int64_t fz_ow1 = fz_lo; fz_ow1 < fz_hi; ) {{
                    /* the interior in pieces that stay inside one NR-column strip: contiguous stores */
                    uint64_t fz_J = (uint64_t)(fz_jb + fz_ow1);
                    int64_t fz_len = fzk_min({panel.nr} - (int64_t)(fz_J % {panel.nr}), fz_hi - fz_ow1);
                    float *fz_d = fz_row + fz_J / {panel.nr} * {panel.strip} + fz_J % {panel.nr} - fz_ow1;
                    if (fz_len == {panel.nr}) {{  /* constant trip count: vector moves, not rep movs */
                        for (int64_t fz_t = 0; fz_t < {panel.nr}; fz_t++) {{
                            int64_t fz_ow = fz_ow1 + fz_t, fz_iw = fz_ow * {SW} + ({-PW} + fz_kw * {DW});
                            fz_d[fz_ow] = {x};
                        }}
                    }} else {{
                        for (int64_t fz_ow = fz_ow1; fz_ow < fz_ow1 + fz_len; fz_ow++) {{
                            int64_t fz_iw = fz_ow * {SW} + ({-PW} + fz_kw * {DW});
                            fz_d[fz_ow] = {x};
                        }}
                    }}
                    fz_ow1 += fz_len;
                }}
                for (int64_t fz_ow = fz_hi; fz_ow < fz_e; fz_ow++) fz_row[{col("fz_jb + fz_ow")}] = 0.0f;
            }}
            fz_j += fz_e - fz_ow0; fz_p += fz_e - fz_ow0;
        }}
    }}
}}"""

    epi_row = _row_epilogue(g, epilogue, bias_at)

    kind = ("1x1 conv as gemm" if Kdim == g.Cg else f"{'x'.join(map(str, g.k[3 - g.spatial:]))} conv as implicit gemm")
    if transposed:
        kind = f"{'x'.join(map(str, g.k[3 - g.spatial:]))} conv-transpose as implicit gemm (gather form)"
    if g.G > 1:
        kind += f", {g.G} groups"
    return gemm(name, batch=[g.N, g.G], M=g.Mg, N=Ncols, K=Kdim, target=target, epilogue=None, epilogue_row=epi_row,
                a_const=a, a_group=lambda bv: bv[1], b_pack=b_pack, what=kind)


def _row_epilogue(g: Geo, epilogue, bias_at):
    """epi_row(bv, m, row, n0, nlen): C running the epilogue on row[j] = out[n, m, position n0 + j] for
    j < nlen (one output channel, consecutive output positions)."""
    OD, OH, OW = g.out
    flat = bool(getattr(epilogue, "flat_spatial", False)) and g.spatial >= 2

    def epi_row(bv, m, row, n0, nlen):
        if flat:   # the epilogue takes the flat position (api._scoped): one loop over the whole row
            return f"""{{
    int64_t fz_oc = ({bv[1]}) * {g.Mg} + {m};
    float fz_bv = {bias_at("fz_oc")};
    const float *fz_src = {row};
    for (int64_t fz_j = 0; fz_j < {nlen}; fz_j++) {{
        float fz_v = fz_src[fz_j] + fz_bv;
{indent(epilogue([bv[0], "fz_oc"] + g.sp_index("0", "0", f"({n0}) + fz_j"), "fz_v"), 8)}
    }}
}}"""
        # walk the finished row one output row (fixed od, oh) at a time: no division per element,
        # and a plain contiguous loop the compiler can vectorize when the epilogue is simple
        return f"""{{
    int64_t fz_oc = ({bv[1]}) * {g.Mg} + {m};
    float fz_bv = {bias_at("fz_oc")};
    int64_t fz_j = 0, fz_p = {n0};
    while (fz_j < {nlen}) {{
        int64_t fz_xw0 = fz_p % {OW}, fz_q = fz_p / {OW}, fz_xh = fz_q % {OH}, fz_xd = fz_q / {OH};
        int64_t fz_e = fzk_min({OW}, fz_xw0 + {nlen} - fz_j);
        const float *fz_src = {row} + fz_j - fz_xw0;
        (void)fz_xd; (void)fz_xh;
        for (int64_t fz_xw = fz_xw0; fz_xw < fz_e; fz_xw++) {{
            float fz_v = fz_src[fz_xw] + fz_bv;
{indent(epilogue([bv[0], "fz_oc"] + g.sp_index("fz_xd", "fz_xh", "fz_xw"), "fz_v"), 12)}
        }}
        fz_j += fz_e - fz_xw0; fz_p += fz_e - fz_xw0;
    }}
}}"""

    return epi_row


def _positions_as_rows(g: Geo, target) -> bool:
    """Few output positions, many output channels (EfficientNet's 7x7 and 14x14 stages): in
    out[m, p] the positions are the GEMM's N, padded up to whole NR-column strips (49 positions
    fill two 48-wide strips: half of the multiply-adds are padding) and too few to split over
    cores. As out^T[p, m] = cols^T[p, k] . W^T[k, m] the positions pad only to MR rows and the
    channels (usually a multiple of NR) are split over cores. Chosen when the padded work shrinks
    by over 15%, or when the normal schedule would give each work item a single NR strip (below)."""
    from fusion.codegen.kernels.common import blocking, cdiv, rup
    P = g.out[0] * g.out[1] * g.out[2]
    b = blocking(target, g.Mg, P, g.Cg * g.k[0] * g.k[1] * g.k[2])
    bt = blocking(target, P, g.Mg, g.Cg * g.k[0] * g.k[1] * g.k[2])
    normal = rup(g.Mg, b.mr) * rup(P, b.nr)
    transposed = rup(P, bt.mr) * rup(g.Mg, bt.nr)
    if transposed < 0.85 * normal:
        return True
    # Also when the normal schedule's N groups (the GEMM's split of the positions over about
    # 4 items per core) are one NR strip wide: each item then streams all of the weights for
    # one micro-tile column (no reuse of an A block across strips), while the transposed form
    # reads each weight once per MC-row block of positions (one block for P <= MC). 1x1 672->112 @14x14: 0.41 -> 0.35 ms,
    # 3x3 512->512 @14x14: 11.5 -> 10.3 ms; 3x3 256->256 @28x28 (128-column groups) stays
    # normal (transposed 9.5 -> 11.4 ms). Measured on AVX-512, --threads 1 --cpu-time.
    from fusion.codegen.kernels.gemm import fit_columns
    gn = fit_columns(b, P, target)
    want = 4 * max(1, target.cores)
    ng = max(1, min(cdiv(P, gn.nr), cdiv(want, g.N * g.G)))   # as gemm() splits (one item per M)
    ngs = rup(cdiv(P, ng), gn.nr)
    gt = fit_columns(bt, g.Mg, target)
    # padded work as the GEMM will tile it (672->112 @14x14: 200x128 vs 112x224)
    # ... unless the transposed form's run-time A, the im2col matrix (P x Kdim, KH*KW times the
    # input), outgrows L2 while the weights are the smaller operand: every thread then packs all of
    # it and every item streams it from memory (SSD's 3x3 512->126 @19x19 head, a 6.6 MB im2col).
    kdim = g.Cg * g.k[0] * g.k[1] * g.k[2]
    if P * kdim * 4 > target.l2_bytes and g.Mg < P:
        return False
    return ngs <= gn.nr and rup(P, gt.mr) * rup(g.Mg, gt.nr) <= 1.05 * rup(g.Mg, gn.mr) * rup(P, gn.nr)


def _transposed_gemm(name, g: Geo, X: Operand, wc, bias_at, epilogue, target) -> KernelCode:
    """out^T[p, m] = cols^T[p, (c,kd,kh,kw)] . W^T[(c,kd,kh,kw), m] per (image, group): the run-time
    A (im2col rows, one per output position) is packed once per thread's items by the GEMM, the
    weights are the pre-packed constant B; the epilogue stores each element back at [n, m, p]."""
    KD, KH, KW = g.k
    ID, IH, IW = g.inp
    OD, OH, OW = g.out
    SD, SH, SW = g.st
    PD, PH, PW = g.pb
    DD, DH, DW = g.dl
    Kdim = g.Cg * KD * KH * KW
    P = OD * OH * OW
    bt = np.ascontiguousarray(wc.reshape(g.G, g.Mg, Kdim).transpose(0, 2, 1))

    mr = fit_columns(blocking(target, P, g.Mg, Kdim), g.Mg, target).mr   # as gemm() will tile it

    def a_pack(bv, dst, m0, rows):
        # One MR-row strip of cols^T: each row's position is decoded once per strip and each
        # column's (c, kd, kh, kw) once per k, not both per element (the per-element decode was
        # most of the packing time of a 1x1 conv at 7x7, which every thread repeats).
        x = X.c_expr([bv[0], f"({bv[1]}) * {g.Cg} + fz_ac"] + g.sp_index("fz_aid", "fz_aih", "fz_aiw"))
        head = (f"const int64_t fz_am0 = {m0}, fz_arows = {rows};\n"
                f"int64_t fz_pd[{mr}], fz_ph[{mr}], fz_pw[{mr}];\n"
                f"for (int64_t fz_r = 0; fz_r < {mr}; fz_r++) {{\n"
                # rows past M decode a valid position: the pointwise path reads it, then stores 0
                f"    int64_t fz_p = fz_am0 + (fz_r < fz_arows ? fz_r : 0);\n"
                f"    int64_t fz_ow = fz_p % {OW}, fz_q = fz_p / {OW}, fz_oh = fz_q % {OH}, fz_od = fz_q / {OH};\n"
                f"    fz_pd[fz_r] = fz_od * {SD} - {PD}; fz_ph[fz_r] = fz_oh * {SH} - {PH}; "
                f"fz_pw[fz_r] = fz_ow * {SW} - {PW};\n}}\n")
        if KD * KH * KW == 1 and g.st == [1, 1, 1] and not any(g.pb):
            elem = (f"{{ int64_t fz_aid = fz_pd[fz_r], fz_aih = fz_ph[fz_r], fz_aiw = fz_pw[fz_r]; "
                    f"(void)fz_aid; (void)fz_aih; {dst}[fz_k * {mr} + fz_r] = {{v}}; }}")
            full = elem.replace("{v}", f"({x})")
            part = elem.replace("{v}", f"fz_r < fz_arows ? ({x}) : 0.0f")
            return head + (f"if (fz_arows == {mr})\n"
                           f"    for (int64_t fz_k = 0; fz_k < {Kdim}; fz_k++) {{ const int64_t fz_ac = fz_k;\n"
                           f"        for (int64_t fz_r = 0; fz_r < {mr}; fz_r++) {full} }}\n"
                           f"else\n"
                           f"    for (int64_t fz_k = 0; fz_k < {Kdim}; fz_k++) {{ const int64_t fz_ac = fz_k;\n"
                           f"        for (int64_t fz_r = 0; fz_r < {mr}; fz_r++) {part} }}\n")
        return head + (
            f"for (int64_t fz_k = 0; fz_k < {Kdim}; fz_k++) {{\n"
            f"    const int64_t fz_akw = fz_k % {KW}, fz_akq = fz_k / {KW}, fz_akh = fz_akq % {KH}, "
            f"fz_akq2 = fz_akq / {KH}, fz_akd = fz_akq2 % {KD}, fz_ac = fz_akq2 / {KD};\n"
            f"    for (int64_t fz_r = 0; fz_r < {mr}; fz_r++) {{\n"
            f"        int64_t fz_aid = fz_pd[fz_r] + fz_akd * {DD}, fz_aih = fz_ph[fz_r] + fz_akh * {DH}, "
            f"fz_aiw = fz_pw[fz_r] + fz_akw * {DW};\n"
            f"        {dst}[fz_k * {mr} + fz_r] = (fz_r < fz_arows && fz_aid >= 0 && fz_aid < {ID} && fz_aih >= 0 "
            f"&& fz_aih < {IH} && fz_aiw >= 0 && fz_aiw < {IW}) ? ({x}) : 0.0f;\n"
            f"    }}\n}}\n")

    # the epilogue runs per finished tile column (one channel, consecutive positions): contiguous
    # stores and a vectorized SiLU, where a tile row (one position, many channels) stored one
    # element per plane. 1x1 192->1152 @7x7 + SiLU: NN -> NN ms, --threads 1 --cpu-time.
    epi_row = _row_epilogue(g, epilogue, bias_at)

    kind = ("1x1 conv" if Kdim == g.Cg else f"{'x'.join(map(str, g.k[3 - g.spatial:]))} conv")
    kind += f" as transposed gemm (positions x channels, {P} positions)"
    if g.G > 1:
        kind += f", {g.G} groups"
    return gemm(name, batch=[g.N, g.G], M=P, N=g.Mg, K=Kdim, target=target, epilogue=None, epilogue_col=epi_row, a_pack=a_pack,
                b_const=bt, b_group=lambda bv: bv[1], what=kind)


def _direct(name, g: Geo, X: Operand, wc, bias_at, epilogue, target) -> KernelCode:
    KD, KH, KW = g.k
    ID, IH, IW = g.inp
    OD, OH, OW = g.out
    SD, SH, SW = g.st
    PD, PH, PW = g.pb
    DD, DH, DW = g.dl
    # padded planes cover exactly the windows' reach
    Dp, Hp, Wp = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(g.out, g.st, g.k, g.dl)]
    # each padded row is stored as SW phases (columns w = w' * SW + phase): a tap then reads
    # one phase contiguously across the output width, so strided convs load whole vectors too
    Wq = -(-Wp // SW)
    Wr = SW * Wq
    plane = Dp * Hp * Wr
    taps = g.Cg * KD * KH * KW
    lanes = max(1, target.vector_bits // 32)
    vt, vdef = vec_type(lanes)
    # Register block: up to 4 vectors (8 scalars), but no wider than the output row needs: with
    # 16-lane vectors a fixed 64-wide block would leave 56/28/14/7-wide rows entirely to a scalar
    # tail. The last block of a row is computed whole (its extra lanes read the next row or the
    # zeroed slack after the planes) and only its valid outputs are stored.
    nv = max(1, min(4 if lanes > 1 else 8, -(-OW // lanes)))
    T = lanes * nv                                   # outputs per register block
    slack = T + Wr                                   # the last block's reach past the last plane row
    weights = {f"{name}_w": np.ascontiguousarray(wc.reshape(g.M, taps))}
    x = X.c_expr(["fz_n", "fz_g * %d + fz_c" % g.Cg] + g.sp_index("fz_id", "fz_ih", "fz_iw"))
    load = lambda j: f"*(const {vt} *)(fz_s + {j * lanes})"  # noqa: E731
    accs = [f"fz_a{j}" for j in range(nv)]
    kw_taps = f"""for (int64_t fz_kw = 0; fz_kw < {KW}; fz_kw++, fz_t++) {{
    const float *fz_s = fz_r + {_ph("fz_kw * " + str(DW), SW, Wq)};
    float fz_wt = fz_w[fz_t];
    {" ".join(f"{a} += fz_wt * {load(j)};" for j, a in enumerate(accs))}
}}"""
    P = OD * OH * OW
    # An epilogue that depends on the position only through its flat offset (an elementwise chain,
    # see api._scoped) runs once per output plane, one long loop the compiler vectorizes, instead
    # of once per row: 14- or 7-wide rows leave most of a vectorized SiLU to scalar remainders.
    flat = bool(getattr(epilogue, "flat_spatial", False)) and g.spatial >= 2 and P <= 1 << 20
    if flat:
        epi = epilogue(["fz_n", "fz_oc"] + g.sp_index("0", "0", "fz_j"), "fz_v")
        dst = f"fz_opb + (fz_od * {OH} + fz_oh) * {OW} + fz_ow0"
        row_epi = ""
        plane_epi = f"""for (int64_t fz_j = 0; fz_j < {P}; fz_j++) {{
    float fz_v = fz_opb[fz_j] + fz_bias;
{indent(epi, 4)}
}}"""
    else:
        epi = epilogue(["fz_n", "fz_oc"] + g.sp_index("fz_od", "fz_oh", "fz_ow"), "fz_v")
        dst = "fz_row"
        row_epi = f"""int64_t fz_nj = fzk_min({T}, {OW} - fz_ow0);
                for (int64_t fz_j = 0; fz_j < fz_nj; fz_j++) {{
                    int64_t fz_ow = fz_ow0 + fz_j; float fz_v = fz_row[fz_j] + fz_bias;
{indent(epi, 20)}
                }}"""
        plane_epi = ""
    # Small planes are handled CB groups at a time: first every group's padded copy, then the
    # convolutions, then (flat) the epilogues. A vector load of a plane right after its scalar
    # copy (or of an output plane right after its vector row stores at other offsets) cannot be
    # forwarded from the store buffer and waits for the stores to drain; with several planes in
    # between the stores are done (a 7x7 plane has 49 outputs: the wait was most of its time).
    CB = max(1, min(8, 4096 // (g.Cg * plane)))
    span = P + T
    conv_loops = f"""for (int64_t fz_od = 0; fz_od < {OD}; fz_od++)
for (int64_t fz_oh = 0; fz_oh < {OH}; fz_oh++)
for (int64_t fz_ow0 = 0; fz_ow0 < {OW}; fz_ow0 += {T}) {{
    {vt} {", ".join(a + " = {0}" for a in accs)};
    int64_t fz_t = 0;
    for (int64_t fz_c = 0; fz_c < {g.Cg}; fz_c++)
    for (int64_t fz_kd = 0; fz_kd < {KD}; fz_kd++)
    for (int64_t fz_kh = 0; fz_kh < {KH}; fz_kh++) {{
        const float *fz_r = fz_plb + ((fz_c * {Dp} + fz_od * {SD} + fz_kd * {DD}) * {Hp} + fz_oh * {SH} + fz_kh * {DH}) * {Wr} + fz_ow0;
{indent(kw_taps, 8)}
    }}
    {{ float *fz_d = {dst}; {" ".join(f"*({vt} *)(fz_d + {j * lanes}) = {a};" for j, a in enumerate(accs))} }}
    {row_epi}
}}"""
    # the flat form computes each output plane in its own function: inlined into the loop with
    # the epilogue, GCC kept every tap's broadcast weight in a spilled vector (two loads per FMA)
    plane_fn = "" if not flat else f"""static __attribute__((noinline)) void {name}_plane(const float *restrict fz_plb,
        const float *restrict fz_w, float *restrict fz_opb) {{
{indent(conv_loops, 4)}
}}
"""
    plane_call = f"{name}_plane(fz_plb, fz_w, fz_op + (fz_b * {g.Mg} + fz_mm) * {span});"
    plane_loop = "" if not flat else f"""for (int64_t fz_b = 0; fz_b < fz_nb; fz_b++) {{
            int64_t fz_it = fz_ib + fz_b, fz_g = fz_it % {g.G}, fz_n = fz_it / {g.G};
            for (int64_t fz_mm = 0; fz_mm < {g.Mg}; fz_mm++) {{
                int64_t fz_oc = fz_g * {g.Mg} + fz_mm;
                float fz_bias = {bias_at("fz_oc")};
                const float *fz_opb = fz_op + (fz_b * {g.Mg} + fz_mm) * {span};
{indent(plane_epi, 16)}
            }}
        }}"""
    f = f"""{HEADERS}{vdef}
{plane_fn}struct {name}_task {{ const struct {name}_args *A; }};
static void {name}_work(void *fz_arg, int64_t fz_it0, int64_t fz_it1) {{
    const struct {name}_args *A = ((const struct {name}_task *)fz_arg)->A;
    /* zeroed once: the last block of a plane reads past it into the next plane or the slack */
    float *fz_pl = fzk_alloc({CB * g.Cg * plane + slack});
    memset(fz_pl, 0, sizeof(float) * {CB * g.Cg * plane + slack});
    float fz_row[{T}];
    /* output planes, row blocks stored whole: a block's lanes past the row end land on the
       next row's start (rewritten by that row's blocks later) or in the slack */
    float *fz_op = {"fzk_alloc(" + str(CB * g.Mg * span) + ")" if flat else "fz_row"};
    (void)fz_row; (void)fz_op;
    for (int64_t fz_ib = fz_it0; fz_ib < fz_it1; fz_ib += {CB}) {{
        const int64_t fz_nb = fzk_min({CB}, fz_it1 - fz_ib);
        /* the groups' input planes, zero padded: X is read once per element */
        for (int64_t fz_b = 0; fz_b < fz_nb; fz_b++) {{
        int64_t fz_it = fz_ib + fz_b, fz_g = fz_it % {g.G}, fz_n = fz_it / {g.G};
        float *fz_plb = fz_pl + fz_b * {g.Cg * plane};
        for (int64_t fz_c = 0; fz_c < {g.Cg}; fz_c++)
        for (int64_t fz_pd = 0; fz_pd < {Dp}; fz_pd++)
        for (int64_t fz_ph = 0; fz_ph < {Hp}; fz_ph++) {{
            float *fz_o = fz_plb + ((fz_c * {Dp} + fz_pd) * {Hp} + fz_ph) * {Wr};
            int64_t fz_id = fz_pd - {PD}, fz_ih = fz_ph - {PH};
            (void)fz_id; (void)fz_ih;
            if (fz_id < 0 || fz_id >= {ID} || fz_ih < 0 || fz_ih >= {IH}) {{
                for (int64_t fz_pw = 0; fz_pw < {Wr}; fz_pw++) fz_o[fz_pw] = 0.0f;
                continue;
            }}
{indent(_phase_copy(x, PW, IW, Wp, SW, Wq), 12)}
        }}
        }}
        for (int64_t fz_b = 0; fz_b < fz_nb; fz_b++) {{
        int64_t fz_it = fz_ib + fz_b, fz_g = fz_it % {g.G}, fz_n = fz_it / {g.G};
        const float *fz_plb = fz_pl + fz_b * {g.Cg * plane};
        (void)fz_n;
        for (int64_t fz_mm = 0; fz_mm < {g.Mg}; fz_mm++) {{
            int64_t fz_oc = fz_g * {g.Mg} + fz_mm;
            const float *fz_w = A->{name}_w + fz_oc * {taps};
            float fz_bias = {bias_at("fz_oc")};
            (void)fz_bias;
{indent(plane_call if flat else conv_loops, 12)}
        }}
        }}
        {plane_loop}
    }}
    free(fz_pl);
    {"free(fz_op);" if flat else ""}
}}
"""
    body = f"{{ struct {name}_task fz_task = {{ A }}; fz_parallel_for({g.N * g.G}, {name}_work, &fz_task); }}\n"
    sched = (f"direct conv ({'depthwise' if g.Cg == 1 and g.Mg == 1 else f'{g.G} groups'}), zero-padded planes per "
             f"(image, group), {T} outputs x {lanes} lanes per register block, {g.N * g.G} work items")
    return KernelCode(functions=f, body=body, weights=weights, schedule=sched)


def _gather_pack(g: Geo, x: str, panel, n0, nlen) -> str:
    row, col = panel.row, panel.col
    KD, KH, KW = g.k
    ID, IH, IW = g.inp
    OD, OH, OW = g.out
    SD, SH, SW = g.st
    PD, PH, PW = g.pb
    DD, DH, DW = g.dl
    return f"""{{ /* ConvTranspose: columns [{n0}, {n0}+{nlen}); a tap reads input (o + pad - k*dil) / stride when exact */
    int64_t fz_k = 0;
    for (int64_t fz_c = 0; fz_c < {g.Cg}; fz_c++)
    for (int64_t fz_kd = 0; fz_kd < {KD}; fz_kd++)
    for (int64_t fz_kh = 0; fz_kh < {KH}; fz_kh++)
    for (int64_t fz_kw = 0; fz_kw < {KW}; fz_kw++, fz_k++) {{
        float *fz_row = {row("fz_k")};
        int64_t fz_j = 0, fz_p = {n0};
        while (fz_j < {nlen}) {{
            int64_t fz_ow0 = fz_p % {OW}, fz_r = fz_p / {OW};
            int64_t fz_oh = fz_r % {OH}, fz_od = fz_r / {OH};
            int64_t fz_e = fzk_min({OW}, fz_ow0 + {nlen} - fz_j);
            int64_t fz_dn = fz_od + {PD} - fz_kd * {DD}, fz_hn = fz_oh + {PH} - fz_kh * {DH};
            int64_t fz_jb = fz_j - fz_ow0;  /* column of output position fz_ow: fz_jb + fz_ow */
            if (fz_dn < 0 || fz_dn % {SD} || fz_dn / {SD} >= {ID} || fz_hn < 0 || fz_hn % {SH} || fz_hn / {SH} >= {IH}) {{
                for (int64_t fz_ow = fz_ow0; fz_ow < fz_e; fz_ow++) fz_row[{col("fz_jb + fz_ow")}] = 0.0f;
            }} else {{
                int64_t fz_id = fz_dn / {SD}, fz_ih = fz_hn / {SH};
                (void)fz_id; (void)fz_ih;
                for (int64_t fz_ow = fz_ow0; fz_ow < fz_e; fz_ow++) {{
                    int64_t fz_wn = fz_ow + {PW} - fz_kw * {DW};
                    int64_t fz_iw = fz_wn / {SW};
                    fz_row[{col("fz_jb + fz_ow")}] = (fz_wn >= 0 && fz_wn % {SW} == 0 && fz_iw < {IW}) ? ({x}) : 0.0f;
                }}
            }}
            fz_j += fz_e - fz_ow0; fz_p += fz_e - fz_ow0;
        }}
    }}
}}"""


def conv_transpose(name: str, *, node_geometry: dict, X: Operand, W: Operand, bias: Operand | None, epilogue,
                   target) -> KernelCode | None:
    """ConvTranspose, W [C, M/group, *k] const. Kernel == stride (U-Net's 2x2/2 upsampling), no
    dilation, no output padding: every output gets exactly one tap, so it is a plain GEMM
    [(m, k), c] x [c, input positions] whose epilogue scatters to output (i*s + k - pad). Otherwise
    the gather form on the implicit GEMM (taps that fall between strides are zeros)."""
    if W.const is None or X.dtype != "float32" or len(X.shape) not in (3, 4, 5):
        return None
    wc = np.asarray(W.const, np.float32)
    if wc.ndim != len(X.shape):
        return None
    sp = len(X.shape) - 2
    G = int(node_geometry.get("group", 1))
    C, Mg = int(wc.shape[0]), int(wc.shape[1])
    if G <= 0 or C % G or int(X.shape[1]) != C:
        return None
    geo = dict(node_geometry)
    if geo.get("out") is None:
        st = geo.get("strides") or [1] * sp
        dl = geo.get("dilations") or [1] * sp
        pads = geo.get("pads") or [0] * (2 * sp)
        op = geo.get("output_padding") or [0] * sp
        geo["out"] = [(int(X.shape[2 + i]) - 1) * st[i] + (wc.shape[2 + i] - 1) * dl[i] + 1 - pads[i] - pads[sp + i]
                      + op[i] for i in range(sp)]
    Cg = C // G
    g = Geo(geo, X.shape, (Mg * G, Cg) + tuple(wc.shape[2:]))
    if min(g.out + g.inp + [g.N]) <= 0:
        return None
    bias_at, weights = _bias(name, bias)
    KK = int(np.prod(g.k))
    # e < 0 (output_padding past the last tap's reach) leaves outputs no tap writes: they hold
    # the bias only, which the scatter never stores (fuzz seed 950004), so the gather form
    exact = (g.k == g.st and g.dl == [1, 1, 1] and min(g.pe) >= 0
             and all(o == i * s - b - e for o, i, s, b, e in zip(g.out, g.inp, g.st, g.pb, g.pe)))
    # W [C, Mg, k] -> per group [Mg, (c, k)] (gather) or [(m, k), c] (exact tiling)
    wg = wc.reshape(G, Cg, Mg, KK)
    if not exact:
        kc = _implicit_gemm(name, g, X, np.ascontiguousarray(wg.transpose(0, 2, 1, 3)).reshape(G, Mg, Cg * KK),
                            bias_at, epilogue, target, transposed=True)
    else:
        kc = _tiled_transpose(name, g, X, np.ascontiguousarray(wg.transpose(0, 2, 3, 1)).reshape(G, Mg * KK, Cg),
                              bias_at, epilogue, target)
    kc.weights.update(weights)
    return kc


def _tiled_transpose(name, g: Geo, X: Operand, a, bias_at, epilogue, target) -> KernelCode:
    KD, KH, KW = g.k
    ID, IH, IW = g.inp
    OD, OH, OW = g.out
    SD, SH, SW = g.st
    PD, PH, PW = g.pb
    KK = KD * KH * KW

    def b_elem(bv, k, n):
        return X.c_expr([bv[0], f"({bv[1]}) * {g.Cg} + {k}"] +
                        g.sp_index(f"({n}) / {IH * IW}", f"(({n}) / {IW}) % {IH}", f"({n}) % {IW}"))

    def epi_row(bv, r, row, n0, nlen):
        out = epilogue([bv[0], "fz_oc"] + g.sp_index("fz_od", "fz_oh", "fz_ow"), "fz_v")
        return f"""{{ /* row (m, kd, kh, kw) over input positions: output (i*s + k - pad), exactly one tap each */
    int64_t fz_mm = ({r}) / {KK}, fz_kk = ({r}) % {KK};
    int64_t fz_kd = fz_kk / {KH * KW}, fz_kh = (fz_kk / {KW}) % {KH}, fz_kw = fz_kk % {KW};
    int64_t fz_oc = ({bv[1]}) * {g.Mg} + fz_mm;
    float fz_bv = {bias_at("fz_oc")};
    int64_t fz_j = 0, fz_p = {n0};
    while (fz_j < {nlen}) {{
        int64_t fz_iw0 = fz_p % {IW}, fz_q = fz_p / {IW}, fz_ih = fz_q % {IH}, fz_id = fz_q / {IH};
        int64_t fz_e = fzk_min({IW}, fz_iw0 + {nlen} - fz_j);
        int64_t fz_od = fz_id * {SD} + fz_kd - {PD}, fz_oh = fz_ih * {SH} + fz_kh - {PH};
        const float *fz_src = {row} + fz_j - fz_iw0;
        if (fz_od >= 0 && fz_od < {OD} && fz_oh >= 0 && fz_oh < {OH})
            for (int64_t fz_iw = fz_iw0; fz_iw < fz_e; fz_iw++) {{
                int64_t fz_ow = fz_iw * {SW} + fz_kw - {PW};
                if (fz_ow < 0 || fz_ow >= {OW}) continue;
                float fz_v = fz_src[fz_iw] + fz_bv;
{indent(out, 16)}
            }}
        fz_j += fz_e - fz_iw0; fz_p += fz_e - fz_iw0;
    }}
}}"""

    return gemm(name, batch=[g.N, g.G], M=g.Mg * KK, N=ID * IH * IW, K=g.Cg, target=target, epilogue=None,
                epilogue_row=epi_row, a_const=a, a_group=lambda bv: bv[1], b_elem=b_elem,
                what=f"{'x'.join(map(str, g.k[3 - g.spatial:]))}/stride conv-transpose as gemm + scatter")
