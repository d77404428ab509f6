// CPU kernels of the DARTS mixed op: one pass over memory, OpenMP across chunks of the
// elements, inner loops the compiler vectorizes (`omp simd`).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../mixed_op.h"
#include "../softmax.h"

namespace pynas {
namespace {

// Elements per chunk: small enough that a chunk of the output (forward) or of grad_out
// (backward) stays in L1 while every input streams past it once.
constexpr int64_t kChunk = 16384;

// The two inner loops, compiled for AVX-512, AVX2 and baseline x86-64 and chosen at load
// time (ifunc): the wheel runs on any x86-64, and wider vectors pay when the data sits in
// cache. They are functions of their own because GCC outlines OpenMP regions before it
// clones, so a clone attribute on the parallel function would miss its loops.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PYNAS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PYNAS_VECTOR_CLONES
#endif

// out[i] (+)= w * x[i] for i < len.
template <typename T>
inline __attribute__((always_inline)) void scale_into_body(T* __restrict__ out,
                                                           const T* __restrict__ x, T w,
                                                           int64_t len, bool accumulate) {
  if (accumulate) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] += w * x[i];
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] = w * x[i];
  }
}

// grad_x[i] = w * g[i] for i < len; returns sum_i g[i] * x[i].
template <typename T>
inline __attribute__((always_inline)) T scale_and_dot_body(T* __restrict__ grad_x,
                                                           const T* __restrict__ g,
                                                           const T* __restrict__ x, T w,
                                                           int64_t len) {
  T dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < len; ++i) {
    grad_x[i] = w * g[i];
    dot += g[i] * x[i];
  }
  return dot;
}

PYNAS_VECTOR_CLONES void scale_into(float* out, const float* x, float w, int64_t len,
                                    bool accumulate) {
  scale_into_body(out, x, w, len, accumulate);
}
PYNAS_VECTOR_CLONES void scale_into(double* out, const double* x, double w, int64_t len,
                                    bool accumulate) {
  scale_into_body(out, x, w, len, accumulate);
}
PYNAS_VECTOR_CLONES float scale_and_dot(float* grad_x, const float* g, const float* x, float w,
                                        int64_t len) {
  return scale_and_dot_body(grad_x, g, x, w, len);
}
PYNAS_VECTOR_CLONES double scale_and_dot(double* grad_x, const double* g, const double* x,
                                         double w, int64_t len) {
  return scale_and_dot_body(grad_x, g, x, w, len);
}

bool valid(const MixedOpArgs& args) {
  if (args.num_edges < 1 || args.num_ops < 1 || args.numel < 0 || args.num_inputs < 0 ||
      args.num_inputs > args.num_edges * args.num_ops || args.alpha == nullptr)
    return false;
  for (int64_t m = 0; m < args.num_inputs; ++m) {
    if ((args.numel > 0 && args.inputs[m] == nullptr) || args.slots[m] < 0 ||
        args.slots[m] >= args.num_edges * args.num_ops)
      return false;
  }
  return true;
}

// Softmax of each of the E rows of alpha: (E*K,) weights.
template <typename T>
std::vector<T> edge_weights(const MixedOpArgs& args) {
  const T* alpha = static_cast<const T*>(args.alpha);
  std::vector<T> weights(args.num_edges * args.num_ops);
  for (int64_t e = 0; e < args.num_edges; ++e)
    softmax(alpha + e * args.num_ops, args.num_ops, weights.data() + e * args.num_ops);
  return weights;
}

template <typename T>
void forward(const MixedOpArgs& args, T* out, int num_threads) {
  const std::vector<T> weights = edge_weights<T>(args);
  const int64_t n = args.numel, M = args.num_inputs;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    T* __restrict__ o = out + begin;
    const int64_t len = end - begin;
    if (M == 0) {
      std::fill(o, o + len, T(0));
      continue;
    }
    for (int64_t m = 0; m < M; ++m) {
      scale_into(o, static_cast<const T*>(args.inputs[m]) + begin, weights[args.slots[m]], len,
                 /*accumulate=*/m > 0);
    }
  }
}

template <typename T>
void backward(const MixedOpArgs& args, const T* grad_out, void* const* grad_inputs,
              T* grad_alpha, int num_threads) {
  const std::vector<T> weights = edge_weights<T>(args);
  const int64_t n = args.numel, M = args.num_inputs, EK = args.num_edges * args.num_ops;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  // dots[m] = <grad_out, inputs[m]>, summed per chunk in T, across chunks in double.
  std::vector<double> dots(M, 0.0);
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<double> local(M, 0.0);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * kChunk, len = std::min(n, begin + kChunk) - begin;
      const T* g = grad_out + begin;
      for (int64_t m = 0; m < M; ++m) {
        local[m] += scale_and_dot(static_cast<T*>(grad_inputs[m]) + begin, g,
                                  static_cast<const T*>(args.inputs[m]) + begin,
                                  weights[args.slots[m]], len);
      }
    }
#pragma omp critical
    for (int64_t m = 0; m < M; ++m) dots[m] += local[m];
  }
  std::vector<T> grad_weights(EK, T(0));
  for (int64_t m = 0; m < M; ++m) grad_weights[args.slots[m]] = static_cast<T>(dots[m]);
  for (int64_t e = 0; e < args.num_edges; ++e) {
    const int64_t row = e * args.num_ops;
    softmax_backward(weights.data() + row, grad_weights.data() + row, args.num_ops,
                     grad_alpha + row);
  }
}

}  // namespace

Status mixed_op_forward_cpu(const MixedOpArgs& args, void* out, int num_threads) {
  if (!valid(args) || (args.numel > 0 && out == nullptr) || num_threads < 1)
    return Status::kInvalidArgument;
  switch (args.dtype) {
    case DType::kFloat32:
      forward(args, static_cast<float*>(out), num_threads);
      return Status::kOk;
    case DType::kFloat64:
      forward(args, static_cast<double*>(out), num_threads);
      return Status::kOk;
    default:
      return Status::kUnsupportedDType;
  }
}

Status mixed_op_backward_cpu(const MixedOpArgs& args, const void* grad_out,
                             void* const* grad_inputs, void* grad_alpha, int num_threads) {
  if (!valid(args) || (args.numel > 0 && grad_out == nullptr) || grad_alpha == nullptr ||
      num_threads < 1)
    return Status::kInvalidArgument;
  for (int64_t m = 0; m < args.num_inputs; ++m)
    if (args.numel > 0 && grad_inputs[m] == nullptr) return Status::kInvalidArgument;
  switch (args.dtype) {
    case DType::kFloat32:
      backward(args, static_cast<const float*>(grad_out), grad_inputs,
               static_cast<float*>(grad_alpha), num_threads);
      return Status::kOk;
    case DType::kFloat64:
      backward(args, static_cast<const double*>(grad_out), grad_inputs,
               static_cast<double*>(grad_alpha), num_threads);
      return Status::kOk;
    default:
      return Status::kUnsupportedDType;
  }
}

}  // namespace pynas
