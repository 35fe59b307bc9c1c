/* Data-dependent indexing: NonZero, Compress, GatherND, ScatterND,
 * ScatterElements, ReverseSequence, TensorScatter. Element moves are byte copies, so any
 * fixed-size type works; scatter reductions are typed. Every index is
 * bounds-checked (negative ones wrap, as ONNX allows) before it is used. */
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

/* ---------------------------------------------------------------- NonZero */

static int nonzero_at(const char *p, int32_t dtype, int es) {
    switch (dtype) {
    case FZ_FLOAT: { float v; memcpy(&v, p, 4); return v != 0.0f; } /* -0 is zero, NaN is not */
    case FZ_DOUBLE: { double v; memcpy(&v, p, 8); return v != 0.0; }
    case FZ_FLOAT16: case FZ_BFLOAT16: { uint16_t v; memcpy(&v, p, 2); return (v & 0x7fff) != 0; }
    default:
        for (int i = 0; i < es; i++) if (p[i]) return 1;
        return 0;
    }
}

int fz_op_NonZero(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "NonZero";
    (void)attrs;
    if (n_in < 1 || n_out < 1) FZ_FAIL("%s: expects 1 input and 1 output", op);
    int64_t n = fz_check(op, "input X", &in[0]);
    if (n < 0 || fz_out_dtype(op, 0, &out[0], FZ_INT64)) return -1;
    const fz_tensor *x = &in[0];
    int es = fz_dtype_size(x->dtype);
    const char *xd = (const char *)x->data;
    int64_t nnz = 0;
    for (int64_t i = 0; i < n; i++) nnz += nonzero_at(xd + i * es, x->dtype, es);
    int rank = x->rank > 0 ? x->rank : 1; /* a scalar reports one coordinate, 0 (as onnxruntime) */
    int64_t shape[2] = {rank, nnz};
    if (fz_set_output(op, 0, &out[0], 2, shape)) return -1;
    int64_t *o = (int64_t *)out[0].data, j = 0;
    int64_t idx[FZ_MAX_RANK] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (nonzero_at(xd + i * es, x->dtype, es)) {
            for (int d = 0; d < rank; d++) o[d * nnz + j] = x->rank ? idx[d] : 0;
            j++;
        }
        for (int d = x->rank - 1; d >= 0; d--) { /* row-major increment */
            if (++idx[d] < x->shape[d]) break;
            idx[d] = 0;
        }
    }
    return 0;
}

/* --------------------------------------------------------------- Compress */

int fz_op_Compress(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "Compress";
    const struct fz_attrs_Compress *a = (const struct fz_attrs_Compress *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects input, condition, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *cond = &in[1];
    int64_t n = fz_check(op, "input", x), nc = fz_check(op, "input condition", cond);
    if (n < 0 || nc < 0) return -1;
    if (cond->dtype != FZ_BOOL || cond->rank != 1) FZ_FAIL("%s: condition must be a 1-D bool tensor", op);
    if (fz_out_dtype(op, 0, &out[0], x->dtype)) return -1;
    const uint8_t *c = (const uint8_t *)cond->data;
    int es = fz_dtype_size(x->dtype);
    int64_t outer = 1, dim = n, inner = 1;
    int axis = 0;
    if (a->has_axis) {
        if (x->rank == 0) FZ_FAIL("%s: input must have rank >= 1 when axis is given", op);
        axis = fz_axis(op, a->axis, x->rank);
        if (axis < 0) return -1;
        outer = fz_count(axis, x->shape);
        dim = x->shape[axis];
        inner = fz_count(x->rank - axis - 1, x->shape + axis + 1);
    }
    int64_t use = nc < dim ? nc : dim, kept = 0; /* a longer condition is ignored past the end */
    for (int64_t j = 0; j < use; j++) kept += c[j] != 0;
    int64_t shape[FZ_MAX_RANK];
    int rank = 1;
    if (a->has_axis) {
        memcpy(shape, x->shape, sizeof shape);
        shape[axis] = kept;
        rank = x->rank;
    } else {
        shape[0] = kept;
    }
    if (fz_set_output(op, 0, &out[0], rank, shape)) return -1;
    char *o = (char *)out[0].data;
    const char *xd = (const char *)x->data;
    size_t row = (size_t)inner * es;
    for (int64_t p = 0; p < outer; p++)
        for (int64_t j = 0; j < use; j++)
            if (c[j]) {
                fz_copy(o, xd + ((size_t)p * dim + j) * row, row);
                o += row;
            }
    return 0;
}

/* ------------------------------------------------------ index arithmetic */

/* offset of an index tuple into dims[0..m) with strides; -1 when out of range */
static int64_t tuple_offset(const char *op, const fz_tensor *ind, int64_t at, int m, const int64_t *dims,
                            const int64_t *strides) {
    int64_t off = 0;
    for (int j = 0; j < m; j++) {
        int64_t v = fz_index_at(ind, at + j), d = dims[j];
        if (v < -d || v >= d) {
            fz_opaque_set_error("%s: index %lld is out of range for a dimension of size %lld", op, (long long)v,
                                (long long)d);
            return -1;
        }
        off += (v < 0 ? v + d : v) * strides[j];
    }
    return off;
}

static void strides_of(int rank, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) { strides[d] = s; s *= shape[d]; }
}

/* --------------------------------------------------------------- GatherND */

int fz_op_GatherND(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "GatherND";
    const struct fz_attrs_GatherND *a = (const struct fz_attrs_GatherND *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects data, indices, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *ind = &in[1];
    if (fz_check(op, "input data", x) < 0 || fz_check(op, "input indices", ind) < 0) return -1;
    if (!fz_is_index_type(ind->dtype)) FZ_FAIL("%s: indices must be int64", op);
    int r = x->rank, q = ind->rank;
    int64_t b = a->batch_dims;
    if (q < 1 || r < 1) FZ_FAIL("%s: data and indices must have rank >= 1", op);
    if (b < 0 || b >= q || b >= r) FZ_FAIL("%s: batch_dims %lld must be below both ranks (%d, %d)", op, (long long)b, r, q);
    int64_t m = ind->shape[q - 1];
    if (m < 1 || m > r - b)
        FZ_FAIL("%s: the last dimension of indices (%lld) must be in [1, %lld]", op, (long long)m, (long long)(r - b));
    for (int d = 0; d < b; d++)
        if (ind->shape[d] != x->shape[d]) FZ_FAIL("%s: batch dimension %d differs between data and indices", op, d);
    if (fz_out_dtype(op, 0, &out[0], x->dtype)) return -1;
    int64_t shape[FZ_MAX_RANK * 2];
    int orank = 0;
    for (int d = 0; d < q - 1; d++) shape[orank++] = ind->shape[d];
    for (int d = (int)(b + m); d < r; d++) shape[orank++] = x->shape[d];
    if (fz_set_output(op, 0, &out[0], orank, shape)) return -1;
    int64_t strides[FZ_MAX_RANK];
    strides_of(r, x->shape, strides);
    int64_t nbatch = fz_count((int)b, x->shape), per = fz_count(q - 1 - (int)b, ind->shape + b);
    int64_t slice = fz_count(r - (int)(b + m), x->shape + b + m), bstride = b > 0 ? strides[b - 1] : 0;
    int es = fz_dtype_size(x->dtype);
    const char *xd = (const char *)x->data;
    char *o = (char *)out[0].data;
    for (int64_t bb = 0; bb < nbatch; bb++)
        for (int64_t t = 0; t < per; t++) {
            int64_t off = tuple_offset(op, ind, (bb * per + t) * m, (int)m, x->shape + b, strides + b);
            if (off < 0) return -1;
            fz_copy(o + (size_t)((bb * per + t) * slice) * es, xd + (size_t)(bb * bstride + off) * es, (size_t)slice * es);
        }
    return 0;
}

/* ------------------------------------------------------- scatter helpers */

#define FZ_REDUCE_T(T)                                                                  \
    do {                                                                                \
        T *dp = (T *)d; const T *sp = (const T *)s;                                     \
        for (int64_t i = 0; i < n; i++) {                                               \
            T u = sp[i], v = dp[i];                                                     \
            dp[i] = red == FZ_REDUCE_ADD ? (T)(v + u) : red == FZ_REDUCE_MUL ? (T)(v * u) \
                  : red == FZ_REDUCE_MAX ? (v < u ? u : v) : (u < v ? u : v);           \
        }                                                                               \
    } while (0)

/* dst[0..n) = dst (reduction) src, or a copy for FZ_REDUCE_NONE */
static int apply(const char *op, void *d, const void *s, int64_t n, int32_t dtype, int red) {
    if (red == FZ_REDUCE_NONE) { fz_copy(d, s, (size_t)n * fz_dtype_size(dtype)); return 0; }
    switch (dtype) {
    case FZ_FLOAT: FZ_REDUCE_T(float); break;
    case FZ_DOUBLE: FZ_REDUCE_T(double); break;
    case FZ_INT32: FZ_REDUCE_T(int32_t); break;
    case FZ_INT64: FZ_REDUCE_T(int64_t); break;
    case FZ_UINT8: FZ_REDUCE_T(uint8_t); break;
    case FZ_INT8: FZ_REDUCE_T(int8_t); break;
    case FZ_BOOL: { /* onnxruntime: add/max are "or", mul/min are "and" */
        uint8_t *dp = (uint8_t *)d;
        const uint8_t *sp = (const uint8_t *)s;
        for (int64_t i = 0; i < n; i++)
            dp[i] = (red == FZ_REDUCE_ADD || red == FZ_REDUCE_MAX) ? (dp[i] || sp[i]) : (dp[i] && sp[i]);
        break;
    }
    default: FZ_FAIL("%s: reduction is not supported for %s", op, fz_dtype_name(dtype));
    }
    return 0;
}

static int check_reduction(const char *op, int red, int32_t dtype) {
    if (red < FZ_REDUCE_NONE || red > FZ_REDUCE_MIN) FZ_FAIL("%s: unknown reduction %d", op, red);
    if (red != FZ_REDUCE_NONE && dtype != FZ_FLOAT && dtype != FZ_DOUBLE && dtype != FZ_INT32 &&
        dtype != FZ_INT64 && dtype != FZ_UINT8 && dtype != FZ_INT8 && dtype != FZ_BOOL)
        FZ_FAIL("%s: reduction is not supported for %s", op, fz_dtype_name(dtype));
    return 0;
}

/* output = data, unless the caller computes in place */
static int copy_data(const char *op, const fz_tensor *x, fz_tensor *o, int64_t n) {
    if (fz_out_dtype(op, 0, o, x->dtype) || fz_set_output(op, 0, o, x->rank, x->shape)) return -1;
    if (n > 0 && o->data != x->data) memmove(o->data, x->data, (size_t)n * fz_dtype_size(x->dtype));
    return 0;
}

/* -------------------------------------------------------------- ScatterND */

int fz_op_ScatterND(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "ScatterND";
    const struct fz_attrs_ScatterND *a = (const struct fz_attrs_ScatterND *)attrs;
    if (a == NULL || n_in < 3 || n_out < 1) FZ_FAIL("%s: expects data, indices, updates, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *ind = &in[1], *up = &in[2];
    int64_t n = fz_check(op, "input data", x);
    if (n < 0 || fz_check(op, "input indices", ind) < 0 || fz_check(op, "input updates", up) < 0) return -1;
    if (!fz_is_index_type(ind->dtype)) FZ_FAIL("%s: indices must be int64", op);
    if (up->dtype != x->dtype) FZ_FAIL("%s: updates must have data's type %s", op, fz_dtype_name(x->dtype));
    if (check_reduction(op, a->reduction, x->dtype)) return -1;
    int r = x->rank, q = ind->rank;
    if (q < 1 || r < 1) FZ_FAIL("%s: data and indices must have rank >= 1", op);
    int64_t k = ind->shape[q - 1];
    if (k < 1 || k > r) FZ_FAIL("%s: the last dimension of indices (%lld) must be in [1, %d]", op, (long long)k, r);
    /* updates.shape == indices.shape[:-1] + data.shape[k:] */
    int ur = q - 1 + r - (int)k, ok = up->rank == ur;
    for (int d = 0; ok && d < q - 1; d++) ok = up->shape[d] == ind->shape[d];
    for (int d = (int)k; ok && d < r; d++) ok = up->shape[q - 1 + d - k] == x->shape[d];
    if (!ok) FZ_FAIL("%s: updates must have shape indices.shape[:-1] + data.shape[%lld:]", op, (long long)k);
    if (copy_data(op, x, &out[0], n)) return -1;
    int64_t strides[FZ_MAX_RANK];
    strides_of(r, x->shape, strides);
    int64_t ntup = fz_count(q - 1, ind->shape), slice = fz_count(r - (int)k, x->shape + k);
    int es = fz_dtype_size(x->dtype);
    char *o = (char *)out[0].data;
    const char *ud = (const char *)up->data;
    for (int64_t t = 0; t < ntup; t++) {
        int64_t off = tuple_offset(op, ind, t * k, (int)k, x->shape, strides);
        if (off < 0) return -1;
        if (apply(op, o + (size_t)off * es, ud + (size_t)(t * slice) * es, slice, x->dtype, a->reduction)) return -1;
    }
    return 0;
}

/* -------------------------------------------------------- ScatterElements */

int fz_op_ScatterElements(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "ScatterElements";
    const struct fz_attrs_ScatterElements *a = (const struct fz_attrs_ScatterElements *)attrs;
    if (a == NULL || n_in < 3 || n_out < 1) FZ_FAIL("%s: expects data, indices, updates, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *ind = &in[1], *up = &in[2];
    int64_t n = fz_check(op, "input data", x), ni = fz_check(op, "input indices", ind);
    if (n < 0 || ni < 0 || fz_check(op, "input updates", up) < 0) return -1;
    if (!fz_is_index_type(ind->dtype)) FZ_FAIL("%s: indices must be int32 or int64", op);
    if (up->dtype != x->dtype) FZ_FAIL("%s: updates must have data's type %s", op, fz_dtype_name(x->dtype));
    if (check_reduction(op, a->reduction, x->dtype)) return -1;
    int r = x->rank;
    if (r < 1) FZ_FAIL("%s: data must have rank >= 1", op);
    if (ind->rank != r || up->rank != r) FZ_FAIL("%s: data, indices and updates must have the same rank", op);
    int axis = fz_axis(op, a->axis, r);
    if (axis < 0) return -1;
    for (int d = 0; d < r; d++) {
        if (up->shape[d] != ind->shape[d]) FZ_FAIL("%s: updates and indices must have the same shape", op);
        if (d != axis && ind->shape[d] > x->shape[d])
            FZ_FAIL("%s: indices dimension %d (%lld) exceeds data's (%lld)", op, d, (long long)ind->shape[d],
                    (long long)x->shape[d]);
    }
    if (copy_data(op, x, &out[0], n)) return -1;
    int64_t strides[FZ_MAX_RANK], pos[FZ_MAX_RANK] = {0};
    strides_of(r, x->shape, strides);
    int es = fz_dtype_size(x->dtype);
    char *o = (char *)out[0].data;
    const char *ud = (const char *)up->data;
    int64_t dim = x->shape[axis];
    for (int64_t i = 0; i < ni; i++) {
        int64_t v = fz_index_at(ind, i);
        if (v < -dim || v >= dim)
            FZ_FAIL("%s: index %lld is out of range for axis %d of size %lld", op, (long long)v, axis, (long long)dim);
        int64_t off = 0;
        for (int d = 0; d < r; d++) off += (d == axis ? (v < 0 ? v + dim : v) : pos[d]) * strides[d];
        if (apply(op, o + (size_t)off * es, ud + (size_t)i * es, 1, x->dtype, a->reduction)) return -1;
        for (int d = r - 1; d >= 0; d--) {
            if (++pos[d] < ind->shape[d]) break;
            pos[d] = 0;
        }
    }
    return 0;
}

/* -------------------------------------------------------- ReverseSequence */

int fz_op_ReverseSequence(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "ReverseSequence";
    const struct fz_attrs_ReverseSequence *a = (const struct fz_attrs_ReverseSequence *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects input, sequence_lens, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *sl = &in[1];
    int64_t n = fz_check(op, "input", x);
    if (n < 0 || fz_check(op, "input sequence_lens", sl) < 0) return -1;
    if (x->rank < 2) FZ_FAIL("%s: input must have rank >= 2", op);
    int ba = (int)a->batch_axis, ta = (int)a->time_axis;
    if (!((ba == 0 && ta == 1) || (ba == 1 && ta == 0)))
        FZ_FAIL("%s: batch_axis and time_axis must be 0 and 1 in some order (got %lld, %lld)", op,
                (long long)a->batch_axis, (long long)a->time_axis);
    if (!fz_is_index_type(sl->dtype) || sl->rank != 1 || sl->shape[0] != x->shape[ba])
        FZ_FAIL("%s: sequence_lens must be int64 of shape [%lld]", op, (long long)x->shape[ba]);
    if (fz_out_dtype(op, 0, &out[0], x->dtype) || fz_set_output(op, 0, &out[0], x->rank, x->shape)) return -1;
    int64_t B = x->shape[ba], T = x->shape[ta], inner = fz_count(x->rank - 2, x->shape + 2);
    int es = fz_dtype_size(x->dtype);
    size_t row = (size_t)inner * es;
    const char *xd = (const char *)x->data;
    char *o = (char *)out[0].data;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = fz_index_at(sl, b);
        if (len < 0 || len > T)
            FZ_FAIL("%s: sequence_lens[%lld] = %lld is outside [0, %lld]", op, (long long)b, (long long)len, (long long)T);
        for (int64_t t = 0; t < T; t++) {
            int64_t src = t < len ? len - 1 - t : t;
            int64_t di = ba == 0 ? b * T + t : t * B + b, si = ba == 0 ? b * T + src : src * B + b;
            fz_copy(o + (size_t)di * row, xd + (size_t)si * row, row);
        }
    }
    return 0;
}

/* ---------------------------------------------------------- TensorScatter */

int fz_op_TensorScatter(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "TensorScatter";
    const struct fz_attrs_TensorScatter *a = (const struct fz_attrs_TensorScatter *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects past_cache, update, 1 output and attributes", op);
    const fz_tensor *past = &in[0], *up = &in[1], *wi = fz_present(in, n_in, 2) ? &in[2] : NULL;
    int64_t n = fz_check(op, "input past_cache", past);
    if (n < 0 || fz_check(op, "input update", up) < 0 || (wi && fz_check(op, "input write_indices", wi) < 0)) return -1;
    if (up->dtype != past->dtype) FZ_FAIL("%s: update must have past_cache's type %s", op, fz_dtype_name(past->dtype));
    int r = past->rank;
    if (r < 2 || up->rank != r) FZ_FAIL("%s: past_cache and update must have the same rank (>= 2)", op);
    int ax = fz_axis(op, a->axis, r);
    if (ax < 0) return -1;
    if (ax == 0) FZ_FAIL("%s: axis must not be the batch axis 0", op);
    for (int d = 0; d < r; d++)
        if (d != ax && up->shape[d] != past->shape[d])
            FZ_FAIL("%s: update dimension %d (%lld) differs from past_cache's (%lld)", op, d, (long long)up->shape[d],
                    (long long)past->shape[d]);
    int64_t B = past->shape[0], L = past->shape[ax], S = up->shape[ax];
    if (S > L) FZ_FAIL("%s: update has %lld steps along axis %d, the cache only %lld", op, (long long)S, ax, (long long)L);
    if (wi && (!fz_is_index_type(wi->dtype) || wi->rank != 1 || wi->shape[0] != B))
        FZ_FAIL("%s: write_indices must be int64 of shape [%lld]", op, (long long)B);
    if (copy_data(op, past, &out[0], n)) return -1;
    int64_t outer = fz_count(ax, past->shape), per_batch = B ? outer / B : 0;
    int64_t inner = fz_count(r - ax - 1, past->shape + ax + 1);
    size_t row = (size_t)inner * fz_dtype_size(past->dtype);
    for (int64_t b = 0; b < B; b++) {
        int64_t w = wi ? fz_index_at(wi, b) : 0;
        if (w < 0 || (L > 0 && w >= L) || (!a->circular && w + S > L))
            FZ_FAIL("%s: write_indices[%lld] = %lld does not fit %lld steps in a cache of %lld (mode %s)", op,
                    (long long)b, (long long)w, (long long)S, (long long)L, a->circular ? "circular" : "linear");
        for (int64_t o = b * per_batch; o < (b + 1) * per_batch; o++)
            for (int64_t s = 0; s < S; s++) {
                int64_t t = a->circular ? (w + s) % L : w + s;
                fz_copy((char *)out[0].data + (size_t)(o * L + t) * row, (const char *)up->data + (size_t)(o * S + s) * row,
                        row);
            }
    }
    return 0;
}

/* ---------------------------------------------------------------- BitCast */

/* the same bytes as another type: equal sizes keep the shape, a wider input
 * gains a trailing dimension, a narrower one loses its last (which must be
 * the size ratio) */
int fz_op_BitCast(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "BitCast";
    const struct fz_attrs_BitCast *a = (const struct fz_attrs_BitCast *)attrs;
    if (a == NULL || n_in < 1 || n_out < 1) FZ_FAIL("%s: expects 1 input, 1 output and attributes", op);
    const fz_tensor *x = &in[0];
    int64_t n = fz_check(op, "input", x);
    if (n < 0) return -1;
    int sa = fz_dtype_size(x->dtype), sb = fz_dtype_size(a->to);
    if (sb == 0 || x->dtype == FZ_BOOL || a->to == FZ_BOOL)
        FZ_FAIL("%s: cannot reinterpret %s as %s", op, fz_dtype_name(x->dtype), fz_dtype_name(a->to));
    if (fz_out_dtype(op, 0, &out[0], a->to)) return -1;
    int64_t shape[FZ_MAX_RANK];
    int rank = x->rank;
    memcpy(shape, x->shape, sizeof shape);
    if (sa > sb) {
        if (rank >= FZ_MAX_RANK) FZ_FAIL("%s: the output would have rank %d", op, rank + 1);
        shape[rank++] = sa / sb;
    } else if (sa < sb) {
        if (rank < 1 || x->shape[rank - 1] != sb / sa)
            FZ_FAIL("%s: the last dimension must be %d to make %s from %s", op, sb / sa, fz_dtype_name(a->to),
                    fz_dtype_name(x->dtype));
        rank--;
    }
    if (fz_set_output(op, 0, &out[0], rank, shape)) return -1;
    if (out[0].data != x->data) fz_copy(out[0].data, x->data, (size_t)n * sa);
    return 0;
}

/* -------------------------------------------------------------- MaxUnpool */

/* Y = zeros; Y.flat[I[i]] = X[i]. Y has output_shape when given (the shape
 * MaxPool's input had, which its indices address), else the unpooled shape
 * (in - 1) * stride + kernel - pads. As onnxruntime: indices are flat
 * positions in Y itself. */
int fz_op_MaxUnpool(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "MaxUnpool";
    const struct fz_attrs_MaxUnpool *a = (const struct fz_attrs_MaxUnpool *)attrs;
    if (a == NULL || n_in < 2 || n_out < 1) FZ_FAIL("%s: expects X, I, 1 output and attributes", op);
    const fz_tensor *x = &in[0], *ind = &in[1], *os = fz_present(in, n_in, 2) ? &in[2] : NULL;
    int64_t n = fz_check(op, "input X", x);
    if (n < 0 || fz_check(op, "input I", ind) < 0 || (os && fz_check(op, "input output_shape", os) < 0)) return -1;
    int r = x->rank, nd = r - 2;
    if (r < 3 || nd > 6) FZ_FAIL("%s: X must have 1 to 6 spatial dimensions", op);
    if (!fz_is_index_type(ind->dtype) || ind->rank != r) FZ_FAIL("%s: I must be int64 with X's shape", op);
    for (int d = 0; d < r; d++)
        if (ind->shape[d] != x->shape[d]) FZ_FAIL("%s: I must have X's shape", op);
    int64_t inf[FZ_MAX_RANK], shape[FZ_MAX_RANK];
    inf[0] = x->shape[0];
    inf[1] = x->shape[1];
    for (int i = 0; i < nd; i++) {
        if (a->kernel_shape[i] < 1 || a->strides[i] < 1) FZ_FAIL("%s: kernel_shape and strides must be >= 1", op);
        inf[2 + i] = (x->shape[2 + i] - 1) * a->strides[i] + a->kernel_shape[i] - a->pads[i] - a->pads[6 + i];
        if (inf[2 + i] < 0) FZ_FAIL("%s: pads leave a negative output size", op);
    }
    memcpy(shape, inf, sizeof shape);
    if (os) {
        if (!fz_is_index_type(os->dtype) || os->rank != 1 || os->shape[0] != r)
            FZ_FAIL("%s: output_shape must be int64 with %d values", op, r);
        for (int d = 0; d < r; d++) {
            shape[d] = fz_index_at(os, d);
            if (shape[d] < inf[d])
                FZ_FAIL("%s: output_shape[%d] = %lld is smaller than the unpooled size %lld", op, d, (long long)shape[d],
                        (long long)inf[d]);
        }
    }
    if (fz_out_dtype(op, 0, &out[0], x->dtype) || fz_set_output(op, 0, &out[0], r, shape)) return -1;
    size_t es = (size_t)fz_dtype_size(x->dtype);
    int64_t total = fz_count(r, shape);
    if (total > 0) memset(out[0].data, 0, (size_t)total * es);
    for (int64_t i = 0; i < n; i++) {
        int64_t k = fz_index_at(ind, i);
        if (k < 0 || k >= total)
            FZ_FAIL("%s: index %lld is outside the output of %lld elements", op, (long long)k, (long long)total);
        memcpy((char *)out[0].data + (size_t)k * es, (const char *)x->data + (size_t)i * es, es);
    }
    return 0;
}
