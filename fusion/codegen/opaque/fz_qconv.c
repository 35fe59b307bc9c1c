/* ConvInteger and QLinearConv: direct N-d convolution of int8/uint8 data
 * with zero points (x per tensor, w per tensor or per output channel),
 * groups, strides, dilations, explicit or automatic padding (padding reads
 * the zero point, i.e. contributes nothing). int32 accumulation; QLinearConv
 * adds its int32 bias and requantizes as onnxruntime does (float scale
 * x_scale * w_scale / y_scale, clamp, round half to even, + y_zero_point).
 * Correct, not fast: a reference-speed loop nest. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

#define FZ_CONV_MAX_ND 6

typedef struct {
    int nd;
    int64_t N, C, M, group, in[FZ_CONV_MAX_ND], k[FZ_CONV_MAX_ND], out[FZ_CONV_MAX_ND];
    int64_t st[FZ_CONV_MAX_ND], dl[FZ_CONV_MAX_ND], pb[FZ_CONV_MAX_ND];
} conv_geo;

static int q8(int32_t t) { return t == FZ_UINT8 || t == FZ_INT8; }

static int32_t q8_at(const fz_tensor *t, int64_t i) {
    return t->dtype == FZ_UINT8 ? (int32_t)((const uint8_t *)t->data)[i] : (int32_t)((const int8_t *)t->data)[i];
}

/* shapes, attributes and padding -> geometry; output shape into oshape */
static int conv_geometry(const char *op, const fz_tensor *x, const fz_tensor *w, const struct fz_attrs_QConv *a,
                         conv_geo *g, int64_t *oshape) {
    if (x->rank < 3 || w->rank != x->rank || x->rank - 2 > FZ_CONV_MAX_ND)
        FZ_FAIL("%s: x and w must have the same rank, 3 to %d", op, FZ_CONV_MAX_ND + 2);
    g->nd = x->rank - 2;
    g->N = x->shape[0]; g->C = x->shape[1]; g->M = w->shape[0]; g->group = a->group;
    if (g->group < 1 || g->C % g->group || g->M % g->group || w->shape[1] * g->group != g->C)
        FZ_FAIL("%s: channels (x %lld, w %lld x %lld) do not fit group %lld", op, (long long)g->C,
                (long long)w->shape[0], (long long)w->shape[1], (long long)g->group);
    oshape[0] = g->N;
    oshape[1] = g->M;
    for (int i = 0; i < g->nd; i++) {
        g->in[i] = x->shape[2 + i];
        g->k[i] = w->shape[2 + i];
        g->st[i] = a->strides[i];
        g->dl[i] = a->dilations[i];
        if (g->st[i] < 1 || g->dl[i] < 1) FZ_FAIL("%s: strides and dilations must be >= 1", op);
        int64_t span = (g->k[i] - 1) * g->dl[i] + 1, pb = a->pads[i], pe = a->pads[6 + i];
        if (a->auto_pad == 1 || a->auto_pad == 2) { /* SAME_UPPER / SAME_LOWER */
            int64_t o = (g->in[i] + g->st[i] - 1) / g->st[i];
            int64_t total = (o - 1) * g->st[i] + span - g->in[i];
            if (total < 0) total = 0;
            pb = a->auto_pad == 1 ? total / 2 : total - total / 2;
            pe = total - pb;
        } else if (a->auto_pad == 3) {
            pb = pe = 0;
        }
        if (pb < 0 || pe < 0) FZ_FAIL("%s: pads must not be negative", op);
        g->pb[i] = pb;
        int64_t room = g->in[i] + pb + pe - span;
        g->out[i] = room < 0 ? 0 : room / g->st[i] + 1;
        oshape[2 + i] = g->out[i];
    }
    return 0;
}

/* acc[n, m, o...] = sum (x - xz)(w - wz[m]) over the group's channels and the kernel window */
static void conv_acc(const conv_geo *g, const fz_tensor *x, int32_t xz, const fz_tensor *w, const fz_tensor *wz,
                     int32_t *acc) {
    int nd = g->nd;
    int64_t osz = 1, ksz = 1, isz = 1;
    for (int i = 0; i < nd; i++) { osz *= g->out[i]; ksz *= g->k[i]; isz *= g->in[i]; }
    int64_t cg = g->C / g->group, mg = g->M / g->group, nwz = wz ? fz_count(wz->rank, wz->shape) : 0;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t m = 0; m < g->M; m++) {
            int32_t wzm = wz ? q8_at(wz, nwz > 1 ? m : 0) : 0;
            int64_t c0 = (m / mg) * cg;
            for (int64_t o = 0; o < osz; o++) {
                int64_t oi[FZ_CONV_MAX_ND], rem = o;
                for (int i = nd - 1; i >= 0; i--) { oi[i] = rem % g->out[i]; rem /= g->out[i]; }
                int64_t sum = 0;
                for (int64_t kk = 0; kk < ksz; kk++) {
                    int64_t ki[FZ_CONV_MAX_ND], r2 = kk, xoff = 0, inside = 1;
                    for (int i = nd - 1; i >= 0; i--) { ki[i] = r2 % g->k[i]; r2 /= g->k[i]; }
                    for (int i = 0; i < nd && inside; i++) {
                        int64_t p = oi[i] * g->st[i] + ki[i] * g->dl[i] - g->pb[i];
                        inside = p >= 0 && p < g->in[i];
                        xoff = xoff * g->in[i] + p;
                    }
                    if (!inside) continue; /* padding holds the zero point: adds nothing */
                    for (int64_t c = 0; c < cg; c++) {
                        int32_t xv = q8_at(x, ((n * g->C) + c0 + c) * isz + xoff) - xz;
                        int32_t wv = q8_at(w, ((m * cg) + c) * ksz + kk) - wzm;
                        sum += (int64_t)xv * wv;
                    }
                }
                acc[(n * g->M + m) * osz + o] = (int32_t)sum;
            }
        }
}

int fz_op_ConvInteger(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "ConvInteger";
    const struct fz_attrs_QConv *a = (const struct fz_attrs_QConv *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects x, w, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *w = &in[1];
    const fz_tensor *xz = fz_present(in, n_in, 2) ? &in[2] : NULL, *wz = fz_present(in, n_in, 3) ? &in[3] : NULL;
    if (fz_check(op, "input x", x) < 0 || fz_check(op, "input w", w) < 0 || (xz && fz_check(op, "x_zero_point", xz) < 0) ||
        (wz && fz_check(op, "w_zero_point", wz) < 0))
        return -1;
    if (!q8(x->dtype) || !q8(w->dtype)) FZ_FAIL("%s: x and w must be int8 or uint8", op);
    if ((xz && (xz->dtype != x->dtype || fz_count(xz->rank, xz->shape) != 1)) ||
        (wz && (wz->dtype != w->dtype || (fz_count(wz->rank, wz->shape) != 1 && fz_count(wz->rank, wz->shape) != w->shape[0]))))
        FZ_FAIL("%s: zero points must match their tensor's type (x: one value, w: one or one per output channel)", op);
    conv_geo g;
    int64_t oshape[FZ_MAX_RANK];
    if (conv_geometry(op, x, w, a, &g, oshape)) return -1;
    if (fz_out_dtype(op, 0, &out[0], FZ_INT32) || fz_set_output(op, 0, &out[0], x->rank, oshape)) return -1;
    conv_acc(&g, x, xz ? q8_at(xz, 0) : 0, w, wz, (int32_t *)out[0].data);
    return 0;
}

int fz_op_QLinearConv(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "QLinearConv";
    const struct fz_attrs_QConv *a = (const struct fz_attrs_QConv *)attrs;
    if (a == NULL || n_in < 8 || n_out < 1) FZ_FAIL("%s: expects 8 or 9 inputs, 1 output and attributes", op);
    for (int i = 0; i < 8; i++)
        if (fz_check(op, "an input", &in[i]) < 0) return -1;
    const fz_tensor *x = &in[0], *xs = &in[1], *xz = &in[2], *w = &in[3], *ws = &in[4], *wz = &in[5], *ys = &in[6],
                    *yz = &in[7], *bias = fz_present(in, n_in, 8) ? &in[8] : NULL;
    if (bias && fz_check(op, "input B", bias) < 0) return -1;
    if (!q8(x->dtype) || !q8(w->dtype) || !q8(yz->dtype)) FZ_FAIL("%s: x, w and y_zero_point must be int8 or uint8", op);
    if (xs->dtype != FZ_FLOAT || ws->dtype != FZ_FLOAT || ys->dtype != FZ_FLOAT) FZ_FAIL("%s: scales must be float32", op);
    int64_t M = w->rank >= 1 ? w->shape[0] : 0, nws = fz_count(ws->rank, ws->shape), nwz = fz_count(wz->rank, wz->shape);
    if (xz->dtype != x->dtype || wz->dtype != w->dtype || fz_count(xz->rank, xz->shape) != 1 ||
        fz_count(xs->rank, xs->shape) != 1 || fz_count(ys->rank, ys->shape) != 1 || fz_count(yz->rank, yz->shape) != 1 ||
        (nws != 1 && nws != M) || (nwz != 1 && nwz != M))
        FZ_FAIL("%s: scales and zero points must be per tensor (w's may be per output channel) of matching types", op);
    if (bias && (bias->dtype != FZ_INT32 || bias->rank != 1 || bias->shape[0] != M))
        FZ_FAIL("%s: B must be int32 of shape [%lld]", op, (long long)M);
    conv_geo g;
    int64_t oshape[FZ_MAX_RANK];
    if (conv_geometry(op, x, w, a, &g, oshape)) return -1;
    if (fz_out_dtype(op, 0, &out[0], yz->dtype) || fz_set_output(op, 0, &out[0], x->rank, oshape)) return -1;
    int64_t total = fz_count(x->rank, oshape), osz = M > 0 && g.N > 0 ? total / (g.N * M) : 0;
    int32_t *acc = (int32_t *)fz_alloc(op, total, sizeof(int32_t));
    if (acc == NULL) return -1;
    conv_acc(&g, x, q8_at(xz, 0), w, wz, acc);
    float xsv = *(const float *)xs->data, ysv = *(const float *)ys->data;
    int32_t y0 = q8_at(yz, 0), qmin = yz->dtype == FZ_UINT8 ? 0 : -128, qmax = yz->dtype == FZ_UINT8 ? 255 : 127;
    for (int64_t i = 0; i < total; i++) {
        int64_t m = osz ? (i / osz) % M : 0;
        int32_t v32 = acc[i] + (bias ? ((const int32_t *)bias->data)[m] : 0);
        float scale = xsv * ((const float *)ws->data)[nws > 1 ? m : 0] / ysv;
        float v = (float)v32 * scale, lo = (float)(qmin - y0), hi = (float)(qmax - y0);
        v = v < lo ? lo : (v > hi ? hi : v);
        int32_t q = (int32_t)nearbyintf(v == v ? v : 0.0f) + y0;
        if (yz->dtype == FZ_UINT8) ((uint8_t *)out[0].data)[i] = (uint8_t)q;
        else ((int8_t *)out[0].data)[i] = (int8_t)q;
    }
    free(acc);
    return 0;
}
