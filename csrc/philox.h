// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
// the counter-based generator behind torch's CUDA random numbers and curand. Shared by the
// CPU and CUDA kernels, so both draw bit-identical numbers for one (seed, counter).
//
// pynas's counter layout: a draw is identified by (seed, row, step), where `row` is the
// batch row (architecture) and `step = offset / 4 + decision` counts Philox blocks along a
// row; `offset` is the generator's offset in 32-bit words, advanced by 4 per block a row
// uses, as torch advances its CUDA Philox offset.
#pragma once

#include <cstdint>

#include "common.h"

namespace pynas {

struct PhiloxBlock {
  uint32_t words[4];
};

PYNAS_HOST_DEVICE void multiply_high_low(uint32_t a, uint32_t b, uint32_t* high, uint32_t* low) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *high = static_cast<uint32_t>(product >> 32);
  *low = static_cast<uint32_t>(product);
}

// Ten rounds of the Philox-4x32 bijection of `counter` under `key`.
PYNAS_HOST_DEVICE PhiloxBlock philox4x32_10(PhiloxBlock counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMultiplier0 = 0xD2511F53u, kMultiplier1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kWeyl0;
      key1 += kWeyl1;
    }
    uint32_t high0, low0, high1, low1;
    multiply_high_low(kMultiplier0, counter.words[0], &high0, &low0);
    multiply_high_low(kMultiplier1, counter.words[2], &high1, &low1);
    counter = {{high1 ^ counter.words[1] ^ key0, low1, high0 ^ counter.words[3] ^ key1, low0}};
  }
  return counter;
}

// The Philox block of draw (row, step) under `seed`.
PYNAS_HOST_DEVICE PhiloxBlock philox_block(uint64_t seed, uint64_t row, uint64_t step) {
  const PhiloxBlock counter{{static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32),
                             static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A double uniform in the open interval (0, 1) with 53 random bits, from the first two words.
PYNAS_HOST_DEVICE double uniform_open(const PhiloxBlock& block) {
  const uint64_t bits =
      (static_cast<uint64_t>(block.words[0] >> 5) << 26) | (block.words[1] >> 6);  // 53 bits
  return (static_cast<double>(bits) + 0.5) * (1.0 / 9007199254740992.0);          // / 2^53
}

// The uniform of draw (row, step) under `seed`.
PYNAS_HOST_DEVICE double philox_uniform(uint64_t seed, uint64_t row, uint64_t step) {
  return uniform_open(philox_block(seed, row, step));
}

}  // namespace pynas
