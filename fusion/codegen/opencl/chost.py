"""The C host of an OpenCL model, against the standard OpenCL API only.

libOpenCL.so is opened with dlopen at model_create (Android ships the vendor
driver under that name; it is not in the NDK, so nothing links against it)
and the ~20 entry points used are function pointers. The interface is the
CPU library's (model_create / model_run / model_destroy / model_last_error),
so the same caller works for both. The kernel source is embedded; the built
program binary is kept next to weights.bin (`<weights>.clbin`) and reused
when the driver accepts it. The same file builds for this machine too, which
is how the tests run it on PoCL.
"""
from __future__ import annotations

from fusion.errors import UnsupportedOpError
from fusion.codegen.opencl.program import HostStep, KernelStep, Program


def _c_string(text: str) -> str:
    out = []
    for line in text.splitlines():
        out.append('"' + line.replace("\\", "\\\\").replace('"', '\\"') + '\\n"')
    return "\n".join(out) or '""'


def host_source(prog: Program, max_work_group: int) -> str:
    if any(isinstance(s, HostStep) for s in prog.steps):
        names = ", ".join(s.block.nodes[0].op for s in prog.steps if isinstance(s, HostStep))
        raise UnsupportedOpError(f"the model has ops that run as host steps ({names}); the C OpenCL host has no "
                                 f"CPU kernels for them yet (use target android-arm64 for this model)")
    if prog.tail:
        raise UnsupportedOpError("a graph output that no kernel writes (a constant or an input passed "
                                 "through) is not supported by the C OpenCL host yet")
    steps = [s for s in prog.steps if isinstance(s, KernelStep)]
    nin, nout = len(prog.inputs), len(prog.outputs)
    in_bytes = [int(v.dtype.itemsize) * _n(v) for v in prog.inputs]
    out_bytes = [int(v.dtype.itemsize) * _n(v) for v in prog.outputs]
    rows = []
    for s in steps:
        args = ", ".join(_storage_code(x) for x in s.storages)
        rows.append(f'    {{ "{s.name}", {len(s.storages)}, {{ {args or "0"} }}, {s.total}, {s.local}, {s.global_size} }},')
    return TEMPLATE.replace("@SOURCE@", _c_string(prog.source)) \
        .replace("@NSTEPS@", str(max(len(steps), 1))).replace("@NSTEPS_REAL@", str(len(steps))) \
        .replace("@STEPS@", "\n".join(rows) or '    { "", 0, { 0 }, 0, 0, 0 },') \
        .replace("@NIN@", str(nin)).replace("@NOUT@", str(nout)) \
        .replace("@INBYTES@", ", ".join(map(str, in_bytes)) or "0") \
        .replace("@OUTBYTES@", ", ".join(map(str, out_bytes)) or "0") \
        .replace("@WBYTES@", str(len(prog.weights))).replace("@ARENA@", str(prog.arena_bytes)) \
        .replace("@MAXARGS@", str(max((len(s.storages) for s in steps), default=1))) \
        .replace("@MAXWG@", str(max_work_group or 256))


def _n(v) -> int:
    n = 1
    for d in v.shape:
        n *= int(d)
    return n


def _storage_code(s: str) -> str:
    # -1: weights, -2: arena, k >= 0: input k, -(3 + k): output k
    if s == "W":
        return "-1"
    if s == "M":
        return "-2"
    if s.startswith("in"):
        return s[2:]
    return str(-(3 + int(s[3:])))


TEMPLATE = r"""/* OpenCL host for a fusion model: generated, standard OpenCL 1.2 API via dlopen. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t cl_int; typedef uint32_t cl_uint; typedef uint64_t cl_ulong; typedef cl_ulong cl_bitfield;
typedef struct _cl_platform_id *cl_platform_id; typedef struct _cl_device_id *cl_device_id;
typedef struct _cl_context *cl_context; typedef struct _cl_command_queue *cl_command_queue;
typedef struct _cl_mem *cl_mem; typedef struct _cl_program *cl_program; typedef struct _cl_kernel *cl_kernel;
typedef struct _cl_event *cl_event;
#define CL_SUCCESS 0
#define CL_DEVICE_TYPE_GPU (1 << 2)
#define CL_DEVICE_TYPE_ALL 0xFFFFFFFF
#define CL_DEVICE_MAX_WORK_GROUP_SIZE 0x1004
#define CL_DEVICE_EXTENSIONS 0x1030
#define CL_MEM_READ_WRITE (1 << 0)
#define CL_MEM_READ_ONLY (1 << 2)
#define CL_MEM_COPY_HOST_PTR (1 << 5)
#define CL_PROGRAM_BUILD_LOG 0x1183
#define CL_PROGRAM_BINARY_SIZES 0x1165
#define CL_PROGRAM_BINARIES 0x1166
#define CL_KERNEL_WORK_GROUP_SIZE 0x11B0
#define CL_TRUE 1
#define CL_FALSE 0

static struct {
    void *lib;
    cl_int (*GetPlatformIDs)(cl_uint, cl_platform_id *, cl_uint *);
    cl_int (*GetDeviceIDs)(cl_platform_id, cl_bitfield, cl_uint, cl_device_id *, cl_uint *);
    cl_int (*GetDeviceInfo)(cl_device_id, cl_uint, size_t, void *, size_t *);
    cl_context (*CreateContext)(const intptr_t *, cl_uint, const cl_device_id *, void *, void *, cl_int *);
    cl_command_queue (*CreateCommandQueue)(cl_context, cl_device_id, cl_bitfield, cl_int *);
    cl_program (*CreateProgramWithSource)(cl_context, cl_uint, const char **, const size_t *, cl_int *);
    cl_program (*CreateProgramWithBinary)(cl_context, cl_uint, const cl_device_id *, const size_t *,
                                          const unsigned char **, cl_int *, cl_int *);
    cl_int (*BuildProgram)(cl_program, cl_uint, const cl_device_id *, const char *, void *, void *);
    cl_int (*GetProgramBuildInfo)(cl_program, cl_device_id, cl_uint, size_t, void *, size_t *);
    cl_int (*GetProgramInfo)(cl_program, cl_uint, size_t, void *, size_t *);
    cl_kernel (*CreateKernel)(cl_program, const char *, cl_int *);
    cl_int (*GetKernelWorkGroupInfo)(cl_kernel, cl_device_id, cl_uint, size_t, void *, size_t *);
    cl_mem (*CreateBuffer)(cl_context, cl_bitfield, size_t, void *, cl_int *);
    cl_int (*SetKernelArg)(cl_kernel, cl_uint, size_t, const void *);
    cl_int (*EnqueueWriteBuffer)(cl_command_queue, cl_mem, cl_uint, size_t, size_t, const void *, cl_uint,
                                 const cl_event *, cl_event *);
    cl_int (*EnqueueReadBuffer)(cl_command_queue, cl_mem, cl_uint, size_t, size_t, void *, cl_uint,
                                const cl_event *, cl_event *);
    cl_int (*EnqueueNDRangeKernel)(cl_command_queue, cl_kernel, cl_uint, const size_t *, const size_t *,
                                   const size_t *, cl_uint, const cl_event *, cl_event *);
    cl_int (*Finish)(cl_command_queue);
    cl_int (*ReleaseMemObject)(cl_mem);
    cl_int (*ReleaseKernel)(cl_kernel);
    cl_int (*ReleaseProgram)(cl_program);
    cl_int (*ReleaseCommandQueue)(cl_command_queue);
    cl_int (*ReleaseContext)(cl_context);
} cl;

static char fz_error[512];
const char *model_last_error(void) { return fz_error; }

static const char *fz_source =
@SOURCE@;

struct fz_step { const char *kernel; int nargs; int args[@MAXARGS@]; long total; long local; long global; };
static const struct fz_step fz_steps[@NSTEPS@] = {
@STEPS@
};
#define FZ_NSTEPS @NSTEPS_REAL@
#define FZ_NIN @NIN@
#define FZ_NOUT @NOUT@
static const size_t fz_in_bytes[] = { @INBYTES@ };
static const size_t fz_out_bytes[] = { @OUTBYTES@ };
#define FZ_WEIGHTS_BYTES @WBYTES@
#define FZ_ARENA_BYTES @ARENA@
#define FZ_TARGET_MAX_WG @MAXWG@

struct fz_model {
    cl_context ctx; cl_command_queue q; cl_program prog; cl_device_id dev;
    cl_mem W, M, in[FZ_NIN + 1], out[FZ_NOUT + 1];
    cl_kernel k[FZ_NSTEPS + 1]; size_t global[FZ_NSTEPS + 1], local[FZ_NSTEPS + 1];
};

#define LOAD(name) if (!(*(void **)&cl.name = dlsym(cl.lib, "cl" #name))) { \
    snprintf(fz_error, sizeof fz_error, "libOpenCL has no cl" #name); return -1; }

static int fz_load_opencl(void) {
    if (cl.lib) return 0;
    const char *names[] = { getenv("FZ_OPENCL_LIB"), "libOpenCL.so", "libOpenCL.so.1",
                            "/vendor/lib64/libOpenCL.so", "/system/vendor/lib64/libOpenCL.so", 0 };
    for (int i = 0; i < 5 && !cl.lib; i++) if (names[i]) cl.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!cl.lib) { snprintf(fz_error, sizeof fz_error, "cannot load libOpenCL.so: no OpenCL driver on this device"); return -1; }
    LOAD(GetPlatformIDs) LOAD(GetDeviceIDs) LOAD(GetDeviceInfo) LOAD(CreateContext) LOAD(CreateCommandQueue)
    LOAD(CreateProgramWithSource) LOAD(CreateProgramWithBinary) LOAD(BuildProgram) LOAD(GetProgramBuildInfo)
    LOAD(GetProgramInfo) LOAD(CreateKernel) LOAD(GetKernelWorkGroupInfo) LOAD(CreateBuffer) LOAD(SetKernelArg)
    LOAD(EnqueueWriteBuffer) LOAD(EnqueueReadBuffer) LOAD(EnqueueNDRangeKernel) LOAD(Finish)
    LOAD(ReleaseMemObject) LOAD(ReleaseKernel) LOAD(ReleaseProgram) LOAD(ReleaseCommandQueue) LOAD(ReleaseContext)
    return 0;
}

#define CHECK(call, what) do { cl_int e_ = (call); if (e_ != CL_SUCCESS) { \
    snprintf(fz_error, sizeof fz_error, "%s failed (OpenCL error %d)", what, (int)e_); goto fail; } } while (0)

static char *fz_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    char *buf = (char *)malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

/* Build from the cached binary when the driver takes it, else from source (then cache the binary). */
static cl_program fz_build(struct fz_model *m, const char *cache_path, const char *opts) {
    cl_int err = 0;
    size_t n = 0;
    unsigned char *bin = (unsigned char *)fz_read_file(cache_path, &n);
    if (bin) {
        const unsigned char *b = bin; cl_int st = 0;
        cl_program p = cl.CreateProgramWithBinary(m->ctx, 1, &m->dev, &n, &b, &st, &err);
        free(bin);
        if (p && err == CL_SUCCESS && cl.BuildProgram(p, 1, &m->dev, opts, NULL, NULL) == CL_SUCCESS) return p;
        if (p) cl.ReleaseProgram(p);
    }
    cl_program p = cl.CreateProgramWithSource(m->ctx, 1, &fz_source, NULL, &err);
    if (!p) { snprintf(fz_error, sizeof fz_error, "clCreateProgramWithSource failed (%d)", (int)err); return NULL; }
    if (cl.BuildProgram(p, 1, &m->dev, opts, NULL, NULL) != CL_SUCCESS) {
        char log[400] = {0};
        cl.GetProgramBuildInfo(p, m->dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        snprintf(fz_error, sizeof fz_error, "the OpenCL compiler rejected the kernels: %s", log);
        cl.ReleaseProgram(p); return NULL;
    }
    size_t bs = 0;
    if (cl.GetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof bs, &bs, NULL) == CL_SUCCESS && bs > 0) {
        unsigned char *out = (unsigned char *)malloc(bs);
        if (out && cl.GetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof out, &out, NULL) == CL_SUCCESS) {
            FILE *f = fopen(cache_path, "wb");
            if (f) { fwrite(out, 1, bs, f); fclose(f); }
        }
        free(out);
    }
    return p;
}

static cl_mem fz_arg(struct fz_model *m, int code) {
    if (code == -1) return m->W;
    if (code == -2) return m->M;
    if (code >= 0) return m->in[code];
    return m->out[-(code + 3)];
}

void model_destroy(void *ctx);

void *model_create(const char *weights_path) {
    if (fz_load_opencl() != 0) return NULL;
    struct fz_model *m = (struct fz_model *)calloc(1, sizeof *m);
    char *w = NULL; size_t wn = 0; cl_int err = 0;
    cl_platform_id plats[8]; cl_uint np = 0;
    CHECK(cl.GetPlatformIDs(8, plats, &np), "clGetPlatformIDs");
    for (cl_uint i = 0; i < np && !m->dev; i++)
        if (cl.GetDeviceIDs(plats[i], CL_DEVICE_TYPE_GPU, 1, &m->dev, NULL) != CL_SUCCESS) m->dev = NULL;
    for (cl_uint i = 0; i < np && !m->dev; i++)
        if (cl.GetDeviceIDs(plats[i], CL_DEVICE_TYPE_ALL, 1, &m->dev, NULL) != CL_SUCCESS) m->dev = NULL;
    if (!m->dev) { snprintf(fz_error, sizeof fz_error, "no OpenCL device found"); goto fail; }
    m->ctx = cl.CreateContext(NULL, 1, &m->dev, NULL, NULL, &err); CHECK(err, "clCreateContext");
    m->q = cl.CreateCommandQueue(m->ctx, m->dev, 0, &err); CHECK(err, "clCreateCommandQueue");
    char ext[4096] = {0};
    cl.GetDeviceInfo(m->dev, CL_DEVICE_EXTENSIONS, sizeof ext - 1, ext, NULL);
    const char *opts = strstr(ext, "cl_khr_fp64") ? "-cl-std=CL1.2 -DFZ_FP64" : "-cl-std=CL1.2";
    char cache[1024];
    snprintf(cache, sizeof cache, "%s.clbin", weights_path);
    if (!(m->prog = fz_build(m, cache, opts))) goto fail;
    w = fz_read_file(weights_path, &wn);
    if (!w) { snprintf(fz_error, sizeof fz_error, "cannot read weights file '%s'", weights_path); goto fail; }
    if (wn != FZ_WEIGHTS_BYTES) { snprintf(fz_error, sizeof fz_error, "weights file '%s' has %zu bytes, this library expects %zu: it belongs to another compile", weights_path, wn, (size_t)FZ_WEIGHTS_BYTES); goto fail; }
    m->W = cl.CreateBuffer(m->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, wn, w, &err); CHECK(err, "weights buffer");
    free(w); w = NULL;
    m->M = cl.CreateBuffer(m->ctx, CL_MEM_READ_WRITE, FZ_ARENA_BYTES, NULL, &err); CHECK(err, "arena buffer");
    for (int i = 0; i < FZ_NIN; i++) { m->in[i] = cl.CreateBuffer(m->ctx, CL_MEM_READ_ONLY, fz_in_bytes[i] ? fz_in_bytes[i] : 4, NULL, &err); CHECK(err, "input buffer"); }
    for (int i = 0; i < FZ_NOUT; i++) { m->out[i] = cl.CreateBuffer(m->ctx, CL_MEM_READ_WRITE, fz_out_bytes[i] ? fz_out_bytes[i] : 4, NULL, &err); CHECK(err, "output buffer"); }
    size_t dev_wg = 0;
    cl.GetDeviceInfo(m->dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof dev_wg, &dev_wg, NULL);
    for (int s = 0; s < FZ_NSTEPS; s++) {
        const struct fz_step *st = &fz_steps[s];
        m->k[s] = cl.CreateKernel(m->prog, st->kernel, &err); CHECK(err, st->kernel);
        for (int a = 0; a < st->nargs; a++) {
            cl_mem b = fz_arg(m, st->args[a]);
            CHECK(cl.SetKernelArg(m->k[s], (cl_uint)a, sizeof b, &b), "clSetKernelArg");
        }
        if (st->local) { m->local[s] = (size_t)st->local; m->global[s] = (size_t)st->global; continue; }
        size_t kwg = 0;
        cl.GetKernelWorkGroupInfo(m->k[s], m->dev, CL_KERNEL_WORK_GROUP_SIZE, sizeof kwg, &kwg, NULL);
        size_t lim = FZ_TARGET_MAX_WG;
        if (dev_wg && dev_wg < lim) lim = dev_wg;
        if (kwg && kwg < lim) lim = kwg;
        size_t wg = 1;
        while (wg * 2 <= lim && (long)wg < st->total) wg *= 2;
        m->local[s] = wg;
        m->global[s] = ((size_t)st->total + wg - 1) / wg * wg;
    }
    return m;
fail:
    free(w);
    model_destroy(m);
    return NULL;
}

int model_run(void *ctx, const void *const *inputs, void *const *outputs) {
    struct fz_model *m = (struct fz_model *)ctx;
    if (!m) { snprintf(fz_error, sizeof fz_error, "model_run: null model"); return -1; }
    for (int i = 0; i < FZ_NIN; i++)
        if (fz_in_bytes[i]) CHECK(cl.EnqueueWriteBuffer(m->q, m->in[i], CL_FALSE, 0, fz_in_bytes[i], inputs[i], 0, NULL, NULL), "write input");
    /* every kernel on one in-order queue: no host round trip until the outputs */
    for (int s = 0; s < FZ_NSTEPS; s++)
        if (fz_steps[s].total > 0)
            CHECK(cl.EnqueueNDRangeKernel(m->q, m->k[s], 1, NULL, &m->global[s], &m->local[s], 0, NULL, NULL), fz_steps[s].kernel);
    for (int i = 0; i < FZ_NOUT; i++)
        if (fz_out_bytes[i]) CHECK(cl.EnqueueReadBuffer(m->q, m->out[i], CL_FALSE, 0, fz_out_bytes[i], outputs[i], 0, NULL, NULL), "read output");
    CHECK(cl.Finish(m->q), "clFinish");
    return 0;
fail:
    return -1;
}

int model_num_kernels(void) { return FZ_NSTEPS; }

void model_destroy(void *ctx) {
    struct fz_model *m = (struct fz_model *)ctx;
    if (!m) return;
    for (int s = 0; s < FZ_NSTEPS; s++) if (m->k[s]) cl.ReleaseKernel(m->k[s]);
    for (int i = 0; i < FZ_NIN; i++) if (m->in[i]) cl.ReleaseMemObject(m->in[i]);
    for (int i = 0; i < FZ_NOUT; i++) if (m->out[i]) cl.ReleaseMemObject(m->out[i]);
    if (m->W) cl.ReleaseMemObject(m->W);
    if (m->M) cl.ReleaseMemObject(m->M);
    if (m->prog) cl.ReleaseProgram(m->prog);
    if (m->q) cl.ReleaseCommandQueue(m->q);
    if (m->ctx) cl.ReleaseContext(m->ctx);
    free(m);
}
"""
