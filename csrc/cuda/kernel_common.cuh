// Helpers shared by the mixed-op and partial-channel CUDA kernels: status reporting, element
// conversions, 16-byte packs, launch sizes and the reductions of their deterministic
// backward. Everything sits in an anonymous namespace, so each .cu that includes it keeps
// its own copy, and in particular its own last error message: last_cuda_error() and
// partial_channel_last_cuda_error() each report the failures of their own op.
// No __shared__ declarations or kernel launches here: emulation/run.sh rewrites those in
// the .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "common.h"
#include "softmax.h"

namespace pynas {
namespace {

// Largest E*K: the softmax weights live in shared memory beside the backward's dot table,
// and the present slots travel to the finalize kernel as a bit mask in its parameters.
constexpr int kMaxWeights = 2048;
// Upper bound on the backward's grid, so the workspace size does not depend on the device.
constexpr int kMaxReductionBlocks = 2048;

constexpr int kWarpSize = 32;
constexpr int kForwardThreads = 256;
constexpr int kForwardBlocksPerMultiprocessor = 4;
constexpr int kBackwardThreads = 128;
constexpr int kBackwardBlocksPerMultiprocessor = 8;
constexpr int kFinalizeThreads = 128;
constexpr int kVectorBytes = 16;
constexpr int kMaxCachedDevices = 64;

thread_local std::string last_error_message;

// ---- status helpers ----

Status fail(Status status, const std::string& message) {
  last_error_message = message;
  return status;
}

Status check_cuda(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::kOk;
  return fail(Status::kCudaError, std::string(what) + ": " + cudaGetErrorString(error));
}

#define PYNAS_RETURN_IF_ERROR(expression)                 \
  do {                                                    \
    const ::pynas::Status status_ = (expression);         \
    if (status_ != ::pynas::Status::kOk) return status_;  \
  } while (0)

// ---- element types ----

__device__ __forceinline__ float to_float(float value) { return value; }
__device__ __forceinline__ float to_float(__half value) { return __half2float(value); }
__device__ __forceinline__ float to_float(__nv_bfloat16 value) { return __bfloat162float(value); }

template <typename T>
__device__ __forceinline__ T from_float(float value);
template <>
__device__ __forceinline__ float from_float<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float value) {
  return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

// kWidth consecutive elements moved as one aligned load or store (a 16-byte vector access
// when kWidth * sizeof(T) == 16).
template <typename T, int kWidth>
struct alignas(sizeof(T) * kWidth) Pack {
  T values[kWidth];
};

template <typename T, int kWidth>
__device__ __forceinline__ Pack<T, kWidth> load_pack(const T* base, int64_t chunk) {
  return reinterpret_cast<const Pack<T, kWidth>*>(base)[chunk];
}

template <typename T, int kWidth>
__device__ __forceinline__ void store_pack(T* base, int64_t chunk, const Pack<T, kWidth>& pack) {
  reinterpret_cast<Pack<T, kWidth>*>(base)[chunk] = pack;
}

// Elements per 16-byte vector access: 4 floats, 8 halves or bfloat16s.
template <typename T>
constexpr int kVectorWidth = kVectorBytes / static_cast<int>(sizeof(T));

// ---- kernel parameters ----

// The E*K slots that have an entry (a mixed-op input, a partial-channel output); the others
// take part in the softmax only.
struct SlotMask {
  uint32_t words[kMaxWeights / 32];

  __host__ __device__ bool contains(int64_t slot) const {
    return (words[slot / 32] >> (slot % 32)) & 1u;
  }
};

// ---- device building blocks ----

// Fills probabilities (E*K floats of shared memory) with the per-edge softmax of alpha,
// (E, K) float32 logits, one edge per thread; every thread of the block sees the result.
__device__ void edge_softmax(const float* __restrict__ alpha, int64_t num_edges,
                             int64_t num_ops, float* probabilities) {
  for (int64_t edge = threadIdx.x; edge < num_edges; edge += blockDim.x) {
    softmax(alpha + edge * num_ops, num_ops, probabilities + edge * num_ops);
  }
  __syncthreads();
}

// Butterfly sum: every lane ends with the same total, in an order fixed by the lane ids.
__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Sum of row[0, length) by one warp, lane l taking the entries l, l + 32, ...: a fixed
// order, so the backward is run-to-run identical. Every lane must call it.
__device__ __forceinline__ float warp_row_sum(const float* row, int64_t length, int lane) {
  float total = 0.0f;
  for (int64_t i = lane; i < length; i += kWarpSize) total += row[i];
  return warp_sum(total);
}

// The chunks [first, end) of kWidth elements that this thread owns in the grid-stride loop.
struct ChunkRange {
  int64_t first;
  int64_t end;
  int64_t stride;
};

__device__ __forceinline__ ChunkRange thread_chunks(int64_t first_chunk, int64_t end_chunk) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  return {first_chunk + thread, end_chunk, static_cast<int64_t>(gridDim.x) * blockDim.x};
}

// ---- host side ----

// Streaming multiprocessors of the current device, queried once per device.
Status multiprocessor_count(int* count) {
  static std::atomic<int> cached[kMaxCachedDevices];
  int device = 0;
  PYNAS_RETURN_IF_ERROR(check_cuda(cudaGetDevice(&device), "cudaGetDevice"));
  if (device < kMaxCachedDevices) {
    *count = cached[device].load(std::memory_order_relaxed);
    if (*count > 0) return Status::kOk;
  }
  PYNAS_RETURN_IF_ERROR(
      check_cuda(cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, device),
                 "cudaDeviceGetAttribute(MultiProcessorCount)"));
  if (device < kMaxCachedDevices) cached[device].store(*count, std::memory_order_relaxed);
  return Status::kOk;
}

int64_t ceil_div(int64_t numerator, int64_t denominator) {
  return (numerator + denominator - 1) / denominator;
}

// Blocks for a grid-stride loop over numel elements: enough to fill the device, never more
// than the work needs, 0 when there is no work.
Status grid_size(int64_t numel, int width, int threads, int blocks_per_multiprocessor,
                 int64_t max_blocks, int* blocks) {
  int multiprocessors = 0;
  PYNAS_RETURN_IF_ERROR(multiprocessor_count(&multiprocessors));
  const int64_t needed = ceil_div(ceil_div(numel, width), threads);
  const int64_t resident = static_cast<int64_t>(multiprocessors) * blocks_per_multiprocessor;
  *blocks = static_cast<int>(std::min({needed, resident, max_blocks}));
  return Status::kOk;
}

bool is_aligned(const void* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % kVectorBytes == 0;
}

// True when the 16-byte path may run: every listed pointer is aligned.
template <typename Pointer>
bool all_aligned(const Pointer* pointers, int64_t count) {
  return std::all_of(pointers, pointers + count, [](const void* p) { return is_aligned(p); });
}

}  // namespace
}  // namespace pynas
