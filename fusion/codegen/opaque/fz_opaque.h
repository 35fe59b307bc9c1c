/* fz_opaque.h: hand-written kernels for the ops that cannot be loop nests
 * (data-dependent output shapes or orders: NonMaxSuppression, TopK, NonZero,
 * RoiAlign, Unique, ...). Compiled into every model library.
 *
 * Contract (see docs/opaque.md):
 *  - every kernel returns 0 on success, else nonzero after setting a message
 *    readable with fz_opaque_last_error() (per thread);
 *  - outputs are allocated by the caller; on entry out[k].shape/rank give the
 *    capacity (only the element count matters), on return the actual shape;
 *  - an omitted optional input is either past n_in or has dtype FZ_UNDEFINED;
 *  - kernels never read or write outside the tensors they are given: bad
 *    indices, shapes or dtypes are errors, not crashes;
 *  - no global state except the per-thread error message.
 *
 * The attribute structs below are parsed by fusion/codegen/opaque/kernels.py
 * (one field per line: `type name;` or `type name[N];`), keep that form.
 */
#ifndef FZ_OPAQUE_H
#define FZ_OPAQUE_H

#include <stdint.h>

#ifndef FZ_OPAQUE_API
#define FZ_OPAQUE_API
#endif

#define FZ_MAX_RANK 8

typedef struct {
    void *data;
    int32_t dtype;   /* ONNX TensorProto element type */
    int32_t rank;
    int64_t shape[FZ_MAX_RANK];
} fz_tensor;

/* ONNX TensorProto.DataType */
enum {
    FZ_UNDEFINED = 0, FZ_FLOAT = 1, FZ_UINT8 = 2, FZ_INT8 = 3, FZ_UINT16 = 4, FZ_INT16 = 5,
    FZ_INT32 = 6, FZ_INT64 = 7, FZ_STRING = 8, FZ_BOOL = 9, FZ_FLOAT16 = 10, FZ_DOUBLE = 11,
    FZ_UINT32 = 12, FZ_UINT64 = 13, FZ_BFLOAT16 = 16
};

/* reduction attribute of ScatterND / ScatterElements */
enum { FZ_REDUCE_NONE = 0, FZ_REDUCE_ADD = 1, FZ_REDUCE_MUL = 2, FZ_REDUCE_MAX = 3, FZ_REDUCE_MIN = 4 };

struct fz_attrs_TopK {
    int64_t axis;
    int32_t largest;
    int32_t sorted;
};

struct fz_attrs_NonMaxSuppression {
    int32_t center_point_box;
};

struct fz_attrs_RoiAlign {
    int32_t mode;            /* 0 avg, 1 max */
    int32_t half_pixel;      /* 1 half_pixel, 0 output_half_pixel */
    int64_t output_height;
    int64_t output_width;
    int64_t sampling_ratio;
    float spatial_scale;
};

struct fz_attrs_NonZero {
    int32_t unused;
};

struct fz_attrs_Compress {
    int32_t has_axis;
    int64_t axis;
};

struct fz_attrs_GatherND {
    int64_t batch_dims;
};

struct fz_attrs_ScatterND {
    int32_t reduction;
};

struct fz_attrs_ScatterElements {
    int64_t axis;
    int32_t reduction;
};

struct fz_attrs_ReverseSequence {
    int64_t batch_axis;
    int64_t time_axis;
};

struct fz_attrs_Unique {
    int32_t has_axis;
    int64_t axis;
    int32_t sorted;
};

struct fz_attrs_NegativeLogLikelihoodLoss {
    int32_t reduction;       /* 0 none, 1 sum, 2 mean */
    int32_t has_ignore_index;
    int64_t ignore_index;
};

struct fz_attrs_SoftmaxCrossEntropyLoss {
    int32_t reduction;       /* 0 none, 1 sum, 2 mean */
    int32_t has_ignore_index;
    int64_t ignore_index;
};

struct fz_attrs_Det {
    int32_t unused;
};

struct fz_attrs_Window {
    int32_t kind;            /* 0 Hann, 1 Hamming, 2 Blackman */
    int32_t periodic;
    int32_t output_datatype; /* ONNX element type */
};

struct fz_attrs_DynamicQuantizeLinear {
    int32_t unused;
};

struct fz_attrs_TensorScatter {
    int64_t axis;
    int32_t circular;        /* mode: 0 linear, 1 circular */
};

struct fz_attrs_Attention {
    int32_t is_causal;
    int32_t q_num_heads;     /* 3-D inputs only */
    int32_t kv_num_heads;
    int32_t qk_mode;         /* qk_matmul_output_mode */
    int32_t has_scale;       /* 0: 1/sqrt(head_size) */
    float scale;
    float softcap;
};

struct fz_attrs_QLinearMatMul {
    int32_t unused;
};

/* ConvInteger and QLinearConv; pads[0..5] are the begins, pads[6..11] the ends */
struct fz_attrs_QConv {
    int64_t group;
    int32_t auto_pad;        /* 0 NOTSET, 1 SAME_UPPER, 2 SAME_LOWER, 3 VALID */
    int64_t strides[6];
    int64_t dilations[6];
    int64_t pads[12];
};

struct fz_attrs_BitCast {
    int32_t to;              /* ONNX element type of the output */
};

struct fz_attrs_MaxUnpool {
    int64_t kernel_shape[6];
    int64_t strides[6];
    int64_t pads[12];        /* begins at 0..5, ends at 6..11 */
};

struct fz_attrs_AffineGrid {
    int32_t align_corners;
};

struct fz_attrs_Col2Im {
    int64_t dilations[6];
    int64_t strides[6];
    int64_t pads[12];        /* begins at 0..5, ends at 6..11 */
};

/* RNN, GRU, LSTM: one kernel, fz_op_Recurrent */
struct fz_attrs_Recurrent {
    int32_t kind;            /* 0 RNN, 1 GRU, 2 LSTM */
    int32_t direction;       /* 0 forward, 1 reverse, 2 bidirectional */
    int64_t hidden_size;
    int32_t layout;
    int32_t input_forget;
    int32_t linear_before_reset;
    int32_t has_clip;
    float clip;
    int32_t act[6];          /* per direction: f[, g[, h]]; codes in kernels.py ACTIVATIONS */
    float alpha[6];
    float beta[6];
};

#ifdef __cplusplus
extern "C" {
#endif

FZ_OPAQUE_API const char *fz_opaque_last_error(void);
FZ_OPAQUE_API void fz_opaque_set_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Re-lays out, in place, an output the kernel wrote compactly (row-major in
 * its actual shape) with the strides of `cap`, the capacity shape it was
 * allocated at: element [i, j] moves to i * cap[1] + j. For callers that
 * index data-dependent outputs with the capacity's strides. */
FZ_OPAQUE_API int fz_opaque_pad_to_capacity(fz_tensor *t, const int64_t *cap);

#define FZ_KERNEL(name) \
    FZ_OPAQUE_API int fz_op_##name(const fz_tensor *in, int n_in, fz_tensor *out, int n_out, const void *attrs)

FZ_KERNEL(TopK);
FZ_KERNEL(NonMaxSuppression);
FZ_KERNEL(RoiAlign);
FZ_KERNEL(NonZero);
FZ_KERNEL(Compress);
FZ_KERNEL(GatherND);
FZ_KERNEL(ScatterND);
FZ_KERNEL(ScatterElements);
FZ_KERNEL(ReverseSequence);
FZ_KERNEL(Unique);
FZ_KERNEL(NegativeLogLikelihoodLoss);
FZ_KERNEL(SoftmaxCrossEntropyLoss);
FZ_KERNEL(Det);
FZ_KERNEL(Window); /* HannWindow, HammingWindow, BlackmanWindow */
FZ_KERNEL(DynamicQuantizeLinear);
FZ_KERNEL(TensorScatter);
FZ_KERNEL(Attention);
FZ_KERNEL(QLinearMatMul);
FZ_KERNEL(ConvInteger);
FZ_KERNEL(QLinearConv);
FZ_KERNEL(BitCast);
FZ_KERNEL(MaxUnpool);
FZ_KERNEL(AffineGrid);
FZ_KERNEL(Col2Im);
FZ_KERNEL(Recurrent); /* RNN, GRU, LSTM */

#ifdef __cplusplus
}
#endif

#endif
