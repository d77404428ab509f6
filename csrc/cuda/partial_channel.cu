// CUDA kernels of the PC-DARTS partial-channel combine (see partial_channel.h for the
// contract).
//
// The grid-stride loop runs over the output (N, C, S) in chunks of 16 bytes (4 floats or 8
// halves) when S and every pointer allow it, one element at a time otherwise. A chunk of
// output channel c = a*g + b reads the M operated rows (n, a) when b == 0 and the E bypass
// rows (n, (b-1)*C/g + a) otherwise, so each output element is written once and each input
// read once:
// Forward, per launch of up to kOutputCapacity outputs and kBypassCapacity bypass tensors:
//   out[n, a*g, s]   (+)= sum_m w[e_m] softmax(alpha)[slot_m] * outputs[m][n, a, s]
//   out[n, a*g+b, s] (+)= sum_e w[e] * bypass[e][n, (b-1)*C/g + a, s]
// Backward, the same launches (reading grad_out where the forward wrote out), then one
// finalize launch per node:
//   grad_outputs[m] = w[e_m] softmax(alpha)[slot_m] * grad_out (operated channels)
//   grad_bypass[e]  = w[e] * grad_out (bypass channels)
//   partials        = per-block sums of <grad_out, outputs[m]> (and of <grad_out, bypass[e]>
//                     when the edge weights' gradient is wanted)
//   grad_alpha[e]   = softmax_backward(softmax(alpha[e]), w[e] * dots[e])
//   grad_w[e]       = sum_k softmax(alpha[e])[k] * dots[e][k] + <grad_out, bypass[e]>
// Every block computes the E*K softmax weights into shared memory itself (alpha is tiny).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/kernel_common.cuh"
#include "partial_channel.h"
#include "softmax.h"

namespace pynas {
namespace {

// Entries per launch. Pointers travel by value in the kernel parameters (about 1 KB, inside
// even the classic 4 KB limit); the backward's per-thread dot table, (kOutputCapacity +
// kBypassCapacity) * kBackwardThreads floats, stays at 24 KB of shared memory.
constexpr int kOutputCapacity = 32;
constexpr int kBypassCapacity = 16;

// ---- kernel parameters ----

// The sizes of the node: N, C/g, g and S, and the elements between the samples of a
// bypass tensor.
struct Shape {
  int64_t batch;
  int64_t channels_per_group;
  int64_t groups;
  int64_t spatial;
  int64_t bypass_batch_stride;
};

// One launch's share of the present outputs and of the bypass tensors.
template <typename T>
struct Group {
  const T* outputs[kOutputCapacity];  // outputs: num_outputs pointers to (N, C/g, S)
  T* grad_outputs[kOutputCapacity];   // grad_outputs: likewise, written (backward only)
  int32_t slots[kOutputCapacity];     // slots: (num_outputs,) positions e*K + k in alpha
  int32_t num_outputs;
  const T* bypass[kBypassCapacity];   // bypass: num_bypass pointers to (N, C - C/g, S)
  T* grad_bypass[kBypassCapacity];    // grad_bypass: likewise, written (backward only)
  int32_t edges[kBypassCapacity];     // edges: (num_bypass,) the edge e of each
  int32_t num_bypass;
};

// ---- device building blocks ----

// Fills probabilities (E*K floats of shared memory) with the per-edge softmax of alpha,
// then the coefficient of each entry of this launch: w[e] * softmax(alpha[e])[k] for the
// outputs, w[e] for the bypass tensors (w = 1 without edge weights).
// alpha: (E, K) float32 logits; edge_weights: (E,) float32 or null.
template <typename T>
__device__ void compute_coefficients(const float* __restrict__ alpha,
                                     const float* __restrict__ edge_weights, int64_t num_edges,
                                     int64_t num_ops, const Group<T>& group,
                                     float* probabilities, float* output_coefficients,
                                     float* bypass_coefficients) {
  edge_softmax(alpha, num_edges, num_ops, probabilities);
  for (int m = threadIdx.x; m < group.num_outputs; m += blockDim.x) {
    const int64_t slot = group.slots[m];
    const float weight = edge_weights != nullptr ? edge_weights[slot / num_ops] : 1.0f;
    output_coefficients[m] = weight * probabilities[slot];
  }
  for (int b = threadIdx.x; b < group.num_bypass; b += blockDim.x) {
    bypass_coefficients[b] = edge_weights != nullptr ? edge_weights[group.edges[b]] : 1.0f;
  }
  __syncthreads();
}

// Where output element `element` (of (N, C, S)) comes from: an operated row (the element's
// offset in every output tensor and its gradient) or a bypass row (its offset in every
// bypass tensor, and in their contiguous gradients).
struct Source {
  bool operated;
  int64_t input;
  int64_t gradient;
};

__device__ __forceinline__ Source locate(int64_t element, const Shape& shape) {
  const int64_t row = element / shape.spatial;
  const int64_t s = element - row * shape.spatial;
  const int64_t channels = shape.groups * shape.channels_per_group;
  const int64_t n = row / channels;
  const int64_t c = row - n * channels;
  const int64_t a = c / shape.groups;
  const int64_t b = c - a * shape.groups;
  if (b == 0) {
    const int64_t offset = (n * shape.channels_per_group + a) * shape.spatial + s;
    return {true, offset, offset};
  }
  const int64_t channel = (b - 1) * shape.channels_per_group + a;
  return {false, n * shape.bypass_batch_stride + channel * shape.spatial + s,
          (n * (channels - shape.channels_per_group) + channel) * shape.spatial + s};
}

// sums[j] += coefficients[i] * sources[i][chunk][j] for i < count.
template <typename T, int kWidth>
__device__ __forceinline__ void add_sources(float* sums, const T* const* sources,
                                            const float* coefficients, int count,
                                            int64_t chunk) {
#pragma unroll 4
  for (int i = 0; i < count; ++i) {
    const Pack<T, kWidth> input = load_pack<T, kWidth>(sources[i], chunk);
    const float coefficient = coefficients[i];
#pragma unroll
    for (int j = 0; j < kWidth; ++j) sums[j] += coefficient * to_float(input.values[j]);
  }
}

// out: (N, C, S) of T, viewed as chunks of kWidth elements that never straddle a row.
// Adds to its old value if accumulate; then a chunk with no source in this launch is left
// as it is.
template <typename T, int kWidth>
__device__ void forward_chunks(const Group<T>& group, const float* output_coefficients,
                               const float* bypass_coefficients, const Shape& shape,
                               bool accumulate, int64_t first_chunk, int64_t end_chunk,
                               T* __restrict__ out) {
  const ChunkRange range = thread_chunks(first_chunk, end_chunk);
  for (int64_t chunk = range.first; chunk < range.end; chunk += range.stride) {
    const Source source = locate(chunk * kWidth, shape);
    const int count = source.operated ? group.num_outputs : group.num_bypass;
    if (accumulate && count == 0) continue;
    float sums[kWidth];
    if (accumulate) {
      const Pack<T, kWidth> previous = load_pack<T, kWidth>(out, chunk);
#pragma unroll
      for (int j = 0; j < kWidth; ++j) sums[j] = to_float(previous.values[j]);
    } else {
#pragma unroll
      for (int j = 0; j < kWidth; ++j) sums[j] = 0.0f;
    }
    const int64_t source_chunk = source.input / kWidth;
    if (source.operated) {
      add_sources<T, kWidth>(sums, group.outputs, output_coefficients, count, source_chunk);
    } else {
      add_sources<T, kWidth>(sums, group.bypass, bypass_coefficients, count, source_chunk);
    }
    Pack<T, kWidth> result;
#pragma unroll
    for (int j = 0; j < kWidth; ++j) result.values[j] = from_float<T>(sums[j]);
    store_pack<T, kWidth>(out, chunk, result);
  }
}

// For i < count: grads[i][grad_chunk] = coefficients[i] * grad, and, with dots, the
// thread's table cell of row i gains <grad, sources[i][chunk]>. Sources are loaded
// kInputsInFlight at a time before any gradient is stored: the compiler may not move a load
// above a store through an unrelated pointer, and one load in flight per thread would
// leave the memory system idle.
template <typename T, int kWidth>
__device__ __forceinline__ void scatter_sources(const float* grad, const T* const* sources,
                                                T* const* grads, const float* coefficients,
                                                int count, int64_t chunk, int64_t grad_chunk,
                                                bool dots, float* thread_dots) {
  constexpr int kInputsInFlight = 4;
  for (int first = 0; first < count; first += kInputsInFlight) {
    Pack<T, kWidth> inputs[kInputsInFlight];
    if (dots) {
#pragma unroll
      for (int u = 0; u < kInputsInFlight; ++u) {
        if (first + u < count) inputs[u] = load_pack<T, kWidth>(sources[first + u], chunk);
      }
    }
#pragma unroll
    for (int u = 0; u < kInputsInFlight; ++u) {
      const int i = first + u;
      if (i >= count) break;
      Pack<T, kWidth> grad_input;
      float dot = 0.0f;
#pragma unroll
      for (int j = 0; j < kWidth; ++j) {
        if (dots) dot += grad[j] * to_float(inputs[u].values[j]);
        grad_input.values[j] = from_float<T>(coefficients[i] * grad[j]);
      }
      store_pack<T, kWidth>(grads[i], grad_chunk, grad_input);
      if (dots) thread_dots[i * kBackwardThreads] += dot;
    }
  }
}

// grad_out: (N, C, S) of T in chunks of kWidth elements, each read once. thread_dots: this
// thread's column of the block's (num_outputs + num_bypass, kBackwardThreads) shared table
// (output m at row m, bypass entry b at row num_outputs + b), so no two threads add to one
// cell. The bypass rows are filled only with bypass_dots.
template <typename T, int kWidth>
__device__ void backward_chunks(const Group<T>& group, const float* output_coefficients,
                                const float* bypass_coefficients, const Shape& shape,
                                bool bypass_dots, const T* __restrict__ grad_out,
                                int64_t first_chunk, int64_t end_chunk, float* thread_dots) {
  const ChunkRange range = thread_chunks(first_chunk, end_chunk);
  for (int64_t chunk = range.first; chunk < range.end; chunk += range.stride) {
    const Source source = locate(chunk * kWidth, shape);
    if ((source.operated ? group.num_outputs : group.num_bypass) == 0) continue;
    const Pack<T, kWidth> grad_pack = load_pack<T, kWidth>(grad_out, chunk);
    float grad[kWidth];
#pragma unroll
    for (int j = 0; j < kWidth; ++j) grad[j] = to_float(grad_pack.values[j]);
    const int64_t source_chunk = source.input / kWidth;
    const int64_t grad_chunk = source.gradient / kWidth;
    if (source.operated) {
      scatter_sources<T, kWidth>(grad, group.outputs, group.grad_outputs, output_coefficients,
                                 group.num_outputs, source_chunk, grad_chunk, true, thread_dots);
    } else {
      scatter_sources<T, kWidth>(grad, group.bypass, group.grad_bypass, bypass_coefficients,
                                 group.num_bypass, source_chunk, grad_chunk, bypass_dots,
                                 thread_dots + group.num_outputs * kBackwardThreads);
    }
  }
}

// ---- kernels ----

// alpha: (E, K) float32 logits; edge_weights: (E,) float32 or null. out: (N, C, S) of T,
// overwritten, or added to if accumulate. Dynamic shared memory: E*K floats.
template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kForwardThreads)
    partial_channel_forward_kernel(const Group<T> group, const float* __restrict__ alpha,
                                   const float* __restrict__ edge_weights, int64_t num_edges,
                                   int64_t num_ops, const Shape shape, bool accumulate,
                                   T* __restrict__ out) {
  extern __shared__ float probabilities[];
  __shared__ float output_coefficients[kOutputCapacity];
  __shared__ float bypass_coefficients[kBypassCapacity];
  compute_coefficients(alpha, edge_weights, num_edges, num_ops, group, probabilities,
                       output_coefficients, bypass_coefficients);
  constexpr int kWidth = kVectorized ? kVectorWidth<T> : 1;
  const int64_t numel =
      shape.batch * shape.groups * shape.channels_per_group * shape.spatial;
  forward_chunks<T, kWidth>(group, output_coefficients, bypass_coefficients, shape, accumulate,
                            0, numel / kWidth, out);
}

// alpha, edge_weights as in the forward. grad_out: (N, C, S) of T. partials:
// (E*K + E, gridDim.x) floats; each block writes, at column blockIdx.x, row slot_m for each
// output m of its launch and, with bypass_dots, row E*K + e for each bypass entry.
// Dynamic shared memory: E*K floats, then the (num_outputs + num_bypass, kBackwardThreads)
// table of per-thread dot products.
template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kBackwardThreads)
    partial_channel_backward_kernel(const Group<T> group, const float* __restrict__ alpha,
                                    const float* __restrict__ edge_weights, int64_t num_edges,
                                    int64_t num_ops, const Shape shape, bool bypass_dots,
                                    const T* __restrict__ grad_out,
                                    float* __restrict__ partials) {
  extern __shared__ float shared[];
  __shared__ float output_coefficients[kOutputCapacity];
  __shared__ float bypass_coefficients[kBypassCapacity];
  float* probabilities = shared;
  float* dot_table = shared + num_edges * num_ops;
  const int rows = group.num_outputs + group.num_bypass;
  for (int row = 0; row < rows; ++row) dot_table[row * kBackwardThreads + threadIdx.x] = 0.0f;
  compute_coefficients(alpha, edge_weights, num_edges, num_ops, group, probabilities,
                       output_coefficients, bypass_coefficients);

  constexpr int kWidth = kVectorized ? kVectorWidth<T> : 1;
  const int64_t numel =
      shape.batch * shape.groups * shape.channels_per_group * shape.spatial;
  backward_chunks<T, kWidth>(group, output_coefficients, bypass_coefficients, shape,
                             bypass_dots, grad_out, 0, numel / kWidth,
                             dot_table + threadIdx.x);
  __syncthreads();

  // One warp per table row sums it in a fixed order: run-to-run identical.
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  constexpr int kNumWarps = kBackwardThreads / kWarpSize;
  const int used_rows = bypass_dots ? rows : group.num_outputs;
  for (int row = warp; row < used_rows; row += kNumWarps) {
    const float total =
        warp_row_sum(dot_table + row * kBackwardThreads, kBackwardThreads, lane);
    const int64_t partial_row = row < group.num_outputs
                                    ? group.slots[row]
                                    : num_edges * num_ops + group.edges[row - group.num_outputs];
    if (lane == 0) partials[partial_row * int64_t{gridDim.x} + blockIdx.x] = total;
  }
}

// One block per edge. alpha: (E, K) float32 logits; edge_weights: (E,) float32 or null.
// partials: (E*K + E, num_partials) floats, read in rows of present slots (and, with
// bypass_rows, the bypass rows). grad_alpha: (E, K) float32, written; grad_edge_weights:
// (E,) float32, written, or null. Dynamic shared memory: 2*K + 1 floats.
__global__ void __launch_bounds__(kFinalizeThreads)
    partial_channel_finalize_kernel(const float* __restrict__ alpha,
                                    const float* __restrict__ edge_weights, int64_t num_edges,
                                    int64_t num_ops, const SlotMask present, bool bypass_rows,
                                    const float* __restrict__ partials, int64_t num_partials,
                                    float* __restrict__ grad_alpha,
                                    float* __restrict__ grad_edge_weights) {
  extern __shared__ float shared[];
  float* probabilities = shared;
  float* dots = shared + num_ops;  // K output dots, then the bypass dot
  const int64_t edge = blockIdx.x;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  for (int64_t op = warp; op <= num_ops; op += num_warps) {
    const int64_t row = op < num_ops ? edge * num_ops + op : num_edges * num_ops + edge;
    const bool summed = op < num_ops ? present.contains(row) : bypass_rows;
    const float total =
        warp_row_sum(partials + row * num_partials, summed ? num_partials : 0, lane);
    if (lane == 0) dots[op] = total;
  }
  if (threadIdx.x == 0) softmax(alpha + edge * num_ops, num_ops, probabilities);
  __syncthreads();
  if (threadIdx.x == 0) {
    if (grad_edge_weights != nullptr) {
      float total = dots[num_ops];
      for (int64_t op = 0; op < num_ops; ++op) total += probabilities[op] * dots[op];
      grad_edge_weights[edge] = total;
    }
    const float weight = edge_weights != nullptr ? edge_weights[edge] : 1.0f;
    for (int64_t op = 0; op < num_ops; ++op) dots[op] *= weight;
    softmax_backward(probabilities, dots, num_ops, grad_alpha + edge * num_ops);
  }
}

// ---- host side ----

template <typename Pointer>
bool any_null(const Pointer* pointers, int64_t count) {
  return std::any_of(pointers, pointers + count, [](const void* p) { return p == nullptr; });
}

int64_t output_numel(const PartialChannelArgs& args) {
  return args.batch * args.groups * args.channels_per_group * args.spatial;
}

// Bypass tensors the kernels read: E when g > 1, none when g == 1.
int64_t bypass_count(const PartialChannelArgs& args) {
  return args.groups > 1 ? args.num_edges : 0;
}

// Launches of one call: enough groups for every output and every bypass tensor, at least
// one (so that a forward with no entries still writes zeros).
int64_t launch_count(const PartialChannelArgs& args) {
  return std::max<int64_t>({1, ceil_div(args.num_outputs, kOutputCapacity),
                            ceil_div(bypass_count(args), kBypassCapacity)});
}

// The entries of launch `launch`: outputs [launch * kOutputCapacity, ...) and bypass
// tensors [launch * kBypassCapacity, ...); gradients when the pointers are given.
template <typename T>
Group<T> make_group(const PartialChannelArgs& args, int64_t launch, void* const* grad_outputs,
                    void* const* grad_bypass) {
  Group<T> group{};
  const int64_t first_output = launch * kOutputCapacity;
  group.num_outputs = static_cast<int32_t>(
      std::clamp<int64_t>(args.num_outputs - first_output, 0, kOutputCapacity));
  for (int m = 0; m < group.num_outputs; ++m) {
    group.outputs[m] = static_cast<const T*>(args.outputs[first_output + m]);
    group.slots[m] = static_cast<int32_t>(args.slots[first_output + m]);
    if (grad_outputs != nullptr) {
      group.grad_outputs[m] = static_cast<T*>(grad_outputs[first_output + m]);
    }
  }
  const int64_t first_edge = launch * kBypassCapacity;
  group.num_bypass = static_cast<int32_t>(
      std::clamp<int64_t>(bypass_count(args) - first_edge, 0, kBypassCapacity));
  for (int b = 0; b < group.num_bypass; ++b) {
    group.bypass[b] = static_cast<const T*>(args.bypass[first_edge + b]);
    group.edges[b] = static_cast<int32_t>(first_edge + b);
    if (grad_bypass != nullptr) {
      group.grad_bypass[b] = static_cast<T*>(grad_bypass[first_edge + b]);
    }
  }
  return group;
}

// Cheap checks of what the caller should have rejected; builds the mask of present slots.
Status validate(const PartialChannelArgs& args, SlotMask* present) {
  if (args.dtype != DType::kFloat32 && args.dtype != DType::kFloat16 &&
      args.dtype != DType::kBFloat16) {
    return fail(Status::kUnsupportedDType,
                "partial_channel_combine on CUDA supports float32, float16 and bfloat16");
  }
  if (args.num_edges < 1 || args.num_ops < 1 || args.num_edges > kMaxWeights ||
      args.num_ops > kMaxWeights || args.num_edges * args.num_ops > kMaxWeights) {
    return fail(Status::kInvalidArgument, "partial_channel_combine on CUDA needs 1 <= E*K <= " +
                                              std::to_string(kMaxWeights) + " (E and K >= 1)");
  }
  const int64_t num_slots = args.num_edges * args.num_ops;
  if (args.num_outputs < 0 || args.num_outputs > num_slots || args.batch < 0 ||
      args.channels_per_group < 0 || args.groups < 1 || args.spatial < 0 ||
      args.bypass_batch_stride < 0) {
    return fail(Status::kInvalidArgument,
                "partial_channel_combine needs 0 <= M <= E*K outputs, g >= 1 and sizes and "
                "strides >= 0");
  }
  if (args.alpha == nullptr ||
      (args.num_outputs > 0 && (args.outputs == nullptr || args.slots == nullptr)) ||
      (bypass_count(args) > 0 && args.bypass == nullptr)) {
    return fail(Status::kInvalidArgument,
                "partial_channel_combine got a null alpha, outputs, slots or bypass array");
  }
  *present = SlotMask{};
  for (int64_t m = 0; m < args.num_outputs; ++m) {
    const int64_t slot = args.slots[m];
    if (slot < 0 || slot >= num_slots || present->contains(slot)) {
      return fail(Status::kInvalidArgument, "partial_channel_combine slot " +
                                                std::to_string(slot) +
                                                " is out of range or repeated");
    }
    present->words[slot / 32] |= 1u << (slot % 32);
  }
  if (output_numel(args) > 0 && (any_null(args.outputs, args.num_outputs) ||
                                 any_null(args.bypass, bypass_count(args)))) {
    return fail(Status::kInvalidArgument,
                "partial_channel_combine got a null output or bypass pointer");
  }
  return Status::kOk;
}

// The 16-byte path runs when no chunk straddles a row and every row is aligned.
template <typename T>
bool vectorizable(const PartialChannelArgs& args, const void* out, void* const* grad_outputs,
                  void* const* grad_bypass) {
  return args.spatial % kVectorWidth<T> == 0 &&
         args.bypass_batch_stride % kVectorWidth<T> == 0 && is_aligned(out) &&
         all_aligned(args.outputs, args.num_outputs) &&
         all_aligned(args.bypass, bypass_count(args)) &&
         (grad_outputs == nullptr || all_aligned(grad_outputs, args.num_outputs)) &&
         (grad_bypass == nullptr || all_aligned(grad_bypass, bypass_count(args)));
}

Shape shape_of(const PartialChannelArgs& args) {
  return {args.batch, args.channels_per_group, args.groups, args.spatial,
          args.bypass_batch_stride};
}

template <typename T>
Status forward_typed(const PartialChannelArgs& args, T* out, cudaStream_t stream) {
  const auto* alpha = static_cast<const float*>(args.alpha);
  const auto* edge_weights = static_cast<const float*>(args.edge_weights);
  const bool vectorized = vectorizable<T>(args, out, nullptr, nullptr);
  int blocks = 0;
  PYNAS_RETURN_IF_ERROR(grid_size(output_numel(args), vectorized ? kVectorWidth<T> : 1,
                                  kForwardThreads, kForwardBlocksPerMultiprocessor, INT32_MAX,
                                  &blocks));
  const size_t shared_bytes = args.num_edges * args.num_ops * sizeof(float);
  for (int64_t launch = 0; launch < launch_count(args); ++launch) {
    const Group<T> group = make_group<T>(args, launch, nullptr, nullptr);
    const bool accumulate = launch > 0;
    if (vectorized) {
      partial_channel_forward_kernel<T, true>
          <<<blocks, kForwardThreads, shared_bytes, stream>>>(
              group, alpha, edge_weights, args.num_edges, args.num_ops, shape_of(args),
              accumulate, out);
    } else {
      partial_channel_forward_kernel<T, false>
          <<<blocks, kForwardThreads, shared_bytes, stream>>>(
              group, alpha, edge_weights, args.num_edges, args.num_ops, shape_of(args),
              accumulate, out);
    }
    PYNAS_RETURN_IF_ERROR(
        check_cuda(cudaGetLastError(), "partial_channel_forward_kernel launch"));
  }
  return Status::kOk;
}

template <typename T>
Status backward_typed(const PartialChannelArgs& args, const SlotMask& present,
                      const T* grad_out, void* const* grad_outputs, void* const* grad_bypass,
                      float* grad_alpha, float* grad_edge_weights, float* partials,
                      cudaStream_t stream) {
  const auto* alpha = static_cast<const float*>(args.alpha);
  const auto* edge_weights = static_cast<const float*>(args.edge_weights);
  const bool vectorized = vectorizable<T>(args, grad_out, grad_outputs, grad_bypass);
  // The bypass tensors' dot products, only for the edge weights' gradient (g == 1: none).
  const bool bypass_dots = grad_edge_weights != nullptr && bypass_count(args) > 0;
  int blocks = 0;
  PYNAS_RETURN_IF_ERROR(grid_size(output_numel(args), vectorized ? kVectorWidth<T> : 1,
                                  kBackwardThreads, kBackwardBlocksPerMultiprocessor,
                                  kMaxReductionBlocks, &blocks));
  // With no elements there are no blocks and no partials: every dot product is zero.
  for (int64_t launch = 0; blocks > 0 && launch < launch_count(args); ++launch) {
    const Group<T> group = make_group<T>(args, launch, grad_outputs, grad_bypass);
    const size_t shared_bytes =
        (args.num_edges * args.num_ops +
         int64_t{group.num_outputs + group.num_bypass} * kBackwardThreads) * sizeof(float);
    if (vectorized) {
      partial_channel_backward_kernel<T, true>
          <<<blocks, kBackwardThreads, shared_bytes, stream>>>(
              group, alpha, edge_weights, args.num_edges, args.num_ops, shape_of(args),
              bypass_dots, grad_out, partials);
    } else {
      partial_channel_backward_kernel<T, false>
          <<<blocks, kBackwardThreads, shared_bytes, stream>>>(
              group, alpha, edge_weights, args.num_edges, args.num_ops, shape_of(args),
              bypass_dots, grad_out, partials);
    }
    PYNAS_RETURN_IF_ERROR(
        check_cuda(cudaGetLastError(), "partial_channel_backward_kernel launch"));
  }
  const size_t finalize_shared_bytes = (2 * args.num_ops + 1) * sizeof(float);
  partial_channel_finalize_kernel<<<static_cast<unsigned>(args.num_edges), kFinalizeThreads,
                                    finalize_shared_bytes, stream>>>(
      alpha, edge_weights, args.num_edges, args.num_ops, present, bypass_dots, partials, blocks,
      grad_alpha, grad_edge_weights);
  return check_cuda(cudaGetLastError(), "partial_channel_finalize_kernel launch");
}

}  // namespace

int64_t partial_channel_cuda_workspace_bytes(int64_t num_edges, int64_t num_ops) {
  // The backward's partial dot products, E*K output rows and E bypass rows; the forward
  // needs none. Sized for the largest grid so that no device query is needed here.
  if (num_edges < 1 || num_ops < 1 || num_edges > kMaxWeights || num_ops > kMaxWeights) {
    return 0;
  }
  return (num_edges * num_ops + num_edges) * kMaxReductionBlocks * int64_t{sizeof(float)};
}

Status partial_channel_forward_cuda(const PartialChannelArgs& args, void* out,
                                    void* /*workspace*/, void* stream) {
  SlotMask present;
  PYNAS_RETURN_IF_ERROR(validate(args, &present));
  if (output_numel(args) == 0) return Status::kOk;
  if (out == nullptr) {
    return fail(Status::kInvalidArgument, "partial_channel_combine got a null output");
  }
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

Status partial_channel_backward_cuda(const PartialChannelArgs& args, const void* grad_out,
                                     void* const* grad_outputs, void* const* grad_bypass,
                                     void* grad_alpha, void* grad_edge_weights, void* workspace,
                                     void* stream) {
  SlotMask present;
  PYNAS_RETURN_IF_ERROR(validate(args, &present));
  if (grad_alpha == nullptr) {
    return fail(Status::kInvalidArgument, "partial_channel_combine got a null grad_alpha");
  }
  if ((args.num_outputs > 0 && grad_outputs == nullptr) ||
      (bypass_count(args) > 0 && grad_bypass == nullptr)) {
    return fail(Status::kInvalidArgument,
                "partial_channel_combine got a null grad_outputs or grad_bypass array");
  }
  if (output_numel(args) > 0 &&
      (grad_out == nullptr || workspace == nullptr || any_null(grad_outputs, args.num_outputs) ||
       any_null(grad_bypass, bypass_count(args)))) {
    return fail(Status::kInvalidArgument,
                "partial_channel_combine got a null grad_out, gradient or workspace");
  }
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  auto* grad_alpha_float = static_cast<float*>(grad_alpha);
  auto* grad_edge_weights_float = static_cast<float*>(grad_edge_weights);
  auto* partials = static_cast<float*>(workspace);
  switch (args.dtype) {
    case DType::kFloat32:
      return backward_typed(args, present, static_cast<const float*>(grad_out), grad_outputs,
                            grad_bypass, grad_alpha_float, grad_edge_weights_float, partials,
                            cuda_stream);
    case DType::kFloat16:
      return backward_typed(args, present, static_cast<const __half*>(grad_out), grad_outputs,
                            grad_bypass, grad_alpha_float, grad_edge_weights_float, partials,
                            cuda_stream);
    case DType::kBFloat16:
      return backward_typed(args, present, static_cast<const __nv_bfloat16*>(grad_out),
                            grad_outputs, grad_bypass, grad_alpha_float,
                            grad_edge_weights_float, partials, cuda_stream);
    default:
      return Status::kUnsupportedDType;  // validate() has already rejected it
  }
}

const char* partial_channel_last_cuda_error() { return last_error_message.c_str(); }

}  // namespace pynas
