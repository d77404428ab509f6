// CUDA kernels of the fused DARTS mixed operation (see mixed_op.h for the contract).
//
// Forward, per launch of up to kGroupCapacity present inputs:
//   out[i] (+)= sum_m softmax(alpha)[slot_m] * inputs[m][i]
// Backward, per launch of up to kGroupCapacity present inputs, then one finalize launch:
//   grad_inputs[m][i] = softmax(alpha)[slot_m] * grad_out[i]
//   dots[slot_m]      = sum_i grad_out[i] * inputs[m][i]        (per-block partials)
//   grad_alpha[e]     = softmax_backward(softmax(alpha[e]), dots[e])
//
// Every block computes the E*K softmax weights into shared memory itself: alpha is tiny, so
// this costs less than a separate launch. Elements are visited by a grid-stride loop in
// 16-byte chunks (4 floats or 8 halves) when every pointer allows it, with a scalar tail.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/kernel_common.cuh"
#include "mixed_op.h"
#include "softmax.h"

#ifndef PYNAS_CUDA_ARCHS
// CMake passes the compiled architectures, e.g. -DPYNAS_CUDA_ARCHS='"80,90"'.
#error "PYNAS_CUDA_ARCHS must name the compiled CUDA architectures"
#endif

namespace pynas {
namespace {

// Inputs per launch. Pointers and slots travel by value in the kernel parameters: with 64
// entries the backward's block is about 1.3 KB, inside even the classic 4 KB limit, and the
// backward's per-thread dot columns (kGroupCapacity * kBackwardThreads floats) stay at 32 KB
// of shared memory.
constexpr int kGroupCapacity = 64;

// ---- kernel parameters ----

// One launch's share of the present inputs.
template <typename T>
struct ForwardGroup {
  const T* inputs[kGroupCapacity];  // inputs: count pointers to (n,) elements
  int32_t slots[kGroupCapacity];    // slots: (count,) positions e*K + k in alpha
  int32_t count;
};

template <typename T>
struct BackwardGroup {
  const T* inputs[kGroupCapacity];  // inputs: count pointers to (n,) elements
  T* grad_inputs[kGroupCapacity];   // grad_inputs: count pointers to (n,) elements
  int32_t slots[kGroupCapacity];    // slots: (count,) positions e*K + k in alpha
  int32_t count;
};

// ---- device building blocks ----

// Fills weights (E*K floats of shared memory) with the per-edge softmax of alpha, then
// input_weights[m] = weights[slots[m]] for the count inputs of this launch.
// alpha: (E, K) float32 logits.
__device__ void compute_input_weights(const float* __restrict__ alpha, int64_t num_edges,
                                      int64_t num_ops, const int32_t* slots, int count,
                                      float* weights, float* input_weights) {
  edge_softmax(alpha, num_edges, num_ops, weights);
  for (int m = threadIdx.x; m < count; m += blockDim.x) input_weights[m] = weights[slots[m]];
  __syncthreads();
}

// out: (n,) of T, viewed as chunks of kWidth elements. Adds to its old value if accumulate.
template <typename T, int kWidth>
__device__ void forward_chunks(const ForwardGroup<T>& group, const float* input_weights,
                               bool accumulate, int64_t first_chunk, int64_t end_chunk,
                               T* __restrict__ out) {
  const ChunkRange range = thread_chunks(first_chunk, end_chunk);
  for (int64_t chunk = range.first; chunk < range.end; chunk += range.stride) {
    float sums[kWidth];
    if (accumulate) {
      const Pack<T, kWidth> previous = load_pack<T, kWidth>(out, chunk);
#pragma unroll
      for (int j = 0; j < kWidth; ++j) sums[j] = to_float(previous.values[j]);
    } else {
#pragma unroll
      for (int j = 0; j < kWidth; ++j) sums[j] = 0.0f;
    }
#pragma unroll 4
    for (int m = 0; m < group.count; ++m) {
      const Pack<T, kWidth> input = load_pack<T, kWidth>(group.inputs[m], chunk);
      const float weight = input_weights[m];
#pragma unroll
      for (int j = 0; j < kWidth; ++j) sums[j] += weight * to_float(input.values[j]);
    }
    Pack<T, kWidth> result;
#pragma unroll
    for (int j = 0; j < kWidth; ++j) result.values[j] = from_float<T>(sums[j]);
    store_pack<T, kWidth>(out, chunk, result);
  }
}

// grad_out: (n,) of T, viewed as chunks of kWidth elements, each read once and kept in
// registers while the group's inputs stream past. thread_dots: this thread's column of the
// block's (count, kBackwardThreads) shared dot table, so no two threads add to one cell.
// Inputs are loaded kInputsInFlight at a time before any gradient is stored: the compiler
// may not move a load above a store through an unrelated pointer, and one load in flight per
// thread would leave the memory system idle.
template <typename T, int kWidth>
__device__ void backward_chunks(const BackwardGroup<T>& group, const float* input_weights,
                                const T* __restrict__ grad_out, int64_t first_chunk,
                                int64_t end_chunk, float* thread_dots) {
  constexpr int kInputsInFlight = 4;
  const ChunkRange range = thread_chunks(first_chunk, end_chunk);
  for (int64_t chunk = range.first; chunk < range.end; chunk += range.stride) {
    const Pack<T, kWidth> grad_pack = load_pack<T, kWidth>(grad_out, chunk);
    float grad[kWidth];
#pragma unroll
    for (int j = 0; j < kWidth; ++j) grad[j] = to_float(grad_pack.values[j]);
    for (int first = 0; first < group.count; first += kInputsInFlight) {
      Pack<T, kWidth> inputs[kInputsInFlight];
#pragma unroll
      for (int u = 0; u < kInputsInFlight; ++u) {
        if (first + u < group.count) {
          inputs[u] = load_pack<T, kWidth>(group.inputs[first + u], chunk);
        }
      }
#pragma unroll
      for (int u = 0; u < kInputsInFlight; ++u) {
        const int m = first + u;
        if (m >= group.count) break;
        Pack<T, kWidth> grad_input;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < kWidth; ++j) {
          dot += grad[j] * to_float(inputs[u].values[j]);
          grad_input.values[j] = from_float<T>(input_weights[m] * grad[j]);
        }
        store_pack<T, kWidth>(group.grad_inputs[m], chunk, grad_input);
        thread_dots[m * kBackwardThreads] += dot;
      }
    }
  }
}

// ---- kernels ----

// alpha: (E, K) float32 logits. out: (n,) of T, overwritten, or added to if accumulate.
// Dynamic shared memory: E*K floats of softmax weights.
template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kForwardThreads)
    mixed_op_forward_kernel(const ForwardGroup<T> group, const float* __restrict__ alpha,
                            int64_t num_edges, int64_t num_ops, int64_t numel, bool accumulate,
                            T* __restrict__ out) {
  extern __shared__ float weights[];
  __shared__ float input_weights[kGroupCapacity];
  compute_input_weights(alpha, num_edges, num_ops, group.slots, group.count, weights,
                        input_weights);
  constexpr int kWidth = kVectorized ? kVectorWidth<T> : 1;
  const int64_t num_chunks = numel / kWidth;
  forward_chunks<T, kWidth>(group, input_weights, accumulate, 0, num_chunks, out);
  if (kVectorized) {
    // Tail of fewer than kWidth elements, one at a time.
    forward_chunks<T, 1>(group, input_weights, accumulate, num_chunks * kWidth, numel, out);
  }
}

// alpha: (E, K) float32 logits. grad_out: (n,) of T. partials: (E*K, gridDim.x) floats;
// each block writes, for each input m of its launch, row slot_m at column blockIdx.x.
// Dynamic shared memory: E*K floats of softmax weights, then the (count, kBackwardThreads)
// table of per-thread dot products.
template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kBackwardThreads)
    mixed_op_backward_kernel(const BackwardGroup<T> group, const float* __restrict__ alpha,
                             int64_t num_edges, int64_t num_ops, int64_t numel,
                             const T* __restrict__ grad_out, float* __restrict__ partials) {
  extern __shared__ float shared[];
  __shared__ float input_weights[kGroupCapacity];
  float* weights = shared;
  float* dot_table = shared + num_edges * num_ops;
  for (int m = 0; m < group.count; ++m) dot_table[m * kBackwardThreads + threadIdx.x] = 0.0f;
  compute_input_weights(alpha, num_edges, num_ops, group.slots, group.count, weights,
                        input_weights);

  constexpr int kWidth = kVectorized ? kVectorWidth<T> : 1;
  const int64_t num_chunks = numel / kWidth;
  float* thread_dots = dot_table + threadIdx.x;
  backward_chunks<T, kWidth>(group, input_weights, grad_out, 0, num_chunks, thread_dots);
  if (kVectorized) {
    backward_chunks<T, 1>(group, input_weights, grad_out, num_chunks * kWidth, numel,
                          thread_dots);
  }
  __syncthreads();

  // One warp per input sums its row of the table in a fixed order: run-to-run identical.
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  constexpr int kNumWarps = kBackwardThreads / kWarpSize;
  for (int m = warp; m < group.count; m += kNumWarps) {
    const float total = warp_row_sum(dot_table + m * kBackwardThreads, kBackwardThreads, lane);
    if (lane == 0) partials[group.slots[m] * int64_t{gridDim.x} + blockIdx.x] = total;
  }
}

// One block per edge. alpha: (E, K) float32 logits. partials: (E*K, num_partials) floats,
// read in rows of present slots only. grad_alpha: (E, K) float32, written.
// Dynamic shared memory: 2*K floats.
__global__ void __launch_bounds__(kFinalizeThreads)
    mixed_op_finalize_kernel(const float* __restrict__ alpha, int64_t num_ops,
                             const SlotMask present, const float* __restrict__ partials,
                             int64_t num_partials, float* __restrict__ grad_alpha) {
  extern __shared__ float shared[];
  float* weights = shared;
  float* dots = shared + num_ops;
  const int64_t edge = blockIdx.x;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  for (int64_t op = warp; op < num_ops; op += num_warps) {
    const int64_t slot = edge * num_ops + op;
    const int64_t length = present.contains(slot) ? num_partials : 0;
    const float total = warp_row_sum(partials + slot * num_partials, length, lane);
    if (lane == 0) dots[op] = total;
  }
  if (threadIdx.x == 0) softmax(alpha + edge * num_ops, num_ops, weights);
  __syncthreads();
  if (threadIdx.x == 0) {
    softmax_backward(weights, dots, num_ops, grad_alpha + edge * num_ops);
  }
}

// ---- host side ----

// Cheap checks of what the caller should have rejected; builds the mask of present slots.
Status validate(const MixedOpArgs& args, SlotMask* present) {
  if (args.dtype != DType::kFloat32 && args.dtype != DType::kFloat16 &&
      args.dtype != DType::kBFloat16) {
    return fail(Status::kUnsupportedDType,
                "mixed_op on CUDA supports float32, float16 and bfloat16 inputs");
  }
  if (args.num_edges < 1 || args.num_ops < 1 || args.num_edges > kMaxWeights ||
      args.num_ops > kMaxWeights || args.num_edges * args.num_ops > kMaxWeights) {
    return fail(Status::kInvalidArgument, "mixed_op on CUDA needs 1 <= E*K <= " +
                                              std::to_string(kMaxWeights) + " (E and K >= 1)");
  }
  const int64_t num_slots = args.num_edges * args.num_ops;
  if (args.num_inputs < 0 || args.num_inputs > num_slots || args.numel < 0) {
    return fail(Status::kInvalidArgument, "mixed_op needs 0 <= M <= E*K inputs and n >= 0");
  }
  if (args.alpha == nullptr ||
      (args.num_inputs > 0 && (args.inputs == nullptr || args.slots == nullptr))) {
    return fail(Status::kInvalidArgument, "mixed_op got a null alpha, inputs or slots array");
  }
  *present = SlotMask{};
  for (int64_t m = 0; m < args.num_inputs; ++m) {
    const int64_t slot = args.slots[m];
    if (slot < 0 || slot >= num_slots || present->contains(slot)) {
      return fail(Status::kInvalidArgument,
                  "mixed_op slot " + std::to_string(slot) + " is out of range or repeated");
    }
    present->words[slot / 32] |= 1u << (slot % 32);
    if (args.numel > 0 && args.inputs[m] == nullptr) {
      return fail(Status::kInvalidArgument, "mixed_op got a null input pointer");
    }
  }
  return Status::kOk;
}

template <typename T>
Status forward_typed(const MixedOpArgs& args, T* out, cudaStream_t stream) {
  const auto* alpha = static_cast<const float*>(args.alpha);
  const bool vectorized = is_aligned(out) && all_aligned(args.inputs, args.num_inputs);
  int blocks = 0;
  PYNAS_RETURN_IF_ERROR(grid_size(args.numel, vectorized ? kVectorWidth<T> : 1,
                                  kForwardThreads, kForwardBlocksPerMultiprocessor,
                                  INT32_MAX, &blocks));
  const size_t shared_bytes = args.num_edges * args.num_ops * sizeof(float);
  // At least one launch, so that M == 0 writes zeros; later groups add to out.
  int64_t first = 0;
  do {
    ForwardGroup<T> group{};
    group.count = static_cast<int32_t>(std::min<int64_t>(kGroupCapacity, args.num_inputs - first));
    for (int m = 0; m < group.count; ++m) {
      group.inputs[m] = static_cast<const T*>(args.inputs[first + m]);
      group.slots[m] = static_cast<int32_t>(args.slots[first + m]);
    }
    const bool accumulate = first > 0;
    if (vectorized) {
      mixed_op_forward_kernel<T, true><<<blocks, kForwardThreads, shared_bytes, stream>>>(
          group, alpha, args.num_edges, args.num_ops, args.numel, accumulate, out);
    } else {
      mixed_op_forward_kernel<T, false><<<blocks, kForwardThreads, shared_bytes, stream>>>(
          group, alpha, args.num_edges, args.num_ops, args.numel, accumulate, out);
    }
    PYNAS_RETURN_IF_ERROR(check_cuda(cudaGetLastError(), "mixed_op_forward_kernel launch"));
    first += kGroupCapacity;
  } while (first < args.num_inputs);
  return Status::kOk;
}

template <typename T>
Status backward_typed(const MixedOpArgs& args, const SlotMask& present, const T* grad_out,
                      void* const* grad_inputs, float* grad_alpha, float* partials,
                      cudaStream_t stream) {
  const auto* alpha = static_cast<const float*>(args.alpha);
  const bool vectorized = is_aligned(grad_out) && all_aligned(args.inputs, args.num_inputs) &&
                          all_aligned(grad_inputs, args.num_inputs);
  int blocks = 0;
  PYNAS_RETURN_IF_ERROR(grid_size(args.numel, vectorized ? kVectorWidth<T> : 1,
                                  kBackwardThreads, kBackwardBlocksPerMultiprocessor,
                                  kMaxReductionBlocks, &blocks));
  // With n == 0 there are no blocks and no partials: every dot product is zero.
  for (int64_t first = 0; blocks > 0 && first < args.num_inputs; first += kGroupCapacity) {
    BackwardGroup<T> group{};
    group.count = static_cast<int32_t>(std::min<int64_t>(kGroupCapacity, args.num_inputs - first));
    for (int m = 0; m < group.count; ++m) {
      group.inputs[m] = static_cast<const T*>(args.inputs[first + m]);
      group.grad_inputs[m] = static_cast<T*>(grad_inputs[first + m]);
      group.slots[m] = static_cast<int32_t>(args.slots[first + m]);
    }
    const size_t shared_bytes =
        (args.num_edges * args.num_ops + int64_t{group.count} * kBackwardThreads) * sizeof(float);
    if (vectorized) {
      mixed_op_backward_kernel<T, true><<<blocks, kBackwardThreads, shared_bytes, stream>>>(
          group, alpha, args.num_edges, args.num_ops, args.numel, grad_out, partials);
    } else {
      mixed_op_backward_kernel<T, false><<<blocks, kBackwardThreads, shared_bytes, stream>>>(
          group, alpha, args.num_edges, args.num_ops, args.numel, grad_out, partials);
    }
    PYNAS_RETURN_IF_ERROR(check_cuda(cudaGetLastError(), "mixed_op_backward_kernel launch"));
  }
  const size_t finalize_shared_bytes = 2 * args.num_ops * sizeof(float);
  mixed_op_finalize_kernel<<<static_cast<unsigned>(args.num_edges), kFinalizeThreads,
                             finalize_shared_bytes, stream>>>(alpha, args.num_ops, present,
                                                              partials, blocks, grad_alpha);
  return check_cuda(cudaGetLastError(), "mixed_op_finalize_kernel launch");
}

}  // namespace

int64_t mixed_op_cuda_workspace_bytes(const MixedOpArgs& args) {
  // The backward's partial dot products; the forward needs none. Sized for the largest grid
  // so that no device query is needed here.
  if (args.num_edges < 1 || args.num_ops < 1 || args.num_edges > kMaxWeights ||
      args.num_ops > kMaxWeights) {
    return 0;
  }
  return args.num_edges * args.num_ops * kMaxReductionBlocks * int64_t{sizeof(float)};
}

Status mixed_op_forward_cuda(const MixedOpArgs& args, void* out, void* /*workspace*/,
                             void* stream) {
  SlotMask present;
  PYNAS_RETURN_IF_ERROR(validate(args, &present));
  if (args.numel == 0) return Status::kOk;
  if (out == nullptr) return fail(Status::kInvalidArgument, "mixed_op got a null output");
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  switch (args.dtype) {
    case DType::kFloat32:
      return forward_typed(args, static_cast<float*>(out), cuda_stream);
    case DType::kFloat16:
      return forward_typed(args, static_cast<__half*>(out), cuda_stream);
    case DType::kBFloat16:
      return forward_typed(args, static_cast<__nv_bfloat16*>(out), cuda_stream);
    default:
      return Status::kUnsupportedDType;  // validate() has already rejected it
  }
}

Status mixed_op_backward_cuda(const MixedOpArgs& args, const void* grad_out,
                              void* const* grad_inputs, void* grad_alpha, void* workspace,
                              void* stream) {
  SlotMask present;
  PYNAS_RETURN_IF_ERROR(validate(args, &present));
  if (grad_alpha == nullptr) {
    return fail(Status::kInvalidArgument, "mixed_op got a null grad_alpha");
  }
  if (args.num_inputs > 0 && grad_inputs == nullptr) {
    return fail(Status::kInvalidArgument, "mixed_op got a null grad_inputs array");
  }
  if (args.numel > 0) {
    const bool any_null_grad =
        std::any_of(grad_inputs, grad_inputs + args.num_inputs,
                    [](const void* pointer) { return pointer == nullptr; });
    if (grad_out == nullptr || workspace == nullptr || any_null_grad) {
      return fail(Status::kInvalidArgument,
                  "mixed_op got a null grad_out, grad_inputs entry or workspace");
    }
  }
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  auto* grad_alpha_float = static_cast<float*>(grad_alpha);
  auto* partials = static_cast<float*>(workspace);
  switch (args.dtype) {
    case DType::kFloat32:
      return backward_typed(args, present, static_cast<const float*>(grad_out), grad_inputs,
                            grad_alpha_float, partials, cuda_stream);
    case DType::kFloat16:
      return backward_typed(args, present, static_cast<const __half*>(grad_out), grad_inputs,
                            grad_alpha_float, partials, cuda_stream);
    case DType::kBFloat16:
      return backward_typed(args, present, static_cast<const __nv_bfloat16*>(grad_out),
                            grad_inputs, grad_alpha_float, partials, cuda_stream);
    default:
      return Status::kUnsupportedDType;  // validate() has already rejected it
  }
}

const char* last_cuda_error() { return last_error_message.c_str(); }

int cuda_compiled_archs(int* archs, int capacity) {
  // PYNAS_CUDA_ARCHS lists numbers such as "80;90"; any non-digit separates them, so
  // "80-real", "90a" or a comma-separated list read the same.
  const char* list = PYNAS_CUDA_ARCHS;
  int count = 0;
  int value = 0;
  bool in_number = false;
  for (const char* character = list;; ++character) {
    const bool digit = *character >= '0' && *character <= '9';
    if (digit) {
      value = (in_number ? value * 10 : 0) + (*character - '0');
      in_number = true;
    } else if (in_number) {
      if (count < capacity) archs[count++] = value;
      in_number = false;
    }
    if (*character == '\0') break;
  }
  return count;
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the error, report none
    return 0;
  }
  return count;
}

}  // namespace pynas
