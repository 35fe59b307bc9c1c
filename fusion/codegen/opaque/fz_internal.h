/* Helpers shared by the opaque kernels (not part of the interface). */
#ifndef FZ_INTERNAL_H
#define FZ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "fz_opaque.h"

#if defined(__GNUC__)
#define FZ_HIDDEN __attribute__((visibility("hidden")))
#else
#define FZ_HIDDEN
#endif

/* bytes per element, 0 for types the kernels cannot hold (strings) */
FZ_HIDDEN int fz_dtype_size(int32_t dtype);
FZ_HIDDEN const char *fz_dtype_name(int32_t dtype);

/* 1 when optional input i is present */
FZ_HIDDEN int fz_present(const fz_tensor *in, int n_in, int i);

/* Validates rank, dims and data of a tensor; on error sets the message
 * (naming op and role) and returns -1, else returns the element count. */
FZ_HIDDEN int64_t fz_check(const char *op, const char *role, const fz_tensor *t);

/* element count of a shape (dims already validated) */
FZ_HIDDEN int64_t fz_count(int rank, const int64_t *shape);

/* Sets out's actual shape after checking it fits the caller's capacity. */
FZ_HIDDEN int fz_set_output(const char *op, int k, fz_tensor *out, int rank, const int64_t *shape);

/* Checks dtype and capacity for an output whose dtype the kernel decides. */
FZ_HIDDEN int fz_out_dtype(const char *op, int k, const fz_tensor *out, int32_t dtype);

/* Reads element i of an integer tensor (int32 or int64) as int64. */
FZ_HIDDEN int64_t fz_index_at(const fz_tensor *t, int64_t i);
FZ_HIDDEN int fz_is_index_type(int32_t dtype);

/* Normalizes axis into [0, rank); -1 after setting an error when out of range. */
FZ_HIDDEN int fz_axis(const char *op, int64_t axis, int rank);

/* malloc that sets an error (and returns NULL) on failure or overflow */
FZ_HIDDEN void *fz_alloc(const char *op, int64_t count, size_t elem);

/* Stable merge sort of int64 keys (positions) with a caller comparison:
 * less(ctx, a, b) must be a strict order; a non-strict one only changes
 * the order, never reads out of bounds. tmp holds n elements. */
typedef int (*fz_less_fn)(const void *ctx, int64_t a, int64_t b);
FZ_HIDDEN void fz_merge_sort(int64_t *v, int64_t n, int64_t *tmp, fz_less_fn less, const void *ctx);

/* memcpy that accepts empty copies from/to NULL (empty tensors have no data) */
static inline void fz_copy(void *dst, const void *src, size_t n) {
    if (n) memcpy(dst, src, n);
}

#define FZ_FAIL(...) do { fz_opaque_set_error(__VA_ARGS__); return -1; } while (0)

#endif
