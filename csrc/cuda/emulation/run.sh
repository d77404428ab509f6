#!/usr/bin/env bash
# Check the CUDA kernels without a GPU: run them on the CPU through emulation.h (one
# std::thread per CUDA thread), once under AddressSanitizer + UBSan (bounds) and once under
# ThreadSanitizer (missing __syncthreads, shared-memory races). check_mixed_op and
# check_partial_channel compare the mixed-op and partial-channel kernels with float64
# references; check_rollout compares the sampling and rollout kernels with the CPU kernels.
# Needs g++ >= 12 and the CUDA headers.
#   usage: csrc/cuda/emulation/run.sh [CUDA_INCLUDE_DIR]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
csrc="$(dirname "$(dirname "$here")")"
cuda_include="${1:-/usr/local/cuda/include}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Copies of the .cu files whose launches and shared memory go through emulation.h.
for kernel in mixed_op partial_channel sampling rollout; do
  python3 - "$csrc/cuda/$kernel.cu" "$work/${kernel}_emulated.inc" <<'PYTHON'
import re
import sys

text = open(sys.argv[1]).read()
text = re.sub(r"extern __shared__ float (\w+)\[\];",
              r"float* \1 = ::emulation::dynamic_shared();", text)
# Blocks run one after another, so a function-static array is one block's shared memory.
text = text.replace("__shared__", "static")
text, launches = re.subn(r"([\w:]+(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\(",
                         r"::emulation::launch(\2, \1, ", text, flags=re.S)
if launches == 0:
    sys.exit(f"no kernel launch found in {sys.argv[1]}")
open(sys.argv[2], "w").write(text)
PYTHON
done

flags=(-std=c++20 -g -O1 -pthread -I"$cuda_include" -I"$csrc" -I"$here"
       -DPYNAS_CUDA_ARCHS='"80;90"'
       -DMIXED_OP_EMULATED_SOURCE="\"$work/mixed_op_emulated.inc\""
       -DPARTIAL_CHANNEL_EMULATED_SOURCE="\"$work/partial_channel_emulated.inc\""
       -DSAMPLING_EMULATED_SOURCE="\"$work/sampling_emulated.inc\""
       -DROLLOUT_EMULATED_SOURCE="\"$work/rollout_emulated.inc\"")
declare -A sources=(
  [mixed_op]="$here/check_mixed_op.cpp"
  [partial_channel]="$here/check_partial_channel.cpp"
  [rollout]="$here/check_rollout.cpp $csrc/cpu/rollout.cpp $csrc/cpu/sampling.cpp"
)
checks=(mixed_op partial_channel rollout)
# Every program compiles at once (the compiles take most of the time), then each runs.
compiles=()
for check in "${checks[@]}"; do
  # shellcheck disable=SC2086  # the source lists split on purpose
  g++ "${flags[@]}" -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=all \
    ${sources[$check]} -o "$work/${check}_address" &
  compiles+=($!)
  # Without OpenMP here: libgomp is not instrumented, and the emulated threads are the point.
  # shellcheck disable=SC2086
  g++ "${flags[@]}" -fsanitize=thread ${sources[$check]} -o "$work/${check}_thread" &
  compiles+=($!)
done
for compile in "${compiles[@]}"; do wait "$compile"; done
for check in "${checks[@]}"; do
  echo "== $check: AddressSanitizer + UBSan"
  "$work/${check}_address"
  echo "== $check: ThreadSanitizer"
  TSAN_OPTIONS="halt_on_error=1" "$work/${check}_thread"
done
