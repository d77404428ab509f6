// Runs the CUDA sampling and rollout kernels on the CPU through emulation.h and compares
// them with the CPU kernels: sample_categorical (actions bit-identical, -inf never drawn)
// and the controller rollout on a macro program (choices and skips) and a cell program
// (pointers over per-cell anchors), plus the argument checks. Built and run by
// run.sh (under AddressSanitizer and under ThreadSanitizer).
#include "emulation.h"
#include "expect.h"

#include SAMPLING_EMULATED_SOURCE
#include ROLLOUT_EMULATED_SOURCE

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

using pynas::Status;

using emulation::expect;
using emulation::failures;

struct Program {
  std::vector<int32_t> kinds, options, records, heads, embeddings, decisions, anchors;
  int32_t head_rows = 0, table_rows = 1, num_decisions = 0, num_anchors = 0;

  void add(int32_t kind, int32_t count, bool record, int32_t first_anchor = 0) {
    kinds.push_back(kind);
    options.push_back(count);
    records.push_back(record);
    heads.push_back(head_rows);
    embeddings.push_back(table_rows);
    decisions.push_back(num_decisions);
    anchors.push_back(first_anchor);
    head_rows += kind == 0 ? count : 0;
    table_rows += kind != 2 ? count : 0;
    num_decisions += kind == 2 ? count : 1;
    num_anchors += record;
  }

  pynas::RolloutProgram view() const {
    return {kinds.data(), options.data(), records.data(), heads.data(), embeddings.data(),
            decisions.data(), anchors.data(), static_cast<int64_t>(kinds.size()),
            num_decisions, num_anchors};
  }
};

Program macro_program() {
  Program program;
  for (int layer = 0; layer < 4; ++layer) {
    for (int count : {4, 4, 4, 2, 2}) program.add(0, count, false);
    program.add(2, layer, true);
  }
  return program;
}

Program cell_program() {
  Program program;
  for (int cell = 0; cell < 2; ++cell) {
    const int first = cell * 5;
    program.add(2, 0, true);
    program.add(2, 0, true);
    for (int block = 0; block < 3; ++block) {
      program.add(1, 2 + block, false, first);
      program.add(1, 2 + block, false, first);
      program.add(0, 8, false);
      program.add(0, 8, true);
    }
  }
  return program;
}

std::vector<float> random_vector(std::mt19937& rng, size_t size, float scale) {
  std::uniform_real_distribution<float> uniform(-scale, scale);
  std::vector<float> values(size);
  for (float& value : values) value = uniform(rng);
  return values;
}

void check_rollout(const std::string& name, const Program& program, int64_t hidden) {
  std::mt19937 rng(7);
  const int64_t G = 4 * hidden;
  auto table = random_vector(rng, program.table_rows * G, 1.0f);
  auto weight_ih = random_vector(rng, G * hidden, 0.4f);
  auto bias = random_vector(rng, G, 0.4f);
  auto weight_hh = random_vector(rng, G * hidden, 0.4f);
  auto head_weight = random_vector(rng, program.head_rows * hidden, 0.8f);
  auto head_bias = random_vector(rng, program.head_rows, 0.8f);
  auto weight_prev = random_vector(rng, hidden * hidden, 0.8f);
  auto weight_curr = random_vector(rng, hidden * hidden, 0.8f);
  auto attention = random_vector(rng, hidden, 0.8f);
  const pynas::RolloutWeights weights{table.data(), weight_ih.data(), bias.data(),
                                      weight_hh.data(), head_weight.data(), head_bias.data(),
                                      program.head_rows, weight_prev.data(), weight_curr.data(),
                                      attention.data(), hidden, program.table_rows, 2.5f};
  const int64_t count = 5, D = program.num_decisions;
  std::vector<int64_t> cpu_actions(count * D), gpu_actions(count * D, -7);
  std::vector<float> cpu_log_prob(count * D), gpu_log_prob(count * D), cpu_entropy(count * D),
      gpu_entropy(count * D);
  std::vector<float> workspace(
      pynas::controller_rollout_cuda_workspace_bytes(count, program.num_anchors, hidden) /
      sizeof(float));
  const auto view = program.view();
  expect(pynas::controller_rollout_cpu(view, weights, count, 123, 8,
                                       {cpu_actions.data(), cpu_log_prob.data(),
                                        cpu_entropy.data()},
                                       2) == Status::kOk,
         name + ": cpu status");
  expect(pynas::controller_rollout_cuda(view, weights, count, 123, 8,
                                        {gpu_actions.data(), gpu_log_prob.data(),
                                         gpu_entropy.data()},
                                        workspace.data(), nullptr) == Status::kOk,
         name + ": cuda status");
  expect(cpu_actions == gpu_actions, name + ": actions differ");
  for (int64_t i = 0; i < count * D; ++i) {
    expect(std::fabs(cpu_log_prob[i] - gpu_log_prob[i]) < 1e-4f &&
               std::fabs(cpu_entropy[i] - gpu_entropy[i]) < 1e-4f,
           name + ": log_prob or entropy differ at " + std::to_string(i));
  }
  Program broken = program;
  broken.options[1] = program.num_anchors + 1;
  broken.kinds[1] = 1;
  expect(pynas::controller_rollout_cuda(broken.view(), weights, count, 1, 0,
                                        {gpu_actions.data(), gpu_log_prob.data(),
                                         gpu_entropy.data()},
                                        workspace.data(), nullptr) == Status::kInvalidArgument,
         name + ": a pointer over unrecorded anchors is rejected");
}

void check_sampling() {
  std::mt19937 rng(3);
  const int64_t rows = 37, classes = 9;
  auto logits = random_vector(rng, rows * classes, 4.0f);
  for (int64_t i = 0; i < rows * classes; i += 4) logits[i] = -INFINITY;
  std::vector<int64_t> cpu_actions(rows), gpu_actions(rows, -7);
  std::vector<float> cpu_log_prob(rows), gpu_log_prob(rows), cpu_entropy(rows),
      gpu_entropy(rows);
  const pynas::CategoricalArgs args{logits.data(), rows, classes, classes,
                                    pynas::DType::kFloat32, 99, 12};
  expect(pynas::sample_categorical_cpu(args, cpu_actions.data(), cpu_log_prob.data(),
                                       cpu_entropy.data(), 2) == Status::kOk,
         "sampling: cpu status");
  expect(pynas::sample_categorical_cuda(args, gpu_actions.data(), gpu_log_prob.data(),
                                        gpu_entropy.data(), nullptr) == Status::kOk,
         "sampling: cuda status");
  expect(cpu_actions == gpu_actions, "sampling: actions differ");
  for (int64_t row = 0; row < rows; ++row) {
    expect(gpu_actions[row] >= 0 && std::isfinite(logits[row * classes + gpu_actions[row]]),
           "sampling: drew a -inf logit");
    expect(cpu_log_prob[row] == gpu_log_prob[row] && cpu_entropy[row] == gpu_entropy[row],
           "sampling: log_prob or entropy differ");
  }
  pynas::CategoricalArgs bad = args;
  bad.row_stride = classes - 1;
  expect(pynas::sample_categorical_cuda(bad, gpu_actions.data(), gpu_log_prob.data(),
                                        gpu_entropy.data(), nullptr) == Status::kInvalidArgument,
         "sampling: a short row stride is rejected");
}

}  // namespace

int main() {
  check_sampling();
  check_rollout("macro", macro_program(), 16);
  check_rollout("cells", cell_program(), 8);
  std::printf("%s (%d failures)\n", failures == 0 ? "OK" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
