// Softmax over one edge's K logits and its Jacobian-vector product, shared by the CPU
// and CUDA kernels so the CPU tests exercise the arithmetic the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace pynas {

// weights[k] = exp(logits[k] - max) / sum_j exp(logits[j] - max), k < K.
// NaN or +inf logits give NaN weights, as torch.softmax does.
template <typename T>
PYNAS_HOST_DEVICE void softmax(const T* logits, int64_t K, T* weights) {
  using std::exp;  // the float overload on the host too, as on the device
  T max_logit = logits[0];
  for (int64_t k = 1; k < K; ++k) max_logit = logits[k] > max_logit ? logits[k] : max_logit;
  T total = 0;
  for (int64_t k = 0; k < K; ++k) {
    weights[k] = exp(logits[k] - max_logit);
    total += weights[k];
  }
  for (int64_t k = 0; k < K; ++k) weights[k] /= total;
}

// grad_logits[k] = weights[k] * (grad_weights[k] - sum_j weights[j] * grad_weights[j]).
template <typename T>
PYNAS_HOST_DEVICE void softmax_backward(const T* weights, const T* grad_weights, int64_t K,
                                        T* grad_logits) {
  T inner = 0;
  for (int64_t k = 0; k < K; ++k) inner += weights[k] * grad_weights[k];
  for (int64_t k = 0; k < K; ++k) grad_logits[k] = weights[k] * (grad_weights[k] - inner);
}

}  // namespace pynas
