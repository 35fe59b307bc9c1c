/* Small opaque ops: Det (LU with partial pivoting, in double), the window
 * generators (Hann/Hamming/Blackman: output length is an input value), and
 * DynamicQuantizeLinear (scale and zero point from the data's range). */
/* no FMA contraction: window values are compared with onnxruntime's to the last bit in float64 */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

/* ------------------------------------------------------------------- Det */

int fz_op_Det(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "Det";
    (void)attrs;
    if (n_in < 1 || n_out < 1) FZ_FAIL("%s: expects 1 input and 1 output", op);
    const fz_tensor *x = &in[0];
    if (fz_check(op, "input X", x) < 0) return -1;
    if (x->dtype != FZ_FLOAT && x->dtype != FZ_DOUBLE)
        FZ_FAIL("%s: X must be float32 or float64, got %s", op, fz_dtype_name(x->dtype));
    if (x->rank < 2 || x->shape[x->rank - 1] != x->shape[x->rank - 2])
        FZ_FAIL("%s: X must have shape [..., M, M]", op);
    if (fz_out_dtype(op, 0, &out[0], x->dtype) || fz_set_output(op, 0, &out[0], x->rank - 2, x->shape)) return -1;
    int64_t m = x->shape[x->rank - 1], batch = fz_count(x->rank - 2, x->shape);
    double *a = (double *)fz_alloc(op, m * m, sizeof(double));
    if (a == NULL) return -1;
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t i = 0; i < m * m; i++)
            a[i] = x->dtype == FZ_FLOAT ? (double)((const float *)x->data)[b * m * m + i]
                                        : ((const double *)x->data)[b * m * m + i];
        double det = 1.0;
        for (int64_t c = 0; c < m && det != 0.0; c++) {
            int64_t p = c;
            for (int64_t r = c + 1; r < m; r++)
                if (fabs(a[r * m + c]) > fabs(a[p * m + c])) p = r;
            if (a[p * m + c] == 0.0) { det = 0.0; break; }
            if (p != c) {
                for (int64_t k = 0; k < m; k++) { double t = a[c * m + k]; a[c * m + k] = a[p * m + k]; a[p * m + k] = t; }
                det = -det;
            }
            double piv = a[c * m + c];
            det *= piv;
            for (int64_t r = c + 1; r < m; r++) {
                double f = a[r * m + c] / piv;
                for (int64_t k = c + 1; k < m; k++) a[r * m + k] -= f * a[c * m + k];
            }
        }
        if (x->dtype == FZ_FLOAT) ((float *)out[0].data)[b] = (float)det;
        else ((double *)out[0].data)[b] = det;
    }
    free(a);
    return 0;
}

/* --------------------------------------------------------------- windows */

int fz_op_Window(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "Window";
    const struct fz_attrs_Window *a = (const struct fz_attrs_Window *)attrs;
    if (a == NULL || n_in < 1 || n_out < 1) FZ_FAIL("%s: expects size, 1 output and attributes", op);
    static const char *names[] = {"HannWindow", "HammingWindow", "BlackmanWindow"};
    if (a->kind < 0 || a->kind > 2) FZ_FAIL("%s: unknown window kind %d", op, (int)a->kind);
    op = names[a->kind];
    int64_t ns = fz_check(op, "input size", &in[0]);
    if (ns < 0) return -1;
    if (ns != 1 || !fz_is_index_type(in[0].dtype)) FZ_FAIL("%s: size must be one int32/int64 value", op);
    int64_t n = fz_index_at(&in[0], 0);
    if (n < 0) FZ_FAIL("%s: size must not be negative, got %lld", op, (long long)n);
    if (out[0].dtype != a->output_datatype || fz_dtype_size(out[0].dtype) == 0 || out[0].dtype == FZ_FLOAT16 ||
        out[0].dtype == FZ_BFLOAT16)
        FZ_FAIL("%s: output type %s is not supported here (want %s)", op, fz_dtype_name(out[0].dtype),
                fz_dtype_name(a->output_datatype));
    if (fz_set_output(op, 0, &out[0], 1, &n)) return -1;
    /* onnxruntime's arithmetic: float coefficients derived as it derives them,
     * its truncated pi, double angles; size 1 symmetric divides by zero (NaN) */
    float c0, c1, c2 = 0.0f;
    if (a->kind == 0) { c0 = 0.5f; c1 = 0.5f; }
    else if (a->kind == 1) { c0 = 25.0f / 46.0f; c1 = 1.0f - c0; }
    else { c2 = 0.16f / 2.0f; c0 = 0.5f - c2; c1 = 0.5f; }
    const double tau = 2 * 3.14159265;
    double step = tau / (double)(a->periodic ? n : n - 1);
    for (int64_t k = 0; k < n; k++) {
        double w = (double)c0 - (double)c1 * cos(step * (double)k) +
                   (c2 == 0.0f ? 0.0 : (double)c2 * cos(2 * step * (double)k));
        double t = w == w ? w : 0.0; /* integer outputs: truncation of a value in [0, 1] */
        switch (out[0].dtype) {
        case FZ_FLOAT: ((float *)out[0].data)[k] = (float)w; break;
        case FZ_DOUBLE: ((double *)out[0].data)[k] = w; break;
        case FZ_INT8: ((int8_t *)out[0].data)[k] = (int8_t)t; break;
        case FZ_UINT8: ((uint8_t *)out[0].data)[k] = (uint8_t)(t > 0 ? t : 0); break;
        case FZ_INT16: ((int16_t *)out[0].data)[k] = (int16_t)t; break;
        case FZ_UINT16: ((uint16_t *)out[0].data)[k] = (uint16_t)(t > 0 ? t : 0); break;
        case FZ_INT32: ((int32_t *)out[0].data)[k] = (int32_t)t; break;
        case FZ_UINT32: ((uint32_t *)out[0].data)[k] = (uint32_t)(t > 0 ? t : 0); break;
        case FZ_INT64: ((int64_t *)out[0].data)[k] = (int64_t)t; break;
        case FZ_UINT64: ((uint64_t *)out[0].data)[k] = (uint64_t)(t > 0 ? t : 0); break;
        default: FZ_FAIL("%s: output type %s is not supported", op, fz_dtype_name(out[0].dtype));
        }
    }
    return 0;
}

/* -------------------------------------------------- DynamicQuantizeLinear */

static float clampf_(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

int fz_op_DynamicQuantizeLinear(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "DynamicQuantizeLinear";
    (void)attrs;
    if (n_in < 1 || n_out < 3) FZ_FAIL("%s: expects 1 input and 3 outputs", op);
    const fz_tensor *x = &in[0];
    int64_t n = fz_check(op, "input x", x);
    if (n < 0) return -1;
    if (x->dtype != FZ_FLOAT) FZ_FAIL("%s: x must be float32, got %s", op, fz_dtype_name(x->dtype));
    if (fz_out_dtype(op, 0, &out[0], FZ_UINT8) || fz_out_dtype(op, 1, &out[1], FZ_FLOAT) ||
        fz_out_dtype(op, 2, &out[2], FZ_UINT8))
        return -1;
    if (fz_set_output(op, 0, &out[0], x->rank, x->shape) || fz_set_output(op, 1, &out[1], 0, NULL) ||
        fz_set_output(op, 2, &out[2], 0, NULL))
        return -1;
    const float *xd = (const float *)x->data;
    float lo = 0.0f, hi = 0.0f; /* the range always includes 0 */
    for (int64_t i = 0; i < n; i++) {
        lo = xd[i] < lo ? xd[i] : lo;
        hi = xd[i] > hi ? xd[i] : hi;
    }
    float scale = hi == lo ? 1.0f : (hi - lo) / 255.0f; /* all zeros: scale 1, as onnxruntime */
    float zpf = nearbyintf(clampf_(0.0f - lo / scale, 0.0f, 255.0f));
    if (zpf != zpf) zpf = 0.0f;
    uint8_t *y = (uint8_t *)out[0].data;
    for (int64_t i = 0; i < n; i++) {
        float q = nearbyintf(xd[i] / scale) + zpf;
        y[i] = (uint8_t)clampf_(q == q ? q : 0.0f, 0.0f, 255.0f);
    }
    *(float *)out[1].data = scale;
    *(uint8_t *)out[2].data = (uint8_t)zpf;
    return 0;
}

/* ------------------------------------------------------------- AffineGrid */

/* normalized coordinate of position i of n: align_corners puts -1 and 1 on
 * the centers of the end pixels (a single pixel sits at 1, as onnxruntime's
 * Eigen LinSpaced gives), otherwise on their outer edges */
static double grid_coord(int64_t i, int64_t n, int align) {
    if (align) return n > 1 ? -1.0 + 2.0 * (double)i / (double)(n - 1) : 1.0;
    return (2.0 * (double)i + 1.0) / (double)n - 1.0;
}

int fz_op_AffineGrid(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "AffineGrid";
    const struct fz_attrs_AffineGrid *a = (const struct fz_attrs_AffineGrid *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects theta, size, 1 output and attributes", op);
    const fz_tensor *th = &in[0], *sz = &in[1];
    if (fz_check(op, "input theta", th) < 0 || fz_check(op, "input size", sz) < 0) return -1;
    if (th->dtype != FZ_FLOAT && th->dtype != FZ_DOUBLE) FZ_FAIL("%s: theta must be float32 or float64", op);
    if (!fz_is_index_type(sz->dtype) || sz->rank != 1 || (sz->shape[0] != 4 && sz->shape[0] != 5))
        FZ_FAIL("%s: size must be int64 [N, C, H, W] or [N, C, D, H, W]", op);
    int nd = (int)sz->shape[0] - 2; /* 2 or 3 spatial dims */
    int64_t N = fz_index_at(sz, 0), dims[3] = {1, 1, 1};
    for (int i = 0; i < nd; i++) dims[3 - nd + i] = fz_index_at(sz, 2 + i);
    if (N < 0 || dims[0] < 0 || dims[1] < 0 || dims[2] < 0) FZ_FAIL("%s: size must not be negative", op);
    if (th->rank != 3 || th->shape[0] != N || th->shape[1] != nd || th->shape[2] != nd + 1)
        FZ_FAIL("%s: theta must have shape [%lld, %d, %d]", op, (long long)N, nd, nd + 1);
    if (fz_out_dtype(op, 0, &out[0], th->dtype)) return -1;
    int64_t shape[5] = {N, 0, 0, 0, 0};
    for (int i = 0; i < nd; i++) shape[1 + i] = dims[3 - nd + i];
    shape[1 + nd] = nd;
    if (fz_set_output(op, 0, &out[0], nd + 2, shape)) return -1;
    int64_t o = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t dd = 0; dd < dims[0]; dd++)
            for (int64_t h = 0; h < dims[1]; h++)
                for (int64_t w = 0; w < dims[2]; w++) {
                    /* base point (x, y[, z]) from the fastest axis outwards, then theta @ [p, 1] */
                    double p[4] = {grid_coord(w, dims[2], a->align_corners), grid_coord(h, dims[1], a->align_corners),
                                   grid_coord(dd, dims[0], a->align_corners), 1.0};
                    if (nd == 2) p[2] = 1.0;
                    for (int r = 0; r < nd; r++) {
                        double acc = 0;
                        for (int c = 0; c <= nd; c++) {
                            int64_t ti = (n * nd + r) * (nd + 1) + c;
                            double t = th->dtype == FZ_FLOAT ? (double)((const float *)th->data)[ti]
                                                             : ((const double *)th->data)[ti];
                            acc += t * p[c];
                        }
                        if (th->dtype == FZ_FLOAT) ((float *)out[0].data)[o++] = (float)acc;
                        else ((double *)out[0].data)[o++] = acc;
                    }
                }
    return 0;
}

/* ----------------------------------------------------------------- Col2Im */

/* input [N, C * prod(block), L] -> image [N, C, *image_shape]: every column
 * entry is added at its pixel (overlaps sum, padding drops) */
int fz_op_Col2Im(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "Col2Im";
    const struct fz_attrs_Col2Im *a = (const struct fz_attrs_Col2Im *)attrs;
    if (a == NULL || n_in < 3 || n_out < 1) FZ_FAIL("%s: expects input, image_shape, block_shape, 1 output", op);
    const fz_tensor *x = &in[0], *is = &in[1], *bs = &in[2];
    if (fz_check(op, "input", x) < 0 || fz_check(op, "image_shape", is) < 0 || fz_check(op, "block_shape", bs) < 0)
        return -1;
    if (x->dtype != FZ_FLOAT && x->dtype != FZ_DOUBLE) FZ_FAIL("%s: input must be float32 or float64", op);
    if (!fz_is_index_type(is->dtype) || !fz_is_index_type(bs->dtype) || is->rank != 1 || bs->rank != 1 ||
        is->shape[0] != bs->shape[0] || is->shape[0] < 1 || is->shape[0] > 6)
        FZ_FAIL("%s: image_shape and block_shape must be int64 vectors of one length (1 to 6)", op);
    int nd = (int)is->shape[0];
    int64_t img[6], blk[6], cnt[6], bprod = 1, isz = 1, L = 1;
    for (int i = 0; i < nd; i++) {
        img[i] = fz_index_at(is, i);
        blk[i] = fz_index_at(bs, i);
        if (img[i] < 0 || blk[i] < 1 || a->strides[i] < 1 || a->dilations[i] < 1)
            FZ_FAIL("%s: bad image_shape, block_shape, strides or dilations", op);
        int64_t room = img[i] + a->pads[i] + a->pads[6 + i] - ((blk[i] - 1) * a->dilations[i] + 1);
        cnt[i] = room < 0 ? 0 : room / a->strides[i] + 1;
        bprod *= blk[i];
        isz *= img[i];
        L *= cnt[i];
    }
    if (x->rank != 3 || x->shape[1] % bprod || x->shape[2] != L)
        FZ_FAIL("%s: input must be [N, C * %lld, %lld] for these shapes", op, (long long)bprod, (long long)L);
    int64_t N = x->shape[0], C = x->shape[1] / bprod, shape[8] = {N, C};
    for (int i = 0; i < nd; i++) shape[2 + i] = img[i];
    if (fz_out_dtype(op, 0, &out[0], x->dtype) || fz_set_output(op, 0, &out[0], nd + 2, shape)) return -1;
    int64_t total = N * C * isz;
    int dbl = x->dtype == FZ_DOUBLE;
    if (total > 0) memset(out[0].data, 0, (size_t)total * (dbl ? 8 : 4));
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t b = 0; b < bprod; b++)
                for (int64_t l = 0; l < L; l++) {
                    int64_t rb = b, rl = l, pos = 0, inside = 1, bi[6], li[6];
                    for (int i = nd - 1; i >= 0; i--) { bi[i] = rb % blk[i]; rb /= blk[i]; li[i] = rl % cnt[i]; rl /= cnt[i]; }
                    for (int i = 0; i < nd && inside; i++) {
                        int64_t p = li[i] * a->strides[i] + bi[i] * a->dilations[i] - a->pads[i];
                        inside = p >= 0 && p < img[i];
                        pos = pos * img[i] + p;
                    }
                    if (!inside) continue;
                    int64_t src = ((n * C + c) * bprod + b) * L + l, dst = (n * C + c) * isz + pos;
                    if (dbl) ((double *)out[0].data)[dst] += ((const double *)x->data)[src];
                    else ((float *)out[0].data)[dst] += ((const float *)x->data)[src];
                }
    return 0;
}
