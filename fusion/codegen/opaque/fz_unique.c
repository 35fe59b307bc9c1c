/* Unique (opset 11): unique elements, or unique slices along `axis`, with
 * first-occurrence indices, inverse indices and counts. sorted=1 orders
 * the uniques ascending (slices lexicographically), sorted=0 by first
 * occurrence. NaN compares equal to NaN and above every number. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

typedef struct {
    const char *x;
    int64_t outer, dim, inner; /* slice p = x[o, p, i] for every o, i */
    int32_t dtype;
} uniq_ctx;

#define FZ_CMP_T(T, ISF)                                                             \
    static int cmp_##T(const uniq_ctx *c, int64_t a, int64_t b) {                    \
        const T *x = (const T *)c->x;                                                \
        for (int64_t o = 0; o < c->outer; o++)                                       \
            for (int64_t i = 0; i < c->inner; i++) {                                 \
                T va = x[(o * c->dim + a) * c->inner + i];                           \
                T vb = x[(o * c->dim + b) * c->inner + i];                           \
                if (ISF) {                                                           \
                    int na = va != va, nb = vb != vb;                                \
                    if (na || nb) { if (na != nb) return na ? 1 : -1; continue; }    \
                }                                                                    \
                if (va < vb) return -1;                                              \
                if (vb < va) return 1;                                               \
            }                                                                        \
        return 0;                                                                    \
    }

FZ_CMP_T(float, 1)
FZ_CMP_T(double, 1)
FZ_CMP_T(int32_t, 0)
FZ_CMP_T(int64_t, 0)
FZ_CMP_T(int8_t, 0)
FZ_CMP_T(uint8_t, 0)

static int cmp(const uniq_ctx *c, int64_t a, int64_t b) {
    switch (c->dtype) {
    case FZ_FLOAT: return cmp_float(c, a, b);
    case FZ_DOUBLE: return cmp_double(c, a, b);
    case FZ_INT32: return cmp_int32_t(c, a, b);
    case FZ_INT64: return cmp_int64_t(c, a, b);
    case FZ_INT8: return cmp_int8_t(c, a, b);
    default: return cmp_uint8_t(c, a, b);
    }
}

/* slices ascending; equal slices keep position order (the sort is stable) */
static int slice_less(const void *c, int64_t a, int64_t b) { return cmp((const uniq_ctx *)c, a, b) < 0; }

static int first_less(const void *c, int64_t a, int64_t b) {
    const int64_t *first = (const int64_t *)c;
    return first[a] < first[b];
}

int fz_op_Unique(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs) {
    const char *op = "Unique";
    const struct fz_attrs_Unique *a = (const struct fz_attrs_Unique *)attrs;
    if (a == NULL || n_in < 1 || n_out < 1) FZ_FAIL("%s: expects 1 input, 1 to 4 outputs and attributes", op);
    const fz_tensor *x = &in[0];
    int64_t n = fz_check(op, "input X", x);
    if (n < 0) return -1;
    if (x->dtype != FZ_FLOAT && x->dtype != FZ_DOUBLE && x->dtype != FZ_INT32 && x->dtype != FZ_INT64 &&
        x->dtype != FZ_INT8 && x->dtype != FZ_UINT8)
        FZ_FAIL("%s: element type %s is not supported", op, fz_dtype_name(x->dtype));
    uniq_ctx c = {(const char *)x->data, 1, n, 1, x->dtype};
    int axis = -1;
    if (a->has_axis) {
        if (x->rank == 0) FZ_FAIL("%s: input must have rank >= 1 when axis is given", op);
        axis = fz_axis(op, a->axis, x->rank);
        if (axis < 0) return -1;
        c.outer = fz_count(axis, x->shape);
        c.dim = x->shape[axis];
        c.inner = fz_count(x->rank - axis - 1, x->shape + axis + 1);
    }
    int want[4];
    for (int k = 0; k < 4; k++) want[k] = k < n_out && out[k].dtype != FZ_UNDEFINED;
    if (want[0] && fz_out_dtype(op, 0, &out[0], x->dtype)) return -1;
    for (int k = 1; k < 4; k++)
        if (want[k] && fz_out_dtype(op, k, &out[k], FZ_INT64)) return -1;

    int64_t m = c.dim;
    int64_t *order = (int64_t *)fz_alloc(op, m, sizeof(int64_t)), *tmp = (int64_t *)fz_alloc(op, m, sizeof(int64_t));
    int64_t *group = (int64_t *)fz_alloc(op, m, sizeof(int64_t)), *first = (int64_t *)fz_alloc(op, m, sizeof(int64_t));
    int64_t *count = (int64_t *)fz_alloc(op, m, sizeof(int64_t)), *rank = (int64_t *)fz_alloc(op, m, sizeof(int64_t));
    int rc = -1;
    if (!order || !tmp || !group || !first || !count || !rank) goto done;
    for (int64_t p = 0; p < m; p++) order[p] = p;
    fz_merge_sort(order, m, tmp, slice_less, &c);
    int64_t nu = 0; /* group id per position, in sorted order of the uniques */
    for (int64_t j = 0; j < m; j++) {
        if (j == 0 || cmp(&c, order[j - 1], order[j]) != 0) {
            first[nu] = order[j]; /* stable sort: the first of a run is the first occurrence */
            count[nu] = 0;
            nu++;
        }
        group[order[j]] = nu - 1;
        count[nu - 1]++;
    }
    /* rank[u]: where group u goes in the output; sorted=0 orders by first occurrence */
    int64_t *out_groups = tmp;
    for (int64_t u = 0; u < nu; u++) out_groups[u] = u;
    if (!a->sorted) fz_merge_sort(out_groups, nu, order, first_less, first);
    for (int64_t u = 0; u < nu; u++) rank[out_groups[u]] = u;

    int64_t shape[FZ_MAX_RANK];
    int yrank = 1;
    if (a->has_axis) {
        memcpy(shape, x->shape, sizeof shape);
        shape[axis] = nu;
        yrank = x->rank;
    } else {
        shape[0] = nu;
    }
    int64_t s_nu[1] = {nu}, s_m[1] = {m};
    if ((want[0] && fz_set_output(op, 0, &out[0], yrank, shape)) || (want[1] && fz_set_output(op, 1, &out[1], 1, s_nu)) ||
        (want[2] && fz_set_output(op, 2, &out[2], 1, s_m)) || (want[3] && fz_set_output(op, 3, &out[3], 1, s_nu)))
        goto done;
    size_t es = (size_t)fz_dtype_size(x->dtype);
    for (int64_t v = 0; v < nu; v++) {
        int64_t u = out_groups[v];
        if (want[0])
            for (int64_t o = 0; o < c.outer; o++)
                fz_copy((char *)out[0].data + ((o * nu + v) * c.inner) * es, c.x + ((o * m + first[u]) * c.inner) * es,
                       (size_t)c.inner * es);
        if (want[1]) ((int64_t *)out[1].data)[v] = first[u];
        if (want[3]) ((int64_t *)out[3].data)[v] = count[u];
    }
    if (want[2])
        for (int64_t p = 0; p < m; p++) ((int64_t *)out[2].data)[p] = rank[group[p]];
    rc = 0;
done:
    free(order); free(tmp); free(group); free(first); free(count); free(rank);
    return rc;
}
