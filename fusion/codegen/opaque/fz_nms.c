/* NonMaxSuppression (opset 10/11) with onnxruntime's exact selection order:
 * per batch, per class, candidates by score descending (ties: lower box
 * index first), greedy against the boxes already kept for that class.
 * IoU is computed in float exactly as onnxruntime does, and without fused
 * multiply-adds: a contracted a*b+c can flip an IoU sitting on the threshold. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

typedef struct {
    float y0, x0, y1, x1, area;
} box_t;

/* std::min / std::max / MaxMin as onnxruntime evaluates them (NaN-exact) */
static float fmax_(float a, float b) { return a < b ? b : a; }
static float fmin_(float a, float b) { return b < a ? b : a; }
static void minmax(float l, float r, float *mn, float *mx) {
    if (l >= r) { *mn = r; *mx = l; } else { *mn = l; *mx = r; }
}

static void box_of(const float *b, int center, box_t *o) {
    if (center == 0) { /* [y1, x1, y2, x2], corners in any order */
        minmax(b[1], b[3], &o->x0, &o->x1);
        minmax(b[0], b[2], &o->y0, &o->y1);
        o->area = (o->y1 - o->y0) * (o->x1 - o->x0);
    } else { /* [x_center, y_center, width, height] */
        float hw = b[2] / 2, hh = b[3] / 2;
        o->area = b[2] * b[3];
        o->x0 = b[0] - hw;
        o->x1 = b[0] + hw;
        o->y0 = b[1] - hh;
        o->y1 = b[1] + hh;
    }
}

/* a: the candidate, b: a box already kept */
static int suppress(const box_t *a, const box_t *b, float iou_threshold) {
    float ix0 = fmax_(a->x0, b->x0), ix1 = fmin_(a->x1, b->x1);
    if (ix1 <= ix0) return 0;
    float iy0 = fmax_(a->y0, b->y0), iy1 = fmin_(a->y1, b->y1);
    if (iy1 <= iy0) return 0;
    float inter = (ix1 - ix0) * (iy1 - iy0);
    if (inter <= 0.0f) return 0;
    float uni = a->area + b->area - inter;
    float iou = inter / uni;
    return iou > iou_threshold;
}

typedef struct {
    float s;
    int64_t i;
} cand_t;

/* a pops before b: score descending, then index ascending; NaN scores last
 * (a total order, so the pop order is fully defined for any input) */
static inline int before(cand_t a, cand_t b) {
    int na = isnan(a.s), nb = isnan(b.s);
    if (na || nb) return na && nb ? a.i < b.i : nb;
    return a.s > b.s || (a.s == b.s && a.i < b.i);
}

static void sift_down(cand_t *h, int64_t n, int64_t pos) {
    cand_t v = h[pos];
    for (;;) {
        int64_t l = 2 * pos + 1, r = l + 1, w = pos;
        cand_t wv = v;
        if (l < n && before(h[l], wv)) { w = l; wv = h[l]; }
        if (r < n && before(h[r], wv)) w = r;
        if (w == pos) break;
        h[pos] = h[w];
        pos = w;
    }
    h[pos] = v;
}

int fz_op_NonMaxSuppression(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "NonMaxSuppression";
    const struct fz_attrs_NonMaxSuppression *a = (const struct fz_attrs_NonMaxSuppression *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects boxes, scores, 1 output and attributes", op);
    if (a->center_point_box != 0 && a->center_point_box != 1)
        FZ_FAIL("%s: center_point_box must be 0 or 1, got %d", op, (int)a->center_point_box);
    const fz_tensor *bt = &in[0], *st = &in[1];
    if (fz_check(op, "input boxes", bt) < 0 || fz_check(op, "input scores", st) < 0) return -1;
    if (bt->dtype != FZ_FLOAT || st->dtype != FZ_FLOAT)
        FZ_FAIL("%s: boxes and scores must be float32 (got %s and %s)", op, fz_dtype_name(bt->dtype),
                fz_dtype_name(st->dtype));
    if (bt->rank != 3 || st->rank != 3) FZ_FAIL("%s: boxes and scores must be 3-D tensors", op);
    if (bt->shape[2] != 4) FZ_FAIL("%s: the last dimension of boxes must be 4, got %lld", op, (long long)bt->shape[2]);
    if (bt->shape[0] != st->shape[0])
        FZ_FAIL("%s: boxes and scores have different batch sizes (%lld vs %lld)", op, (long long)bt->shape[0],
                (long long)st->shape[0]);
    if (bt->shape[1] != st->shape[2])
        FZ_FAIL("%s: boxes have %lld boxes but scores %lld", op, (long long)bt->shape[1], (long long)st->shape[2]);
    int64_t max_out = 0;
    float iou_threshold = 0.0f, score_threshold = 0.0f;
    int has_score_threshold = 0;
    if (fz_present(in, n_in, 2)) {
        int64_t n = fz_check(op, "input max_output_boxes_per_class", &in[2]);
        if (n < 0) return -1;
        if (!fz_is_index_type(in[2].dtype)) FZ_FAIL("%s: max_output_boxes_per_class must be int64", op);
        if (n > 0) max_out = fz_index_at(&in[2], 0);
        if (max_out < 0) max_out = 0;
    }
    if (fz_present(in, n_in, 3)) {
        int64_t n = fz_check(op, "input iou_threshold", &in[3]);
        if (n < 0) return -1;
        if (in[3].dtype != FZ_FLOAT) FZ_FAIL("%s: iou_threshold must be float32", op);
        if (n > 0) iou_threshold = ((const float *)in[3].data)[0];
        if (!(iou_threshold >= 0.0f && iou_threshold <= 1.0f))
            FZ_FAIL("%s: iou_threshold must be in [0, 1], got %g", op, (double)iou_threshold);
    }
    if (fz_present(in, n_in, 4)) {
        int64_t n = fz_check(op, "input score_threshold", &in[4]);
        if (n < 0) return -1;
        if (in[4].dtype != FZ_FLOAT) FZ_FAIL("%s: score_threshold must be float32", op);
        if (n > 0) { score_threshold = ((const float *)in[4].data)[0]; has_score_threshold = 1; }
    }
    if (fz_out_dtype(op, 0, &out[0], FZ_INT64)) return -1;
    int64_t cap = fz_check(op, "output", &out[0]);
    if (cap < 0) return -1;
    cap /= 3;

    int64_t nb = bt->shape[0], nc = st->shape[1], nbox = bt->shape[1], nsel = 0;
    int64_t *sel = (int64_t *)out[0].data;
    if (max_out > 0 && nbox > 0 && nc > 0 && nb > 0) {
        int64_t keep_cap = max_out < nbox ? max_out : nbox;
        box_t *boxes = (box_t *)fz_alloc(op, nbox, sizeof(box_t));
        box_t *kept = (box_t *)fz_alloc(op, keep_cap, sizeof(box_t));
        /* a heap, as onnxruntime's priority queue: only the candidates actually
         * examined pay for ordering (selection usually stops early) */
        cand_t *heap = (cand_t *)fz_alloc(op, nbox, sizeof(cand_t));
        if (!boxes || !kept || !heap) { free(boxes); free(kept); free(heap); return -1; }
        int rc = 0;
        for (int64_t b = 0; b < nb && rc == 0; b++) {
            const float *bd = (const float *)bt->data + b * nbox * 4;
            for (int64_t i = 0; i < nbox; i++) box_of(bd + 4 * i, a->center_point_box, &boxes[i]);
            for (int64_t c = 0; c < nc && rc == 0; c++) {
                const float *sc = (const float *)st->data + (b * nc + c) * nbox;
                int64_t m = 0;
                for (int64_t i = 0; i < nbox; i++)
                    if (!has_score_threshold || sc[i] > score_threshold) { heap[m].s = sc[i]; heap[m].i = i; m++; }
                for (int64_t p = m / 2 - 1; p >= 0; p--) sift_down(heap, m, p);
                int64_t nk = 0;
                while (m > 0 && nk < max_out) {
                    int64_t idx = heap[0].i;
                    heap[0] = heap[--m];
                    if (m > 0) sift_down(heap, m, 0);
                    const box_t *cand = &boxes[idx];
                    int keep = 1;
                    for (int64_t q = 0; q < nk && keep; q++) keep = !suppress(cand, &kept[q], iou_threshold);
                    if (!keep) continue;
                    if (nsel >= cap) {
                        fz_opaque_set_error("%s: more than %lld boxes selected, beyond the output the caller "
                                            "allocated (a bug in max_output_shapes)", op, (long long)cap);
                        rc = -1;
                        break;
                    }
                    kept[nk++] = *cand;
                    sel[3 * nsel] = b;
                    sel[3 * nsel + 1] = c;
                    sel[3 * nsel + 2] = idx;
                    nsel++;
                }
            }
        }
        free(boxes); free(kept); free(heap);
        if (rc) return rc;
    }
    int64_t shape[2] = {nsel, 3};
    return fz_set_output(op, 0, &out[0], 2, shape);
}
