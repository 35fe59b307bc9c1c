/* RNN, GRU and LSTM (opset 14 forms; layout 0 and 1), float32/float64:
 * forward, reverse and bidirectional, biases, initial states, per-batch
 * sequence_lens (steps past a sequence's end give zeros and leave the state
 * alone), clip, LSTM peepholes and input_forget, GRU linear_before_reset,
 * and the ONNX activation functions with onnxruntime's alpha/beta
 * consumption (the lists feed, in order, only the activations that take
 * them). State and gate math in double; one time step at a time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

static double act(int k, double x, double a, double b) {
    switch (k) {
    case 0: return 1.0 / (1.0 + exp(-x));                       /* Sigmoid */
    case 1: return tanh(x);                                      /* Tanh */
    case 2: return x > 0 ? x : 0;                                /* Relu */
    case 3: { double v = a * x + b; return v < 0 ? 0 : (v > 1 ? 1 : v); } /* HardSigmoid */
    case 4: return x >= 0 ? x : a * x;                           /* LeakyRelu */
    case 5: return x > a ? x : 0;                                /* ThresholdedRelu */
    case 6: return a * tanh(b * x);                              /* ScaledTanh */
    case 7: return a * x + b;                                    /* Affine */
    case 8: return x >= 0 ? x : a * (exp(x) - 1);                /* Elu */
    case 9: return x / (1 + fabs(x));                            /* Softsign */
    default: return log1p(exp(-fabs(x))) + (x > 0 ? x : 0);      /* Softplus, overflow-free */
    }
}

static double dv(const fz_tensor *t, int64_t i) {
    return t->dtype == FZ_FLOAT ? (double)((const float *)t->data)[i] : ((const double *)t->data)[i];
}

static void put(fz_tensor *t, int64_t i, double v) {
    if (t->dtype == FZ_FLOAT) ((float *)t->data)[i] = (float)v;
    else ((double *)t->data)[i] = v;
}

int fz_op_Recurrent(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const struct fz_attrs_Recurrent *a = (const struct fz_attrs_Recurrent *)attrs;
    const char *op = a && a->kind == 1 ? "GRU" : a && a->kind == 2 ? "LSTM" : "RNN";
    if (a == NULL || n_in < 3 || n_out < 1) FZ_FAIL("%s: expects X, W, R, outputs and attributes", op);
    for (int i = 0; i < n_in && i < 8; i++)
        if (fz_present(in, n_in, i) && fz_check(op, "an input", &in[i]) < 0) return -1;
    const fz_tensor *X = &in[0], *W = &in[1], *R = &in[2];
    const fz_tensor *B = fz_present(in, n_in, 3) ? &in[3] : NULL, *SL = fz_present(in, n_in, 4) ? &in[4] : NULL;
    const fz_tensor *H0 = fz_present(in, n_in, 5) ? &in[5] : NULL;
    const fz_tensor *C0 = a->kind == 2 && fz_present(in, n_in, 6) ? &in[6] : NULL;
    const fz_tensor *P = a->kind == 2 && fz_present(in, n_in, 7) ? &in[7] : NULL;
    int32_t dt = X->dtype;
    if (dt != FZ_FLOAT && dt != FZ_DOUBLE) FZ_FAIL("%s: X must be float32 or float64", op);
    int gates = a->kind == 0 ? 1 : a->kind == 1 ? 3 : 4, dirs = a->direction == 2 ? 2 : 1;
    int64_t Hs = a->hidden_size;
    if (X->rank != 3 || W->rank != 3 || R->rank != 3) FZ_FAIL("%s: X, W and R must be 3-D", op);
    int64_t S = a->layout ? X->shape[1] : X->shape[0], N = a->layout ? X->shape[0] : X->shape[1], I = X->shape[2];
    if (Hs < 1 || W->dtype != dt || R->dtype != dt || W->shape[0] != dirs || W->shape[1] != gates * Hs ||
        W->shape[2] != I || R->shape[0] != dirs || R->shape[1] != gates * Hs || R->shape[2] != Hs)
        FZ_FAIL("%s: W must be [%d, %lld, %lld] and R [%d, %lld, %lld] of X's type", op, dirs, (long long)(gates * Hs),
                (long long)I, dirs, (long long)(gates * Hs), (long long)Hs);
    if (B && (B->dtype != dt || B->rank != 2 || B->shape[0] != dirs || B->shape[1] != 2 * gates * Hs))
        FZ_FAIL("%s: B must be [%d, %lld]", op, dirs, (long long)(2 * gates * Hs));
    if (SL && (!fz_is_index_type(SL->dtype) || SL->rank != 1 || SL->shape[0] != N))
        FZ_FAIL("%s: sequence_lens must be int32 of shape [%lld]", op, (long long)N);
    const fz_tensor *st[2] = {H0, C0};
    for (int k = 0; k < 2; k++) {
        const fz_tensor *s0 = st[k];
        int64_t want[3] = {a->layout ? N : dirs, a->layout ? dirs : N, Hs};
        if (s0 && (s0->dtype != dt || s0->rank != 3 || s0->shape[0] != want[0] || s0->shape[1] != want[1] ||
                   s0->shape[2] != Hs))
            FZ_FAIL("%s: initial states must be [%lld, %lld, %lld]", op, (long long)want[0], (long long)want[1], (long long)Hs);
    }
    if (P && (P->dtype != dt || P->rank != 2 || P->shape[0] != dirs || P->shape[1] != 3 * Hs))
        FZ_FAIL("%s: P must be [%d, %lld]", op, dirs, (long long)(3 * Hs));
    for (int64_t b = 0; b < N && SL; b++)
        if (fz_index_at(SL, b) < 0 || fz_index_at(SL, b) > S)
            FZ_FAIL("%s: sequence_lens[%lld] = %lld is outside [0, %lld]", op, (long long)b,
                    (long long)fz_index_at(SL, b), (long long)S);
    /* outputs: Y, Y_h, Y_c (LSTM) */
    int64_t ys[4], hs[3];
    if (a->layout) { ys[0] = N; ys[1] = S; ys[2] = dirs; ys[3] = Hs; hs[0] = N; hs[1] = dirs; hs[2] = Hs; }
    else { ys[0] = S; ys[1] = dirs; ys[2] = N; ys[3] = Hs; hs[0] = dirs; hs[1] = N; hs[2] = Hs; }
    fz_tensor *Y = out[0].dtype ? &out[0] : NULL;
    fz_tensor *YH = n_out > 1 && out[1].dtype ? &out[1] : NULL, *YC = a->kind == 2 && n_out > 2 && out[2].dtype ? &out[2] : NULL;
    if ((Y && (fz_out_dtype(op, 0, Y, dt) || fz_set_output(op, 0, Y, 4, ys))) ||
        (YH && (fz_out_dtype(op, 1, YH, dt) || fz_set_output(op, 1, YH, 3, hs))) ||
        (YC && (fz_out_dtype(op, 2, YC, dt) || fz_set_output(op, 2, YC, 3, hs))))
        return -1;
    double *h = (double *)fz_alloc(op, 4 * Hs + (int64_t)gates * Hs * 2, sizeof(double));
    if (h == NULL) return -1;
    double *c = h + Hs, *g = c + Hs, *gr = g + gates * Hs; /* gr: the recurrent part (GRU needs it apart) */
    double *zt = gr + gates * Hs, *rt = zt + Hs;
#define YIDX(t, d, b, j) (a->layout ? (((b) * S + (t)) * dirs + (d)) * Hs + (j) : (((t) * dirs + (d)) * N + (b)) * Hs + (j))
#define SIDX(d, b, j) (a->layout ? ((b) * dirs + (d)) * Hs + (j) : ((d) * N + (b)) * Hs + (j))
    if (Y) memset(Y->data, 0, (size_t)(S * dirs * N * Hs) * (dt == FZ_FLOAT ? 4 : 8));
    for (int d = 0; d < dirs; d++) {
        int reverse = a->direction == 1 || d == 1;
        const int32_t *ak = a->act + d * (gates == 1 ? 1 : gates == 3 ? 2 : 3);
        int na = gates == 1 ? 1 : gates == 3 ? 2 : 3;
        const float *al = a->alpha + d * na, *be = a->beta + d * na;
        for (int64_t b = 0; b < N; b++) {
            int64_t len = SL ? fz_index_at(SL, b) : S;
            for (int64_t j = 0; j < Hs; j++) {
                h[j] = H0 ? dv(H0, SIDX(d, b, j)) : 0.0;
                c[j] = C0 ? dv(C0, SIDX(d, b, j)) : 0.0;
            }
            for (int64_t step = 0; step < len; step++) {
                int64_t t = reverse ? len - 1 - step : step;
                for (int64_t r = 0; r < gates * Hs; r++) {
                    double xw = B ? dv(B, d * 2 * gates * Hs + r) : 0.0, hr = B ? dv(B, d * 2 * gates * Hs + gates * Hs + r) : 0.0;
                    for (int64_t k = 0; k < I; k++)
                        xw += dv(X, a->layout ? (b * S + t) * I + k : (t * N + b) * I + k) * dv(W, (d * gates * Hs + r) * I + k);
                    for (int64_t k = 0; k < Hs; k++) hr += h[k] * dv(R, (d * gates * Hs + r) * Hs + k);
                    g[r] = xw;
                    gr[r] = hr;
                }
                double cl = a->has_clip ? a->clip : INFINITY;
#define CLIP(v) ((v) < -cl ? -cl : ((v) > cl ? cl : (v)))
                if (a->kind == 0) {
                    for (int64_t j = 0; j < Hs; j++) h[j] = act(ak[0], CLIP(g[j] + gr[j]), al[0], be[0]);
                } else if (a->kind == 1) { /* z, r, h */
                    for (int64_t j = 0; j < Hs; j++) {
                        zt[j] = act(ak[0], CLIP(g[j] + gr[j]), al[0], be[0]);
                        rt[j] = act(ak[0], CLIP(g[Hs + j] + gr[Hs + j]), al[0], be[0]);
                    }
                    for (int64_t j = 0; j < Hs; j++) {
                        double pre;
                        if (a->linear_before_reset) pre = g[2 * Hs + j] + rt[j] * gr[2 * Hs + j];
                        else { /* (r . h) R_h + Rb_h */
                            double acc = B ? dv(B, d * 6 * Hs + 5 * Hs + j) : 0.0;
                            for (int64_t k = 0; k < Hs; k++) acc += rt[k] * h[k] * dv(R, (d * 3 * Hs + 2 * Hs + j) * Hs + k);
                            pre = g[2 * Hs + j] + acc;
                        }
                        gr[j] = act(ak[1], CLIP(pre), al[1], be[1]); /* gr[0..Hs) is free once z is known */
                    }
                    for (int64_t j = 0; j < Hs; j++) h[j] = (1 - zt[j]) * gr[j] + zt[j] * h[j];
                } else { /* i, o, f, c */
                    for (int64_t j = 0; j < Hs; j++) {
                        double pi = P ? dv(P, d * 3 * Hs + j) : 0, po = P ? dv(P, d * 3 * Hs + Hs + j) : 0;
                        double pf = P ? dv(P, d * 3 * Hs + 2 * Hs + j) : 0;
                        double ig = act(ak[0], CLIP(g[j] + gr[j] + pi * c[j]), al[0], be[0]);
                        double fg = a->input_forget ? 1 - ig : act(ak[0], CLIP(g[2 * Hs + j] + gr[2 * Hs + j] + pf * c[j]), al[0], be[0]);
                        double cg = act(ak[1], CLIP(g[3 * Hs + j] + gr[3 * Hs + j]), al[1], be[1]);
                        c[j] = fg * c[j] + ig * cg;
                        double og = act(ak[0], CLIP(g[Hs + j] + gr[Hs + j] + po * c[j]), al[0], be[0]);
                        h[j] = og * act(ak[2], c[j], al[2], be[2]);
                    }
                }
#undef CLIP
                if (Y)
                    for (int64_t j = 0; j < Hs; j++) put(Y, YIDX(t, d, b, j), h[j]);
            }
            for (int64_t j = 0; j < Hs; j++) { /* an empty sequence ends in zeros, not its initial state (onnxruntime) */
                if (YH) put(YH, SIDX(d, b, j), len ? h[j] : 0.0);
                if (YC) put(YC, SIDX(d, b, j), len ? c[j] : 0.0);
            }
        }
    }
#undef YIDX
#undef SIDX
    free(h);
    return 0;
}
