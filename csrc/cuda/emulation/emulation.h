// A host-side stand-in for the few CUDA features pynas's kernels use, so that they run on
// the CPU (one std::thread per CUDA thread, blocks one after another) under
// AddressSanitizer and ThreadSanitizer on machines without a GPU. run.sh rewrites the
// `<<<...>>>` launches and `__shared__` declarations of copies of the .cu files to use it.
// Only the calls those kernels make are provided; this is a checking tool, not a runtime.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#define __launch_bounds__(...)

namespace emulation {

inline thread_local dim3 thread_index;
inline thread_local dim3 block_index;
inline dim3 block_dimension;
inline dim3 grid_dimension;

// Settable by the checks: what the device looks like and what the next launch reports.
inline int multiprocessors = 2;
inline int launches = 0;
inline cudaError_t next_launch_error = cudaSuccess;

struct Block {
  std::vector<float> dynamic_shared;
  std::unique_ptr<std::barrier<>> barrier;
  std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
  std::vector<float> warp_exchange;
};
inline Block* current_block = nullptr;

inline float* dynamic_shared() { return current_block->dynamic_shared.data(); }

inline void syncthreads() { current_block->barrier->arrive_and_wait(); }

// Every lane of the warp must call it, as __shfl_xor_sync with a full mask requires;
// otherwise the emulation hangs, which is the bug showing itself.
inline float shuffle_xor(float value, int lane_mask) {
  const unsigned warp = thread_index.x / 32;
  const unsigned lane = thread_index.x % 32;
  float* exchange = current_block->warp_exchange.data() + warp * 32;
  std::barrier<>& warp_barrier = *current_block->warp_barriers[warp];
  exchange[lane] = value;
  warp_barrier.arrive_and_wait();
  const float partner = exchange[lane ^ static_cast<unsigned>(lane_mask)];
  warp_barrier.arrive_and_wait();
  return partner;
}

template <typename... Parameters, typename... Arguments>
void launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t /*stream*/,
            void (*kernel)(Parameters...), Arguments&&... arguments) {
  ++launches;
  grid_dimension = grid;
  block_dimension = block;
  for (unsigned block_id = 0; block_id < grid.x; ++block_id) {
    Block state;
    // Garbage, so that reading shared memory before writing it shows in the results.
    state.dynamic_shared.assign(shared_bytes / sizeof(float),
                                std::numeric_limits<float>::quiet_NaN());
    state.barrier = std::make_unique<std::barrier<>>(block.x);
    for (unsigned warp = 0; warp < block.x / 32; ++warp) {
      state.warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    }
    state.warp_exchange.resize(block.x);
    current_block = &state;
    std::vector<std::thread> threads;
    for (unsigned thread_id = 0; thread_id < block.x; ++thread_id) {
      threads.emplace_back([&, thread_id] {
        thread_index = dim3(thread_id);
        block_index = dim3(block_id);
        kernel(arguments...);
      });
    }
    for (std::thread& thread : threads) thread.join();
    current_block = nullptr;
  }
}

}  // namespace emulation

#define threadIdx (::emulation::thread_index)
#define blockIdx (::emulation::block_index)
#define blockDim (::emulation::block_dimension)
#define gridDim (::emulation::grid_dimension)
#define __syncthreads() ::emulation::syncthreads()
#define __shfl_xor_sync(mask, value, lane_mask) ::emulation::shuffle_xor(value, lane_mask)

// The runtime calls of mixed_op.cu, answered by the emulated device.
cudaError_t cudaGetLastError() {
  const cudaError_t error = emulation::next_launch_error;
  emulation::next_launch_error = cudaSuccess;
  return error;
}
const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = emulation::multiprocessors;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int*) { return cudaErrorNoDevice; }
