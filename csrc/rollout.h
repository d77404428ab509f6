// The RL controller's fused rollout, torch-free: n architectures sampled in one call, the
// LSTM steps and the draws inside the kernel (Zoph & Le 2017; ENAS, Pham et al. 2018).
//
// The controller walks a decision program of S steps. At every step it runs one LSTM cell
// (hidden H, PyTorch's LSTMCell gate order i, f, g, o) and then, by the step's kind:
//   choice   one categorical decision, logits = W_s h + b_s (the step's own head);
//   pointer  one categorical decision over `options` anchors from the step's first anchor,
//            logits_j = v^T tanh(A_j + W_curr h)                             (ENAS Eq. 1);
//   skips    `options` binary decisions over anchors likewise,
//            P(anchor j feeds) = sigmoid(v^T tanh(A_j + W_curr h))
//            (Zoph & Le, Sec. 3.3), each drawn as the categorical over logits (0, score_j);
// Every logit and score becomes c * tanh(logit) when the tanh constant c > 0 (ENAS), and is
// left as is when c == 0. A step that records an anchor then appends A = W_prev h and h
// itself to the anchor list.
// The next step's input is: after a choice or pointer, the embedding row of the action,
// whose input-gate contribution W_ih e + b_ih + b_hh the caller tabulates; after skips, the
// mean (1 + number chosen in the denominator) of the chosen anchors' h, multiplied by W_ih
// here. Decision d of architecture b draws Philox block (b, offset / 4 + d).
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace pynas {

enum class StepKind : int32_t { kChoice = 0, kPointer = 1, kSkips = 2 };

struct RolloutProgram {
  const int32_t* kinds;             // kinds: (S,) StepKind
  const int32_t* options;           // options: (S,) choices, or anchors considered
  const int32_t* records_anchor;    // records_anchor: (S,) 0 or 1
  const int32_t* head_offsets;      // head_offsets: (S,) first head row of a choice step
  const int32_t* embedding_offsets; // embedding_offsets: (S,) first input-table row of the
                                    // actions of a choice or pointer step
  const int32_t* decision_offsets;  // decision_offsets: (S,) first decision of the step
  const int32_t* anchor_offsets;    // anchor_offsets: (S,) first anchor a pointer or skips
                                    // step considers (each cell has its own anchors)
  int64_t num_steps;                // S >= 1
  int64_t num_decisions;            // D, the sum of the steps' decisions
  int64_t num_anchors;              // steps that record an anchor
};

// The matrices arrive transposed, W^T (in, out) row-major, so that one input's weights to
// all outputs are contiguous: the CPU products stream rows of W^T, and the CUDA threads (one
// per output) read them coalesced.
struct RolloutWeights {
  const float* input_table;  // input_table: (R, 4H) W_ih e_r + b_ih + b_hh; row 0 starts
  const float* weight_ih_t;  // weight_ih_t: (H, 4H) W_ih^T, for the input after a skips step
  const float* bias;         // bias: (4H,) b_ih + b_hh
  const float* weight_hh_t;  // weight_hh_t: (H, 4H) W_hh^T
  const float* head_weight;  // head_weight: (sum of choice options, H)
  const float* head_bias;    // head_bias: (sum of choice options,)
  int64_t head_rows;         // sum of choice options
  const float* weight_prev_t;  // weight_prev_t: (H, H) W_prev^T, anchors A = W_prev h
  const float* weight_curr_t;  // weight_curr_t: (H, H) W_curr^T
  const float* attention;    // attention: (H,) v
  int64_t hidden;            // H >= 1
  int64_t table_rows;        // R
  float tanh_constant;       // c; 0 leaves logits as they are
};

struct RolloutOutputs {
  int64_t* actions;  // actions: (n, D)
  float* log_prob;   // log_prob: (n, D), log-probability of each decision
  float* entropy;    // entropy: (n, D), entropy of each decision's distribution
};

// ---- math shared by the CPU and CUDA kernels ----

// exp in float by range reduction and a degree-6 polynomial (relative error below 1e-7),
// written branch-free so that the CPU loops vectorize: inputs are clamped to exp's finite
// range [-87, 88] by arithmetic on the comparison results (GCC does not vectorize a
// ternary clamp followed by this code).
PYNAS_HOST_DEVICE float exp_approx(float x) {
  const float low = static_cast<float>(x < -87.0f), high = static_cast<float>(x > 88.0f);
  x = x * (1.0f - low - high) - 87.0f * low + 88.0f * high;
  // round(x / ln 2): adding 1.5 * 2^23 leaves the integer part in the mantissa (no floorf,
  // a library call on baseline x86-64 that would stop the loops vectorizing).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n ln 2, Cody-Waite
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t bits;
    float value;
  } scale;
  scale.bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  return p * scale.value;
}

PYNAS_HOST_DEVICE float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

PYNAS_HOST_DEVICE float tanh_approx(float x) { return 2.0f * sigmoid_approx(2.0f * x) - 1.0f; }

// The LSTM cell update of one hidden unit from its four gate pre-activations.
PYNAS_HOST_DEVICE void lstm_unit(float gate_i, float gate_f, float gate_g, float gate_o,
                                 float* cell, float* hidden) {
  *cell = sigmoid_approx(gate_f) * *cell + sigmoid_approx(gate_i) * tanh_approx(gate_g);
  *hidden = sigmoid_approx(gate_o) * tanh_approx(*cell);
}

PYNAS_HOST_DEVICE float squash(float logit, float tanh_constant) {
  return tanh_constant > 0.0f ? tanh_constant * tanh_approx(logit) : logit;
}

// ---- entry points ----

// Whether the program is consistent with itself and with the weights' sizes (offsets in
// range, pointers and skips over recorded anchors only); host arrays.
bool valid_rollout(const RolloutProgram& program, const RolloutWeights& weights);

// CPU (csrc/cpu/rollout.cpp): host pointers.
Status controller_rollout_cpu(const RolloutProgram& program, const RolloutWeights& weights,
                              int64_t count, uint64_t seed, uint64_t offset,
                              const RolloutOutputs& outputs, int num_threads);

// CUDA (csrc/cuda/rollout.cu): the program arrays are host arrays; weights and outputs are
// device pointers; stream is a cudaStream_t. workspace: device scratch of
// controller_rollout_cuda_workspace_bytes(count, num_anchors, hidden) bytes (the anchors).
int64_t controller_rollout_cuda_workspace_bytes(int64_t count, int64_t num_anchors,
                                                int64_t hidden);
Status controller_rollout_cuda(const RolloutProgram& program, const RolloutWeights& weights,
                               int64_t count, uint64_t seed, uint64_t offset,
                               const RolloutOutputs& outputs, void* workspace, void* stream);

}  // namespace pynas
