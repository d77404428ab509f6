// Runs the CUDA partial-channel kernels on the CPU through emulation.h and compares them
// with a float64 reference written from the definition (split, weighted sum, cat,
// shuffle, edge-weighted sum): the 16-byte and the scalar paths (every dtype), more outputs
// or edges than one launch takes, bypass tensors whose samples lie apart (channel slices),
// g = 1, absent entries, M == 0, N == 0, with and without edge weights and their gradient,
// determinism, and the argument checks.
// Built and run by run.sh (under AddressSanitizer and under ThreadSanitizer).
#include "emulation.h"
#include "expect.h"
#include "elements.h"

#include PARTIAL_CHANNEL_EMULATED_SOURCE

#include <cstdio>
#include <cstring>
#include <random>
#include <string>

namespace {

using pynas::DType;
using pynas::PartialChannelArgs;
using pynas::Status;

using emulation::as_float;
using emulation::Buffer;
using emulation::expect;
using emulation::failures;
using emulation::from_float;
using emulation::unit_roundoff;

struct Case {
  std::string name;
  int64_t batch, channels_per_group, groups, spatial;
  int64_t num_edges, num_ops;
  int64_t skip_every;   // slot s is absent when skip_every > 0 and s % skip_every == 0
  bool edge_weights;    // pass edge weights (and ask for their gradient)
  int misalignment;     // elements; nonzero forces the scalar path
  int64_t padding;      // elements between the samples of a bypass tensor, as in a slice
};

template <typename T>
std::vector<Buffer<T>> random_tensors(int64_t count, int64_t numel, int misalignment,
                                      std::mt19937& random) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<Buffer<T>> tensors;
  for (int64_t i = 0; i < count; ++i) {
    tensors.emplace_back(numel, misalignment);
    for (int64_t j = 0; j < numel; ++j) {
      tensors.back().data()[j] = from_float<T>(uniform(random));
    }
  }
  return tensors;
}

template <typename T, typename Pointer>
std::vector<Pointer> pointers(std::vector<Buffer<T>>& tensors) {
  std::vector<Pointer> result;
  for (Buffer<T>& tensor : tensors) result.push_back(tensor.data());
  return result;
}

// |got - expected| <= relative * |expected| + absolute, and not NaN.
bool close(double got, double expected, double relative, double absolute) {
  return std::abs(got - expected) <= relative * std::abs(expected) + absolute;
}

template <typename T>
void check_case(const Case& c, std::mt19937& random) {
  const std::string label = c.name + " (" + emulation::dtype_name<T>() + ")";
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int64_t E = c.num_edges, K = c.num_ops, g = c.groups, Cg = c.channels_per_group;
  const int64_t N = c.batch, S = c.spatial, C = g * Cg;
  const int64_t operated_numel = N * Cg * S, bypass_numel = N * (g - 1) * Cg * S;
  const int64_t bypass_stride = (g - 1) * Cg * S + c.padding;
  const int64_t num_bypass = g > 1 ? E : 0;

  std::vector<int64_t> slots;
  for (int64_t slot = E * K - 1; slot >= 0; --slot) {
    if (c.skip_every == 0 || slot % c.skip_every != 0) slots.push_back(slot);
  }
  const int64_t M = static_cast<int64_t>(slots.size());
  std::vector<float> alpha(E * K), edge_weights(E);
  for (float& logit : alpha) logit = 2.0f * uniform(random);
  for (float& weight : edge_weights) weight = 0.5f + uniform(random);

  auto outputs = random_tensors<T>(M, operated_numel, c.misalignment, random);
  auto bypass = random_tensors<T>(num_bypass, N * bypass_stride, c.misalignment, random);
  auto grad_out = random_tensors<T>(1, N * C * S, c.misalignment, random);
  std::vector<Buffer<T>> grad_outputs, grad_bypass;
  for (int64_t m = 0; m < M; ++m) grad_outputs.emplace_back(operated_numel, c.misalignment);
  for (int64_t e = 0; e < num_bypass; ++e) {
    grad_bypass.emplace_back(bypass_numel, c.misalignment);
  }
  Buffer<T> out(N * C * S, c.misalignment);
  auto output_pointers = pointers<T, const void*>(outputs);
  auto bypass_pointers = pointers<T, const void*>(bypass);
  auto grad_output_pointers = pointers<T, void*>(grad_outputs);
  auto grad_bypass_pointers = pointers<T, void*>(grad_bypass);

  const PartialChannelArgs args{output_pointers.data(),
                                slots.data(),
                                M,
                                bypass_pointers.data(),
                                bypass_stride,
                                alpha.data(),
                                c.edge_weights ? edge_weights.data() : nullptr,
                                E,
                                K,
                                N,
                                Cg,
                                g,
                                S,
                                emulation::dtype_of<T>()};
  std::vector<float> workspace(
      pynas::partial_channel_cuda_workspace_bytes(E, K) / sizeof(float), std::nanf(""));
  std::vector<float> grad_alpha(E * K, std::nanf("")), grad_edge_weights(E, std::nanf(""));

  // float64 reference: softmax, coefficients, out, dot products, gradients.
  std::vector<double> probabilities(E * K), scale(E, 1.0);
  for (int64_t e = 0; e < E; ++e) {
    double total = 0;
    for (int64_t k = 0; k < K; ++k) total += std::exp(static_cast<double>(alpha[e * K + k]));
    for (int64_t k = 0; k < K; ++k)
      probabilities[e * K + k] = std::exp(static_cast<double>(alpha[e * K + k])) / total;
    if (c.edge_weights) scale[e] = edge_weights[e];
  }
  auto coefficient = [&](int64_t m) { return scale[slots[m] / K] * probabilities[slots[m]]; };
  // The source of output channel j = a*g + b of sample n at s: operated (n, a) or bypass
  // (n, (b-1)*C/g + a), per the shuffle of cat(operated, bypass).
  auto operated_index = [&](int64_t n, int64_t a, int64_t s) { return (n * Cg + a) * S + s; };
  auto bypass_index = [&](int64_t n, int64_t a, int64_t b, int64_t s) {
    return (n * (g - 1) * Cg + (b - 1) * Cg + a) * S + s;
  };
  auto bypass_input_index = [&](int64_t n, int64_t a, int64_t b, int64_t s) {
    return n * bypass_stride + ((b - 1) * Cg + a) * S + s;
  };

  expect(pynas::partial_channel_forward_cuda(args, out.data(), workspace.data(), nullptr) ==
             Status::kOk,
         label + ": forward status");
  // Beyond one launch's entries, each launch's partial sum is rounded to T in out.
  const bool several_launches =
      M > pynas::kOutputCapacity || num_bypass > pynas::kBypassCapacity;
  const double partial_rounding = several_launches ? 2 * unit_roundoff<T>() : 1e-6;
  bool forward_matches = true;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < C; ++j) {
      const int64_t a = j / g, b = j % g;
      for (int64_t s = 0; s < S; ++s) {
        double expected = 0, magnitude = 0;
        if (b == 0) {
          for (int64_t m = 0; m < M; ++m) {
            const double term =
                coefficient(m) * as_float(outputs[m].data()[operated_index(n, a, s)]);
            expected += term, magnitude += std::abs(term);
          }
        } else {
          for (int64_t e = 0; e < E; ++e) {
            const double term =
                scale[e] * as_float(bypass[e].data()[bypass_input_index(n, a, b, s)]);
            expected += term, magnitude += std::abs(term);
          }
        }
        const double got = as_float(out.data()[(n * C + j) * S + s]);
        if (!close(got, expected, 2 * unit_roundoff<T>(), partial_rounding * magnitude))
          forward_matches = false;
      }
    }
  }
  expect(forward_matches, label + ": forward values");

  expect(pynas::partial_channel_backward_cuda(
             args, grad_out[0].data(), grad_output_pointers.data(), grad_bypass_pointers.data(),
             grad_alpha.data(), c.edge_weights ? grad_edge_weights.data() : nullptr,
             workspace.data(), nullptr) == Status::kOk,
         label + ": backward status");
  std::vector<double> dots(E * K, 0.0), dot_magnitudes(E * K, 0.0);
  std::vector<double> bypass_dots(E, 0.0), bypass_magnitudes(E, 0.0);
  bool grads_match = true;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < C; ++j) {
      const int64_t a = j / g, b = j % g;
      for (int64_t s = 0; s < S; ++s) {
        const double grad = as_float(grad_out[0].data()[(n * C + j) * S + s]);
        if (b == 0) {
          const int64_t i = operated_index(n, a, s);
          for (int64_t m = 0; m < M; ++m) {
            const double product = grad * as_float(outputs[m].data()[i]);
            dots[slots[m]] += product, dot_magnitudes[slots[m]] += std::abs(product);
            const double expected = coefficient(m) * grad;
            if (!close(as_float(grad_outputs[m].data()[i]), expected, 2 * unit_roundoff<T>(),
                       1e-7))
              grads_match = false;
          }
        } else {
          const int64_t i = bypass_index(n, a, b, s);
          for (int64_t e = 0; e < E; ++e) {
            const double input = as_float(bypass[e].data()[bypass_input_index(n, a, b, s)]);
            const double product = grad * input;
            bypass_dots[e] += product, bypass_magnitudes[e] += std::abs(product);
            if (!close(as_float(grad_bypass[e].data()[i]), scale[e] * grad,
                       2 * unit_roundoff<T>(), 1e-7))
              grads_match = false;
          }
        }
      }
    }
  }
  expect(grads_match, label + ": grad_outputs and grad_bypass values");

  bool grad_alpha_matches = true, grad_edge_weights_match = true;
  for (int64_t e = 0; e < E; ++e) {
    double inner = 0, inner_magnitude = 0;
    double edge = bypass_dots[e], edge_magnitude = bypass_magnitudes[e];
    for (int64_t k = 0; k < K; ++k) {
      inner += probabilities[e * K + k] * dots[e * K + k];
      inner_magnitude += probabilities[e * K + k] * dot_magnitudes[e * K + k];
    }
    edge += inner, edge_magnitude += inner_magnitude;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t slot = e * K + k;
      const double expected = scale[e] * probabilities[slot] * (dots[slot] - inner);
      const double tolerance = 1e-5 * std::abs(scale[e]) * probabilities[slot] *
                                   (dot_magnitudes[slot] + inner_magnitude) +
                               1e-7;
      if (!(std::abs(grad_alpha[slot] - expected) <= tolerance)) {
        grad_alpha_matches = false;
        std::printf("  slot %ld: got %.9g expected %.9g\n", static_cast<long>(slot),
                    grad_alpha[slot], expected);
      }
    }
    if (c.edge_weights && !close(grad_edge_weights[e], edge, 0, 1e-5 * edge_magnitude + 1e-7)) {
      grad_edge_weights_match = false;
      std::printf("  edge %ld: got %.9g expected %.9g\n", static_cast<long>(e),
                  grad_edge_weights[e], edge);
    }
  }
  expect(grad_alpha_matches, label + ": grad_alpha values");
  expect(grad_edge_weights_match, label + ": grad_edge_weights values");

  // Run to run identical: no float atomics anywhere.
  const std::vector<float> first_grad_alpha = grad_alpha, first_grad_edges = grad_edge_weights;
  pynas::partial_channel_backward_cuda(
      args, grad_out[0].data(), grad_output_pointers.data(), grad_bypass_pointers.data(),
      grad_alpha.data(), c.edge_weights ? grad_edge_weights.data() : nullptr, workspace.data(),
      nullptr);
  expect(std::memcmp(first_grad_alpha.data(), grad_alpha.data(), E * K * sizeof(float)) == 0 &&
             (!c.edge_weights ||
              std::memcmp(first_grad_edges.data(), grad_edge_weights.data(),
                          E * sizeof(float)) == 0),
         label + ": gradients deterministic");
}

// name, N, C/g, g, S, E, K, skip_every, edge weights, misalignment, padding
const std::vector<Case> kCases = {
    {"one edge, g = 4, 16-byte path", 2, 3, 4, 16, 1, 8, 8, false, 0, 0},
    {"misaligned, scalar path", 2, 3, 8, 8, 2, 2, 0, true, 1, 0},
    {"more outputs and edges than one launch", 1, 2, 2, 8, 18, 3, 5, true, 0, 0},
    // The cases above run for every dtype; the thread and memory layout of the rest does
    // not depend on it, so they run in float32 only, to keep the emulation quick.
    {"node, absent entries, edge weights", 2, 2, 4, 8, 3, 4, 3, true, 0, 0},
    {"bypass slices of the inputs, 16-byte path", 3, 2, 4, 8, 3, 2, 0, true, 0, 16},
    {"bypass samples further apart, scalar path", 2, 2, 4, 8, 2, 2, 0, true, 0, 3},
    {"odd spatial size, scalar path", 3, 2, 2, 7, 2, 3, 0, true, 0, 7},
    {"g = 1, no bypass", 2, 4, 1, 9, 2, 3, 2, true, 0, 0},
    {"all absent (M = 0)", 2, 2, 4, 5, 2, 2, 1, true, 0, 0},
    {"empty batch (N = 0)", 0, 2, 4, 8, 2, 3, 0, true, 0, 0},
};
constexpr size_t kCasesForEveryDtype = 3;

template <typename T>
void check_cases(size_t count, std::mt19937& random) {
  for (size_t i = 0; i < count; ++i) check_case<T>(kCases[i], random);
}

void check_argument_errors() {
  std::vector<float> alpha(8, 0.0f), edge_weights(2, 1.0f), input(96, 1.0f), out(128);
  std::vector<float> grad_alpha(8), workspace(1 << 16);
  const void* operated = input.data();
  const void* bypass[2] = {input.data(), input.data()};
  void* grads[2] = {out.data(), out.data()};
  const int64_t slot_three = 3;
  // N = 2, C/g = 2, g = 4, S = 8: outputs (2, 2, 8), bypass (2, 6, 8), out (2, 8, 8).
  const PartialChannelArgs good{&operated, &slot_three, 1, bypass, 48, alpha.data(),
                                edge_weights.data(), 2, 4, 2, 2, 4, 8, DType::kFloat32};
  auto forward = [&](const PartialChannelArgs& args) {
    return pynas::partial_channel_forward_cuda(args, out.data(), workspace.data(), nullptr);
  };
  expect(forward(good) == Status::kOk, "a valid call succeeds");

  PartialChannelArgs args = good;
  args.dtype = DType::kFloat64;
  expect(forward(args) == Status::kUnsupportedDType, "float64 is CPU-only");
  const int64_t slot_eight = 8;
  args = good;
  args.slots = &slot_eight;
  expect(forward(args) == Status::kInvalidArgument, "slot out of range");
  const int64_t repeated[2] = {1, 1};
  const void* two_outputs[2] = {input.data(), input.data()};
  args = good;
  args.outputs = two_outputs;
  args.slots = repeated;
  args.num_outputs = 2;
  expect(forward(args) == Status::kInvalidArgument, "repeated slot");
  expect(std::string(pynas::partial_channel_last_cuda_error()).find("repeated") !=
             std::string::npos,
         "the message names the problem");
  args = good;
  args.num_edges = 1024;
  expect(forward(args) == Status::kInvalidArgument, "E*K beyond the shared-memory limit");
  args = good;
  args.groups = 0;
  expect(forward(args) == Status::kInvalidArgument, "g = 0");
  args = good;
  args.spatial = -1;
  expect(forward(args) == Status::kInvalidArgument, "negative S");
  args = good;
  args.bypass_batch_stride = -48;
  expect(forward(args) == Status::kInvalidArgument, "negative bypass stride");
  args = good;
  args.bypass = nullptr;
  expect(forward(args) == Status::kInvalidArgument, "null bypass array with g > 1");
  args.groups = 1;
  expect(forward(args) == Status::kOk, "no bypass array needed with g = 1");
  expect(pynas::partial_channel_forward_cuda(good, nullptr, nullptr, nullptr) ==
             Status::kInvalidArgument,
         "null out");
  expect(pynas::partial_channel_backward_cuda(good, out.data(), grads, grads, grad_alpha.data(),
                                              nullptr, nullptr, nullptr) ==
             Status::kInvalidArgument,
         "null workspace");
  expect(pynas::partial_channel_backward_cuda(good, out.data(), grads, nullptr,
                                              grad_alpha.data(), nullptr, workspace.data(),
                                              nullptr) == Status::kInvalidArgument,
         "null grad_bypass array with g > 1");

  emulation::next_launch_error = cudaErrorInvalidConfiguration;
  expect(forward(good) == Status::kCudaError, "a failed launch is reported");
  expect(std::string(pynas::partial_channel_last_cuda_error()).find("emulated CUDA error") !=
             std::string::npos,
         "the failed launch keeps its message");
}

}  // namespace

int main() {
  std::mt19937 random(2020);
  check_cases<float>(kCases.size(), random);
  check_cases<__half>(kCasesForEveryDtype, random);
  check_cases<__nv_bfloat16>(kCasesForEveryDtype, random);
  check_argument_errors();
  std::printf("%s: %d failure(s), %d emulated launches\n", failures ? "FAILED" : "ok", failures,
              emulation::launches);
  return failures == 0 ? 0 : 1;
}
