// The PC-DARTS partial-channel combine of one node, torch-free.
//
//   out = sum_e w[e] * shuffle_g(cat(sum_k softmax(alpha[e])[k] * outputs[e][k], bypass[e]))
//
// On each of the E edges 1/g of the channels went through the K operations (outputs,
// (N, C/g, S) with S the spatial size) and the other C - C/g bypassed it (bypass,
// (N, C - C/g, S)); the concatenation is channel-shuffled with g groups and the edges are
// summed with weights w (all ones when edge_weights is null). The shuffle is one
// permutation for every edge, so output channel c = a*g + b (a < C/g, b < g) is
//   b == 0: sum_e w[e] sum_k softmax(alpha[e])[k] * outputs[e][k][:, a]
//   b >= 1: sum_e w[e] * bypass[e][:, (b-1)*C/g + a]
// and every element is written once, every input read once.
//
// The E*K grid of operation outputs arrives as in mixed_op.h: a compact list of the M
// present entries (the zero op is absent). All tensors are of one dtype and contiguous,
// except that the samples of the bypass tensors may lie further apart: a channel slice
// x[:, C/g:] of a contiguous edge input x (N, C, S), what PC-DARTS bypasses on a normal
// edge, is read in place. alpha and edge_weights are float32, or float64 when the tensors
// are float64.
#pragma once

#include <cstdint>

#include "common.h"

namespace pynas {

struct PartialChannelArgs {
  const void* const* outputs;  // outputs: M pointers, each to (N, C/g, S) elements of `dtype`
  const int64_t* slots;        // slots: (M,) host array; output m sits at alpha[slots[m]], e*K + k
  int64_t num_outputs;         // M, 0 <= M <= E*K
  const void* const* bypass;   // bypass: E pointers, each to (N, (g-1)*C/g, S) elements of
                               // `dtype`, sample n at n * bypass_batch_stride elements;
                               // unused (may be null) when g == 1
  int64_t bypass_batch_stride; // elements between samples of every bypass tensor:
                               // (g-1)*C/g*S when contiguous, C*S for a slice x[:, C/g:]
  const void* alpha;           // alpha: (E, K) logits, float32 (float64 for float64 tensors)
  const void* edge_weights;    // edge_weights: (E,) of alpha's dtype, or null for all ones
  int64_t num_edges;           // E >= 1
  int64_t num_ops;             // K >= 1
  int64_t batch;               // N >= 0
  int64_t channels_per_group;  // C/g >= 0
  int64_t groups;              // g >= 1
  int64_t spatial;             // S >= 0, elements per channel (H*W)
  DType dtype;                 // element type of the tensors and their gradients
};

// ---- CPU (csrc/cpu/partial_channel.cpp): float32 and float64; host pointers. ----

// out: (N, g*C/g, S) of `dtype`.
Status partial_channel_forward_cpu(const PartialChannelArgs& args, void* out, int num_threads);

// grad_out: (N, C, S) of `dtype`, the upstream gradient.
// grad_outputs: M pointers, each to (N, C/g, S), written.
// grad_bypass: E pointers, each to a contiguous (N, (g-1)*C/g, S), written (unused when
// g == 1).
// grad_alpha: (E, K) of alpha's dtype, written.
// grad_edge_weights: (E,) of alpha's dtype, written; or null when that gradient is not
// wanted (then the bypass tensors are not read at all).
Status partial_channel_backward_cpu(const PartialChannelArgs& args, const void* grad_out,
                                    void* const* grad_outputs, void* const* grad_bypass,
                                    void* grad_alpha, void* grad_edge_weights,
                                    int num_threads);

// ---- CUDA (csrc/cuda/partial_channel.cu): float32, float16, bfloat16; device pointers. ----
// `outputs`, `bypass`, `grad_outputs` and `grad_bypass` are host arrays of device pointers
// (they travel to the kernels in their by-value parameters); every other pointer is a
// device pointer; `stream` is a cudaStream_t. workspace: device scratch of at least
// partial_channel_cuda_workspace_bytes(E, K) bytes (the backward's; the forward needs none).

int64_t partial_channel_cuda_workspace_bytes(int64_t num_edges, int64_t num_ops);

Status partial_channel_forward_cuda(const PartialChannelArgs& args, void* out, void* workspace,
                                    void* stream);

Status partial_channel_backward_cuda(const PartialChannelArgs& args, const void* grad_out,
                                     void* const* grad_outputs, void* const* grad_bypass,
                                     void* grad_alpha, void* grad_edge_weights, void* workspace,
                                     void* stream);

// Message of the last failed call of these CUDA kernels on this thread ("" if none).
const char* partial_channel_last_cuda_error();

}  // namespace pynas
