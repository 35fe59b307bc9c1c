/* QLinearMatMul: int8/uint8 matmul with numpy broadcasting of batch dims,
 * int32 accumulation of (a - a_zp)(b - b_zp), then onnxruntime's
 * requantization: scale = a_scale * b_scale / y_scale in float, value =
 * float(acc) * scale clamped to the output range around y_zp, rounded half
 * to even, plus y_zp. a's scale and zero point may be per row, b's per
 * column. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

static int is_q8(int32_t t) { return t == FZ_UINT8 || t == FZ_INT8; }

static int32_t q8_at(const fz_tensor *t, int64_t i) {
    return t->dtype == FZ_UINT8 ? (int32_t)((const uint8_t *)t->data)[i] : (int32_t)((const int8_t *)t->data)[i];
}

/* per-tensor (one value) or per-channel (n values: [n], [1, n] or [n, 1]) parameter */
static int param_ok(const fz_tensor *p, int64_t n) {
    int64_t c = fz_count(p->rank, p->shape);
    return p->rank <= 2 && (c == 1 || c == n);
}

int fz_op_QLinearMatMul(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "QLinearMatMul";
    (void)attrs;
    if (n_in < 8 || n_out < 1) FZ_FAIL("%s: expects 8 inputs and 1 output", op);
    for (int i = 0; i < 8; i++)
        if (fz_check(op, "an input", &in[i]) < 0) return -1;
    const fz_tensor *A = &in[0], *As = &in[1], *Az = &in[2], *B = &in[3], *Bs = &in[4], *Bz = &in[5], *Ys = &in[6],
                    *Yz = &in[7];
    if (!is_q8(A->dtype) || !is_q8(B->dtype) || !is_q8(Yz->dtype))
        FZ_FAIL("%s: a, b and y_zero_point must be int8 or uint8", op);
    if (Az->dtype != A->dtype || Bz->dtype != B->dtype) FZ_FAIL("%s: zero points must have their tensor's type", op);
    if (As->dtype != FZ_FLOAT || Bs->dtype != FZ_FLOAT || Ys->dtype != FZ_FLOAT) FZ_FAIL("%s: scales must be float32", op);
    if (A->rank < 1 || B->rank < 1) FZ_FAIL("%s: a and b must have rank >= 1", op);
    int64_t M = A->rank >= 2 ? A->shape[A->rank - 2] : 1, K = A->shape[A->rank - 1];
    int64_t Kb = B->rank >= 2 ? B->shape[B->rank - 2] : B->shape[0], N = B->rank >= 2 ? B->shape[B->rank - 1] : 1;
    if (K != Kb) FZ_FAIL("%s: inner dimensions differ (%lld vs %lld)", op, (long long)K, (long long)Kb);
    if (!param_ok(As, M) || !param_ok(Az, M) || !param_ok(Bs, N) || !param_ok(Bz, N) ||
        fz_count(Ys->rank, Ys->shape) != 1 || fz_count(Yz->rank, Yz->shape) != 1)
        FZ_FAIL("%s: scales and zero points must be per tensor (or per row of a / per column of b)", op);
    /* batch dims broadcast like numpy matmul */
    int ra = A->rank > 2 ? A->rank - 2 : 0, rb = B->rank > 2 ? B->rank - 2 : 0, rbat = ra > rb ? ra : rb;
    int64_t bat[FZ_MAX_RANK], sa[FZ_MAX_RANK], sb[FZ_MAX_RANK], shape[FZ_MAX_RANK];
    int64_t stA = M * K, stB = K * N;
    for (int d = rbat - 1; d >= 0; d--) {
        int da = d - (rbat - ra), db = d - (rbat - rb);
        int64_t ea = da >= 0 ? A->shape[da] : 1, eb = db >= 0 ? B->shape[db] : 1;
        if (ea != eb && ea != 1 && eb != 1) FZ_FAIL("%s: batch dimensions %lld and %lld do not broadcast", op, (long long)ea, (long long)eb);
        bat[d] = ea > eb ? ea : eb;
        if (ea == 0 || eb == 0) bat[d] = 0;
        sa[d] = ea == 1 ? 0 : stA;
        sb[d] = eb == 1 ? 0 : stB;
        stA *= ea;
        stB *= eb;
    }
    int orank = 0;
    for (int d = 0; d < rbat; d++) shape[orank++] = bat[d];
    if (A->rank >= 2) shape[orank++] = M;
    if (B->rank >= 2) shape[orank++] = N;
    if (fz_out_dtype(op, 0, &out[0], Yz->dtype) || fz_set_output(op, 0, &out[0], orank, shape)) return -1;
    int64_t nb = fz_count(rbat, bat), per_a = fz_count(As->rank, As->shape), per_b = fz_count(Bs->rank, Bs->shape);
    const float *as = (const float *)As->data, *bs = (const float *)Bs->data, ys = *(const float *)Ys->data;
    int32_t yz = q8_at(Yz, 0), qmin = Yz->dtype == FZ_UINT8 ? 0 : -128, qmax = Yz->dtype == FZ_UINT8 ? 255 : 127;
    int64_t idx[FZ_MAX_RANK] = {0};
    for (int64_t t = 0; t < nb; t++) {
        int64_t oa = 0, ob = 0;
        for (int d = 0; d < rbat; d++) { oa += idx[d] * sa[d]; ob += idx[d] * sb[d]; }
        for (int64_t m = 0; m < M; m++) {
            int32_t az = q8_at(Az, fz_count(Az->rank, Az->shape) > 1 ? m : 0);
            for (int64_t n = 0; n < N; n++) {
                int32_t bz = q8_at(Bz, fz_count(Bz->rank, Bz->shape) > 1 ? n : 0);
                int64_t acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += (int64_t)(q8_at(A, oa + m * K + k) - az) * (q8_at(B, ob + k * N + n) - bz);
                float scale = as[per_a > 1 ? m : 0] * bs[per_b > 1 ? n : 0] / ys;
                float v = (float)(int32_t)acc * scale;
                float lo = (float)(qmin - yz), hi = (float)(qmax - yz);
                v = v < lo ? lo : (v > hi ? hi : v);
                int32_t q = (int32_t)nearbyintf(v == v ? v : 0.0f) + yz;
                int64_t o = (t * M + m) * N + n;
                if (Yz->dtype == FZ_UINT8) ((uint8_t *)out[0].data)[o] = (uint8_t)q;
                else ((int8_t *)out[0].data)[o] = (int8_t)q;
            }
        }
        for (int d = rbat - 1; d >= 0; d--) {
            if (++idx[d] < bat[d]) break;
            idx[d] = 0;
        }
    }
    return 0;
}
