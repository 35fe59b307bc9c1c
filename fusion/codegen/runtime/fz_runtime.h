/* fz_runtime.h: the runtime every generated model library includes.
 *
 * - a pthread pool: fz_parallel_for(n, fn, arg) splits [0, n) into chunks
 *   that the threads (the caller among them) take from a shared counter, so a
 *   thread slowed by other work on the machine does not hold up the rest;
 *   with one thread (or when called from inside a worker) it runs inline.
 *   The thread count is a run-time setting (fz_set_threads; default: cores).
 * - typed scalar helpers the C printer uses (floor division and modulo with
 *   the expression language's semantics, NaN-propagating max/min).
 *
 * Header-only on purpose: each model library gets its own private pool. */
#ifndef FZ_RUNTIME_H
#define FZ_RUNTIME_H

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ pool */
typedef void (*fz_task_fn)(void *arg, int64_t begin, int64_t end);

#define FZ_MAX_THREADS 256

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_t tid[FZ_MAX_THREADS];
    int started;              /* worker threads running (threads - 1) */
    int threads;              /* requested thread count */
    int stop;
    uint64_t generation;      /* bumped per job */
    int pending;              /* workers still busy with the current job */
    fz_task_fn fn;
    void *arg;
    int64_t n;
    int64_t chunk;            /* items per grab */
    int64_t next;             /* next unclaimed item (atomic) */
    int job_threads;
    uint64_t start_gen[FZ_MAX_THREADS + 1];   /* generation when each worker was created */
} fz_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

/* Per-thread state. Android before API 29 has no ELF TLS and its emulated
 * TLS needs a compiler-runtime helper, so there the flag lives in a pthread key. */
#if defined(__ANDROID__)
#define FZ_TLS
static pthread_key_t fz_worker_key;
static pthread_once_t fz_key_once = PTHREAD_ONCE_INIT;
static void fz_make_key(void) { pthread_key_create(&fz_worker_key, NULL); }
static int fz_get_in_worker(void) { pthread_once(&fz_key_once, fz_make_key); return pthread_getspecific(fz_worker_key) != NULL; }
static void fz_set_in_worker(int v) { pthread_once(&fz_key_once, fz_make_key); pthread_setspecific(fz_worker_key, v ? (void *)1 : NULL); }
#else
#define FZ_TLS __thread
static __thread int fz_in_worker_tls;
static int fz_get_in_worker(void) { return fz_in_worker_tls; }
static void fz_set_in_worker(int v) { fz_in_worker_tls = v; }
#endif

static int fz_default_threads(void) {
    const char *env = getenv("FUSION_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Run chunks of the current job until none is left. */
static void fz_take_chunks(fz_task_fn fn, void *arg, int64_t n, int64_t chunk) {
    for (;;) {
        int64_t b = __atomic_fetch_add(&fz_pool.next, chunk, __ATOMIC_ACQ_REL);
        if (b >= n) break;
        int64_t e = b + chunk < n ? b + chunk : n;
        fn(arg, b, e);
    }
}

/* Workers spin briefly before sleeping: blocks follow each other within
 * microseconds, and a condition-variable wake-up costs more than that. */
#ifndef FZ_SPIN
#define FZ_SPIN 20000
#endif

static void *fz_worker(void *p) {
    int me = (int)(intptr_t)p;   /* 1 .. started */
    uint64_t seen = fz_pool.start_gen[me];
    fz_set_in_worker(1);
    for (;;) {
        uint64_t g;
        for (int i = 0; i < FZ_SPIN; i++) {
            g = __atomic_load_n(&fz_pool.generation, __ATOMIC_ACQUIRE);
            if (g != seen || __atomic_load_n(&fz_pool.stop, __ATOMIC_ACQUIRE)) break;
        }
        pthread_mutex_lock(&fz_pool.mu);
        while (!fz_pool.stop && fz_pool.generation == seen)
            pthread_cond_wait(&fz_pool.wake, &fz_pool.mu);
        int stop = fz_pool.stop;
        seen = fz_pool.generation;
        fz_task_fn fn = fz_pool.fn;
        void *arg = fz_pool.arg;
        int64_t n = fz_pool.n, chunk = fz_pool.chunk;
        int parts = fz_pool.job_threads;
        pthread_mutex_unlock(&fz_pool.mu);
        if (stop) break;
        if (me < parts) {
            fz_take_chunks(fn, arg, n, chunk);
            if (__atomic_sub_fetch(&fz_pool.pending, 1, __ATOMIC_ACQ_REL) == 0) {
                pthread_mutex_lock(&fz_pool.mu);
                pthread_cond_signal(&fz_pool.done);
                pthread_mutex_unlock(&fz_pool.mu);
            }
        }
    }
    return NULL;
}

static void fz_pool_shutdown(void) {
    pthread_mutex_lock(&fz_pool.mu);
    int n = fz_pool.started;
    fz_pool.stop = 1;
    pthread_cond_broadcast(&fz_pool.wake);
    pthread_mutex_unlock(&fz_pool.mu);
    for (int i = 0; i < n; i++) pthread_join(fz_pool.tid[i], NULL);
    pthread_mutex_lock(&fz_pool.mu);
    fz_pool.started = 0;
    fz_pool.stop = 0;
    pthread_mutex_unlock(&fz_pool.mu);
}

static int fz_get_threads(void) {
    if (fz_pool.threads <= 0) fz_pool.threads = fz_default_threads();
    return fz_pool.threads;
}

static void fz_set_threads(int n) {
    if (n <= 0) n = fz_default_threads();
    if (n > FZ_MAX_THREADS) n = FZ_MAX_THREADS;
    if (fz_pool.started > n - 1) fz_pool_shutdown();   /* shrink: restart lazily */
    fz_pool.threads = n;
}

static void fz_parallel_for(int64_t n, fz_task_fn fn, void *arg) {
    if (n <= 0) return;
    int t = fz_get_threads();
    if (t > n) t = (int)n;
    if (t <= 1 || fz_get_in_worker()) { fn(arg, 0, n); return; }
    pthread_mutex_lock(&fz_pool.mu);
    while (fz_pool.started < t - 1) {
        fz_pool.start_gen[fz_pool.started + 1] = fz_pool.generation;
        if (pthread_create(&fz_pool.tid[fz_pool.started], NULL, fz_worker,
                           (void *)(intptr_t)(fz_pool.started + 1)) != 0) break;
        fz_pool.started++;
    }
    if (fz_pool.started < t - 1) t = fz_pool.started + 1;
    fz_pool.fn = fn; fz_pool.arg = arg; fz_pool.n = n; fz_pool.job_threads = t;
    /* ~4 grabs per thread: enough to even out a slowed thread, few enough to keep
     * each chunk long (kernels already split their work into a few items per core) */
    fz_pool.chunk = n <= 4 * (int64_t)t ? 1 : (n + 4 * (int64_t)t - 1) / (4 * (int64_t)t);
    __atomic_store_n(&fz_pool.next, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&fz_pool.pending, t - 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&fz_pool.generation, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&fz_pool.wake);
    pthread_mutex_unlock(&fz_pool.mu);
    fz_set_in_worker(1);
    fz_take_chunks(fn, arg, n, fz_pool.chunk);
    fz_set_in_worker(0);
    for (int i = 0; i < FZ_SPIN && __atomic_load_n(&fz_pool.pending, __ATOMIC_ACQUIRE) > 0; i++) {}
    if (__atomic_load_n(&fz_pool.pending, __ATOMIC_ACQUIRE) > 0) {
        pthread_mutex_lock(&fz_pool.mu);
        while (__atomic_load_n(&fz_pool.pending, __ATOMIC_ACQUIRE) > 0)
            pthread_cond_wait(&fz_pool.done, &fz_pool.mu);
        pthread_mutex_unlock(&fz_pool.mu);
    }
}

/* ------------------------------------------------- run-time shaped tensors */
/* Tensors with a data-dependent dim are stored with the capacity's strides
 * (padded); opaque kernels read and write compact row-major data. These move
 * between the two layouts (they differ only when a dim after the first is
 * smaller than its capacity). */
static int64_t fz_padded_offset(int64_t flat, int rank, const int64_t *actual, const int64_t *cap) {
    int64_t off = 0, stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int64_t n = actual[d] > 0 ? actual[d] : 1;
        off += (flat % n) * stride;
        flat /= n;
        stride *= cap[d];
    }
    return off;
}

/* in place: compact -> padded (backwards, so nothing is overwritten before it moves) */
static void fz_repad(void *data, int64_t elem, int rank, const int64_t *actual, const int64_t *cap) {
    int64_t n = 1;
    for (int d = 0; d < rank; d++) n *= actual[d];
    char *p = (char *)data;
    for (int64_t i = n - 1; i >= 0; i--) {
        int64_t o = fz_padded_offset(i, rank, actual, cap);
        if (o != i) memmove(p + o * elem, p + i * elem, (size_t)elem);
    }
}

/* padded src -> compact dst */
static void fz_compact(const void *src, void *dst, int64_t elem, int rank, const int64_t *actual, const int64_t *cap) {
    int64_t n = 1;
    for (int d = 0; d < rank; d++) n *= actual[d];
    for (int64_t i = 0; i < n; i++)
        memcpy((char *)dst + i * elem, (const char *)src + fz_padded_offset(i, rank, actual, cap) * elem, (size_t)elem);
}

/* --------------------------------------------------------------- scalars */
#define FZ_INT_HELPERS(S, T)                                                              \
    static inline T fz_max_##S(T a, T b) { return a > b ? a : b; }                        \
    static inline T fz_min_##S(T a, T b) { return a < b ? a : b; }                        \
    static inline T fz_div_##S(T a, T b) { return b == 0 ? 0 : (T)(a / b); }              \
    static inline T fz_div_rem_##S(T a, T b) { return b == 0 ? 0 : (T)(a % b); }          \
    static inline T fz_floordiv_##S(T a, T b) {                                           \
        if (b == 0) return 0;                                                             \
        T q = (T)(a / b);                                                                 \
        return ((a % b) != 0 && ((a < 0) != (b < 0))) ? (T)(q - 1) : q; }                 \
    static inline T fz_mod_##S(T a, T b) {                                                \
        if (b == 0) return 0;                                                             \
        T r = (T)(a % b);                                                                 \
        return (r != 0 && ((r < 0) != (b < 0))) ? (T)(r + b) : r; }                       \
    static inline T fz_pow_##S(T a, T b) {                                                \
        T r = 1; if (b < 0) return (a == 1) ? 1 : 0;                                      \
        while (b) { if (b & 1) r = (T)(r * a); a = (T)(a * a); b >>= 1; } return r; }     \
    static inline T fz_abs_##S(T a) { return a < 0 ? (T)-a : a; }                         \
    static inline T fz_shl_##S(T a, T b) {                                                \
        return (b < 0 || (uint64_t)b >= 8 * sizeof(T)) ? (T)0 : (T)(a << b); }            \
    static inline T fz_shr_##S(T a, T b) {                                                \
        return (b < 0 || (uint64_t)b >= 8 * sizeof(T)) ? (T)(a < 0 ? -1 : 0) : (T)(a >> b); } \
    static inline T fz_f2##S(double x) { return x != x ? (T)0 : (T)x; }

FZ_INT_HELPERS(i8, int8_t)
FZ_INT_HELPERS(i16, int16_t)
FZ_INT_HELPERS(i32, int32_t)
FZ_INT_HELPERS(i64, int64_t)
FZ_INT_HELPERS(u8, uint8_t)
FZ_INT_HELPERS(u16, uint16_t)
FZ_INT_HELPERS(u32, uint32_t)
FZ_INT_HELPERS(u64, uint64_t)

/* NaN in either operand gives NaN (numpy and onnxruntime agree). */
static inline float fz_max_f32(float a, float b) { return (a > b || a != a) ? a : b; }
static inline float fz_min_f32(float a, float b) { return (a < b || a != a) ? a : b; }
static inline double fz_max_f64(double a, double b) { return (a > b || a != a) ? a : b; }
static inline double fz_min_f64(double a, double b) { return (a < b || a != a) ? a : b; }
/* numpy.mod for floats: the result takes the divisor's sign. */
static inline float fz_mod_f32(float a, float b) {
    float r = fmodf(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
static inline double fz_mod_f64(double a, double b) {
    double r = fmod(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }

#endif
