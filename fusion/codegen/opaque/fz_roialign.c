/* RoiAlign (opset 10/16), float32 and float64, following onnxruntime's CPU
 * kernel step by step (same sample grid, same bilinear weights, same order
 * of sums) so results agree to rounding. Its "max" mode takes the max of the
 * four weighted corner values per sample point, then the max over samples;
 * that is what onnxruntime computes, so it is what we compute. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

/* samples per RoI beyond which we refuse rather than allocate without bound */
#define FZ_ROI_MAX_SAMPLES (1LL << 26)

/* ceil(v) as int64 with onnxruntime's effective behaviour for values an
 * int64 cannot hold (NaN, inf, huge): no samples */
static int64_t grid_of(double v) {
    double c = ceil(v);
    if (!(c > -9.0e18 && c < 9.0e18)) return 0;
    return (int64_t)c;
}

#define FZ_ROIALIGN_IMPL(T, SUF)                                                                          \
    typedef struct { int64_t p1, p2, p3, p4; T w1, w2, w3, w4; } pre_##SUF;                              \
    static int roialign_##SUF(const fz_tensor *x, const fz_tensor *rois, const fz_tensor *bi,          \
                              const struct fz_attrs_RoiAlign *a, T *y) {                                \
        const char *op = "RoiAlign";                                                                   \
        const T *xd = (const T *)x->data, *rd = (const T *)rois->data;                                 \
        int64_t nroi = rois->shape[0], C = x->shape[1];                         \
        int64_t H = x->shape[2], W = x->shape[3], PH = a->output_height, PW = a->output_width;         \
        T offset = a->half_pixel ? (T)0.5 : (T)0;                                                      \
        for (int64_t n = 0; n < nroi; n++) {                                                           \
            int64_t b = fz_index_at(bi, n); /* checked by the caller */                                \
            const T *r = rd + n * 4;                                                                   \
            T sw = r[0] * a->spatial_scale - offset, sh = r[1] * a->spatial_scale - offset;            \
            T ew = r[2] * a->spatial_scale - offset, eh = r[3] * a->spatial_scale - offset;            \
            T rw = ew - sw, rh = eh - sh;                                                              \
            if (!a->half_pixel) { /* malformed RoIs become 1x1 */                                      \
                if (rw < (T)1) rw = (T)1;                                                              \
                if (rh < (T)1) rh = (T)1;                                                              \
            }                                                                                          \
            T bh = rh / (T)PH, bw = rw / (T)PW;                                                        \
            int64_t gh = a->sampling_ratio > 0 ? a->sampling_ratio : grid_of((double)(rh / (T)PH));    \
            int64_t gw = a->sampling_ratio > 0 ? a->sampling_ratio : grid_of((double)(rw / (T)PW));    \
            if (gh < 0) gh = 0;                                                                        \
            if (gw < 0) gw = 0;                                                                        \
            if (gh > 0 && gw > 0 && (gh > FZ_ROI_MAX_SAMPLES / gw ||                                   \
                                     gh * gw > FZ_ROI_MAX_SAMPLES / (PH * PW)))                        \
                FZ_FAIL("%s: RoI %lld needs a %lldx%lld sample grid per bin; too large", op,            \
                        (long long)n, (long long)gh, (long long)gw);                                   \
            int64_t count = gh * gw > 1 ? gh * gw : 1;                                                 \
            pre_##SUF *pre = (pre_##SUF *)fz_alloc(op, gh * gw * PH * PW, sizeof(pre_##SUF));          \
            if (pre == NULL) return -1;                                                                \
            int64_t k = 0;                                                                             \
            for (int64_t ph = 0; ph < PH; ph++)                                                        \
                for (int64_t pw = 0; pw < PW; pw++)                                                    \
                    for (int64_t iy = 0; iy < gh; iy++) {                                              \
                        const T yy = sh + ph * bh + (T)(iy + .5f) * bh / (T)gh;                        \
                        for (int64_t ix = 0; ix < gw; ix++, k++) {                                     \
                            const T xx = sw + pw * bw + (T)(ix + .5f) * bw / (T)gw;                    \
                            T yv = yy, xv = xx;                                                        \
                            pre_##SUF *p = &pre[k];                                                    \
                            if (yv < -1.0 || yv > H || xv < -1.0 || xv > W || isnan(yv) || isnan(xv)) { \
                                memset(p, 0, sizeof *p);                                               \
                                continue;                                                              \
                            }                                                                          \
                            if (yv <= 0) yv = 0;                                                       \
                            if (xv <= 0) xv = 0;                                                       \
                            int64_t yl = (int64_t)yv, xl = (int64_t)xv, yh, xh;                        \
                            if (yl >= H - 1) { yh = yl = H - 1; yv = (T)yl; } else yh = yl + 1;        \
                            if (xl >= W - 1) { xh = xl = W - 1; xv = (T)xl; } else xh = xl + 1;        \
                            T ly = yv - yl, lx = xv - xl, hy = (T)1. - ly, hx = (T)1. - lx;            \
                            p->p1 = yl * W + xl; p->p2 = yl * W + xh;                                  \
                            p->p3 = yh * W + xl; p->p4 = yh * W + xh;                                  \
                            p->w1 = hy * hx; p->w2 = hy * lx; p->w3 = ly * hx; p->w4 = ly * lx;        \
                        }                                                                              \
                    }                                                                                  \
            for (int64_t c = 0; c < C; c++) {                                                          \
                const T *plane = xd + (b * C + c) * H * W;                                             \
                T *yo = y + (n * C + c) * PH * PW;                                                     \
                k = 0;                                                                                 \
                for (int64_t ph = 0; ph < PH; ph++)                                                    \
                    for (int64_t pw = 0; pw < PW; pw++) {                                              \
                        T acc = 0;                                                                     \
                        if (a->mode == 0) {                                                            \
                            for (int64_t s = 0; s < gh * gw; s++, k++) {                               \
                                const pre_##SUF *p = &pre[k];                                          \
                                acc += p->w1 * plane[p->p1] + p->w2 * plane[p->p2] +                   \
                                       p->w3 * plane[p->p3] + p->w4 * plane[p->p4];                    \
                            }                                                                          \
                            acc /= (T)count;                                                           \
                        } else {                                                                       \
                            for (int64_t s = 0; s < gh * gw; s++, k++) {                               \
                                const pre_##SUF *p = &pre[k];                                          \
                                T v = p->w1 * plane[p->p1], t;                                         \
                                t = p->w2 * plane[p->p2]; v = v < t ? t : v;                           \
                                t = p->w3 * plane[p->p3]; v = v < t ? t : v;                           \
                                t = p->w4 * plane[p->p4]; v = v < t ? t : v;                           \
                                acc = s == 0 ? v : (acc < v ? v : acc);                                \
                            }                                                                          \
                        }                                                                              \
                        yo[ph * PW + pw] = acc;                                                        \
                    }                                                                                  \
            }                                                                                          \
            free(pre);                                                                                 \
        }                                                                                              \
        return 0;                                                                                      \
    }

FZ_ROIALIGN_IMPL(float, f32)
FZ_ROIALIGN_IMPL(double, f64)

int fz_op_RoiAlign(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "RoiAlign";
    const struct fz_attrs_RoiAlign *a = (const struct fz_attrs_RoiAlign *)attrs;
    if (a == NULL || n_in < 3 || n_out < 1) FZ_FAIL("%s: expects X, rois, batch_indices, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *rois = &in[1], *bi = &in[2];
    if (fz_check(op, "input X", x) < 0 || fz_check(op, "input rois", rois) < 0 ||
        fz_check(op, "input batch_indices", bi) < 0)
        return -1;
    if (x->dtype != FZ_FLOAT && x->dtype != FZ_DOUBLE)
        FZ_FAIL("%s: X must be float32 or float64, got %s", op, fz_dtype_name(x->dtype));
    if (rois->dtype != x->dtype) FZ_FAIL("%s: rois must have X's type %s", op, fz_dtype_name(x->dtype));
    if (!fz_is_index_type(bi->dtype)) FZ_FAIL("%s: batch_indices must be int64", op);
    if (x->rank != 4) FZ_FAIL("%s: X must be 4-D (N, C, H, W), got rank %d", op, (int)x->rank);
    if (rois->rank != 2 || rois->shape[1] != 4) FZ_FAIL("%s: rois must have shape [num_rois, 4]", op);
    if (bi->rank != 1 || bi->shape[0] != rois->shape[0])
        FZ_FAIL("%s: batch_indices must have shape [num_rois] = [%lld]", op, (long long)rois->shape[0]);
    if (a->output_height < 0 || a->output_width < 0)
        FZ_FAIL("%s: output_height and output_width must not be negative (got %lld, %lld)", op,
                (long long)a->output_height, (long long)a->output_width);
    if (a->mode != 0 && a->mode != 1) FZ_FAIL("%s: mode must be avg or max", op);
    if (fz_out_dtype(op, 0, &out[0], x->dtype)) return -1;
    int64_t shape[4] = {rois->shape[0], x->shape[1], a->output_height, a->output_width};
    if (shape[0] > 0 && shape[1] > 0 && (x->shape[2] == 0 || x->shape[3] == 0))
        FZ_FAIL("%s: X has an empty spatial extent", op);
    if (fz_set_output(op, 0, &out[0], 4, shape)) return -1;
    for (int64_t n = 0; n < rois->shape[0]; n++) { /* checked even when the output is empty, as onnxruntime does */
        int64_t b = fz_index_at(bi, n);
        if (b < 0 || b >= x->shape[0])
            FZ_FAIL("%s: batch_indices[%lld] = %lld is out of range [0, %lld)", op, (long long)n, (long long)b,
                    (long long)x->shape[0]);
    }
    if (fz_count(4, shape) == 0) return 0;
    return x->dtype == FZ_FLOAT ? roialign_f32(x, rois, bi, a, (float *)out[0].data)
                                : roialign_f64(x, rois, bi, a, (double *)out[0].data);
}
