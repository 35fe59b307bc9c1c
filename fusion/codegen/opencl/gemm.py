"""Local-memory tiled GEMM for MatMul and Gemm anchors, and 2-D Conv as implicit GEMM.

The CPU fast kernels are C text, so the GPU gets its own: a work-group of
TS x TS work-items computes a TS x TS tile of C; each step stages a TS x TS
tile of A and of B in __local memory (one element per work-item, then a
barrier) and accumulates from there, so every global element is read
K/TS times fewer. Operands are read through the anchor's composed prologue
(producers inlined) and every block output is written by the composed
epilogue, both from fusion/codegen/anchors.py's AnchorContext (the same
machinery as the CPU kernels; it prints C with `A->buf[...]` loads, which we
keep by giving the kernel an `A` struct of typed __global pointers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion.ir import expr as E
from fusion.codegen.loops import Function
from fusion.codegen.opencl.clprint import cltype, storage_order

TS = 16


@dataclass
class Tile:
    fn: Function
    batch: list[int]
    M: int
    N: int
    K: int
    a_expr: str            # A element at (b..., m, k) as OpenCL C (vars bt_*, m, ka)
    b_expr: str
    epilogue: str          # statements storing every block output from `acc` at (b..., m, n)
    ts: int = TS

    @property
    def total(self) -> int:
        return int(np.prod(self.batch or [1])) * self.tiles * self.ts * self.ts

    @property
    def local(self) -> int:
        return self.ts * self.ts

    @property
    def global_size(self) -> int:
        return self.total

    @property
    def rm(self) -> int:
        """Outputs per work-item along each axis: 2x2 register blocking once
        the matrix fills 32x32 tiles (each staged element then feeds 2 FMAs)."""
        return 2 if self.M >= 2 * self.ts and self.N >= 2 * self.ts else 1

    @property
    def tiles(self) -> int:
        t = self.ts * self.rm
        return -(-self.M // t) * -(-self.N // t)

    def kernel(self, kname: str, places, fp16: bool = False) -> tuple[str, list[str]]:
        fn, ts, r = self.fn, self.ts, self.rm
        tm = ts * r                      # output tile edge; K advances by ts per step
        written = {b.name for b in fn.buffers if b.role == "out"}
        storages = sorted({places[b.name].storage for b in fn.buffers}, key=storage_order)
        outs = {places[n].storage for n in written}
        params = ", ".join(f"__global {'' if s in outs else 'const '}char *{s}" for s in storages)
        L = [f"/* block {fn.name}: {fn.schedule} */", f"struct {kname}_args {{"]
        for b in fn.buffers:
            c = "" if b.name in written else "const "
            L.append(f"    __global {c}{cltype(b.dtype)} *{b.name};")
        L.append("};")
        L.append(f"__kernel __attribute__((reqd_work_group_size({ts * ts}, 1, 1))) void {kname}({params}) {{")
        L.append(f"    struct {kname}_args A_ = {{ " + ", ".join(
            f"(__global {'' if b.name in written else 'const '}{cltype(b.dtype)} *)({places[b.name].storage} + "
            f"{places[b.name].offset})" for b in fn.buffers) + " };")
        L.append(f"    const struct {kname}_args *A = &A_;")
        L.append(f"    __local float As[{tm}][{ts + 1}], Bs[{ts}][{tm + 1}];   /* +1: no bank conflicts */")
        L.append("    const long grp = (long)get_group_id(0);")
        L.append("    const int l = (int)get_local_id(0);")
        L.append(f"    const int ly = l / {ts}, lx = l % {ts};")
        tn = -(-self.N // tm)
        L.append(f"    const long bt = grp / {self.tiles}L, t_ = grp % {self.tiles}L;")
        L.append(f"    const long m0 = (t_ / {tn}L) * {tm}, n0 = (t_ % {tn}L) * {tm};")
        stride = 1
        for d in range(len(self.batch) - 1, -1, -1):
            L.append(f"    const long bt_{d} = (bt / {stride}L) % {self.batch[d]}L;")
            stride *= self.batch[d]
        L.append(f"    float accs[{r}][{r}];")
        L.append(f"    for (int i = 0; i < {r}; ++i) for (int j = 0; j < {r}; ++j) accs[i][j] = 0.0f;")
        L.append(f"    for (long k0 = 0; k0 < {self.K}L; k0 += {ts}) {{")
        # each work-item stages r elements of each tile (r * 256 = tile size)
        L.append(f"        for (int q = 0; q < {r}; ++q) {{")
        L.append(f"            const int e = l + q * {ts * ts};")
        L.append(f"            {{ const long m = m0 + e / {ts}, ka = k0 + e % {ts};")
        L.append(f"              As[e / {ts}][e % {ts}] = (m < {self.M}L && ka < {self.K}L) ? (float)({self.a_expr}) : 0.0f; }}")
        L.append(f"            {{ const long kb = k0 + e / {tm}, n = n0 + e % {tm};")
        L.append(f"              Bs[e / {tm}][e % {tm}] = (kb < {self.K}L && n < {self.N}L) ? (float)({self.b_expr}) : 0.0f; }}")
        L.append("        }")
        L.append("        barrier(CLK_LOCAL_MEM_FENCE);")
        L.append(f"        for (int kk = 0; kk < {ts}; ++kk) {{")
        L.append(f"            float a_[{r}], b_[{r}];")
        L.append(f"            for (int i = 0; i < {r}; ++i) {{ a_[i] = As[ly + i * {ts}][kk]; b_[i] = Bs[kk][lx + i * {ts}]; }}")
        L.append(f"            for (int i = 0; i < {r}; ++i) for (int j = 0; j < {r}; ++j) accs[i][j] += a_[i] * b_[j];")
        L.append("        }")
        L.append("        barrier(CLK_LOCAL_MEM_FENCE);")
        L.append("    }")
        L.append(f"    for (int i = 0; i < {r}; ++i) for (int j = 0; j < {r}; ++j) {{")
        L.append(f"        const long m = m0 + ly + i * {ts}, n = n0 + lx + j * {ts};")
        L.append("        const float acc = accs[i][j];")
        L.append(f"        if (m < {self.M}L && n < {self.N}L) {self.epilogue}")
        L.append("    }")
        L.append("}")
        return "\n".join(L), storages


def tiled_block(em, block, outs):
    """A Function standing for the tiled kernel (its description kept in
    em.tiles), or None: plain loop nest."""
    from fusion.codegen import anchors
    a = block.anchor
    if a is None or a.op not in ("MatMul", "Gemm", "Conv") or em.fp16:
        return None
    if any(v is not None and v.dtype != np.float32 for v in list(a.inputs) + a.outputs):
        return None
    if em.target.local_mem_bytes and 2 * 2 * TS * (2 * TS + 1) * 4 > em.target.local_mem_bytes:
        return None
    if em.target.max_work_group and TS * TS > em.target.max_work_group:
        return None
    ctx = anchors.AnchorContext(em, block, outs)
    try:
        ctx.epilogue()
        desc = _describe(ctx)
    except anchors._Refuse:
        return None
    if desc is None:
        return None
    batch, M, N, K, a_expr, b_expr, epi = desc
    if M < TS // 2 or N < TS // 2 or K < TS:
        return None   # a matrix-vector shape: most of a 16x16 tile would idle; the plain nest is better
    text = a_expr + b_expr + epi
    used = {n: v for n, v in ctx.comp.loads.items() if f"A->{n}[" in text}
    fn = Function(block.name, em.buffers_for(used, outs), [], [], [],
                  schedule=f"tiled GEMM {M}x{N}x{K}" + (f" x batch {batch}" if batch else "") +
                  f", {TS}x{TS} work-groups, A/B tiles in local memory")
    em.tiles[block.name] = Tile(fn, batch, M, N, K, a_expr, b_expr, epi)
    fn.schedule += f", {em.tiles[block.name].rm}x{em.tiles[block.name].rm} outputs per work-item"
    return fn


def _batch_index(shape, nb: int, last2: list[str]) -> list[str]:
    """Index strings of an operand of `shape` for output batch dims bt_0..:
    numpy broadcasting over the leading dims, then the two matrix dims."""
    r = len(shape)
    own = r - 2
    idx = []
    for d in range(own):
        od = nb - own + d
        idx.append("0" if int(shape[d]) == 1 or od < 0 else f"bt_{od}")
    return idx + last2


def _describe(ctx):
    a = ctx.anchor
    if a.op == "Conv":
        return _describe_conv(ctx)
    if a.op == "MatMul":
        x, w = a.inputs
        if x.rank < 2 or w.rank < 2:
            return None
        out = [int(d) for d in a.outputs[0].shape]
        batch = out[:-2]
        M, N, K = int(x.shape[-2]), int(w.shape[-1]), int(x.shape[-1])
        A = ctx.operand(x, x.shape)
        B = ctx.operand(w, w.shape)
        epi = ctx.epilogue()
        nb = len(batch)
        a_expr = A.c_expr(_batch_index(x.shape, nb, ["m", "ka"]))
        b_expr = B.c_expr(_batch_index(w.shape, nb, ["kb", "n"]))
        return batch, M, N, K, a_expr, b_expr, epi([f"bt_{d}" for d in range(nb)] + ["m", "n"], "acc")
    # Gemm: alpha * A' B' + beta * C, transposes folded into the operand index.
    from fusion.codegen.anchors import _scaled, gemm_operands
    g = gemm_operands(ctx)
    M, N, K, A, B = g.M, g.N, g.K, g.A, g.B
    acc = _scaled(g.alpha, "acc")
    if g.bias is not None:
        acc = f"{acc} + {_scaled(g.beta, g.bias(['m', 'n']))}"
    epi = ctx.epilogue()
    return [], M, N, K, A.c_expr(["m", "ka"]), B.c_expr(["kb", "n"]), epi(["m", "n"], acc)


def _describe_conv(ctx):
    """2-D Conv as implicit GEMM, per (image, group): C[m, n] = sum_k W[m, k] * X'[k, n]
    with k = (input channel, ky, kx) and n = (oy, ox); X' is never materialized,
    its tile loads compute the input position (zero outside the padding)."""
    from fusion.ops.linear import conv_geometry
    a = ctx.anchor
    x, w = a.inputs[0], a.inputs[1]
    b = a.input(2)
    if x.rank != 4:
        return None
    kernel, strides, dil, pb, _, out_sp = conv_geometry(a)
    group = int(a.attrs.get("group", 1))
    nb, cin, H, Wd = (int(d) for d in x.shape)
    cout = int(w.shape[0])
    kh, kw = (int(k) for k in kernel)
    ho, wo = (int(d) for d in out_sp)
    cg, mg = cin // group, cout // group
    M, N, K = mg, ho * wo, cg * kh * kw
    W_ = ctx.operand(w, w.shape)
    X = ctx.operand(x, x.shape)
    B = ctx.operand(b, b.shape) if b is not None else None
    epi = ctx.epilogue()
    co = "(bt_1 * %dL + m)" % mg
    a_expr = W_.c_expr([co, f"(ka / {kh * kw}L)", f"((ka / {kw}L) % {kh}L)", f"(ka % {kw}L)"])
    iy = f"((n / {wo}L) * {strides[0]}L - {pb[0]}L + ((kb / {kw}L) % {kh}L) * {dil[0]}L)"
    ix = f"((n % {wo}L) * {strides[1]}L - {pb[1]}L + (kb % {kw}L) * {dil[1]}L)"
    x_expr = X.c_expr(["bt_0", f"(bt_1 * {cg}L + kb / {kh * kw}L)", iy, ix])
    b_expr = f"(({iy} >= 0 && {iy} < {H}L && {ix} >= 0 && {ix} < {Wd}L) ? (float)({x_expr}) : 0.0f)"
    acc = "acc" if B is None else f"(acc + {B.c_expr([co.replace('m)', 'm)')])})"
    co_e = "(bt_1 * %dL + m)" % mg
    out = epi(["bt_0", co_e, f"(n / {wo}L)", f"(n % {wo}L)"], acc)
    return [nb, group], M, N, K, a_expr, b_expr, out
