// CUDA kernel of the controller rollout (see rollout.h): one block per architecture, one
// thread per LSTM gate (blockDim = 4H). The recurrent state lives in shared memory; the
// anchors of every architecture live in the workspace; thread 0 draws with the shared
// categorical_draw from the same Philox blocks as the CPU kernel. The weights (W_hh is
// 64 KB at H = 64) are re-read by every block and stay in L1/L2.
#include <cuda_runtime.h>

#include <algorithm>

#include "rollout.h"
#include "sampling.h"

namespace pynas {
namespace {

// The program travels in the kernel parameters: 7 * 128 int32 stay inside the classic 4 KB.
constexpr int kMaxSteps = 128;
constexpr int kMaxHidden = 256;  // 4H threads per block

struct DeviceProgram {
  int32_t kinds[kMaxSteps];
  int32_t options[kMaxSteps];
  int32_t records_anchor[kMaxSteps];
  int32_t head_offsets[kMaxSteps];
  int32_t embedding_offsets[kMaxSteps];
  int32_t decision_offsets[kMaxSteps];
  int32_t anchor_offsets[kMaxSteps];
  int32_t num_steps;
  int32_t num_anchors;
  int64_t num_decisions;
  int32_t max_options;  // the largest choice or pointer options, or anchors considered
};

__device__ float dot(const float* __restrict__ row, const float* __restrict__ vector,
                     int64_t size) {
  float sum = 0.0f;
  for (int64_t k = 0; k < size; ++k) sum += row[k] * vector[k];
  return sum;
}

// (W x)[column] for W^T of shape (size, columns): neighbouring threads read neighbouring
// columns, so the loads coalesce.
__device__ float column_dot(const float* __restrict__ transposed, int64_t columns,
                            int64_t column, const float* __restrict__ vector, int64_t size) {
  float sum = 0.0f;
  for (int64_t k = 0; k < size; ++k) sum += transposed[k * columns + column] * vector[k];
  return sum;
}

// anchors: (count, num_anchors, 2, H) floats: the hidden state, then A = W_prev h.
// Dynamic shared memory: hidden, cell, inputs, query (H each), gates (4H), scores.
__global__ void controller_rollout_kernel(const DeviceProgram program,
                                          const RolloutWeights weights, uint64_t seed,
                                          uint64_t step0, RolloutOutputs outputs,
                                          float* __restrict__ anchors) {
  extern __shared__ float shared[];
  const int64_t H = weights.hidden, G = 4 * H;
  float* hidden = shared;
  float* cell = hidden + H;
  float* inputs = cell + H;
  float* query = inputs + H;
  float* gates = query + H;
  float* scores = gates + G;
  __shared__ int64_t row;   // input-table row of the next input
  __shared__ int chosen;    // anchors chosen by a skips step
  const int64_t architecture = blockIdx.x;
  const int thread = threadIdx.x;
  float* own_anchors = anchors + architecture * program.num_anchors * 2 * H;
  const int64_t first_decision = architecture * program.num_decisions;

  if (thread < H) hidden[thread] = cell[thread] = 0.0f;
  if (thread == 0) row = 0;
  __syncthreads();
  int anchor_count = 0;
  for (int s = 0; s < program.num_steps; ++s) {
    const bool after_skips = s > 0 && program.kinds[s - 1] == static_cast<int32_t>(StepKind::kSkips);
    float gate = after_skips
                     ? weights.bias[thread] + column_dot(weights.weight_ih_t, G, thread, inputs, H)
                     : weights.input_table[row * G + thread];
    gate += column_dot(weights.weight_hh_t, G, thread, hidden, H);
    gates[thread] = gate;
    __syncthreads();
    if (thread < H) {
      lstm_unit(gates[thread], gates[H + thread], gates[2 * H + thread], gates[3 * H + thread],
                cell + thread, hidden + thread);
    }
    __syncthreads();

    const auto kind = static_cast<StepKind>(program.kinds[s]);
    const int options = program.options[s];
    const int64_t decision = program.decision_offsets[s];
    const float* step_anchors = own_anchors + 2 * program.anchor_offsets[s] * H;
    if (kind == StepKind::kChoice) {
      for (int k = thread; k < options; k += blockDim.x) {
        const int64_t head = program.head_offsets[s] + k;
        scores[k] = squash(weights.head_bias[head] + dot(weights.head_weight + head * H, hidden, H),
                           weights.tanh_constant);
      }
    } else {
      if (thread < H) query[thread] = column_dot(weights.weight_curr_t, H, thread, hidden, H);
      __syncthreads();
      for (int j = thread; j < options; j += blockDim.x) {
        const float* projection = step_anchors + (2 * j + 1) * H;
        float sum = 0.0f;
        for (int64_t u = 0; u < H; ++u) sum += weights.attention[u] * tanh_approx(projection[u] + query[u]);
        scores[j] = squash(sum, weights.tanh_constant);
      }
    }
    __syncthreads();
    if (thread == 0) {
      int64_t* actions = outputs.actions + first_decision + decision;
      float* log_prob = outputs.log_prob + first_decision + decision;
      float* entropy = outputs.entropy + first_decision + decision;
      const int draws = kind == StepKind::kSkips ? options : 1;
      chosen = 0;
      for (int index = 0; index < draws; ++index) {
        const double u = philox_uniform(seed, architecture, step0 + decision + index);
        CategoricalDraw result;
        if (kind == StepKind::kSkips) {
          const float pair[2] = {0.0f, scores[index]};
          result = categorical_draw(pair, 2, 1, u);
          scores[index] = static_cast<float>(result.action);  // 1: anchor `index` feeds
          chosen += result.action == 1;
        } else {
          result = categorical_draw(scores, options, 1, u);
          row = program.embedding_offsets[s] + result.action;
        }
        actions[index] = result.action;
        log_prob[index] = static_cast<float>(result.log_prob);
        entropy[index] = static_cast<float>(result.entropy);
      }
    }
    __syncthreads();
    if (kind == StepKind::kSkips && thread < H) {
      float sum = 0.0f;
      for (int j = 0; j < options; ++j)
        if (scores[j] == 1.0f) sum += step_anchors[2 * j * H + thread];
      inputs[thread] = sum / static_cast<float>(1 + chosen);
    }
    if (program.records_anchor[s] && thread < H) {
      own_anchors[2 * anchor_count * H + thread] = hidden[thread];
      own_anchors[(2 * anchor_count + 1) * H + thread] =
          column_dot(weights.weight_prev_t, H, thread, hidden, H);
    }
    anchor_count += program.records_anchor[s] != 0;
    __syncthreads();
  }
}

}  // namespace

int64_t controller_rollout_cuda_workspace_bytes(int64_t count, int64_t num_anchors,
                                                int64_t hidden) {
  return std::max<int64_t>(count * num_anchors * 2 * hidden, 1) * int64_t{sizeof(float)};
}

Status controller_rollout_cuda(const RolloutProgram& program, const RolloutWeights& weights,
                               int64_t count, uint64_t seed, uint64_t offset,
                               const RolloutOutputs& outputs, void* workspace, void* stream) {
  if (count < 0 || !valid_rollout(program, weights) || program.num_steps > kMaxSteps ||
      weights.hidden > kMaxHidden || (count > 0 && workspace == nullptr))
    return Status::kInvalidArgument;
  if (count == 0) return Status::kOk;
  DeviceProgram device_program{};
  device_program.num_steps = static_cast<int32_t>(program.num_steps);
  device_program.num_anchors = static_cast<int32_t>(program.num_anchors);
  device_program.num_decisions = program.num_decisions;
  device_program.max_options = static_cast<int32_t>(program.num_anchors);
  for (int64_t s = 0; s < program.num_steps; ++s) {
    device_program.kinds[s] = program.kinds[s];
    device_program.options[s] = program.options[s];
    device_program.records_anchor[s] = program.records_anchor[s];
    device_program.head_offsets[s] = program.head_offsets[s];
    device_program.embedding_offsets[s] = program.embedding_offsets[s];
    device_program.decision_offsets[s] = program.decision_offsets[s];
    device_program.anchor_offsets[s] = program.anchor_offsets[s];
    device_program.max_options = std::max(device_program.max_options, program.options[s]);
  }
  const int64_t H = weights.hidden;
  const size_t shared_bytes = (8 * H + device_program.max_options) * sizeof(float);
  controller_rollout_kernel<<<static_cast<unsigned>(count), static_cast<unsigned>(4 * H),
                              shared_bytes, static_cast<cudaStream_t>(stream)>>>(
      device_program, weights, seed, offset / 4, outputs, static_cast<float*>(workspace));
  return sampling_cuda_status(cudaGetLastError(), "controller_rollout_kernel launch");
}

}  // namespace pynas
