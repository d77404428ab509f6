// Shared definitions of the torch-free kernels: element types and status codes.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PYNAS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PYNAS_HOST_DEVICE inline
#endif

namespace pynas {

// Element type of a tensor argument; the Python layer maps torch dtypes to these.
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Every kernel entry point returns a status; only bindings.cpp turns it into an exception.
enum class Status : int {
  kOk = 0,
  kInvalidArgument = 1,   // a size, count or pointer the caller should have rejected
  kUnsupportedDType = 2,  // dtype not compiled for this backend
  kCudaError = 3,         // a CUDA runtime call failed; see last_cuda_error()
};

}  // namespace pynas
