// CPU kernel of the controller rollout (see rollout.h). Threads take tiles of kTile
// architectures and carry each tile through the whole program, so a step's matrix
// products run over the tile at once: W_hh^T (and W_ih^T, W_prev^T, W_curr^T) are read once
// per group of 8 architectures (AVX-512) or 4 (otherwise) from L1/L2, with 32 outputs of each
// held in registers.
// Each draw uses its own Philox block (architecture, decision): neither the tile size nor the
// thread count changes a result.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../rollout.h"
#include "../sampling.h"

namespace pynas {
namespace {

constexpr int64_t kTile = 16;

// Outputs per register block. The kernel is compiled with kArchitectures = 8 architectures
// sharing each row of W^T for AVX-512 (8 x 32 running sums in 16 of its 32 registers) and 4
// elsewhere (4 x 32 sums fill the 16 AVX2 registers): the rows stream past once per group.
constexpr int64_t kBlock = 32;

// y[v][j0 .. j0 + kBlock) += sum_k x[v][k] wt[k][j0 ..] for kRows rows v. Plain loops the
// compiler vectorizes at the width of each clone of run_tile below.
template <int kRows>
inline void product_block(const float* __restrict__ wt, int64_t in, int64_t out,
                          const float* __restrict__ x, int64_t x_stride, float* __restrict__ y,
                          int64_t y_stride, int64_t j0) {
  float sums[kRows][kBlock];
  for (int v = 0; v < kRows; ++v)
#pragma omp simd
    for (int64_t jj = 0; jj < kBlock; ++jj) sums[v][jj] = y[v * y_stride + j0 + jj];
  for (int64_t k = 0; k < in; ++k) {
    const float* __restrict__ row = wt + k * out + j0;
    for (int v = 0; v < kRows; ++v) {
      const float xk = x[v * x_stride + k];
#pragma omp simd
      for (int64_t jj = 0; jj < kBlock; ++jj) sums[v][jj] += xk * row[jj];
    }
  }
  for (int v = 0; v < kRows; ++v)
#pragma omp simd
    for (int64_t jj = 0; jj < kBlock; ++jj) y[v * y_stride + j0 + jj] = sums[v][jj];
}

// y[a] += W x[a] for `count` vectors, with wt = W^T of shape (in, out).
// x: (count, in) rows x_stride apart; y: (count, out) rows y_stride apart.
template <int kArchitectures>
void accumulate_product(const float* wt, int64_t in, int64_t out, const float* x,
                        int64_t x_stride, int64_t count, float* y, int64_t y_stride) {
  int64_t j0 = 0;
  for (; j0 + kBlock <= out; j0 += kBlock) {
    int64_t a = 0;
    for (; a + kArchitectures <= count; a += kArchitectures)
      product_block<kArchitectures>(wt, in, out, x + a * x_stride, x_stride, y + a * y_stride,
                                    y_stride, j0);
    for (; a < count; ++a)
      product_block<1>(wt, in, out, x + a * x_stride, x_stride, y + a * y_stride, y_stride, j0);
  }
  for (int64_t a = 0; a < count; ++a)  // the last out % kBlock outputs
    for (int64_t k = 0; k < in; ++k) {
      const float xk = x[a * x_stride + k];
#pragma omp simd
      for (int64_t j = j0; j < out; ++j) y[a * y_stride + j] += xk * wt[k * out + j];
    }
}

// One tile's running state; vectors are (count, ...) row-major.
template <int kArchitectures>
class Tile {
 public:
  Tile(const RolloutProgram& program, const RolloutWeights& weights, int64_t first,
       int64_t count)
      : p_(program), w_(weights), first_(first), count_(count),
        H_(weights.hidden), hidden_(count * H_, 0.0f), cell_(count * H_, 0.0f),
        gates_(count * 4 * H_), inputs_(count * H_), query_(count * H_),
        anchor_hidden_(count * std::max<int64_t>(program.num_anchors, 1) * H_),
        anchor_projection_(anchor_hidden_.size()),
        scores_(count * std::max<int64_t>(program.num_anchors, 1)),
        logits_(*std::max_element(program.options, program.options + program.num_steps) + 1),
        rows_(count, 0) {}

  void run(uint64_t seed, uint64_t step0, const RolloutOutputs& outputs) {
    int64_t anchors = 0;
    for (int64_t s = 0; s < p_.num_steps; ++s) {
      advance_lstm(s);
      const auto kind = static_cast<StepKind>(p_.kinds[s]);
      const int64_t options = p_.options[s];
      const int64_t decision = p_.decision_offsets[s];
      if (kind != StepKind::kChoice) attention_scores(p_.anchor_offsets[s], options);
      for (int64_t a = 0; a < count_; ++a) {
        const uint64_t architecture = static_cast<uint64_t>(first_ + a);
        int64_t* actions = outputs.actions + (first_ + a) * p_.num_decisions + decision;
        float* log_prob = outputs.log_prob + (first_ + a) * p_.num_decisions + decision;
        float* entropy = outputs.entropy + (first_ + a) * p_.num_decisions + decision;
        auto draw = [&](const float* logits, int64_t size, int64_t index) {
          const double u = philox_uniform(seed, architecture, step0 + decision + index);
          const CategoricalDraw result = categorical_draw(logits, size, 1, u);
          actions[index] = result.action;
          log_prob[index] = static_cast<float>(result.log_prob);
          entropy[index] = static_cast<float>(result.entropy);
          return result.action;
        };
        if (kind == StepKind::kChoice) {
          head_logits(a, p_.head_offsets[s], options);
          rows_[a] = p_.embedding_offsets[s] + draw(logits_.data(), options, 0);
        } else if (kind == StepKind::kPointer) {
          rows_[a] = p_.embedding_offsets[s] + draw(scores_.data() + a * p_.num_anchors,
                                                    options, 0);
        } else {
          skip_input(a, p_.anchor_offsets[s], options, draw);
        }
      }
      if (p_.records_anchor[s]) record_anchor(anchors++);
    }
  }

 private:
  // gates = input contribution + W_hh h, then the cell update of every unit of step `step`.
  void advance_lstm(int64_t step) {
    const bool after_skips =
        step > 0 && p_.kinds[step - 1] == static_cast<int32_t>(StepKind::kSkips);
    const int64_t G = 4 * H_;
    for (int64_t a = 0; a < count_; ++a) {
      const float* source = after_skips ? w_.bias : w_.input_table + rows_[a] * G;
      std::copy(source, source + G, gates_.begin() + a * G);
    }
    // A skips step over no anchors (a cell's input nodes) leaves a zero input: bias only.
    if (after_skips && p_.options[step - 1] > 0)
      product(w_.weight_ih_t, G, inputs_.data(), gates_.data(), G);
    product(w_.weight_hh_t, G, hidden_.data(), gates_.data(), G);
    for (int64_t a = 0; a < count_; ++a) {
      const float* __restrict__ g = gates_.data() + a * G;
      float* __restrict__ c = cell_.data() + a * H_;
      float* __restrict__ h = hidden_.data() + a * H_;
#pragma omp simd
      for (int64_t u = 0; u < H_; ++u) {
        float cell = c[u], hidden;
        lstm_unit(g[u], g[H_ + u], g[2 * H_ + u], g[3 * H_ + u], &cell, &hidden);
        c[u] = cell;
        h[u] = hidden;
      }
    }
  }

  // logits_[0..options) = squash(W_s h + b_s) of architecture a.
  void head_logits(int64_t a, int64_t head, int64_t options) {
    const float* h = hidden_.data() + a * H_;
    for (int64_t k = 0; k < options; ++k) {
      const float* row = w_.head_weight + (head + k) * H_;
      float sum = w_.head_bias[head + k];
#pragma omp simd reduction(+ : sum)
      for (int64_t u = 0; u < H_; ++u) sum += row[u] * h[u];
      logits_[k] = squash(sum, w_.tanh_constant);
    }
  }

  // scores_[a * num_anchors + j] = squash(v^T tanh(A_{first + j} + W_curr h)), j < options.
  void attention_scores(int64_t first, int64_t options) {
    std::fill(query_.begin(), query_.end(), 0.0f);
    product(w_.weight_curr_t, H_, hidden_.data(), query_.data(), H_);
    const float* __restrict__ attention = w_.attention;  // hoisted, so the loop vectorizes
    for (int64_t a = 0; a < count_; ++a) {
      const float* __restrict__ q = query_.data() + a * H_;
      for (int64_t j = 0; j < options; ++j) {
        const float* __restrict__ anchor =
            anchor_projection_.data() + (a * p_.num_anchors + first + j) * H_;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t u = 0; u < H_; ++u) sum += attention[u] * tanh_approx(anchor[u] + q[u]);
        scores_[a * p_.num_anchors + j] = squash(sum, w_.tanh_constant);
      }
    }
  }

  // The binary draws of a skips step, then the next input: the mean of the chosen anchors'
  // hidden states, 1 + the number chosen in the denominator (ENAS).
  template <typename Draw>
  void skip_input(int64_t a, int64_t first, int64_t options, Draw& draw) {
    float* x = inputs_.data() + a * H_;
    std::fill(x, x + H_, 0.0f);
    int64_t chosen = 0;
    for (int64_t j = 0; j < options; ++j) {
      const float pair[2] = {0.0f, scores_[a * p_.num_anchors + j]};
      if (draw(pair, 2, j) != 1) continue;
      ++chosen;
      const float* anchor = anchor_hidden_.data() + (a * p_.num_anchors + first + j) * H_;
      for (int64_t u = 0; u < H_; ++u) x[u] += anchor[u];
    }
    const float scale = 1.0f / static_cast<float>(1 + chosen);
    for (int64_t u = 0; u < H_; ++u) x[u] *= scale;
  }

  void record_anchor(int64_t index) {
    for (int64_t a = 0; a < count_; ++a) {
      const int64_t at = (a * p_.num_anchors + index) * H_;
      std::copy(hidden_.begin() + a * H_, hidden_.begin() + (a + 1) * H_,
                anchor_hidden_.begin() + at);
      std::fill(anchor_projection_.begin() + at, anchor_projection_.begin() + at + H_, 0.0f);
    }
    product(w_.weight_prev_t, H_, hidden_.data(), anchor_projection_.data() + index * H_,
            p_.num_anchors * H_);
  }

  // y[a] += W x[a] for the tile's architectures: wt = W^T (H, out), x rows H apart.
  void product(const float* wt, int64_t out, const float* x, float* y, int64_t y_stride) {
    accumulate_product<kArchitectures>(wt, H_, out, x, H_, count_, y, y_stride);
  }

  const RolloutProgram& p_;
  const RolloutWeights& w_;
  const int64_t first_, count_, H_;
  std::vector<float> hidden_, cell_, gates_, inputs_, query_, anchor_hidden_,
      anchor_projection_, scores_, logits_;
  std::vector<int64_t> rows_;  // input-table row of each architecture's next input
};

using RunTile = void (*)(const RolloutProgram&, const RolloutWeights&, int64_t first,
                        int64_t count, uint64_t seed, uint64_t step0, const RolloutOutputs&);

template <int kArchitectures>
inline __attribute__((always_inline)) void run_tile_body(
    const RolloutProgram& program, const RolloutWeights& weights, int64_t first, int64_t count,
    uint64_t seed, uint64_t step0, const RolloutOutputs& outputs) {
  Tile<kArchitectures>(program, weights, first, count).run(seed, step0, outputs);
}

// Compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and baseline x86-64, chosen
// once by the CPU's features; `flatten` inlines the whole tile walk so that its products
// get the wide instructions. Only the baseline build under ThreadSanitizer, which cannot
// follow the feature check before it has started (csrc/cuda/emulation/run.sh).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__)
__attribute__((flatten, target("arch=x86-64-v4"))) void run_tile_v4(
    const RolloutProgram& program, const RolloutWeights& weights, int64_t first, int64_t count,
    uint64_t seed, uint64_t step0, const RolloutOutputs& outputs) {
  run_tile_body<8>(program, weights, first, count, seed, step0, outputs);
}
__attribute__((flatten, target("arch=x86-64-v3"))) void run_tile_v3(
    const RolloutProgram& program, const RolloutWeights& weights, int64_t first, int64_t count,
    uint64_t seed, uint64_t step0, const RolloutOutputs& outputs) {
  run_tile_body<4>(program, weights, first, count, seed, step0, outputs);
}
#endif
__attribute__((flatten)) void run_tile_baseline(
    const RolloutProgram& program, const RolloutWeights& weights, int64_t first, int64_t count,
    uint64_t seed, uint64_t step0, const RolloutOutputs& outputs) {
  run_tile_body<4>(program, weights, first, count, seed, step0, outputs);
}

RunTile select_run_tile() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return run_tile_v4;
  if (__builtin_cpu_supports("x86-64-v3")) return run_tile_v3;
#endif
  return run_tile_baseline;
}

}  // namespace

bool valid_rollout(const RolloutProgram& program, const RolloutWeights& weights) {
  if (program.num_steps < 1 || weights.hidden < 1 || weights.table_rows < 1) return false;
  int64_t anchors = 0, decisions = 0;
  for (int64_t s = 0; s < program.num_steps; ++s) {
    const int64_t options = program.options[s];
    const int32_t kind = program.kinds[s];
    const int64_t first_anchor = program.anchor_offsets[s];
    if (program.decision_offsets[s] != decisions || first_anchor < 0) return false;
    if (kind == static_cast<int32_t>(StepKind::kChoice)) {
      if (options < 1 || program.head_offsets[s] < 0 ||
          program.head_offsets[s] + options > weights.head_rows)
        return false;
    } else if (kind == static_cast<int32_t>(StepKind::kPointer)) {
      if (options < 1 || first_anchor + options > anchors) return false;
    } else if (kind != static_cast<int32_t>(StepKind::kSkips) || options < 0 ||
               first_anchor + options > anchors) {
      return false;
    }
    if (kind != static_cast<int32_t>(StepKind::kSkips) &&
        (program.embedding_offsets[s] < 1 ||
         program.embedding_offsets[s] + options > weights.table_rows))
      return false;
    decisions += kind == static_cast<int32_t>(StepKind::kSkips) ? options : 1;
    anchors += program.records_anchor[s] != 0;
  }
  return decisions == program.num_decisions && anchors == program.num_anchors;
}

Status controller_rollout_cpu(const RolloutProgram& program, const RolloutWeights& weights,
                              int64_t count, uint64_t seed, uint64_t offset,
                              const RolloutOutputs& outputs, int num_threads) {
  if (count < 0 || num_threads < 1 || !valid_rollout(program, weights))
    return Status::kInvalidArgument;
  static const RunTile run_tile = select_run_tile();
  const int64_t tiles = (count + kTile - 1) / kTile;
  // No more threads than tiles: waking an idle thread costs more than a small rollout.
  const int threads = static_cast<int>(std::min<int64_t>(num_threads, std::max<int64_t>(tiles, 1)));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int64_t first = tile * kTile;
    run_tile(program, weights, first, std::min(kTile, count - first), seed, offset / 4, outputs);
  }
  return Status::kOk;
}

}  // namespace pynas
