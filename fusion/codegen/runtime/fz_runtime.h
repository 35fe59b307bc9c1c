/* fz_runtime.h: the runtime every generated model library includes.
 *
 * - a pthread pool: fz_parallel_for(n, fn, arg) splits [0, n) into chunks
 *   that the threads (the caller among them) take from a shared counter, so a
 *   thread slowed by other work on the machine does not hold up the rest: the
 *   call returns once every item is done, without waiting for workers that
 *   never got to run (the caller then did their share);
 *   with one thread (or when called from inside a worker) it runs inline.
 *   The thread count is a run-time setting (fz_set_threads; default: cores).
 * - typed scalar helpers the C printer uses (floor division and modulo with
 *   the expression language's semantics, NaN-propagating max/min).
 * - float exp, log, log1p, tanh, erf (and Mish's tanh(softplus(x))) that
 *   vectorize (fz_expf ...), which the C printer uses instead of libm's
 *   scalar calls.
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
    fz_task_fn fn;
    void *arg;
    int64_t n;
    int64_t chunk;            /* items per grab */
    /* Claims count up across jobs and are never reset: job items are [base, base + n) of
     * `next`. A worker still holding an earlier job's (base, n) finds `next` past its end
     * and takes nothing, so it cannot claim items of a later job. */
    int64_t base;
    int64_t next;             /* next unclaimed item (atomic, monotonic) */
    int64_t finished;         /* items of the current job done (atomic) */
    int caller_waits;         /* the caller sleeps on `done` (under mu) */
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

/* Run chunks of the job (base, n) until none is left. */
static void fz_take_chunks(fz_task_fn fn, void *arg, int64_t base, int64_t n, int64_t chunk) {
    const int64_t end = base + n;
    for (;;) {
        int64_t b = __atomic_load_n(&fz_pool.next, __ATOMIC_ACQUIRE);
        do {
            if (b >= end) return;
        } while (!__atomic_compare_exchange_n(&fz_pool.next, &b, b + chunk, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
        int64_t e = b + chunk < end ? b + chunk : end;
        fn(arg, b - base, e - base);
        if (__atomic_add_fetch(&fz_pool.finished, e - b, __ATOMIC_ACQ_REL) == n) {
            pthread_mutex_lock(&fz_pool.mu);
            if (fz_pool.caller_waits) pthread_cond_signal(&fz_pool.done);
            pthread_mutex_unlock(&fz_pool.mu);
        }
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
        int64_t n = fz_pool.n, chunk = fz_pool.chunk, base = fz_pool.base;
        int parts = fz_pool.job_threads;
        pthread_mutex_unlock(&fz_pool.mu);
        if (stop) break;
        if (me < parts) fz_take_chunks(fn, arg, base, n, chunk);
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
    int64_t chunk = n <= 4 * (int64_t)t ? 1 : (n + 4 * (int64_t)t - 1) / (4 * (int64_t)t);
    fz_pool.chunk = chunk;
    /* every claim of the previous job is in: `next` is at or past its end */
    int64_t base = __atomic_load_n(&fz_pool.next, __ATOMIC_ACQUIRE);
    fz_pool.base = base;
    __atomic_store_n(&fz_pool.finished, 0, __ATOMIC_RELEASE);
    __atomic_add_fetch(&fz_pool.generation, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&fz_pool.wake);
    pthread_mutex_unlock(&fz_pool.mu);
    fz_set_in_worker(1);
    fz_take_chunks(fn, arg, base, n, chunk);
    fz_set_in_worker(0);
    /* wait for items other threads claimed, not for threads that claimed none */
    for (int i = 0; i < FZ_SPIN && __atomic_load_n(&fz_pool.finished, __ATOMIC_ACQUIRE) < n; i++) {}
    if (__atomic_load_n(&fz_pool.finished, __ATOMIC_ACQUIRE) < n) {
        pthread_mutex_lock(&fz_pool.mu);
        fz_pool.caller_waits = 1;
        while (__atomic_load_n(&fz_pool.finished, __ATOMIC_ACQUIRE) < n)
            pthread_cond_wait(&fz_pool.done, &fz_pool.mu);
        fz_pool.caller_waits = 0;
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
/* SIMD max/min reductions that keep NaN: OpenMP's built-in max/min combiners
 * compare with '>' and drop a NaN held in one lane's partial result. */
#pragma omp declare reduction(fz_maxf : float : omp_out = fz_max_f32(omp_out, omp_in)) initializer(omp_priv = omp_orig)
#pragma omp declare reduction(fz_minf : float : omp_out = fz_min_f32(omp_out, omp_in)) initializer(omp_priv = omp_orig)
#pragma omp declare reduction(fz_maxd : double : omp_out = fz_max_f64(omp_out, omp_in)) initializer(omp_priv = omp_orig)
#pragma omp declare reduction(fz_mind : double : omp_out = fz_min_f64(omp_out, omp_in)) initializer(omp_priv = omp_orig)
/* numpy.mod for floats: the result takes the divisor's sign. */
static inline float fz_mod_f32(float a, float b) {
    float r = fmodf(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
static inline double fz_mod_f64(double a, double b) {
    double r = fmod(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }

/* ---------------------------------------------------- vectorizable float math */
/* libm's expf, logf, tanhf, erff, log1pf are opaque calls, so a loop holding
 * one runs one element at a time. These are branch-free inline versions in
 * plain C (bit casts through memcpy, selects on bits instead of branches) that
 * GCC and Clang inline and vectorize at -O3 on any target (SSE2, AVX2,
 * AVX-512, NEON), with or without FMA contraction.
 * Max error over all 2^32 inputs against double libm (tests/test_fastmath.py
 * checks a strided walk of them against float64 numpy): exp 1.0 ulp, log 0.8,
 * log1p 1.4, tanh 1.3, erf 1.0, tanh_softplus 4.0; NaN, +-Inf, -0, denormal
 * inputs and overflowing / denormal results as libm. */
#if defined(__GNUC__) || defined(__clang__)
#define FZ_MATH static inline __attribute__((always_inline, unused))
#else
#define FZ_MATH static inline
#endif

FZ_MATH uint32_t fz_fbits(float x) { uint32_t i; memcpy(&i, &x, sizeof i); return i; }
FZ_MATH float fz_bitsf(uint32_t i) { float x; memcpy(&x, &i, sizeof x); return x; }
/* c ? a : b on the bits, so both sides stay computed unconditionally: given `?:`, GCC
 * moves each side's arithmetic under a branch, and with trapping math (the default) it
 * cannot if-convert that back unless the target has masked vector ops (AVX-512, SVE). */
FZ_MATH float fz_blendf(int c, float a, float b) {
    uint32_t m = 0u - (uint32_t)(c != 0);
    return fz_bitsf((fz_fbits(a) & m) | (fz_fbits(b) & ~m));
}

/* exp: x = n ln2 + r, |r| <= ln2/2; exp(r) by a degree-6 polynomial (Cephes);
 * 2^n applied as two factors so results in the denormal range round once. */
FZ_MATH float fz_expf(float x) {
    const float shift = 12582912.0f;                 /* 1.5 * 2^23: adding it rounds to an integer */
    /* |x| <= 104 keeps n within [-150, 150]; the result already is 0 or Inf there
     * (NaN passes through). A blend, not `?:`: a clamp to a constant lets GCC specialize
     * the code after it into a branch (see fz_blendf). */
    float xc = fz_blendf(fabsf(x) > 104.0f, copysignf(104.0f, x), x);
    float k = xc * 1.44269504088896341f + shift;
    float n = k - shift;
    int32_t ni = (int32_t)(fz_fbits(k) - fz_fbits(shift));   /* n as an integer (any for NaN) */
    float r = xc - n * 0.693359375f;                 /* ln2 split: n * hi is exact */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t n1 = ni >> 1, n2 = ni - n1;              /* each in [-75, 75]: both factors are normal */
    return p * fz_bitsf((uint32_t)(n1 + 127) << 23) * fz_bitsf((uint32_t)(n2 + 127) << 23);
}

/* log: x = 2^e * m, m in [0.707, 1.414); log(m) by Cephes' degree-9 polynomial in m - 1. */
FZ_MATH float fz_logf(float x) {
    /* denormals are scaled by 2^23 first. The scale is built from the condition
     * by integer arithmetic: as a select between constants GCC would specialize the
     * code on it into a branch holding the multiply, and then not vectorize. */
    uint32_t sub = fz_fbits(x) < 0x00800000u;        /* denormal, +0 (negative x: fixed below) */
    uint32_t ix = fz_fbits(x * fz_bitsf(0x3f800000u + sub * (23u << 23)));
    uint32_t t = ix - 0x3f3504f3u;                   /* bits of sqrt(0.5) */
    int32_t e = (int32_t)t >> 23;
    float m = fz_bitsf((t & 0x007fffffu) + 0x3f3504f3u);
    float ef = (float)(e - (int32_t)(sub * 23u));
    float f = m - 1.0f;
    float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = p * f * z + ef * -2.12194440e-4f - 0.5f * z;
    float r = f + y + ef * 0.693359375f;            /* finite for every x */
    /* Special inputs by adding their result: a select that discards r would let GCC
     * compute r under a branch, and (trapping math) then not vectorize the loop. */
    float fix = x == 0.0f ? -INFINITY : 0.0f;
    fix = x == INFINITY ? INFINITY : fix;
    fix = ((x < 0.0f) | (x != x)) ? NAN : fix;
    return r + fix;
}

/* log1p: log(u), u = 1 + x, plus the rounding error of that sum (TwoSum) divided by u. */
FZ_MATH float fz_log1pf(float x) {
    /* inputs without a finite result go through as 0, their result is added at the end */
    float xc = fz_blendf((x > -1.0f) & (x <= 3.40282347e38f), x, 0.0f);
    float u = 1.0f + xc;
    float bv = u - 1.0f;
    float c = (1.0f - (u - bv)) + (xc - bv);
    float r = fz_logf(u) + c / u;
    float fix = x == -1.0f ? -INFINITY : 0.0f;
    fix = x == INFINITY ? INFINITY : fix;
    fix = ((x < -1.0f) | (x != x)) ? NAN : fix;
    r = r + fix;
    /* log1p(x) has the sign of x: this makes log1p(-0) = -0 */
    return fz_bitsf(fz_fbits(r) | (fz_fbits(x) & 0x80000000u));
}

/* tanh: odd polynomial below 0.625 (Cephes), else 1 - 2 / (exp(2|x|) + 1); sign of x. */
FZ_MATH float fz_tanhf(float x) {
    float a = fabsf(x);
    float z = a * a;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = a + a * z * p;
    float big = 1.0f - 2.0f / (fz_expf(a + a) + 1.0f);   /* NaN for NaN */
    float r = fz_blendf(a < 0.625f, small, big);
    return fz_bitsf(fz_fbits(r) | (fz_fbits(x) & 0x80000000u));
}

/* erf: x * P(x^2) below 1; above, 1 - exp(-x^2 + Q(x)) with Q a fit of log(erfc(x)) + x^2
 * on [1, 4] (erfc(4) < half an ulp of 1). Coefficients: weighted least-squares minimax fits. */
FZ_MATH float fz_erff(float x) {
    float a = fabsf(x);
    float z = a * a;
    float p = 7.854112287e-05f;
    p = p * z - 8.010276159e-04f;
    p = p * z + 5.188338138e-03f;
    p = p * z - 2.685381830e-02f;
    p = p * z + 1.128358534e-01f;
    p = p * z - 3.761262585e-01f;
    float small = a + a * (p * z + 1.283791671e-01f);   /* 2/sqrt(pi) - 1: keeps its low bits */
    float ac = fz_blendf(a > 4.0f, 4.0f, a);
    float t = ac - 2.5f;
    float q = 1.599822328e-06f;
    q = q * t - 1.330171368e-05f;
    q = q * t + 7.745490704e-05f;
    q = q * t - 4.201731081e-04f;
    q = q * t + 2.165081537e-03f;
    q = q * t - 1.085848737e-02f;
    q = q * t + 5.610639164e-02f;
    q = q * t - 3.526806885e-01f;
    q = q * t - 1.556815279e+00f;
    float big = 1.0f - fz_expf(q - ac * ac);        /* NaN for NaN */
    float r = fz_blendf(a < 1.0f, small, big);
    return fz_bitsf(fz_fbits(r) | (fz_fbits(x) & 0x80000000u));
}

/* tanh(log(1 + exp(x))), Mish's factor, with one exp: for e = exp(x) it equals
 * e (e + 2) / (e (e + 2) + 2). Above x = 20 that ratio is 1 in float; clamping
 * there keeps e (e + 2) finite. */
FZ_MATH float fz_tanh_softplusf(float x) {
    float e = fz_expf(fz_blendf(x > 20.0f, 20.0f, x));
    float n = e * (e + 2.0f);
    return n / (n + 2.0f);
}

#endif
