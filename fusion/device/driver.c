/* fz_driver: runs a fusion model library on a device (or under qemu-user).
 *
 *   fz_driver LIB WEIGHTS OUTDIR [--threads N] [--runs R] IN0.bin IN1.bin ...
 *
 * Loads LIB with dlopen and uses only the model's C ABI (model_*), so one
 * driver serves every model. Inputs are raw little-endian tensors in the
 * order model_input_name(i) gives; outputs are written as OUTDIR/out<k>.bin,
 * and one JSON line on stdout reports shapes and timings. Errors: one line
 * on stderr and exit code 2 (bad usage/input) or 3 (the model failed). */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void *(*create_fn)(const char *);
typedef int (*run_fn)(void *, const void *const *, void *const *);
typedef void (*destroy_fn)(void *);
typedef const char *(*err_fn)(void);
typedef int (*count_fn)(void);
typedef const char *(*name_fn)(int);
typedef int (*int_fn)(int);
typedef const int64_t *(*shape_fn)(int);
typedef void (*threads_fn)(void *, int);
typedef const int64_t *(*actual_fn)(void *, int);

static void *lib;
static void *sym(const char *name, int required) {
    void *p = dlsym(lib, name);
    if (!p && required) { fprintf(stderr, "fz_driver: the library does not export %s\n", name); exit(2); }
    return p;
}

static size_t dtype_size(int t) {
    switch (t) {
    case 1: case 6: case 12: return 4;      /* float, int32, uint32 */
    case 7: case 11: case 13: return 8;     /* int64, double, uint64 */
    case 2: case 3: case 9: return 1;       /* uint8, int8, bool */
    case 4: case 5: case 10: case 16: return 2;
    default: return 0;
    }
}

/* The leading corner `shp` of a tensor laid out with the strides of `cap` (a data-dependent
 * output), written densely to f. */
static void write_corner(FILE *f, const char *p, const int64_t *cap, const int64_t *shp, int rank, size_t elem) {
    if (rank == 0) { fwrite(p, 1, elem, f); return; }
    size_t stride = elem;
    for (int d = 1; d < rank; d++) stride *= (size_t)cap[d];
    if (rank == 1) { fwrite(p, 1, (size_t)shp[0] * elem, f); return; }
    for (int64_t i = 0; i < shp[0]; i++) write_corner(f, p + (size_t)i * stride, cap + 1, shp + 1, rank - 1, elem);
}

static double now_ms(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: fz_driver LIB WEIGHTS OUTDIR [--threads N] [--runs R] INPUTS...\n"); return 2; }
    const char *libpath = argv[1], *weights = argv[2], *outdir = argv[3];
    int threads = 0, runs = 1, first_in = 4;
    while (first_in + 1 < argc && strncmp(argv[first_in], "--", 2) == 0) {
        if (!strcmp(argv[first_in], "--threads")) threads = atoi(argv[first_in + 1]);
        else if (!strcmp(argv[first_in], "--runs")) runs = atoi(argv[first_in + 1]);
        else { fprintf(stderr, "fz_driver: unknown option %s\n", argv[first_in]); return 2; }
        first_in += 2;
    }
    if (runs < 1) runs = 1;
    lib = dlopen(libpath, RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "fz_driver: cannot load %s: %s\n", libpath, dlerror()); return 2; }
    create_fn create = (create_fn)sym("model_create", 1);
    run_fn run = (run_fn)sym("model_run", 1);
    destroy_fn destroy = (destroy_fn)sym("model_destroy", 1);
    err_fn last_error = (err_fn)sym("model_last_error", 1);
    count_fn n_in = (count_fn)sym("model_num_inputs", 1), n_out = (count_fn)sym("model_num_outputs", 1);
    name_fn in_name = (name_fn)sym("model_input_name", 1), out_name = (name_fn)sym("model_output_name", 1);
    int_fn in_dtype = (int_fn)sym("model_input_dtype", 1), out_dtype = (int_fn)sym("model_output_dtype", 1);
    int_fn in_rank = (int_fn)sym("model_input_rank", 1), out_rank = (int_fn)sym("model_output_rank", 1);
    shape_fn in_shape = (shape_fn)sym("model_input_shape", 1), out_shape = (shape_fn)sym("model_output_shape", 1);
    threads_fn set_threads = (threads_fn)sym("model_set_threads", 0);
    actual_fn actual_shape = (actual_fn)sym("model_output_actual_shape", 0);

    int ni = n_in(), no = n_out();
    if (argc - first_in != ni) {
        fprintf(stderr, "fz_driver: the model has %d inputs, %d files given\n", ni, argc - first_in); return 2;
    }
    void *ctx = create(weights);
    if (!ctx) { fprintf(stderr, "fz_driver: model_create failed: %s\n", last_error()); return 3; }
    if (threads > 0 && set_threads) set_threads(ctx, threads);
    const void **ins = calloc(ni > 0 ? ni : 1, sizeof(void *));
    void **outs = calloc(no > 0 ? no : 1, sizeof(void *));
    size_t *out_bytes = calloc(no > 0 ? no : 1, sizeof(size_t));
    for (int i = 0; i < ni; i++) {
        size_t n = dtype_size(in_dtype(i));
        for (int d = 0; d < in_rank(i); d++) n *= (size_t)in_shape(i)[d];
        FILE *f = fopen(argv[first_in + i], "rb");
        if (!f) { fprintf(stderr, "fz_driver: cannot open input file %s\n", argv[first_in + i]); return 2; }
        void *buf = malloc(n ? n : 1);
        size_t got = fread(buf, 1, n, f); fclose(f);
        if (got != n) {
            fprintf(stderr, "fz_driver: input '%s' needs %zu bytes, %s has %zu\n", in_name(i), n, argv[first_in + i], got);
            return 2;
        }
        ins[i] = buf;
    }
    for (int k = 0; k < no; k++) {
        size_t n = dtype_size(out_dtype(k));
        for (int d = 0; d < out_rank(k); d++) n *= (size_t)out_shape(k)[d];
        out_bytes[k] = n;
        outs[k] = calloc(n ? n : 1, 1);
    }
    double *ms = calloc(runs, sizeof(double));
    for (int r = 0; r < runs; r++) {
        double t0 = now_ms();
        if (run(ctx, ins, outs) != 0) { fprintf(stderr, "fz_driver: model_run failed: %s\n", last_error()); return 3; }
        ms[r] = now_ms() - t0;
    }
    printf("{\"outputs\": [");
    for (int k = 0; k < no; k++) {
        int64_t shp[16], cap[16]; int rank = out_rank(k);
        for (int d = 0; d < rank && d < 16; d++) shp[d] = cap[d] = out_shape(k)[d];
        const int64_t *act = actual_shape ? actual_shape(ctx, k) : NULL;
        for (int d = 0; act && d < rank && d < 16; d++) shp[d] = act[d] < cap[d] ? act[d] : cap[d];
        char path[4096]; snprintf(path, sizeof path, "%s/out%d.bin", outdir, k);
        FILE *f = fopen(path, "wb");
        if (!f) { fprintf(stderr, "fz_driver: cannot write %s\n", path); return 2; }
        write_corner(f, (const char *)outs[k], cap, shp, rank, dtype_size(out_dtype(k)));
        fclose(f);
        printf("%s{\"name\": \"%s\", \"dtype\": %d, \"shape\": [", k ? ", " : "", out_name(k), out_dtype(k));
        for (int d = 0; d < rank; d++) printf("%s%lld", d ? ", " : "", (long long)shp[d]);
        printf("]}");
    }
    qsort(ms, runs, sizeof(double), cmp_double);
    printf("], \"runs\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f}\n", runs, ms[runs / 2], ms[0]);
    destroy(ctx);
    return 0;
}
