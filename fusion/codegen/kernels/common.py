"""Shared C pieces: headers, the vector type for the target's width, integer
helpers, and the register-blocked GEMM micro-kernel.

Everything emitted at file scope is guarded with #ifndef so several kernels
(one per block) can live in one C file."""
from __future__ import annotations

from dataclasses import dataclass

HEADERS = """
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifndef FZK_COMMON
#define FZK_COMMON
/* floor / ceil division for b > 0 and any sign of a (window bounds with padding) */
static inline __attribute__((unused)) int64_t fzk_fdiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline __attribute__((unused)) int64_t fzk_cdiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
static inline __attribute__((unused)) int64_t fzk_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline __attribute__((unused)) int64_t fzk_max(int64_t a, int64_t b) { return a > b ? a : b; }
/* 64-byte aligned scratch; posix_memalign exists on every Android API level (aligned_alloc needs 28) */
static inline __attribute__((unused)) float *fzk_alloc(int64_t floats) {
    void *p = 0;
    size_t bytes = ((size_t)(floats > 0 ? floats : 1) * sizeof(float) + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) abort();
    return (float *)p;
}
#endif
"""


def vec_type(lanes: int) -> tuple[str, str]:
    """(type name, C definition) of a float vector of `lanes` lanes. aligned(4)
    makes loads/stores through it legal at any float address; lanes == 1 is the
    scalar fallback (plain float, same source otherwise)."""
    if lanes == 1:
        return "float", ""
    tn = f"fzk_v{lanes}f"
    return tn, (f"#ifndef FZK_V{lanes}F\n#define FZK_V{lanes}F\n"
                f"typedef float {tn} __attribute__((vector_size({4 * lanes}), aligned(4)));\n#endif\n")


@dataclass(frozen=True)
class GemmShape:
    """Register and cache blocking for a target."""
    lanes: int
    nv: int        # vectors per micro-tile row
    mr: int
    kc: int
    mc: int
    nc: int

    @property
    def nr(self) -> int:
        return self.lanes * self.nv


def rup(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def blocking(target, M: int, N: int, K: int) -> GemmShape:
    """MR x NR from the register file (accumulators + NR/lanes B vectors + one
    broadcast must fit), KC so a KC x NR panel of B takes half of L1, MC so an
    MC x KC block of A takes half of L2, NC so the MC x NC accumulation tile
    takes half of L2. Blocks are then evened out so no block is a sliver."""
    lanes = max(1, target.vector_bits // 32)
    regs = max(8, target.vector_registers)
    nv = 2 if regs <= 16 else 3
    mr = max(1, min(8, (regs - nv - 1) // nv))
    nr = lanes * nv
    kc_max = max(16, (target.l1_bytes // 2) // (nr * 4) // 8 * 8)
    kc = cdiv(K, cdiv(K, kc_max))
    mc_max = max(mr, (target.l2_bytes // 2) // (kc * 4) // mr * mr)
    mc = rup(cdiv(M, cdiv(M, mc_max)), mr)
    nc_max = max(nr, (target.l2_bytes // 2) // (mc * 4) // nr * nr)
    nc = min(nc_max, rup(N, nr))
    return GemmShape(lanes, nv, mr, kc, mc, nc)


def ukr_name(g: GemmShape) -> str:
    return f"fzk_ukr_{g.mr}x{g.nr}"


def micro_kernel(g: GemmShape) -> str:
    """C[MR x NR] (+)= A_panel[kc x MR] * B_panel[kc x NR]: MR*NV vector
    accumulators held in registers, one broadcast of A per row, NV loads of B
    per k. A advances MR floats per k (packed), B advances ldb floats."""
    vt, vdef = vec_type(g.lanes)
    name = ukr_name(g)
    L = g.lanes
    acc = [[f"c{i}_{j}" for j in range(g.nv)] for i in range(g.mr)]
    out = [vdef, f"#ifndef FZK_UKR_{g.mr}X{g.nr}", f"#define FZK_UKR_{g.mr}X{g.nr}",
           f"static inline void {name}(int64_t kc, const float *restrict a, const float *restrict b, int64_t ldb,",
           "                          float *restrict c, int64_t ldc, int accumulate) {"]
    out.append("    " + vt + " " + ", ".join(f"{v} = {{0}}" for row in acc for v in row) + ";")
    out.append("    if (accumulate) {")
    for i in range(g.mr):
        for j in range(g.nv):
            out.append(f"        {acc[i][j]} = *(const {vt} *)(c + {i} * ldc + {j * L});")
    out.append("    }")
    out.append("#pragma GCC unroll 8")
    out.append("    for (int64_t k = 0; k < kc; k++) {")
    for j in range(g.nv):
        out.append(f"        {vt} b{j} = *(const {vt} *)(b + {j * L});")
    for i in range(g.mr):
        out.append(f"        {{ float ai = a[{i}]; " + " ".join(f"{acc[i][j]} += ai * b{j};" for j in range(g.nv)) + " }")
    out.append(f"        a += {g.mr}; b += ldb;")
    out.append("    }")
    for i in range(g.mr):
        for j in range(g.nv):
            out.append(f"    *({vt} *)(c + {i} * ldc + {j * L}) = {acc[i][j]};")
    out.append("}")
    # The loops over KC slices and micro-tiles, one copy per file shared by every block: the
    # unrolled micro-kernel is compiled once, not once per block (compile time of big models).
    out.append(f"static __attribute__((noinline, unused)) void {tiles_name(g)}(int64_t K, int64_t KC, int64_t ms, int64_t ns,")
    out.append("        const float *a, const float *b, int64_t bstrip, int64_t ldb, float *ct, int64_t ldc) {")
    out.append("    for (int64_t pc = 0; pc < K; pc += KC) {")
    out.append("        int64_t kc = K - pc < KC ? K - pc : KC;")
    out.append("        for (int64_t js = 0; js < ns; js++)")
    out.append("            for (int64_t is = 0; is < ms; is++)")
    out.append(f"                {name}(kc, a + is * K * {g.mr} + pc * {g.mr}, b + js * bstrip + pc * ldb, ldb,")
    out.append(f"                       ct + is * {g.mr} * ldc + js * {g.nr}, ldc, pc > 0);")
    out.append("    }")
    out.append("}")
    out.append("#endif")
    return "\n".join(out) + "\n"


def tiles_name(g: GemmShape) -> str:
    return f"fzk_tiles_{g.mr}x{g.nr}"


def indent(code: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + ln if ln.strip() else ln for ln in code.splitlines())


def decode(var: str, dims: list[int], names: list[str]) -> str:
    """C statements splitting a flat row-major index `var` into named indices."""
    lines = []
    rest = var
    for i in range(len(dims) - 1, -1, -1):
        if i == 0:
            lines.append(f"int64_t {names[i]} = {rest};")
        else:
            lines.append(f"int64_t {names[i]} = {rest} % {dims[i]};")
            nxt = f"{names[i]}_q"
            lines.append(f"int64_t {nxt} = {rest} / {dims[i]};")
            rest = nxt
    return "\n".join(lines)


def phase_offset(w: str, sw: int, wq: int) -> str:
    """Offset of padded column `w` in a row stored as `sw` phases of width `wq`."""
    return f"({w})" if sw == 1 else f"(({w}) % {sw}) * {wq} + ({w}) / {sw}"


def phase_copy(x: str, pw: int, iw: int, wp: int, sw: int, wq: int, fill: str = "0.0f") -> str:
    """C filling one padded row `fz_o` (phase-split, see phase_offset) from input row reads `x` (uses
    fz_iw): per phase, a `fill` run, a plain strided copy of the interior, a `fill` run; bounds are
    constants."""
    lo, hi = min(pw, wp), min(pw + iw, wp)
    out = []
    for r in range(sw):
        # phase r holds padded columns w = q * sw + r, q in [0, wq)
        a = max(0, -(-(lo - r) // sw))
        b = max(a, -(-(hi - r) // sw))
        base = f"fz_o + {r * wq}"
        out.append(f"{{ float *fz_q = {base};\n"
                   f"  for (int64_t fz_w = 0; fz_w < {a}; fz_w++) fz_q[fz_w] = {fill};\n"
                   f"  for (int64_t fz_w = {a}; fz_w < {b}; fz_w++) {{ int64_t fz_iw = fz_w * {sw} + {r - pw}; fz_q[fz_w] = {x}; }}\n"
                   f"  for (int64_t fz_w = {b}; fz_w < {wq}; fz_w++) fz_q[fz_w] = {fill}; }}")
    return "\n".join(out)
