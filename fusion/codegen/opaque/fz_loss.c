/* NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opset 12/13):
 * input [N, C] or [N, C, d1..dk], target [N] or [N, d1..dk], optional
 * class weights [C], ignore_index, reduction none/sum/mean. Mean divides by
 * the summed weights of the targets that are not ignored. A target outside
 * [0, C) that is not ignore_index is an error. Sums in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

#define FZ_NLL_IMPL(T, SUF)                                                                               \
    /* logp is the log-probabilities (NLL input, or SCE's log-softmax) */                                \
    static int nll_##SUF(const char *op, const T *logp, const fz_tensor *tg, const T *w, int64_t N,     \
                         int64_t C, int64_t D, int has_ignore, int64_t ignore, int red, T *loss) {       \
        double sum = 0, wsum = 0;                                                                        \
        for (int64_t n = 0; n < N; n++)                                                                  \
            for (int64_t d = 0; d < D; d++) {                                                            \
                int64_t t = fz_index_at(tg, n * D + d);                                                  \
                T l = 0;                                                                                 \
                if (!(has_ignore && t == ignore)) {                                                      \
                    if (t < 0 || t >= C)                                                                 \
                        FZ_FAIL("%s: target %lld is outside [0, %lld) and is not ignore_index", op,      \
                                (long long)t, (long long)C);                                             \
                    T wt = w ? w[t] : (T)1;                                                              \
                    l = -logp[(n * C + t) * D + d] * wt;                                                 \
                    wsum += wt;                                                                          \
                }                                                                                        \
                if (red == 0) loss[n * D + d] = l;                                                       \
                sum += l;                                                                                \
            }                                                                                            \
        if (red == 1) loss[0] = (T)sum;                                                                  \
        if (red == 2) loss[0] = (T)(sum / wsum);                                                         \
        return 0;                                                                                        \
    }                                                                                                    \
    static void log_softmax_##SUF(const T *x, int64_t N, int64_t C, int64_t D, T *y) {                  \
        if (C == 0) return;                                                                              \
        for (int64_t n = 0; n < N; n++)                                                                  \
            for (int64_t d = 0; d < D; d++) {                                                            \
                const T *xr = x + n * C * D + d;                                                         \
                T *yr = y + n * C * D + d;                                                               \
                T mx = xr[0];                                                                            \
                for (int64_t c = 1; c < C; c++) mx = xr[c * D] > mx ? xr[c * D] : mx;                    \
                double s = 0;                                                                            \
                for (int64_t c = 0; c < C; c++) s += exp((double)(xr[c * D] - mx));                      \
                T ls = (T)log(s);                                                                        \
                for (int64_t c = 0; c < C; c++) yr[c * D] = xr[c * D] - mx - ls;                         \
            }                                                                                            \
    }

FZ_NLL_IMPL(float, f32)
FZ_NLL_IMPL(double, f64)

struct loss_args {
    const fz_tensor *x, *tg, *w;
    int64_t N, C, D;
};

static int check_loss(const char *op, const fz_tensor *in, int n_in, fz_tensor *out, int n_out, int red,
                      struct loss_args *a) {
    if (n_in < 2 || n_out < 1) FZ_FAIL("%s: expects input, target and an output", op);
    a->x = &in[0];
    a->tg = &in[1];
    a->w = fz_present(in, n_in, 2) ? &in[2] : NULL;
    if (fz_check(op, "input", a->x) < 0 || fz_check(op, "input target", a->tg) < 0) return -1;
    if (a->w && fz_check(op, "input weight", a->w) < 0) return -1;
    if (a->x->dtype != FZ_FLOAT && a->x->dtype != FZ_DOUBLE)
        FZ_FAIL("%s: input must be float32 or float64, got %s", op, fz_dtype_name(a->x->dtype));
    if (!fz_is_index_type(a->tg->dtype)) FZ_FAIL("%s: target must be int32 or int64", op);
    if (a->x->rank < 2) FZ_FAIL("%s: input must have shape [N, C, ...]", op);
    if (a->tg->rank != a->x->rank - 1 || a->tg->shape[0] != a->x->shape[0])
        FZ_FAIL("%s: target must have shape [N, d1, ...] matching input [N, C, d1, ...]", op);
    for (int d = 1; d < a->tg->rank; d++)
        if (a->tg->shape[d] != a->x->shape[d + 1]) FZ_FAIL("%s: target dimension %d differs from input's", op, d);
    a->N = a->x->shape[0];
    a->C = a->x->shape[1];
    a->D = fz_count(a->x->rank - 2, a->x->shape + 2);
    if (a->w && (a->w->dtype != a->x->dtype || a->w->rank != 1 || a->w->shape[0] != a->C))
        FZ_FAIL("%s: weight must be a [%lld] tensor of the input's type", op, (long long)a->C);
    if (red < 0 || red > 2) FZ_FAIL("%s: reduction must be none, sum or mean", op);
    if (fz_out_dtype(op, 0, &out[0], a->x->dtype)) return -1;
    return red == 0 ? fz_set_output(op, 0, &out[0], a->tg->rank, a->tg->shape) : fz_set_output(op, 0, &out[0], 0, NULL);
}

int fz_op_NegativeLogLikelihoodLoss(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "NegativeLogLikelihoodLoss";
    const struct fz_attrs_NegativeLogLikelihoodLoss *at = (const struct fz_attrs_NegativeLogLikelihoodLoss *)attrs;
    struct loss_args a;
    if (at == NULL) FZ_FAIL("%s: attributes missing", op);
    if (check_loss(op, in, n_in, out, n_out, at->reduction, &a)) return -1;
    if (a.x->dtype == FZ_FLOAT)
        return nll_f32(op, (const float *)a.x->data, a.tg, a.w ? (const float *)a.w->data : NULL, a.N, a.C, a.D,
                       at->has_ignore_index, at->ignore_index, at->reduction, (float *)out[0].data);
    return nll_f64(op, (const double *)a.x->data, a.tg, a.w ? (const double *)a.w->data : NULL, a.N, a.C, a.D,
                   at->has_ignore_index, at->ignore_index, at->reduction, (double *)out[0].data);
}

int fz_op_SoftmaxCrossEntropyLoss(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "SoftmaxCrossEntropyLoss";
    const struct fz_attrs_SoftmaxCrossEntropyLoss *at = (const struct fz_attrs_SoftmaxCrossEntropyLoss *)attrs;
    struct loss_args a;
    if (at == NULL) FZ_FAIL("%s: attributes missing", op);
    if (check_loss(op, in, n_in, out, n_out, at->reduction, &a)) return -1;
    int want_logp = n_out > 1 && out[1].dtype != FZ_UNDEFINED;
    if (want_logp && (fz_out_dtype(op, 1, &out[1], a.x->dtype) || fz_set_output(op, 1, &out[1], a.x->rank, a.x->shape)))
        return -1;
    int64_t n = a.N * a.C * a.D;
    int es = fz_dtype_size(a.x->dtype);
    void *logp = want_logp ? out[1].data : fz_alloc(op, n, (size_t)es);
    if (logp == NULL) return -1;
    int rc;
    if (a.x->dtype == FZ_FLOAT) {
        log_softmax_f32((const float *)a.x->data, a.N, a.C, a.D, (float *)logp);
        rc = nll_f32(op, (const float *)logp, a.tg, a.w ? (const float *)a.w->data : NULL, a.N, a.C, a.D,
                     at->has_ignore_index, at->ignore_index, at->reduction, (float *)out[0].data);
    } else {
        log_softmax_f64((const double *)a.x->data, a.N, a.C, a.D, (double *)logp);
        rc = nll_f64(op, (const double *)logp, a.tg, a.w ? (const double *)a.w->data : NULL, a.N, a.C, a.D,
                     at->has_ignore_index, at->ignore_index, at->reduction, (double *)out[0].data);
    }
    if (!want_logp) free(logp);
    return rc;
}
