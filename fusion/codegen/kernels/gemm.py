"""The blocked, packed, multi-threaded GEMM that MatMul, Gemm and the
convolutions (as implicit GEMM) share.

    out[b, m, n] = sum_k A[b, m, k] * B[b, k, n]      then epilogue(b, m, n, acc)

Work items are (batch, block of MC rows, group of N columns), split over
threads with fz_parallel_for. Per item:
  * A's MC x K rows are packed once into MR-row strips ([strip][k][MR], zero
    padded) by evaluating the caller's expression (fused producers run once per
    element per N group; consecutive items of one call reuse the packed rows),
    or read from the compile-time packed constant;
  * for each NC chunk of the item's columns, B is packed into NR-column panels
    ([strip][k][NR], zero padded) from the caller's expression or a custom
    packer (convolution's implicit im2col), or read from the compile-time
    packed constant in the same layout, so the micro-kernel streams every
    panel contiguously (a row layout with a long stride costs a TLB miss
    every other k). With constant A and run-time B (convolutions) an item
    covers all M blocks, so each packed chunk serves every block;
  * the micro-kernel accumulates MR x NR tiles over K in KC slices into an
    MC x NC tile buffer (B's KC x NR panel stays in L1, A's MC x KC block in L2);
  * the epilogue runs on each finished tile row, element by element.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fusion.codegen.cprint import fast_math
from fusion.codegen.kernels.api import KernelCode
from fusion.codegen.kernels.common import (HEADERS, GemmShape, blocking, cdiv, decode, indent, micro_kernel, rup,
                                           tiles_name)


def pack_a_const(a: np.ndarray, mr: int) -> np.ndarray:
    """[G, M, K] -> [G, ceil(M/MR), K, MR], zero padded rows."""
    G, M, K = a.shape
    Mp = rup(M, mr)
    buf = np.zeros((G, Mp, K), np.float32)
    buf[:, :M] = a
    return np.ascontiguousarray(buf.reshape(G, Mp // mr, mr, K).transpose(0, 1, 3, 2))


def pack_b_const(b: np.ndarray, nr: int) -> np.ndarray:
    """[G, K, N] -> [G, ceil(N/NR), K, NR], zero padded columns."""
    G, K, N = b.shape
    Np = rup(N, nr)
    buf = np.zeros((G, K, Np), np.float32)
    buf[:, :, :N] = b
    return np.ascontiguousarray(buf.reshape(G, K, Np // nr, nr).transpose(0, 2, 1, 3))


@dataclass(frozen=True)
class Panel:
    """Layout of a run-time packed B chunk, for custom packers: NR-column strips of K rows each."""
    buf: str        # C pointer to the chunk
    nr: int
    K: int

    @property
    def strip(self) -> int:
        return self.K * self.nr

    def row(self, k: str) -> str:
        """C pointer to row k of the first strip."""
        return f"({self.buf} + ({k}) * {self.nr})"

    def col(self, j: str) -> str:
        """C offset of chunk column j from a row pointer."""
        return f"((uint64_t)({j}) / {self.nr} * {self.strip} + (uint64_t)({j}) % {self.nr})"


def _c_fast_math(fn):
    """The kernel is C that includes fz_runtime.h: the operand and epilogue callbacks
    may print its vectorizable math functions (cprint.fast_math)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with fast_math():
            return fn(*args, **kwargs)
    return wrapped


def fit_columns(g: GemmShape, N: int, target) -> GemmShape:
    """The micro-tile width (vectors per row, NV >= 2) that pads N to the fewest
    columns, ties to the widest. Attention's head dims (26, 32, 64) fill a 3-vector
    AVX-512 tile to 54-67% only, 2 vectors fill them to 81-100%: batched GEMMs ran
    1.4-1.6x faster, N = 128 and 312 5-10%, measured on x86 AVX-512. With 4-lane
    vectors (NEON) the blocking is left as it is: not measured on an ARM core.
    MR is refitted to the registers left, NC rounded down to the new NR."""
    if g.lanes < 8:
        return g
    regs = max(8, target.vector_registers)
    best = min(range(g.nv, 1, -1), key=lambda nv: rup(N, g.lanes * nv), default=g.nv)
    if best == g.nv:
        return g
    mr = max(1, min(8, (regs - best - 1) // best))
    nr = g.lanes * best
    mc = rup(g.mc, mr)
    nc = max(nr, g.nc // nr * nr)
    return GemmShape(g.lanes, best, mr, g.kc, mc, nc)


@_c_fast_math
def gemm(name: str, *, batch: list[int], M: int, N: int, K: int, target,
         epilogue: Callable[[list[str], str, str, str], str],
         a_const: np.ndarray | None = None, a_group: Callable[[list[str]], str] | None = None,
         a_elem: Callable[[list[str], str, str], str] | None = None,
         a_pack: Callable[[list[str], str, str, str], str] | None = None,
         b_const: np.ndarray | None = None, b_group: Callable[[list[str]], str] | None = None,
         b_elem: Callable[[list[str], str, str], str] | None = None,
         b_pack: Callable[[list[str], Panel, str, str], str] | None = None,
         epilogue_row: Callable[[list[str], str, str, str, str], str] | None = None,
         epilogue_col: Callable[[list[str], str, str, str, str], str] | None = None,
         what: str = "gemm") -> KernelCode:
    """Generate the kernel. a_const/b_const are [G, M, K]/[G, K, N] with the group picked per batch
    index by a_group/b_group (C expr); otherwise a_elem(bvars, m, k) / b_elem(bvars, k, n) give the
    element, or b_pack(bvars, panel, n0, nlen) is C filling panel.row(k)[panel.col(j)] = B[k, n0 + j]
    for k < K, j < nlen; a_pack(bvars, dst, m0, rows) is C filling one MR-row strip,
    dst[k * MR + r] = A[m0 + r, k] for k < K, r < rows (<= MR), zeros for rows <= r < MR
    (transposed convolutions use it to decode each position once per strip, not per element).
    epilogue(bvars, m, n, acc) is C consuming one finished element; epilogue_row(bvars, m, row, n0, nlen),
    when given, replaces the per-element loop over a finished row: C consuming row[j] = out[m, n0 + j]
    for j < nlen (convolutions use it to walk output rows without dividing); epilogue_col(bvars, n, col,
    m0, mlen), when given instead, consumes a finished tile column, col[i] = out[m0 + i, n] for i < mlen
    (transposed convolutions: the output positions are the GEMM's rows but contiguous in memory, so the
    epilogue runs along them, vectorized, instead of storing with a stride of one plane per element)."""
    g = fit_columns(blocking(target, M, N, K), N, target)
    mr, nr, kc, mc, nc = g.mr, g.nr, g.kc, g.mc, g.nc
    nbatch = int(np.prod(batch)) if batch else 1
    nm = cdiv(M, mc)
    # enough items that every core gets several, but groups no narrower than one NR strip
    want = 4 * max(1, target.cores)
    # constant A with run-time B (convolutions): an item covers all M blocks, so each packed B
    # chunk is reused by every block instead of being packed once per block
    b_outer = a_const is not None and b_const is None and nm > 1
    nmi = 1 if b_outer else nm
    ng = max(1, min(cdiv(N, nr), cdiv(want, nbatch * nmi)))
    ngs = rup(cdiv(N, ng), nr)
    # Narrower groups when they even out the threads' shares: 10 strips in groups of 2 are 5
    # items, 3 + 2 on two cores; in groups of 1 they are 5 + 5 (EfficientNet's 1x1 convs at 7x7
    # have 4-10 strips in all). Shares counted in strips, ties to the wider groups.
    cores = max(1, target.cores)
    strips = cdiv(N, nr)
    share = lambda q: cdiv(nbatch * nmi * cdiv(strips, q), cores) * q  # noqa: E731
    ngs = nr * min(range(ngs // nr, 0, -1), key=lambda q: (share(q), -q))
    ng = cdiv(N, ngs)
    nc = min(nc, ngs)
    items = nbatch * nmi * ng
    bvars = [f"fz_b{i}" for i in range(len(batch))]
    weights: dict[str, np.ndarray] = {}
    ldc = rup(nc, nr)

    w = []
    w.append(f"struct {name}_task {{ const struct {name}_args *A; }};")
    w.append(f"static void {name}_work(void *fz_arg, int64_t fz_it0, int64_t fz_it1) {{")
    w.append(f"    const struct {name}_args *A = ((const struct {name}_task *)fz_arg)->A;")
    if a_const is None:
        w.append(f"    float *fz_ap = fzk_alloc({rup(mc, mr) * K});")
        w.append("    int64_t fz_apk = -1;  /* (batch, M block) whose rows fz_ap holds */")
    if b_const is None:
        w.append(f"    float *fz_bp = fzk_alloc({K * ldc});")  # ldc is NC rounded up to NR
    w.append(f"    float *fz_ct = fzk_alloc({rup(mc, mr) * ldc});")
    w.append("    for (int64_t fz_it = fz_it0; fz_it < fz_it1; fz_it++) {")
    inner = []
    inner.append(f"int64_t fz_jg = fz_it % {ng}; int64_t fz_r0 = fz_it / {ng};")
    inner.append(f"int64_t fz_ib = fz_r0 % {nmi}; int64_t fz_bf = fz_r0 / {nmi}; (void)fz_bf; (void)fz_ib;")
    if batch:
        inner.append(decode("fz_bf", list(batch), bvars))
        inner.append(" ".join(f"(void){v};" for v in bvars))
    mset = (f"int64_t fz_m0 = fz_ib * {mc}; int64_t fz_mlen = fzk_min({mc}, {M} - fz_m0);\n"
            f"int64_t fz_ms = (fz_mlen + {mr - 1}) / {mr};")
    if not b_outer:
        inner.append(mset)
    if a_const is None:
        # pack MR-row strips over all of K; rows past M are zeros
        # consecutive items of one call share their A rows (N groups vary fastest): pack them once
        if a_pack is not None:
            strip = a_pack(bvars, "fz_dst", "fz_m0 + fz_s * %d" % mr, "fzk_min(%d, %d - fz_m0 - fz_s * %d)" % (mr, M, mr))
            inner.append(f"""if (fz_r0 != fz_apk) for (int64_t fz_s = 0; fz_s < fz_ms; fz_s++) {{
    float *fz_dst = fz_ap + fz_s * {K * mr};
{indent(strip, 4)}
}}""")
        else:
            val = a_elem(bvars, "fz_m", "fz_k")
            inner.append(f"""if (fz_r0 != fz_apk) for (int64_t fz_s = 0; fz_s < fz_ms; fz_s++) {{
    float *fz_dst = fz_ap + fz_s * {K * mr};
    if (fz_m0 + fz_s * {mr} + {mr} <= {M}) {{
        for (int64_t fz_k = 0; fz_k < {K}; fz_k++)
            for (int64_t fz_r = 0; fz_r < {mr}; fz_r++) {{
                int64_t fz_m = fz_m0 + fz_s * {mr} + fz_r;
                fz_dst[fz_k * {mr} + fz_r] = {val};
            }}
    }} else {{
        for (int64_t fz_k = 0; fz_k < {K}; fz_k++)
            for (int64_t fz_r = 0; fz_r < {mr}; fz_r++) {{
                int64_t fz_m = fz_m0 + fz_s * {mr} + fz_r;
                fz_dst[fz_k * {mr} + fz_r] = fz_m < {M} ? ({val}) : 0.0f;
            }}
    }}
}}""")
        inner.append("fz_apk = fz_r0;\nconst float *fz_a = fz_ap;")
    else:
        G = a_const.shape[0]
        weights[f"{name}_pa"] = pack_a_const(a_const.astype(np.float32), mr)
        grp = a_group(bvars) if (a_group and G > 1) else "0"
        aptr = f"const float *fz_a = A->{name}_pa + (({grp}) * {cdiv(M, mr)} + fz_m0 / {mr}) * {K * mr};"
        if b_outer:
            mset += "\n" + aptr
        else:
            inner.append(aptr)
    inner.append(f"int64_t fz_n1 = fzk_min({N}, (fz_jg + 1) * {ngs});")
    inner.append(f"for (int64_t fz_jc = fz_jg * {ngs}; fz_jc < fz_n1; fz_jc += {nc}) {{")
    ch = []
    ch.append(f"int64_t fz_nlen = fzk_min({nc}, fz_n1 - fz_jc); int64_t fz_ns = (fz_nlen + {nr - 1}) / {nr};")
    if b_const is None:
        panel = Panel("fz_bp", nr, K)
        row, col = panel.row, panel.col
        if b_pack is not None:
            ch.append(b_pack(bvars, panel, "fz_jc", "fz_nlen"))
        else:
            val = b_elem(bvars, "fz_k", "fz_n")
            ch.append(f"""for (int64_t fz_s = 0; fz_s < fz_ns; fz_s++) {{
    float *fz_dst = fz_bp + fz_s * {K * nr};
    int64_t fz_w = fzk_min({nr}, fz_nlen - fz_s * {nr});
    for (int64_t fz_k = 0; fz_k < {K}; fz_k++)
        for (int64_t fz_r = 0; fz_r < fz_w; fz_r++) {{ int64_t fz_n = fz_jc + fz_s * {nr} + fz_r; fz_dst[fz_k * {nr} + fz_r] = {val}; }}
}}""")
        ch.append(f"""if (fz_nlen % {nr})
    for (int64_t fz_k = 0; fz_k < {K}; fz_k++)
        for (int64_t fz_j = fz_nlen; fz_j < fz_ns * {nr}; fz_j++) {row("fz_k")}[{col("fz_j")}] = 0.0f;""")
        ch.append(f"const float *fz_b = fz_bp; const int64_t fz_bstrip = {K * nr}, fz_ldb = {nr};")
    else:
        G = b_const.shape[0]
        weights[f"{name}_pb"] = pack_b_const(b_const.astype(np.float32), nr)
        grp = b_group(bvars) if (b_group and G > 1) else "0"
        ch.append(f"const float *fz_b = A->{name}_pb + (({grp}) * {cdiv(N, nr)} + fz_jc / {nr}) * {K * nr};")
        ch.append(f"const int64_t fz_bstrip = {K * nr}, fz_ldb = {nr};")
    ce = []
    ce.append(f"{tiles_name(g)}({K}, {kc}, fz_ms, fz_ns, fz_a, fz_b, fz_bstrip, fz_ldb, fz_ct, {ldc});")
    if epilogue_col is not None:
        erow = ""
    elif epilogue_row is not None:
        erow = epilogue_row(bvars, "fz_m", "fz_crow", "fz_jc", "fz_nlen")
    else:
        erow = f"""for (int64_t fz_j = 0; fz_j < fz_nlen; fz_j++) {{
    int64_t fz_n = fz_jc + fz_j;
    float fz_acc = fz_crow[fz_j];
{indent(epilogue(bvars, "fz_m", "fz_n", "fz_acc"), 4)}
}}"""
    if epilogue_col is not None:
        ecol = epilogue_col(bvars, "fz_n", "fz_ccol", "fz_m0", "fz_mlen")
        ce.append(f"""for (int64_t fz_j = 0; fz_j < fz_nlen; fz_j++) {{
    int64_t fz_n = fz_jc + fz_j;
    float fz_ccol[{rup(mc, mr)}];
    for (int64_t fz_i = 0; fz_i < fz_mlen; fz_i++) fz_ccol[fz_i] = fz_ct[fz_i * {ldc} + fz_j];
{indent(ecol, 4)}
}}""")
    else:
        ce.append(f"""for (int64_t fz_i = 0; fz_i < fz_mlen; fz_i++) {{
    int64_t fz_m = fz_m0 + fz_i;
    const float *fz_crow = fz_ct + fz_i * {ldc};
{indent(erow, 4)}
}}""")
    if b_outer:
        ch.append(f"for (int64_t fz_ib = 0; fz_ib < {nm}; fz_ib++) {{\n{indent(mset, 4)}\n{indent(chr(10).join(ce), 4)}\n}}")
    else:
        ch.extend(ce)
    inner.append(indent("\n".join(ch), 4))
    inner.append("}")
    w.append(indent("\n".join(inner), 8))
    w.append("    }")
    if a_const is None:
        w.append("    free(fz_ap);")
    if b_const is None:
        w.append("    free(fz_bp);")
    w.append("    free(fz_ct);")
    w.append("}")
    functions = HEADERS + micro_kernel(g) + "\n".join(w) + "\n"
    body = (f"{{ struct {name}_task fz_task = {{ A }}; fz_parallel_for({items}, {name}_work, &fz_task); }}\n")
    sched = (f"{what} {mr}x{nr} micro-kernel ({g.lanes}-lane vectors), KC={kc} MC={mc} NC={nc}, "
             f"A {'pre-packed' if a_const is not None else 'packed at run time'}, "
             f"B {'pre-packed' if b_const is not None else 'packed at run time'}, "
             f"{items} work items over batch x {'N groups (all M blocks per item)' if b_outer else 'M blocks x N groups'}")
    return KernelCode(functions=functions, body=body, weights=weights, schedule=sched)
