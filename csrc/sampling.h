// Batched categorical sampling, torch-free: the draw from a uniform (shared by the CPU and
// CUDA kernels and by the controller rollout) and the entry points of
// pynas::sample_categorical.
//
// The draw is the inverse CDF of softmax(logits) computed in double: CPU and CUDA exp()
// differ by an ulp at most, so in double they choose the same action except when the
// uniform falls within ~1e-16 of a CDF step. A -inf logit has weight exactly 0, so the
// cumulative sum does not move there and it is never chosen.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"
#include "philox.h"

namespace pynas {

struct CategoricalDraw {
  int64_t action;   // in [0, K), or -1 when the row has no distribution (see below)
  double log_prob;  // log softmax(logits)[action]
  double entropy;   // -sum_k p_k log p_k
};

// Draws from softmax(logits[0..K)) with the uniform u in (0, 1); logits are read as
// logits[k * stride]. A row with a NaN or +inf logit, or with every logit -inf, has no
// distribution: action -1 and NaN log_prob and entropy (torch.softmax gives NaN there too).
template <typename T>
PYNAS_HOST_DEVICE CategoricalDraw categorical_draw(const T* logits, int64_t K, int64_t stride,
                                                   double u) {
  using std::exp;
  using std::log;
  const double kNaN = NAN;
  double max_logit = -INFINITY;
  bool defined = true;
  for (int64_t k = 0; k < K; ++k) {
    const double logit = static_cast<double>(logits[k * stride]);
    defined = defined && logit == logit && logit != INFINITY;
    max_logit = logit > max_logit ? logit : max_logit;
  }
  if (!defined || max_logit == -INFINITY) return {-1, kNaN, kNaN};

  // total = sum_k exp(l_k - max); shifted_mean = sum_k exp(l_k - max) (l_k - max).
  double total = 0.0, shifted_mean = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const double shifted = static_cast<double>(logits[k * stride]) - max_logit;
    if (shifted == -INFINITY) continue;  // weight 0; 0 * -inf would be NaN
    const double weight = exp(shifted);
    total += weight;
    shifted_mean += weight * shifted;
  }
  // The same sum in the same order: the last cumulative value equals `total` exactly.
  const double target = u * total;
  double cumulative = 0.0;
  int64_t action = -1;
  for (int64_t k = 0; k < K; ++k) {
    const double shifted = static_cast<double>(logits[k * stride]) - max_logit;
    if (shifted == -INFINITY) continue;
    cumulative += exp(shifted);
    action = k;  // the last positive-weight action, should rounding carry target past total
    if (target < cumulative) break;
  }
  const double log_total = log(total);
  const double log_prob = static_cast<double>(logits[action * stride]) - max_logit - log_total;
  return {action, log_prob, log_total - shifted_mean / total};
}

struct CategoricalArgs {
  const void* logits;  // logits: (B, K) of `dtype`, row b at logits + b * row_stride elements
  int64_t rows;        // B >= 0
  int64_t num_classes; // K >= 1
  int64_t row_stride;  // elements between rows: >= K, or 0 when every row is one row
  DType dtype;         // float32 or float64
  uint64_t seed;       // Philox key
  uint64_t offset;     // Philox offset in 32-bit words; row b draws block (b, offset / 4)
};

// Draws row `row` of args (one Philox block of its own, so neither the thread count nor the
// device changes a result) and writes actions[row], log_prob[row] and entropy[row].
template <typename T>
PYNAS_HOST_DEVICE void sample_row(const CategoricalArgs& args, int64_t row, int64_t* actions,
                                  T* log_prob, T* entropy) {
  const T* logits = static_cast<const T*>(args.logits) + row * args.row_stride;
  const double u = philox_uniform(args.seed, static_cast<uint64_t>(row), args.offset / 4);
  const CategoricalDraw draw = categorical_draw(logits, args.num_classes, 1, u);
  actions[row] = draw.action;
  log_prob[row] = static_cast<T>(draw.log_prob);
  entropy[row] = static_cast<T>(draw.entropy);
}

// ---- CPU (csrc/cpu/sampling.cpp): host pointers. ----
// actions: (B,) int64; log_prob, entropy: (B,) of `dtype`.
Status sample_categorical_cpu(const CategoricalArgs& args, int64_t* actions, void* log_prob,
                              void* entropy, int num_threads);

// ---- CUDA (csrc/cuda/sampling.cu): device pointers; stream is a cudaStream_t. ----
Status sample_categorical_cuda(const CategoricalArgs& args, int64_t* actions, void* log_prob,
                               void* entropy, void* stream);

// A cudaError_t (as int) of the sampling and rollout kernels turned into a status, its
// message kept for sampling_last_cuda_error() ("" if none failed on this thread).
Status sampling_cuda_status(int error, const char* what);
const char* sampling_last_cuda_error();

}  // namespace pynas
