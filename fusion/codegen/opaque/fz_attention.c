/* Attention (opset 23/24), float32 and float64: 4-D [B, H, S, D] or 3-D
 * [B, S, H*D] inputs, grouped KV heads, boolean or additive masks (shorter
 * masks padded with "masked"), is_causal (aligned after the past), past
 * key/value caches and present outputs, nonpad_kv_seqlen, scale, softcap,
 * qk_matmul_output modes 0-3, all in onnxruntime's order (softcap before the
 * mask). A row whose keys are all masked gives zeros. float64 is computed in
 * double throughout (onnxruntime's float64 differs from numpy by ~1e-8).
 * One query row at a time: scores in double, nothing materialized beyond a
 * row, so memory stays O(T) whatever the sequence length. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

typedef struct {
    int64_t B, Hq, Hk, Sq, Skv, Sp, T, Dk, Dv;
    int rank3;
} att_dims;

/* element offset of [b, h, s, d] in a 4-D tensor or its 3-D [B, S, H*D] form */
static int64_t at4(int rank3, int64_t H, int64_t S, int64_t D, int64_t b, int64_t h, int64_t s,
                   int64_t d) {
    return rank3 ? ((b * S + s) * H + h) * D + d : ((b * H + h) * S + s) * D + d;
}

#define FZ_ATTENTION_IMPL(T_, SUF)                                                                           \
    static int attention_##SUF(const att_dims *g, const fz_tensor *in, int n_in, fz_tensor *out, int n_out,  \
                               const struct fz_attrs_Attention *a, double *row) {                            \
        const T_ *q = (const T_ *)in[0].data, *k = (const T_ *)in[1].data, *v = (const T_ *)in[2].data;      \
        const fz_tensor *mask = fz_present(in, n_in, 3) ? &in[3] : NULL;                                     \
        const T_ *pk = fz_present(in, n_in, 4) ? (const T_ *)in[4].data : NULL;                              \
        const T_ *pv = fz_present(in, n_in, 5) ? (const T_ *)in[5].data : NULL;                              \
        const fz_tensor *nonpad = fz_present(in, n_in, 6) ? &in[6] : NULL;                                   \
        T_ *y = (T_ *)out[0].data;                                                                           \
        T_ *prk = n_out > 1 && out[1].dtype ? (T_ *)out[1].data : NULL;                                      \
        T_ *prv = n_out > 2 && out[2].dtype ? (T_ *)out[2].data : NULL;                                      \
        T_ *qko = n_out > 3 && out[3].dtype ? (T_ *)out[3].data : NULL;                                      \
        int64_t B = g->B, Hq = g->Hq, Hk = g->Hk, Sq = g->Sq, Skv = g->Skv, Sp = g->Sp, T = g->T;            \
        int64_t Dk = g->Dk, Dv = g->Dv, grp = Hq / Hk;                                                       \
        double scale = a->has_scale ? a->scale : 1.0 / sqrt((double)Dk);                                     \
        T_ s = (T_)sqrt(scale);                                                                              \
        /* present = concat(past, new) along the sequence */                                                 \
        for (int64_t b = 0; b < B; b++)                                                                      \
            for (int64_t h = 0; h < Hk; h++)                                                                 \
                for (int64_t j = 0; j < T; j++) {                                                            \
                    if (prk)                                                                                 \
                        for (int64_t d = 0; d < Dk; d++)                                                     \
                            prk[((b * Hk + h) * T + j) * Dk + d] =                                           \
                                j < Sp ? pk[((b * Hk + h) * Sp + j) * Dk + d]                                \
                                       : k[at4(g->rank3, Hk, Skv, Dk, b, h, j - Sp, d)];                  \
                    if (prv)                                                                                 \
                        for (int64_t d = 0; d < Dv; d++)                                                     \
                            prv[((b * Hk + h) * T + j) * Dv + d] =                                           \
                                j < Sp ? pv[((b * Hk + h) * Sp + j) * Dv + d]                                \
                                       : v[at4(g->rank3, Hk, Skv, Dv, b, h, j - Sp, d)];                  \
                }                                                                                            \
        int mr = mask ? mask->rank : 0;                                                                      \
        int64_t mT = mask ? mask->shape[mr - 1] : 0, mS = mask ? mask->shape[mr - 2] : 0;                     \
        int64_t mH = mr >= 3 ? mask->shape[mr - 3] : 1, mB = mr >= 4 ? mask->shape[0] : 1;                   \
        for (int64_t b = 0; b < B; b++) {                                                                    \
            int64_t npad = nonpad ? fz_index_at(nonpad, b) : T;                                              \
            if (npad < 0 || npad > T)                                                                        \
                FZ_FAIL("Attention: nonpad_kv_seqlen[%lld] = %lld is outside [0, %lld]", (long long)b,       \
                        (long long)npad, (long long)T);                                                      \
            /* causal alignment: after the past, or so the last valid key meets the last query */           \
            int64_t off = Sp > 0 ? Sp : (nonpad ? npad - Sq : 0);                                            \
            for (int64_t h = 0; h < Hq; h++) {                                                               \
                int64_t kh = h / grp;                                                                        \
                for (int64_t i = 0; i < Sq; i++) {                                                           \
                    double mx = -INFINITY, bmax = -INFINITY;                                                 \
                    for (int64_t j = 0; j < T; j++) {                                                        \
                        double acc = 0;                                                                      \
                        for (int64_t d = 0; d < Dk; d++) {                                                   \
                            T_ kv = j < Sp ? pk[((b * Hk + kh) * Sp + j) * Dk + d]                           \
                                           : k[at4(g->rank3, Hk, Skv, Dk, b, kh, j - Sp, d)];             \
                            acc += (double)(q[at4(g->rank3, Hq, Sq, Dk, b, h, i, d)] * s) * (double)(kv * s); \
                        }                                                                                    \
                        double bias = 0;                                                                     \
                        if (mask) {                                                                          \
                            if (j >= mT) bias = -INFINITY;                                                   \
                            else {                                                                           \
                                int64_t mo = (((mB > 1 ? b : 0) * mH + (mH > 1 ? h : 0)) * mS +              \
                                              (mS > 1 ? i : 0)) * mT + j;                                    \
                                if (mask->dtype == FZ_BOOL) bias = ((const uint8_t *)mask->data)[mo] ? 0 : -INFINITY; \
                                else bias = (double)((const T_ *)mask->data)[mo];                            \
                            }                                                                                \
                        }                                                                                    \
                        if (a->is_causal && j > i + off) bias = -INFINITY;                                   \
                        if (j >= npad) bias = -INFINITY;                                                     \
                        /* onnxruntime's order: scores, softcap, then the mask; modes 0-3 output   \
                         * the scores after each of these steps and after the softmax */            \
                        double x = (double)(T_)acc, xs = x;                                                  \
                        if (a->softcap > 0) xs = (double)(T_)(a->softcap * tanh(x / a->softcap));            \
                        double xb = (double)(T_)(xs + bias);                                                 \
                        row[j] = xb;                                                                         \
                        if (qko && a->qk_mode == 0) qko[((b * Hq + h) * Sq + i) * T + j] = (T_)x;            \
                        if (qko && a->qk_mode == 1) qko[((b * Hq + h) * Sq + i) * T + j] = (T_)xs;           \
                        if (qko && a->qk_mode == 2) qko[((b * Hq + h) * Sq + i) * T + j] = (T_)xb;           \
                        mx = xb > mx ? xb : mx;                                                              \
                        bmax = bias > bmax ? bias : bmax;                                                    \
                    }                                                                                        \
                    double sum = 0;                                                                          \
                    int dead = isinf(mx) && mx < 0; /* every key masked: the row is zero */                  \
                    for (int64_t j = 0; j < T; j++) {                                                        \
                        row[j] = dead ? 0.0 : exp(row[j] - mx);                                              \
                        sum += row[j];                                                                       \
                    }                                                                                        \
                    for (int64_t j = 0; j < T; j++) {                                                        \
                        row[j] = sum > 0 ? row[j] / sum : 0.0;                                               \
                        if (qko && a->qk_mode == 3) qko[((b * Hq + h) * Sq + i) * T + j] = (T_)row[j];       \
                    }                                                                                        \
                    for (int64_t d = 0; d < Dv; d++) {                                                       \
                        double acc = 0;                                                                      \
                        for (int64_t j = 0; j < T; j++) {                                                    \
                            T_ vv = j < Sp ? pv[((b * Hk + kh) * Sp + j) * Dv + d]                           \
                                           : v[at4(g->rank3, Hk, Skv, Dv, b, kh, j - Sp, d)];             \
                            acc += row[j] * (double)vv;                                                      \
                        }                                                                                    \
                        y[at4(g->rank3, Hq, Sq, Dv, b, h, i, d)] = (T_)acc;                               \
                    }                                                                                        \
                    (void)bmax;                                                                              \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
        return 0;                                                                                            \
    }

FZ_ATTENTION_IMPL(float, f32)
FZ_ATTENTION_IMPL(double, f64)

int fz_op_Attention(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "Attention";
    const struct fz_attrs_Attention *a = (const struct fz_attrs_Attention *)attrs;
    if (a == NULL || n_in < 3 || n_out < 1) FZ_FAIL("%s: expects Q, K, V, 1 to 4 outputs and attributes", op);
    for (int i = 0; i < n_in && i < 7; i++)
        if (fz_present(in, n_in, i) && fz_check(op, "an input", &in[i]) < 0) return -1;
    const fz_tensor *Q = &in[0], *K = &in[1], *V = &in[2];
    int32_t dt = Q->dtype;
    if (dt != FZ_FLOAT && dt != FZ_DOUBLE) FZ_FAIL("%s: Q must be float32 or float64, got %s", op, fz_dtype_name(dt));
    if (K->dtype != dt || V->dtype != dt) FZ_FAIL("%s: Q, K and V must have one type", op);
    att_dims g;
    memset(&g, 0, sizeof g);
    if (Q->rank == 3 && K->rank == 3 && V->rank == 3) {
        g.rank3 = 1;
        g.Hq = a->q_num_heads;
        g.Hk = a->kv_num_heads;
        if (g.Hq < 1 || g.Hk < 1) FZ_FAIL("%s: 3-D inputs need q_num_heads and kv_num_heads", op);
        if (Q->shape[2] % g.Hq || K->shape[2] % g.Hk || V->shape[2] % g.Hk)
            FZ_FAIL("%s: hidden sizes must divide by the head counts", op);
        g.B = Q->shape[0]; g.Sq = Q->shape[1]; g.Skv = K->shape[1];
        g.Dk = Q->shape[2] / g.Hq; g.Dv = V->shape[2] / g.Hk;
        if (K->shape[2] / g.Hk != g.Dk) FZ_FAIL("%s: Q and K head sizes differ", op);
        if (K->shape[0] != g.B || V->shape[0] != g.B || V->shape[1] != g.Skv) FZ_FAIL("%s: Q, K, V shapes disagree", op);
    } else if (Q->rank == 4 && K->rank == 4 && V->rank == 4) {
        g.B = Q->shape[0]; g.Hq = Q->shape[1]; g.Sq = Q->shape[2]; g.Dk = Q->shape[3];
        g.Hk = K->shape[1]; g.Skv = K->shape[2]; g.Dv = V->shape[3];
        if (K->shape[0] != g.B || K->shape[3] != g.Dk || V->shape[0] != g.B || V->shape[1] != g.Hk ||
            V->shape[2] != g.Skv)
            FZ_FAIL("%s: Q, K, V shapes disagree", op);
    } else {
        FZ_FAIL("%s: Q, K and V must all be 3-D or all 4-D", op);
    }
    if (g.Hk < 1 || g.Hq % g.Hk) FZ_FAIL("%s: query heads (%lld) must be a multiple of KV heads (%lld)", op,
                                          (long long)g.Hq, (long long)g.Hk);
    int has_pk = fz_present(in, n_in, 4), has_pv = fz_present(in, n_in, 5);
    if (has_pk != has_pv) FZ_FAIL("%s: past_key and past_value come together", op);
    if (has_pk) {
        const fz_tensor *pk = &in[4], *pv = &in[5];
        if (pk->dtype != dt || pv->dtype != dt || pk->rank != 4 || pv->rank != 4 || pk->shape[0] != g.B ||
            pk->shape[1] != g.Hk || pk->shape[3] != g.Dk || pv->shape[0] != g.B || pv->shape[1] != g.Hk ||
            pv->shape[2] != pk->shape[2] || pv->shape[3] != g.Dv)
            FZ_FAIL("%s: past_key/past_value must be [B, kv_heads, past, head_size] of Q's type", op);
        g.Sp = pk->shape[2];
    }
    g.T = g.Sp + g.Skv;
    if (fz_present(in, n_in, 3)) {
        const fz_tensor *m = &in[3];
        if (m->dtype != FZ_BOOL && m->dtype != dt) FZ_FAIL("%s: attn_mask must be bool or Q's type", op);
        if (m->rank < 2 || m->rank > 4 || m->shape[m->rank - 1] > g.T ||
            (m->shape[m->rank - 2] != 1 && m->shape[m->rank - 2] != g.Sq) ||
            (m->rank >= 3 && m->shape[m->rank - 3] != 1 && m->shape[m->rank - 3] != g.Hq) ||
            (m->rank == 4 && m->shape[0] != 1 && m->shape[0] != g.B))
            FZ_FAIL("%s: attn_mask must broadcast to [B, q_heads, q_len, <= total kv_len]", op);
    }
    if (fz_present(in, n_in, 6)) {
        const fz_tensor *np_ = &in[6];
        if (!fz_is_index_type(np_->dtype) || np_->rank != 1 || np_->shape[0] != g.B)
            FZ_FAIL("%s: nonpad_kv_seqlen must be int64 of shape [%lld]", op, (long long)g.B);
    }
    if (a->qk_mode < 0 || a->qk_mode > 3) FZ_FAIL("%s: qk_matmul_output_mode must be 0..3", op);
    int64_t ys[4] = {g.B, g.Hq, g.Sq, g.Dv}, y3[3] = {g.B, g.Sq, g.Hq * g.Dv};
    int64_t pks[4] = {g.B, g.Hk, g.T, g.Dk}, pvs[4] = {g.B, g.Hk, g.T, g.Dv}, qks[4] = {g.B, g.Hq, g.Sq, g.T};
    if (fz_out_dtype(op, 0, &out[0], dt) || fz_set_output(op, 0, &out[0], g.rank3 ? 3 : 4, g.rank3 ? y3 : ys)) return -1;
    const int64_t *os[4] = {NULL, pks, pvs, qks};
    for (int k = 1; k < n_out && k < 4; k++)
        if (out[k].dtype != FZ_UNDEFINED && (fz_out_dtype(op, k, &out[k], dt) || fz_set_output(op, k, &out[k], 4, os[k])))
            return -1;
    double *row = (double *)fz_alloc(op, g.T, sizeof(double));
    if (row == NULL) return -1;
    int rc = dt == FZ_FLOAT ? attention_f32(&g, in, n_in, out, n_out, a, row) : attention_f64(&g, in, n_in, out, n_out, a, row);
    free(row);
    return rc;
}
