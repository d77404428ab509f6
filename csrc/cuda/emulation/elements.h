// Element types of the emulation checks (check_*.cpp): conversions to and from float, the
// pynas::DType of each, its name and rounding unit, and a misaligned buffer that
// AddressSanitizer watches at both ends.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common.h"

namespace emulation {

inline float as_float(float value) { return value; }
inline float as_float(__half value) { return __half2float(value); }
inline float as_float(__nv_bfloat16 value) { return __bfloat162float(value); }

template <typename T>
T from_float(float value) {
  if constexpr (std::is_same_v<T, float>) return value;
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(value);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(value);
}

template <typename T>
pynas::DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return pynas::DType::kFloat32;
  if constexpr (std::is_same_v<T, __half>) return pynas::DType::kFloat16;
  return pynas::DType::kBFloat16;
}

template <typename T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  if constexpr (std::is_same_v<T, __half>) return "float16";
  return "bfloat16";
}

// Relative precision of one rounding to T.
template <typename T>
double unit_roundoff() {
  if constexpr (sizeof(T) == 4) return 1.0 / (1 << 24);
  if constexpr (std::is_same_v<T, __half>) return 1.0 / (1 << 11);
  return 1.0 / (1 << 8);
}

// An (n,) array of T that starts `misalignment` elements into an exact-size allocation, so
// AddressSanitizer sees any access past either end; it starts as NaN, so that an element
// never written shows in a comparison.
template <typename T>
struct Buffer {
  std::vector<T> storage;
  int misalignment;
  Buffer(int64_t n, int misalignment_elements) : misalignment(misalignment_elements) {
    storage.resize(n + misalignment_elements, from_float<T>(std::nanf("")));
  }
  T* data() { return storage.data() + misalignment; }
};

}  // namespace emulation
