/* Error message, tensor checks and sorting shared by the opaque kernels. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_internal.h"

/* The only state: one message per thread, so concurrent runs never race.
 * Android before API 29 has no ELF TLS (clang would emit emulated TLS, a
 * runtime symbol the model library cannot import), so there the message
 * lives in a pthread key. */
#if defined(__ANDROID__) || defined(FZ_NO_TLS)
#include <pthread.h>

static pthread_key_t fz_error_key;
static pthread_once_t fz_error_once = PTHREAD_ONCE_INIT;
static int fz_error_key_ok;

static void fz_error_make_key(void) { fz_error_key_ok = pthread_key_create(&fz_error_key, free) == 0; }

static char *fz_error_buf(void) {
    pthread_once(&fz_error_once, fz_error_make_key);
    if (!fz_error_key_ok) return NULL;
    char *b = (char *)pthread_getspecific(fz_error_key);
    if (b == NULL && (b = (char *)calloc(1, 512)) != NULL && pthread_setspecific(fz_error_key, b) != 0) {
        free(b);
        b = NULL;
    }
    return b;
}
#define FZ_ERROR_CAP 512
#else
#if defined(_MSC_VER)
static __declspec(thread) char fz_error_msg[512];
#elif defined(__GNUC__) && (!defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L)
static __thread char fz_error_msg[512];
#else
static _Thread_local char fz_error_msg[512];
#endif
static char *fz_error_buf(void) { return fz_error_msg; }
#define FZ_ERROR_CAP sizeof fz_error_msg
#endif

const char *fz_opaque_last_error(void) {
    const char *b = fz_error_buf();
    return b ? b : "out of memory (no room for the error message)";
}

void fz_opaque_set_error(const char *fmt, ...) {
    char *b = fz_error_buf();
    if (b == NULL) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, FZ_ERROR_CAP, fmt, ap);
    va_end(ap);
}

int fz_dtype_size(int32_t dtype) {
    switch (dtype) {
    case FZ_FLOAT: case FZ_INT32: case FZ_UINT32: return 4;
    case FZ_DOUBLE: case FZ_INT64: case FZ_UINT64: return 8;
    case FZ_UINT8: case FZ_INT8: case FZ_BOOL: return 1;
    case FZ_UINT16: case FZ_INT16: case FZ_FLOAT16: case FZ_BFLOAT16: return 2;
    default: return 0;
    }
}

const char *fz_dtype_name(int32_t dtype) {
    switch (dtype) {
    case FZ_UNDEFINED: return "undefined";
    case FZ_FLOAT: return "float32";
    case FZ_UINT8: return "uint8";
    case FZ_INT8: return "int8";
    case FZ_UINT16: return "uint16";
    case FZ_INT16: return "int16";
    case FZ_INT32: return "int32";
    case FZ_INT64: return "int64";
    case FZ_STRING: return "string";
    case FZ_BOOL: return "bool";
    case FZ_FLOAT16: return "float16";
    case FZ_DOUBLE: return "float64";
    case FZ_UINT32: return "uint32";
    case FZ_UINT64: return "uint64";
    case FZ_BFLOAT16: return "bfloat16";
    default: return "unknown";
    }
}

int fz_present(const fz_tensor *in, int n_in, int i) {
    return in != NULL && i < n_in && in[i].dtype != FZ_UNDEFINED;
}

int64_t fz_count(int rank, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < rank; d++) n *= shape[d];
    return n;
}

int64_t fz_check(const char *op, const char *role, const fz_tensor *t) {
    if (t == NULL) FZ_FAIL("%s: %s is missing", op, role);
    if (t->rank < 0 || t->rank > FZ_MAX_RANK)
        FZ_FAIL("%s: %s has rank %d (supported: 0..%d)", op, role, (int)t->rank, FZ_MAX_RANK);
    if (fz_dtype_size(t->dtype) == 0)
        FZ_FAIL("%s: %s has unsupported element type %s", op, role, fz_dtype_name(t->dtype));
    int64_t n = 1;
    for (int d = 0; d < t->rank; d++) {
        int64_t s = t->shape[d];
        if (s < 0) FZ_FAIL("%s: %s has negative dimension %lld", op, role, (long long)s);
        if (s != 0 && n > (INT64_MAX / 16) / s) FZ_FAIL("%s: %s is too large", op, role);
        n *= s;
    }
    if (n > 0 && t->data == NULL) FZ_FAIL("%s: %s has no data", op, role);
    return n;
}

int fz_set_output(const char *op, int k, fz_tensor *out, int rank, const int64_t *shape) {
    if (rank < 0 || rank > FZ_MAX_RANK) FZ_FAIL("%s: output %d would have rank %d", op, k, rank);
    int64_t cap = fz_check(op, "output", out);
    if (cap < 0) return -1;
    int64_t need = fz_count(rank, shape);
    if (need > cap)
        FZ_FAIL("%s: output %d needs %lld elements but the caller allocated %lld "
                "(a bug in max_output_shapes)", op, k, (long long)need, (long long)cap);
    out->rank = rank;
    for (int d = 0; d < rank; d++) out->shape[d] = shape[d];
    for (int d = rank; d < FZ_MAX_RANK; d++) out->shape[d] = 0;
    return 0;
}

int fz_out_dtype(const char *op, int k, const fz_tensor *out, int32_t dtype) {
    if (out->dtype != dtype)
        FZ_FAIL("%s: output %d must be %s, the caller gave %s", op, k, fz_dtype_name(dtype),
                fz_dtype_name(out->dtype));
    return 0;
}

int fz_is_index_type(int32_t dtype) { return dtype == FZ_INT64 || dtype == FZ_INT32; }

int64_t fz_index_at(const fz_tensor *t, int64_t i) {
    return t->dtype == FZ_INT32 ? (int64_t)((const int32_t *)t->data)[i] : ((const int64_t *)t->data)[i];
}

int fz_axis(const char *op, int64_t axis, int rank) {
    int64_t r = rank;
    if (axis < -r || axis >= (r > 0 ? r : 1))
        FZ_FAIL("%s: axis %lld is out of range for rank %d", op, (long long)axis, rank);
    return (int)(axis < 0 ? axis + r : axis);
}

void *fz_alloc(const char *op, int64_t count, size_t elem) {
    if (count < 0 || (uint64_t)count > (uint64_t)SIZE_MAX / (elem ? elem : 1) / 2) {
        fz_opaque_set_error("%s: scratch of %lld elements is too large", op, (long long)count);
        return NULL;
    }
    void *p = malloc(count > 0 ? (size_t)count * elem : 1);
    if (p == NULL) fz_opaque_set_error("%s: out of memory (%lld bytes)", op, (long long)(count * (int64_t)elem));
    return p;
}

void fz_merge_sort(int64_t *v, int64_t n, int64_t *tmp, fz_less_fn less, const void *ctx) {
    /* bottom-up: insertion sort runs of 16, then merge passes */
    const int64_t run = 16;
    for (int64_t lo = 0; lo < n; lo += run) {
        int64_t hi = lo + run < n ? lo + run : n;
        for (int64_t i = lo + 1; i < hi; i++) {
            int64_t x = v[i], j = i;
            while (j > lo && less(ctx, x, v[j - 1])) { v[j] = v[j - 1]; j--; }
            v[j] = x;
        }
    }
    int64_t *src = v, *dst = tmp;
    for (int64_t w = run; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) dst[k++] = less(ctx, src[j], src[i]) ? src[j++] : src[i++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        int64_t *t = src; src = dst; dst = t;
    }
    if (src != v) memcpy(v, src, (size_t)n * sizeof *v);
}

int fz_opaque_pad_to_capacity(fz_tensor *t, const int64_t *cap) {
    const char *op = "fz_opaque_pad_to_capacity";
    if (t == NULL || cap == NULL) FZ_FAIL("%s: no tensor", op);
    if (fz_check(op, "tensor", t) < 0) return -1;
    int r = t->rank;
    for (int d = 0; d < r; d++)
        if (t->shape[d] > cap[d])
            FZ_FAIL("%s: dimension %d is %lld, beyond the capacity %lld", op, d, (long long)t->shape[d], (long long)cap[d]);
    int same = 1; /* layouts agree when only the leading dimension is short */
    for (int d = 1; d < r; d++) same &= t->shape[d] == cap[d];
    if (r < 2 || same) return 0;
    size_t es = (size_t)fz_dtype_size(t->dtype), row = (size_t)t->shape[r - 1] * es;
    int64_t rows = fz_count(r - 1, t->shape), cstride[FZ_MAX_RANK], idx[FZ_MAX_RANK];
    int64_t s = 1;
    for (int d = r - 1; d >= 0; d--) { cstride[d] = s; s *= cap[d]; }
    if (rows == 0 || row == 0) return 0;
    for (int d = 0; d < r - 1; d++) idx[d] = t->shape[d] - 1;
    /* last row first: a row only moves forward, and rows before it sit
     * entirely below its source, so nothing unread is overwritten */
    for (int64_t k = rows - 1; k >= 0; k--) {
        int64_t dst = 0;
        for (int d = 0; d < r - 1; d++) dst += idx[d] * cstride[d];
        memmove((char *)t->data + (size_t)dst * es, (char *)t->data + (size_t)k * row, row);
        for (int d = r - 2; d >= 0; d--) {
            if (--idx[d] >= 0) break;
            idx[d] = t->shape[d] - 1;
        }
    }
    return 0;
}
