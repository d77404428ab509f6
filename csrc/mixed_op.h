// The DARTS mixed operation of one node, torch-free.
//
//   out = sum_{e,k} softmax(alpha[e])[k] * inputs[e][k]
//
// The E*K grid of operation outputs arrives as a compact list of the M present entries
// (the zero op is absent: it takes part in the softmax of its edge and costs nothing
// else). All present inputs are contiguous arrays of n elements of one dtype. alpha is
// float32, or float64 when the inputs are float64.
#pragma once

#include <cstdint>

#include "common.h"

namespace pynas {

struct MixedOpArgs {
  const void* const* inputs;  // inputs: M pointers, each to (n,) elements of `dtype`
  const int64_t* slots;       // slots: (M,) host array; input m sits at alpha[slots[m]], e*K + k
  int64_t num_inputs;         // M, 0 <= M <= E*K
  const void* alpha;          // alpha: (E, K) logits, float32 (float64 for float64 inputs)
  int64_t num_edges;          // E >= 1
  int64_t num_ops;            // K >= 1
  int64_t numel;              // n, elements per input
  DType dtype;                // element type of inputs, outputs and gradients
};

// ---- CPU (csrc/cpu/mixed_op.cpp): float32 and float64; host pointers. ----

// out: (n,) of `dtype`.
Status mixed_op_forward_cpu(const MixedOpArgs& args, void* out, int num_threads);

// grad_out: (n,) of `dtype`, the upstream gradient.
// grad_inputs: M pointers, each to (n,) of `dtype`, written as softmax weight * grad_out.
// grad_alpha: (E, K) of alpha's dtype, written with the softmax Jacobian applied to the
// E*K dot products <grad_out, inputs[e][k]> (zero for absent entries).
Status mixed_op_backward_cpu(const MixedOpArgs& args, const void* grad_out,
                             void* const* grad_inputs, void* grad_alpha, int num_threads);

// ---- CUDA (csrc/cuda/mixed_op.cu): float32, float16, bfloat16; device pointers. ----
// `inputs` and `grad_inputs` are host arrays of device pointers (copied to the device
// by the kernel launch as a by-value parameter block or through `workspace`); alpha,
// out, grad_out and grad_alpha are device pointers; `stream` is a cudaStream_t.
// workspace: device scratch of at least mixed_op_cuda_workspace_bytes(args) bytes.

int64_t mixed_op_cuda_workspace_bytes(const MixedOpArgs& args);

Status mixed_op_forward_cuda(const MixedOpArgs& args, void* out, void* workspace,
                             void* stream);

Status mixed_op_backward_cuda(const MixedOpArgs& args, const void* grad_out,
                              void* const* grad_inputs, void* grad_alpha, void* workspace,
                              void* stream);

// Message of the last failed CUDA call on this thread ("" if none).
const char* last_cuda_error();

// Compiled CUDA architectures (e.g. 80, 90) and the number of usable devices (0 when
// there is no driver or no device; never fails).
int cuda_compiled_archs(int* archs, int capacity);
int cuda_device_count();

}  // namespace pynas
