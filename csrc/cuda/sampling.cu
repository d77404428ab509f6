// CUDA kernel of pynas::sample_categorical: one thread per row, drawing with the shared
// categorical_draw (sampling.h) from the row's own Philox block, so the result is the CPU
// kernel's bit for bit in the actions. NAS rows are short (K of a few to a few hundred), so
// a thread walks its row alone rather than a block cooperating on one long row.
#include <cuda_runtime.h>

#include <string>

#include "sampling.h"

namespace pynas {
namespace {

thread_local std::string last_error_message;

constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_categorical_kernel(const CategoricalArgs args, int64_t* __restrict__ actions,
                              T* __restrict__ log_prob, T* __restrict__ entropy) {
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       row < args.rows; row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    sample_row(args, row, actions, log_prob, entropy);
  }
}

template <typename T>
Status launch(const CategoricalArgs& args, int64_t* actions, void* log_prob, void* entropy,
              cudaStream_t stream) {
  constexpr int64_t kMaxBlocks = 65535;
  const int64_t wanted = (args.rows + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
  sample_categorical_kernel<T><<<blocks, kThreads, 0, stream>>>(
      args, actions, static_cast<T*>(log_prob), static_cast<T*>(entropy));
  return sampling_cuda_status(cudaGetLastError(), "sample_categorical_kernel launch");
}

}  // namespace

Status sampling_cuda_status(int error, const char* what) {
  const auto cuda_error = static_cast<cudaError_t>(error);
  if (cuda_error == cudaSuccess) return Status::kOk;
  last_error_message = std::string(what) + ": " + cudaGetErrorString(cuda_error);
  return Status::kCudaError;
}

const char* sampling_last_cuda_error() { return last_error_message.c_str(); }

Status sample_categorical_cuda(const CategoricalArgs& args, int64_t* actions, void* log_prob,
                               void* entropy, void* stream) {
  if (args.rows < 0 || args.num_classes < 1 || (args.row_stride != 0 && args.row_stride < args.num_classes))
    return Status::kInvalidArgument;
  if (args.rows == 0) return Status::kOk;
  if (args.logits == nullptr || actions == nullptr || log_prob == nullptr || entropy == nullptr)
    return Status::kInvalidArgument;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  switch (args.dtype) {
    case DType::kFloat32:
      return launch<float>(args, actions, log_prob, entropy, cuda_stream);
    case DType::kFloat64:
      return launch<double>(args, actions, log_prob, entropy, cuda_stream);
    default:
      return Status::kUnsupportedDType;
  }
}

}  // namespace pynas
