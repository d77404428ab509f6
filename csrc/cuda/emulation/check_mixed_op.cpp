// Runs the CUDA mixed-op kernels on the CPU through emulation.h and compares them with a
// float64 reference: every dtype, the 16-byte and the scalar paths, tails, absent entries,
// more inputs than one launch takes, M == 0, n == 0, determinism, and the argument checks.
// Built and run by run.sh (under AddressSanitizer and under ThreadSanitizer).
#include "emulation.h"
#include "expect.h"
#include "elements.h"

#include MIXED_OP_EMULATED_SOURCE

#include <cstdio>
#include <cstring>
#include <random>
#include <string>

namespace {

using pynas::DType;
using pynas::MixedOpArgs;
using pynas::Status;

using emulation::as_float;
using emulation::Buffer;
using emulation::dtype_name;
using emulation::dtype_of;
using emulation::expect;
using emulation::failures;
using emulation::from_float;
using emulation::unit_roundoff;

struct Case {
  std::string name;
  int64_t num_edges;
  int64_t num_ops;
  int64_t numel;
  std::vector<int64_t> slots;  // present entries, in the order the inputs are listed
  int misalignment;            // elements; nonzero forces the scalar path
};

std::vector<int64_t> every_slot_but(int64_t num_slots, int64_t skip_every) {
  std::vector<int64_t> slots;
  for (int64_t slot = num_slots - 1; slot >= 0; --slot) {
    if (skip_every == 0 || slot % skip_every != 0) slots.push_back(slot);
  }
  return slots;
}

template <typename T>
void check_case(const Case& test_case, std::mt19937& random) {
  const std::string label = test_case.name + " (" + dtype_name<T>() + ")";
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int64_t num_slots = test_case.num_edges * test_case.num_ops;
  const int64_t num_inputs = static_cast<int64_t>(test_case.slots.size());
  const int64_t numel = test_case.numel;

  std::vector<float> alpha(num_slots);
  for (float& logit : alpha) logit = 2.0f * uniform(random);
  std::vector<Buffer<T>> inputs;
  std::vector<Buffer<T>> grad_inputs;
  std::vector<const void*> input_pointers;
  std::vector<void*> grad_input_pointers;
  for (int64_t m = 0; m < num_inputs; ++m) {
    inputs.emplace_back(numel, test_case.misalignment);
    grad_inputs.emplace_back(numel, test_case.misalignment);
    for (int64_t i = 0; i < numel; ++i) inputs.back().data()[i] = from_float<T>(uniform(random));
  }
  for (int64_t m = 0; m < num_inputs; ++m) {
    input_pointers.push_back(inputs[m].data());
    grad_input_pointers.push_back(grad_inputs[m].data());
  }
  Buffer<T> grad_out(numel, test_case.misalignment);
  for (int64_t i = 0; i < numel; ++i) grad_out.data()[i] = from_float<T>(uniform(random));
  Buffer<T> out(numel, test_case.misalignment);

  MixedOpArgs args{input_pointers.data(), test_case.slots.data(), num_inputs, alpha.data(),
                   test_case.num_edges,   test_case.num_ops,        numel,      dtype_of<T>()};
  std::vector<float> workspace(pynas::mixed_op_cuda_workspace_bytes(args) / sizeof(float),
                               std::nanf(""));
  std::vector<float> grad_alpha(num_slots, std::nanf(""));

  // float64 reference: weights, out, dot products, grad_alpha.
  std::vector<double> weights(num_slots);
  for (int64_t edge = 0; edge < test_case.num_edges; ++edge) {
    double total = 0;
    for (int64_t op = 0; op < test_case.num_ops; ++op) {
      total += std::exp(static_cast<double>(alpha[edge * test_case.num_ops + op]));
    }
    for (int64_t op = 0; op < test_case.num_ops; ++op) {
      const int64_t slot = edge * test_case.num_ops + op;
      weights[slot] = std::exp(static_cast<double>(alpha[slot])) / total;
    }
  }
  std::vector<double> dots(num_slots, 0.0);
  std::vector<double> dot_magnitudes(num_slots, 0.0);
  for (int64_t m = 0; m < num_inputs; ++m) {
    for (int64_t i = 0; i < numel; ++i) {
      const double product =
          static_cast<double>(as_float(grad_out.data()[i])) * as_float(inputs[m].data()[i]);
      dots[test_case.slots[m]] += product;
      dot_magnitudes[test_case.slots[m]] += std::abs(product);
    }
  }

  expect(pynas::mixed_op_forward_cuda(args, out.data(), workspace.data(), nullptr) ==
             Status::kOk,
         label + ": forward status");
  bool forward_matches = true;
  for (int64_t i = 0; i < numel; ++i) {
    double expected = 0;
    double magnitude = 0;
    for (int64_t m = 0; m < num_inputs; ++m) {
      const double term = weights[test_case.slots[m]] * as_float(inputs[m].data()[i]);
      expected += term;
      magnitude += std::abs(term);
    }
    const double tolerance = 2 * unit_roundoff<T>() * std::abs(expected) + 1e-6 * magnitude +
                             (num_inputs > pynas::kGroupCapacity ? 4 * unit_roundoff<T>() : 0);
    const double error = std::abs(as_float(out.data()[i]) - expected);
    // NaN (never written) fails this comparison too.
    if (!(error <= tolerance)) forward_matches = false;
  }
  expect(forward_matches, label + ": forward values");

  expect(pynas::mixed_op_backward_cuda(args, grad_out.data(), grad_input_pointers.data(),
                                       grad_alpha.data(), workspace.data(),
                                       nullptr) == Status::kOk,
         label + ": backward status");
  bool grad_inputs_match = true;
  for (int64_t m = 0; m < num_inputs; ++m) {
    for (int64_t i = 0; i < numel; ++i) {
      const double expected = weights[test_case.slots[m]] * as_float(grad_out.data()[i]);
      const double error = std::abs(as_float(grad_inputs[m].data()[i]) - expected);
      if (!(error <= 2 * unit_roundoff<T>() * std::abs(expected) + 1e-7)) {
        grad_inputs_match = false;
      }
    }
  }
  expect(grad_inputs_match, label + ": grad_inputs values");

  bool grad_alpha_matches = true;
  for (int64_t edge = 0; edge < test_case.num_edges; ++edge) {
    const int64_t first = edge * test_case.num_ops;
    double inner = 0;
    double inner_magnitude = 0;
    for (int64_t op = 0; op < test_case.num_ops; ++op) {
      inner += weights[first + op] * dots[first + op];
      inner_magnitude += weights[first + op] * dot_magnitudes[first + op];
    }
    for (int64_t op = 0; op < test_case.num_ops; ++op) {
      const int64_t slot = first + op;
      const double expected = weights[slot] * (dots[slot] - inner);
      const double tolerance =
          1e-5 * weights[slot] * (dot_magnitudes[slot] + inner_magnitude) + 1e-7;
      if (!(std::abs(grad_alpha[slot] - expected) <= tolerance)) {
        grad_alpha_matches = false;
        std::printf("  slot %ld: got %.9g expected %.9g\n", static_cast<long>(slot),
                    grad_alpha[slot], expected);
      }
    }
  }
  expect(grad_alpha_matches, label + ": grad_alpha values");

  // Run to run identical: no float atomics anywhere.
  const std::vector<float> first_grad_alpha = grad_alpha;
  pynas::mixed_op_backward_cuda(args, grad_out.data(), grad_input_pointers.data(),
                                grad_alpha.data(), workspace.data(), nullptr);
  expect(std::memcmp(first_grad_alpha.data(), grad_alpha.data(),
                     grad_alpha.size() * sizeof(float)) == 0,
         label + ": grad_alpha deterministic");
}

template <typename T>
void check_all_cases(std::mt19937& random) {
  const std::vector<Case> cases = {
      {"one edge, all present, 16-byte path", 1, 8, 1000, every_slot_but(8, 0), 0},
      {"absent entries, tail", 3, 8, 4099, every_slot_but(24, 3), 0},
      {"many grid-stride rounds", 1, 8, 50001, every_slot_but(8, 8), 0},
      {"more inputs than one launch", 14, 8, 777, every_slot_but(112, 9), 0},
      {"misaligned, scalar path", 2, 4, 513, every_slot_but(8, 0), 1},
      {"misaligned, more inputs than one launch", 10, 7, 130, every_slot_but(70, 0), 1},
      {"shorter than one vector", 2, 3, 3, every_slot_but(6, 2), 0},
      {"one element, K = 1", 1, 1, 1, {0}, 0},
      {"all absent (M = 0)", 2, 3, 100, {}, 0},
      {"empty (n = 0)", 2, 3, 0, every_slot_but(6, 0), 0},
  };
  for (const Case& test_case : cases) check_case<T>(test_case, random);
}

void check_argument_errors() {
  std::vector<float> alpha(8, 0.0f), input(16, 1.0f), out(16), grad_alpha(8);
  const void* input_pointer = input.data();
  void* grad_pointer = out.data();
  std::vector<float> workspace(1 << 16);
  auto forward = [&](MixedOpArgs args) {
    return pynas::mixed_op_forward_cuda(args, out.data(), workspace.data(), nullptr);
  };
  const int64_t slot_three = 3;
  const MixedOpArgs good{&input_pointer, &slot_three, 1, alpha.data(), 2, 4, 16,
                         DType::kFloat32};
  expect(forward(good) == Status::kOk, "a valid call succeeds");

  MixedOpArgs args = good;
  args.dtype = DType::kFloat64;
  expect(forward(args) == Status::kUnsupportedDType, "float64 is CPU-only");
  const int64_t slot_eight = 8;
  args = good;
  args.slots = &slot_eight;
  expect(forward(args) == Status::kInvalidArgument, "slot out of range");
  const int64_t repeated[2] = {1, 1};
  const void* two_inputs[2] = {input.data(), input.data()};
  args = good;
  args.inputs = two_inputs;
  args.slots = repeated;
  args.num_inputs = 2;
  expect(forward(args) == Status::kInvalidArgument, "repeated slot");
  expect(std::string(pynas::last_cuda_error()).find("repeated") != std::string::npos,
         "the message names the problem");
  args = good;
  args.num_inputs = 9;
  expect(forward(args) == Status::kInvalidArgument, "M > E*K");
  args = good;
  args.num_edges = 1024;
  expect(forward(args) == Status::kInvalidArgument, "E*K beyond the shared-memory limit");
  args = good;
  args.numel = -1;
  expect(forward(args) == Status::kInvalidArgument, "negative n");
  expect(pynas::mixed_op_forward_cuda(good, nullptr, nullptr, nullptr) ==
             Status::kInvalidArgument,
         "null out");
  expect(pynas::mixed_op_backward_cuda(good, input.data(), &grad_pointer, grad_alpha.data(),
                                       nullptr, nullptr) == Status::kInvalidArgument,
         "null workspace");

  emulation::next_launch_error = cudaErrorInvalidConfiguration;
  expect(forward(good) == Status::kCudaError, "a failed launch is reported");
  expect(std::string(pynas::last_cuda_error()).find("emulated CUDA error") !=
             std::string::npos,
         "the failed launch keeps its message");
}

void check_device_queries() {
  int archs[4] = {0, 0, 0, 0};
  expect(pynas::cuda_compiled_archs(archs, 4) == 2 && archs[0] == 80 && archs[1] == 90,
         "compiled archs parse as 80, 90");
  expect(pynas::cuda_compiled_archs(archs, 1) == 1, "compiled archs respect the capacity");
  expect(pynas::cuda_device_count() == 0, "no driver means zero devices");
}

}  // namespace

int main() {
  std::mt19937 random(12345);
  check_all_cases<float>(random);
  check_all_cases<__half>(random);
  check_all_cases<__nv_bfloat16>(random);
  check_argument_errors();
  check_device_queries();
  std::printf("%s: %d failure(s), %d emulated launches\n", failures ? "FAILED" : "ok", failures,
              emulation::launches);
  return failures == 0 ? 0 : 1;
}
