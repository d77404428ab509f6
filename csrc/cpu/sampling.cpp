// CPU kernel of pynas::sample_categorical: OpenMP across rows, each row drawn by the shared
// categorical_draw (sampling.h) from its own Philox block, so the thread count never
// changes a result.
#include <omp.h>

#include <algorithm>

#include "../sampling.h"

namespace pynas {
namespace {

template <typename T>
void sample_rows(const CategoricalArgs& args, int64_t* actions, T* log_prob, T* entropy,
                 int num_threads) {
  // A thread per kRowsPerThread rows at least: waking threads costs more than a few draws.
  constexpr int64_t kRowsPerThread = 512;
  const int threads = static_cast<int>(
      std::min<int64_t>(num_threads, std::max<int64_t>(args.rows / kRowsPerThread, 1)));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < args.rows; ++row) sample_row(args, row, actions, log_prob, entropy);
}

}  // namespace

Status sample_categorical_cpu(const CategoricalArgs& args, int64_t* actions, void* log_prob,
                              void* entropy, int num_threads) {
  if (args.rows < 0 || args.num_classes < 1 || (args.row_stride != 0 && args.row_stride < args.num_classes) ||
      num_threads < 1)
    return Status::kInvalidArgument;
  if (args.rows > 0 && (args.logits == nullptr || actions == nullptr || log_prob == nullptr ||
                        entropy == nullptr))
    return Status::kInvalidArgument;
  switch (args.dtype) {
    case DType::kFloat32:
      sample_rows(args, actions, static_cast<float*>(log_prob), static_cast<float*>(entropy),
                  num_threads);
      return Status::kOk;
    case DType::kFloat64:
      sample_rows(args, actions, static_cast<double*>(log_prob), static_cast<double*>(entropy),
                  num_threads);
      return Status::kOk;
    default:
      return Status::kUnsupportedDType;
  }
}

}  // namespace pynas
