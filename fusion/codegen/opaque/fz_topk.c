/* TopK (opset 11+): ties go to the lower index and NaN ranks above every
 * number, as onnxruntime does. sorted=0 also returns sorted order (the spec
 * leaves the order open; onnxruntime's differs and is not specified). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

typedef struct {
    const void *x;
    int64_t base, stride;
} slice_ctx;

/* "a ranks before b" for largest=1 (gt) and largest=0 (lt), per type */
#define FZ_FLOAT_CMP(T, SUF)                                                          \
    static int gt_##SUF(const void *c, int64_t a, int64_t b) {                        \
        const slice_ctx *s = (const slice_ctx *)c;                                    \
        T va = ((const T *)s->x)[s->base + a * s->stride];                            \
        T vb = ((const T *)s->x)[s->base + b * s->stride];                            \
        int na = isnan(va), nb = isnan(vb);                                           \
        if (na || nb) return na && nb ? a < b : na;                                   \
        return va > vb || (va == vb && a < b);                                        \
    }                                                                                 \
    static int lt_##SUF(const void *c, int64_t a, int64_t b) {                        \
        const slice_ctx *s = (const slice_ctx *)c;                                    \
        T va = ((const T *)s->x)[s->base + a * s->stride];                            \
        T vb = ((const T *)s->x)[s->base + b * s->stride];                            \
        int na = isnan(va), nb = isnan(vb);                                           \
        if (na || nb) return na && nb ? a < b : nb;                                   \
        return va < vb || (va == vb && a < b);                                        \
    }

#define FZ_INT_CMP(T, SUF)                                                            \
    static int gt_##SUF(const void *c, int64_t a, int64_t b) {                        \
        const slice_ctx *s = (const slice_ctx *)c;                                    \
        T va = ((const T *)s->x)[s->base + a * s->stride];                            \
        T vb = ((const T *)s->x)[s->base + b * s->stride];                            \
        return va > vb || (va == vb && a < b);                                        \
    }                                                                                 \
    static int lt_##SUF(const void *c, int64_t a, int64_t b) {                        \
        const slice_ctx *s = (const slice_ctx *)c;                                    \
        T va = ((const T *)s->x)[s->base + a * s->stride];                            \
        T vb = ((const T *)s->x)[s->base + b * s->stride];                            \
        return va < vb || (va == vb && a < b);                                        \
    }

FZ_FLOAT_CMP(float, f32)
FZ_FLOAT_CMP(double, f64)
FZ_INT_CMP(int32_t, i32)
FZ_INT_CMP(int64_t, i64)
FZ_INT_CMP(uint8_t, u8)
FZ_INT_CMP(int8_t, i8)
FZ_INT_CMP(uint32_t, u32)
FZ_INT_CMP(uint64_t, u64)

static fz_less_fn pick(int32_t dtype, int largest) {
    switch (dtype) {
    case FZ_FLOAT: return largest ? gt_f32 : lt_f32;
    case FZ_DOUBLE: return largest ? gt_f64 : lt_f64;
    case FZ_INT32: return largest ? gt_i32 : lt_i32;
    case FZ_INT64: return largest ? gt_i64 : lt_i64;
    case FZ_UINT8: return largest ? gt_u8 : lt_u8;
    case FZ_INT8: return largest ? gt_i8 : lt_i8;
    case FZ_UINT32: return largest ? gt_u32 : lt_u32;
    case FZ_UINT64: return largest ? gt_u64 : lt_u64;
    default: return NULL;
    }
}

/* Keeps the k best positions of [0, n) in heap[0..k) (worst at the root),
 * then the caller sorts them. O(n log k): pays when k is much below n. Typed
 * so the scan, where nearly every element is rejected, is an inline compare. */
#define FZ_HEAP_SELECT(T, SUF, ISF)                                                        \
    static inline int better_##SUF(T va, int64_t a, T vb, int64_t b, int largest) {       \
        if (ISF) {                                                                         \
            int na = va != va, nb = vb != vb;                                              \
            if (na || nb) return na && nb ? a < b : (largest ? na : nb);                   \
        }                                                                                  \
        if (va == vb) return a < b;                                                        \
        return largest ? va > vb : va < vb;                                                \
    }                                                                                      \
    static void heap_select_##SUF(const T *x, int64_t stride, int64_t n, int64_t k,      \
                                  int largest, int64_t *heap) {                            \
        for (int64_t i = 0; i < n; i++) {                                                  \
            T v = x[i * stride];                                                           \
            int64_t pos;                                                                   \
            if (i < k) { /* sift up */                                                     \
                pos = i;                                                                   \
                heap[pos] = i;                                                             \
                while (pos > 0) {                                                          \
                    int64_t par = (pos - 1) / 2;                                           \
                    if (!better_##SUF(x[heap[par] * stride], heap[par], v, i, largest)) break; \
                    heap[pos] = heap[par];                                                 \
                    heap[par] = i;                                                         \
                    pos = par;                                                             \
                }                                                                          \
                continue;                                                                  \
            }                                                                              \
            if (!better_##SUF(v, i, x[heap[0] * stride], heap[0], largest)) continue;      \
            pos = 0; /* sift down: the worse child rises */                                \
            for (;;) {                                                                     \
                int64_t l = 2 * pos + 1, r = l + 1, w = -1;                                \
                T wv = v;                                                                  \
                int64_t wi = i;                                                            \
                if (l < k && better_##SUF(wv, wi, x[heap[l] * stride], heap[l], largest)) {  \
                    w = l; wv = x[heap[l] * stride]; wi = heap[l];                         \
                }                                                                          \
                if (r < k && better_##SUF(wv, wi, x[heap[r] * stride], heap[r], largest)) w = r; \
                if (w < 0) break;                                                          \
                heap[pos] = heap[w];                                                       \
                pos = w;                                                                   \
            }                                                                              \
            heap[pos] = i;                                                                 \
        }                                                                                  \
    }

FZ_HEAP_SELECT(float, f32, 1)
FZ_HEAP_SELECT(double, f64, 1)
FZ_HEAP_SELECT(int32_t, i32, 0)
FZ_HEAP_SELECT(int64_t, i64, 0)
FZ_HEAP_SELECT(uint8_t, u8, 0)
FZ_HEAP_SELECT(int8_t, i8, 0)
FZ_HEAP_SELECT(uint32_t, u32, 0)
FZ_HEAP_SELECT(uint64_t, u64, 0)

static void heap_select(int32_t dtype, const void *x, int64_t stride, int64_t n, int64_t k, int largest,
                        int64_t *heap) {
    switch (dtype) {
    case FZ_FLOAT: heap_select_f32((const float *)x, stride, n, k, largest, heap); break;
    case FZ_DOUBLE: heap_select_f64((const double *)x, stride, n, k, largest, heap); break;
    case FZ_INT32: heap_select_i32((const int32_t *)x, stride, n, k, largest, heap); break;
    case FZ_INT64: heap_select_i64((const int64_t *)x, stride, n, k, largest, heap); break;
    case FZ_UINT8: heap_select_u8((const uint8_t *)x, stride, n, k, largest, heap); break;
    case FZ_INT8: heap_select_i8((const int8_t *)x, stride, n, k, largest, heap); break;
    case FZ_UINT32: heap_select_u32((const uint32_t *)x, stride, n, k, largest, heap); break;
    default: heap_select_u64((const uint64_t *)x, stride, n, k, largest, heap); break;
    }
}

int fz_op_TopK(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "TopK";
    const struct fz_attrs_TopK *a = (const struct fz_attrs_TopK *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects 2 inputs, 1 or 2 outputs and attributes", op);
    /* either output may be unused: absent (dtype FZ_UNDEFINED) or past n_out */
    int want_v = out[0].dtype != FZ_UNDEFINED, want_i = n_out > 1 && out[1].dtype != FZ_UNDEFINED;
    const fz_tensor *x = &in[0], *kt = &in[1];
    if (fz_check(op, "input X", x) < 0) return -1;
    int64_t nk = fz_check(op, "input K", kt);
    if (nk < 0) return -1;
    if (nk != 1 || !fz_is_index_type(kt->dtype))
        FZ_FAIL("%s: K must hold one int64 value (got %lld %s elements)", op, (long long)nk, fz_dtype_name(kt->dtype));
    fz_less_fn better = pick(x->dtype, a->largest);
    if (better == NULL) FZ_FAIL("%s: element type %s is not supported", op, fz_dtype_name(x->dtype));
    if (x->rank == 0) FZ_FAIL("%s: input X must have rank >= 1", op);
    int axis = fz_axis(op, a->axis, x->rank);
    if (axis < 0) return -1;
    int64_t k = fz_index_at(kt, 0), n = x->shape[axis];
    if (k < 0 || k > n)
        FZ_FAIL("%s: K = %lld is outside [0, %lld] (the size of axis %d)", op, (long long)k, (long long)n, axis);
    if ((want_v && fz_out_dtype(op, 0, &out[0], x->dtype)) || (want_i && fz_out_dtype(op, 1, &out[1], FZ_INT64)))
        return -1;
    int64_t oshape[FZ_MAX_RANK];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[axis] = k;
    if ((want_v && fz_set_output(op, 0, &out[0], x->rank, oshape)) ||
        (want_i && fz_set_output(op, 1, &out[1], x->rank, oshape)))
        return -1;

    int64_t outer = fz_count(axis, x->shape), inner = fz_count(x->rank - axis - 1, x->shape + axis + 1);
    if (k == 0 || outer == 0 || inner == 0) return 0;
    /* full sort when k is a large part of n, heap selection otherwise */
    int full = k * 8 >= n;
    int64_t *pos = (int64_t *)fz_alloc(op, full ? n : k, sizeof(int64_t));
    int64_t *tmp = (int64_t *)fz_alloc(op, full ? n : k, sizeof(int64_t));
    if (pos == NULL || tmp == NULL) { free(pos); free(tmp); return -1; }
    size_t es = (size_t)fz_dtype_size(x->dtype);
    const char *xd = (const char *)x->data;
    char *vd = want_v ? (char *)out[0].data : NULL;
    int64_t *id = want_i ? (int64_t *)out[1].data : NULL;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            slice_ctx c = {x->data, o * n * inner + i, inner};
            if (full) {
                for (int64_t j = 0; j < n; j++) pos[j] = j;
                fz_merge_sort(pos, n, tmp, better, &c);
            } else {
                heap_select(x->dtype, xd + (size_t)c.base * es, inner, n, k, a->largest, pos);
                fz_merge_sort(pos, k, tmp, better, &c);
            }
            int64_t ob = o * k * inner + i;
            for (int64_t j = 0; j < k; j++) {
                if (vd) fz_copy(vd + (size_t)(ob + j * inner) * es, xd + (size_t)(c.base + pos[j] * inner) * es, es);
                if (id) id[ob + j * inner] = pos[j];
            }
        }
    }
    free(pos);
    free(tmp);
    return 0;
}
