// CPU kernels of the DARTS mixed op: one pass over memory, OpenMP across chunks of the
// elements, inner loops the compiler vectorizes (`omp simd`).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../mixed_op.h"
#include "../softmax.h"

namespace pynas {
namespace {

// Elements per chunk: small enough that a chunk of the output (forward) or of grad_out
// (backward) stays in L1 while every input streams past it once.
constexpr int64_t kChunk = 4096;

// A backward that writes at least this many bytes of gradients stores them with streaming
// (non-temporal) stores: they would not stay in cache anyway, and a streaming store writes a
// line without first reading it, a third less memory traffic per gradient (C++ harness, 35
// gradients of 4 MiB: 1.35x faster). Below it the gradients stay cached for the operations'
// backward that reads them next, and ordinary stores are faster.
constexpr int64_t kStreamingBytes = int64_t{8} << 20;

// The inner loops, compiled for AVX-512, AVX2 and baseline x86-64 and chosen at load
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

// out[i] (+)= w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i] for i < len: four inputs per
// pass over the output chunk, which then moves through the cache a quarter as often (C++
// harness, 35 inputs of 2 MiB: the forward 2x faster than one input per pass).
template <typename T>
inline __attribute__((always_inline)) void scale4_into_body(
    T* __restrict__ out, const T* __restrict__ x0, const T* __restrict__ x1,
    const T* __restrict__ x2, const T* __restrict__ x3, const T* w, int64_t len,
    bool accumulate) {
  const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  if (accumulate) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i];
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] = w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i];
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
PYNAS_VECTOR_CLONES void scale4_into(float* out, const float* const* x, const float* w,
                                     int64_t len, bool accumulate) {
  scale4_into_body(out, x[0], x[1], x[2], x[3], w, len, accumulate);
}
PYNAS_VECTOR_CLONES void scale4_into(double* out, const double* const* x, const double* w,
                                     int64_t len, bool accumulate) {
  scale4_into_body(out, x[0], x[1], x[2], x[3], w, len, accumulate);
}
PYNAS_VECTOR_CLONES float scale_and_dot(float* grad_x, const float* g, const float* x, float w,
                                        int64_t len) {
  return scale_and_dot_body(grad_x, g, x, w, len);
}
PYNAS_VECTOR_CLONES double scale_and_dot(double* grad_x, const double* g, const double* x,
                                         double w, int64_t len) {
  return scale_and_dot_body(grad_x, g, x, w, len);
}

#if defined(__SSE2__)
// scale_and_dot with streaming stores of grad_x. 128-bit SSE2 (every x86-64 has it) is
// enough: the loop runs at memory speed, not at vector width.
inline __m128 stream_step(float* grad_x, const float* g, const float* x, __m128 w, __m128 dot) {
  const __m128 gv = _mm_loadu_ps(g);
  _mm_stream_ps(grad_x, _mm_mul_ps(w, gv));
  return _mm_add_ps(dot, _mm_mul_ps(gv, _mm_loadu_ps(x)));
}
inline __m128d stream_step(double* grad_x, const double* g, const double* x, __m128d w,
                           __m128d dot) {
  const __m128d gv = _mm_loadu_pd(g);
  _mm_stream_pd(grad_x, _mm_mul_pd(w, gv));
  return _mm_add_pd(dot, _mm_mul_pd(gv, _mm_loadu_pd(x)));
}
inline float lanes_sum(__m128 v) {
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, v);
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}
inline double lanes_sum(__m128d v) {
  alignas(16) double lanes[2];
  _mm_store_pd(lanes, v);
  return lanes[0] + lanes[1];
}

template <typename T>
T scale_and_dot_streaming(T* grad_x, const T* g, const T* x, T w, int64_t len) {
  using Vector = std::conditional_t<std::is_same_v<T, float>, __m128, __m128d>;
  constexpr int64_t kLanes = 16 / sizeof(T);
  T dot = 0;
  int64_t i = 0;
  for (; i < len && reinterpret_cast<std::uintptr_t>(grad_x + i) % 16 != 0; ++i) {
    grad_x[i] = w * g[i];  // up to the first 16-byte boundary of grad_x
    dot += g[i] * x[i];
  }
  Vector weight, dot0, dot1;
  if constexpr (std::is_same_v<T, float>) {
    weight = _mm_set1_ps(w), dot0 = dot1 = _mm_setzero_ps();
  } else {
    weight = _mm_set1_pd(w), dot0 = dot1 = _mm_setzero_pd();
  }
  for (; i + 2 * kLanes <= len; i += 2 * kLanes) {
    dot0 = stream_step(grad_x + i, g + i, x + i, weight, dot0);
    dot1 = stream_step(grad_x + i + kLanes, g + i + kLanes, x + i + kLanes, weight, dot1);
  }
  dot += lanes_sum(dot0) + lanes_sum(dot1);
  for (; i < len; ++i) {
    grad_x[i] = w * g[i];
    dot += g[i] * x[i];
  }
  return dot;
}
constexpr bool kHasStreamingStores = true;
inline void end_streaming_stores() { _mm_sfence(); }
#else
template <typename T>
T scale_and_dot_streaming(T* grad_x, const T* g, const T* x, T w, int64_t len) {
  return scale_and_dot(grad_x, g, x, w, len);
}
constexpr bool kHasStreamingStores = false;
inline void end_streaming_stores() {}
#endif

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
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
      const T* x[4];
      T w[4];
      for (int j = 0; j < 4; ++j) {
        x[j] = static_cast<const T*>(args.inputs[m + j]) + begin;
        w[j] = weights[args.slots[m + j]];
      }
      scale4_into(o, x, w, len, /*accumulate=*/m > 0);
    }
    for (; m < M; ++m) {
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
  const bool streaming =
      kHasStreamingStores && M * n * static_cast<int64_t>(sizeof(T)) >= kStreamingBytes;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<double> local(M, 0.0);
#pragma omp for schedule(static) nowait
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * kChunk, len = std::min(n, begin + kChunk) - begin;
      const T* g = grad_out + begin;
      for (int64_t m = 0; m < M; ++m) {
        T* grad = static_cast<T*>(grad_inputs[m]) + begin;
        const T* input = static_cast<const T*>(args.inputs[m]) + begin;
        local[m] += streaming ? scale_and_dot_streaming(grad, g, input, weights[args.slots[m]], len)
                              : scale_and_dot(grad, g, input, weights[args.slots[m]], len);
      }
    }
    if (streaming) end_streaming_stores();  // this thread's stores are visible to the others
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
