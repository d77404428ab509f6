// CPU kernels of the PC-DARTS partial-channel combine (see partial_channel.h).
//
// The unit of work is one (n, a) pair: the g output channels a*g .. a*g + g-1 of sample n,
// one contiguous block of g*S elements of out (and of grad_out). Its first row is the
// weighted sum of the M operated rows (n, a) and each later row b the weighted sum of the
// E bypass rows (n, (b-1)*C/g + a), so a unit reads each of its inputs once and writes each
// output element once. OpenMP splits the N*C/g units; the inner loops run along the S
// elements of a row and the compiler vectorizes them (`omp simd`).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../partial_channel.h"
#include "../softmax.h"

namespace pynas {
namespace {

// The row loops, compiled for AVX-512, AVX2 and baseline x86-64 and chosen at load time
// (ifunc), as in mixed_op.cpp: functions of their own because GCC outlines OpenMP regions
// before it clones.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PYNAS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PYNAS_VECTOR_CLONES
#endif

// out[i] (+)= sum_{r < kRows} weights[r] * rows[r][i] for i < len.
template <int kRows, typename T>
inline __attribute__((always_inline)) void add_rows(T* __restrict__ out, const T* const* rows,
                                                    const T* weights, int64_t len,
                                                    bool accumulate) {
  const T* x[kRows];
  T w[kRows];
  for (int r = 0; r < kRows; ++r) x[r] = rows[r], w[r] = weights[r];
  if (accumulate) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      T sum = out[i];
      for (int r = 0; r < kRows; ++r) sum += w[r] * x[r][i];
      out[i] = sum;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      T sum = w[0] * x[0][i];
      for (int r = 1; r < kRows; ++r) sum += w[r] * x[r][i];
      out[i] = sum;
    }
  }
}

// out[i] = sum_r weights[r] * rows[r][i] for i < len, r < count (zeros when count == 0).
// Up to four rows per pass over out, a quarter of the loads and stores of out that one row
// per pass would make (a row of out stays in L1; these are what bound the loop there).
template <typename T>
inline __attribute__((always_inline)) void weighted_rows_body(T* __restrict__ out,
                                                              const T* const* rows,
                                                              const T* weights, int64_t count,
                                                              int64_t len) {
  if (count == 0) {
    std::fill(out, out + len, T(0));
    return;
  }
  int64_t r = 0;
  for (; r + 4 <= count; r += 4) add_rows<4>(out, rows + r, weights + r, len, r > 0);
  switch (count - r) {
    case 3:
      add_rows<3>(out, rows + r, weights + r, len, r > 0);
      break;
    case 2:
      add_rows<2>(out, rows + r, weights + r, len, r > 0);
      break;
    case 1:
      add_rows<1>(out, rows + r, weights + r, len, r > 0);
      break;
    default:
      break;
  }
}

// For r < count: grads[r][i] = weights[r] * g[i] for i < len, and, when dots is not null,
// dots[r] += sum_i g[i] * rows[r][i] (summed in T along the row, in double across rows).
template <typename T>
inline __attribute__((always_inline)) void scatter_rows_body(const T* __restrict__ g,
                                                             const T* const* rows,
                                                             T* const* grads, const T* weights,
                                                             int64_t count, int64_t len,
                                                             double* dots) {
  for (int64_t r = 0; r < count; ++r) {
    T* __restrict__ grad = grads[r];
    const T w = weights[r];
    if (dots == nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) grad[i] = w * g[i];
      continue;
    }
    const T* __restrict__ x = rows[r];
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < len; ++i) {
      grad[i] = w * g[i];
      dot += g[i] * x[i];
    }
    dots[r] += dot;
  }
}

PYNAS_VECTOR_CLONES void weighted_rows(float* out, const float* const* rows,
                                       const float* weights, int64_t count, int64_t len) {
  weighted_rows_body(out, rows, weights, count, len);
}
PYNAS_VECTOR_CLONES void weighted_rows(double* out, const double* const* rows,
                                       const double* weights, int64_t count, int64_t len) {
  weighted_rows_body(out, rows, weights, count, len);
}
PYNAS_VECTOR_CLONES void scatter_rows(const float* g, const float* const* rows,
                                      float* const* grads, const float* weights, int64_t count,
                                      int64_t len, double* dots) {
  scatter_rows_body(g, rows, grads, weights, count, len, dots);
}
PYNAS_VECTOR_CLONES void scatter_rows(const double* g, const double* const* rows,
                                      double* const* grads, const double* weights,
                                      int64_t count, int64_t len, double* dots) {
  scatter_rows_body(g, rows, grads, weights, count, len, dots);
}

// Elements a thread should have to read or write before another one is worth waking: a
// parallel region costs microseconds (far more when the cores are shared), which tiny nodes
// would spend many times over.
constexpr int64_t kElementsPerThread = int64_t{1} << 15;

// Threads for a call: at most num_threads, at least one, one per kElementsPerThread
// elements moved (each output or bypass element read, each out element written, and as
// many again for the gradients in the backward).
int thread_count(const PartialChannelArgs& args, int num_threads) {
  const int64_t rows = args.num_outputs + (args.groups - 1) * args.num_edges + args.groups;
  const int64_t elements = args.batch * args.channels_per_group * args.spatial * rows;
  return static_cast<int>(std::clamp<int64_t>(elements / kElementsPerThread, 1, num_threads));
}

bool valid(const PartialChannelArgs& args) {
  if (args.num_edges < 1 || args.num_ops < 1 || args.batch < 0 ||
      args.channels_per_group < 0 || args.groups < 1 || args.spatial < 0 ||
      args.bypass_batch_stride < 0 ||
      args.num_outputs < 0 || args.num_outputs > args.num_edges * args.num_ops ||
      args.alpha == nullptr || (args.num_outputs > 0 && args.slots == nullptr))
    return false;
  const bool has_elements = args.batch * args.channels_per_group * args.spatial > 0;
  for (int64_t m = 0; m < args.num_outputs; ++m) {
    if ((has_elements && args.outputs[m] == nullptr) || args.slots[m] < 0 ||
        args.slots[m] >= args.num_edges * args.num_ops)
      return false;
  }
  if (args.groups > 1 && has_elements) {
    if (args.bypass == nullptr) return false;
    for (int64_t e = 0; e < args.num_edges; ++e)
      if (args.bypass[e] == nullptr) return false;
  }
  return true;
}

// The softmax of each row of alpha (probabilities, E*K), the edge weights (E, ones when
// none are given) and each present output's coefficient w[e] * softmax(alpha[e])[k] (M).
template <typename T>
struct Coefficients {
  std::vector<T> probabilities, edges, outputs;

  explicit Coefficients(const PartialChannelArgs& args)
      : probabilities(args.num_edges * args.num_ops),
        edges(args.num_edges, T(1)),
        outputs(args.num_outputs) {
    const T* alpha = static_cast<const T*>(args.alpha);
    for (int64_t e = 0; e < args.num_edges; ++e)
      softmax(alpha + e * args.num_ops, args.num_ops, probabilities.data() + e * args.num_ops);
    if (args.edge_weights != nullptr) {
      const T* weights = static_cast<const T*>(args.edge_weights);
      std::copy(weights, weights + args.num_edges, edges.begin());
    }
    for (int64_t m = 0; m < args.num_outputs; ++m)
      outputs[m] = edges[args.slots[m] / args.num_ops] * probabilities[args.slots[m]];
  }
};

// Where the bypass row (n, (b-1)*C/g + a) starts, in elements: in an input (samples
// bypass_batch_stride apart) and in a contiguous gradient.
struct BypassRow {
  int64_t input;
  int64_t gradient;
};

BypassRow bypass_row(const PartialChannelArgs& args, int64_t n, int64_t a, int64_t b) {
  const int64_t channel = (b - 1) * args.channels_per_group + a;
  const int64_t channels = (args.groups - 1) * args.channels_per_group;
  return {n * args.bypass_batch_stride + channel * args.spatial,
          (n * channels + channel) * args.spatial};
}

template <typename T>
const T* at(const void* tensor, int64_t offset) {
  return static_cast<const T*>(tensor) + offset;
}

template <typename T>
void forward(const PartialChannelArgs& args, T* out, int num_threads) {
  const Coefficients<T> coefficients(args);
  const int64_t M = args.num_outputs, E = args.num_edges, g = args.groups;
  const int64_t per_group = args.channels_per_group, S = args.spatial;
  const int64_t units = args.batch * per_group;
#pragma omp parallel num_threads(thread_count(args, num_threads))
  {
    std::vector<const T*> rows(std::max(M, E));
#pragma omp for schedule(static)
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t n = unit / per_group, a = unit % per_group;
      T* block = out + unit * g * S;
      for (int64_t m = 0; m < M; ++m) rows[m] = at<T>(args.outputs[m], unit * S);
      weighted_rows(block, rows.data(), coefficients.outputs.data(), M, S);
      for (int64_t b = 1; b < g; ++b) {
        const int64_t offset = bypass_row(args, n, a, b).input;
        for (int64_t e = 0; e < E; ++e) rows[e] = at<T>(args.bypass[e], offset);
        weighted_rows(block + b * S, rows.data(), coefficients.edges.data(), E, S);
      }
    }
  }
}

template <typename T>
void backward(const PartialChannelArgs& args, const T* grad_out, void* const* grad_outputs,
              void* const* grad_bypass, T* grad_alpha, T* grad_edge_weights, int num_threads) {
  const Coefficients<T> coefficients(args);
  const int64_t M = args.num_outputs, E = args.num_edges, K = args.num_ops, g = args.groups;
  const int64_t per_group = args.channels_per_group, S = args.spatial;
  const int64_t units = args.batch * per_group;
  const bool bypass_dots = grad_edge_weights != nullptr;
  // Per thread: M output dots then E bypass dots, summed in thread order afterwards so that
  // a result does not depend on which thread finished first.
  const int threads = thread_count(args, num_threads);
  std::vector<std::vector<double>> thread_dots(threads);
#pragma omp parallel num_threads(threads)
  {
    std::vector<double> dots(M + E, 0.0);
    std::vector<const T*> rows(std::max(M, E));
    std::vector<T*> grads(std::max(M, E));
#pragma omp for schedule(static)
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t n = unit / per_group, a = unit % per_group;
      const T* block = grad_out + unit * g * S;
      for (int64_t m = 0; m < M; ++m) {
        rows[m] = at<T>(args.outputs[m], unit * S);
        grads[m] = static_cast<T*>(grad_outputs[m]) + unit * S;
      }
      scatter_rows(block, rows.data(), grads.data(), coefficients.outputs.data(), M, S,
                   dots.data());
      for (int64_t b = 1; b < g; ++b) {
        const BypassRow offsets = bypass_row(args, n, a, b);
        for (int64_t e = 0; e < E; ++e) {
          rows[e] = bypass_dots ? at<T>(args.bypass[e], offsets.input) : nullptr;
          grads[e] = static_cast<T*>(grad_bypass[e]) + offsets.gradient;
        }
        scatter_rows(block + b * S, rows.data(), grads.data(), coefficients.edges.data(), E, S,
                     bypass_dots ? dots.data() + M : nullptr);
      }
    }
    thread_dots[omp_get_thread_num()] = std::move(dots);
  }
  std::vector<double> dots(M + E, 0.0);
  for (const std::vector<double>& local : thread_dots)
    for (size_t i = 0; i < local.size(); ++i) dots[i] += local[i];

  // d out / d softmax(alpha[e])[k] = w[e] * <grad, output_ek>; the Jacobian does the rest.
  std::vector<T> output_dots(E * K, T(0)), grad_probabilities(E * K, T(0));
  for (int64_t m = 0; m < M; ++m) {
    const int64_t slot = args.slots[m];
    output_dots[slot] = static_cast<T>(dots[m]);
    grad_probabilities[slot] = coefficients.edges[slot / K] * output_dots[slot];
  }
  for (int64_t e = 0; e < E; ++e) {
    softmax_backward(coefficients.probabilities.data() + e * K, grad_probabilities.data() + e * K,
                     K, grad_alpha + e * K);
    if (!bypass_dots) continue;
    // d out / d w[e] = <grad, the edge's unweighted shuffled concatenation>.
    double total = dots[M + e];
    for (int64_t k = 0; k < K; ++k)
      total += static_cast<double>(coefficients.probabilities[e * K + k]) * output_dots[e * K + k];
    grad_edge_weights[e] = static_cast<T>(total);
  }
}

}  // namespace

Status partial_channel_forward_cpu(const PartialChannelArgs& args, void* out, int num_threads) {
  if (!valid(args) || num_threads < 1 ||
      (args.batch * args.channels_per_group * args.spatial > 0 && out == nullptr))
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

Status partial_channel_backward_cpu(const PartialChannelArgs& args, const void* grad_out,
                                    void* const* grad_outputs, void* const* grad_bypass,
                                    void* grad_alpha, void* grad_edge_weights,
                                    int num_threads) {
  if (!valid(args) || grad_alpha == nullptr || num_threads < 1) return Status::kInvalidArgument;
  if (args.batch * args.channels_per_group * args.spatial > 0) {
    if (grad_out == nullptr || (args.num_outputs > 0 && grad_outputs == nullptr) ||
        (args.groups > 1 && grad_bypass == nullptr))
      return Status::kInvalidArgument;
    for (int64_t m = 0; m < args.num_outputs; ++m)
      if (grad_outputs[m] == nullptr) return Status::kInvalidArgument;
    for (int64_t e = 0; args.groups > 1 && e < args.num_edges; ++e)
      if (grad_bypass[e] == nullptr) return Status::kInvalidArgument;
  }
  switch (args.dtype) {
    case DType::kFloat32:
      backward(args, static_cast<const float*>(grad_out), grad_outputs, grad_bypass,
               static_cast<float*>(grad_alpha), static_cast<float*>(grad_edge_weights),
               num_threads);
      return Status::kOk;
    case DType::kFloat64:
      backward(args, static_cast<const double*>(grad_out), grad_outputs, grad_bypass,
               static_cast<double*>(grad_alpha), static_cast<double*>(grad_edge_weights),
               num_threads);
      return Status::kOk;
    default:
      return Status::kUnsupportedDType;
  }
}

}  // namespace pynas
