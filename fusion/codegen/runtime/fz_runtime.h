/* fz_runtime.h: the runtime every generated model library includes.
 *
 * - a pthread pool: fz_parallel_for(n, fn, arg) splits [0, n) into one
 *   contiguous chunk per thread; the calling thread runs the first chunk;
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
    int job_threads;
} fz_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static __thread int fz_in_worker;

static int fz_default_threads(void) {
    const char *env = getenv("FUSION_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void fz_chunk(int64_t n, int parts, int k, int64_t *b, int64_t *e) {
    *b = n * k / parts;
    *e = n * (k + 1) / parts;
}

static void *fz_worker(void *p) {
    int me = (int)(intptr_t)p;   /* 1 .. started */
    uint64_t seen = 0;
    fz_in_worker = 1;
    pthread_mutex_lock(&fz_pool.mu);
    for (;;) {
        while (!fz_pool.stop && fz_pool.generation == seen)
            pthread_cond_wait(&fz_pool.wake, &fz_pool.mu);
        if (fz_pool.stop) break;
        seen = fz_pool.generation;
        if (me < fz_pool.job_threads) {
            fz_task_fn fn = fz_pool.fn;
            void *arg = fz_pool.arg;
            int64_t b, e;
            fz_chunk(fz_pool.n, fz_pool.job_threads, me, &b, &e);
            pthread_mutex_unlock(&fz_pool.mu);
            if (e > b) fn(arg, b, e);
            pthread_mutex_lock(&fz_pool.mu);
            if (--fz_pool.pending == 0) pthread_cond_signal(&fz_pool.done);
        }
    }
    pthread_mutex_unlock(&fz_pool.mu);
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
    if (t <= 1 || fz_in_worker) { fn(arg, 0, n); return; }
    pthread_mutex_lock(&fz_pool.mu);
    while (fz_pool.started < t - 1) {
        if (pthread_create(&fz_pool.tid[fz_pool.started], NULL, fz_worker,
                           (void *)(intptr_t)(fz_pool.started + 1)) != 0) break;
        fz_pool.started++;
    }
    if (fz_pool.started < t - 1) t = fz_pool.started + 1;
    fz_pool.fn = fn; fz_pool.arg = arg; fz_pool.n = n; fz_pool.job_threads = t;
    fz_pool.pending = t - 1;
    fz_pool.generation++;
    pthread_cond_broadcast(&fz_pool.wake);
    pthread_mutex_unlock(&fz_pool.mu);
    int64_t b, e;
    fz_chunk(n, t, 0, &b, &e);
    fz_in_worker = 1;
    if (e > b) fn(arg, b, e);
    fz_in_worker = 0;
    pthread_mutex_lock(&fz_pool.mu);
    while (fz_pool.pending > 0) pthread_cond_wait(&fz_pool.done, &fz_pool.mu);
    pthread_mutex_unlock(&fz_pool.mu);
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
