#!/usr/bin/env bash
# Check the CUDA mixed-op kernels without a GPU: run them on the CPU through emulation.h,
# once under AddressSanitizer + UBSan (bounds) and once under ThreadSanitizer (missing
# __syncthreads, shared-memory races). Needs g++ >= 12 and the CUDA headers.
#   usage: csrc/cuda/emulation/run.sh [CUDA_INCLUDE_DIR]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
csrc="$(dirname "$(dirname "$here")")"
cuda_include="${1:-/usr/local/cuda/include}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A copy of mixed_op.cu whose launches and shared memory go through emulation.h.
python3 - "$csrc/cuda/mixed_op.cu" "$work/mixed_op_emulated.inc" <<'EOF'
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
    sys.exit("no kernel launch found in mixed_op.cu")
open(sys.argv[2], "w").write(text)
EOF

flags=(-std=c++20 -g -O1 -pthread -I"$cuda_include" -I"$csrc" -I"$here"
       -DPYNAS_CUDA_ARCHS='"80;90"' -DMIXED_OP_EMULATED_SOURCE="\"$work/mixed_op_emulated.inc\"")
g++ "${flags[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all \
  "$here/check_mixed_op.cpp" -o "$work/check_address"
g++ "${flags[@]}" -fsanitize=thread "$here/check_mixed_op.cpp" -o "$work/check_thread"

echo "== AddressSanitizer + UBSan"
"$work/check_address"
echo "== ThreadSanitizer"
TSAN_OPTIONS="halt_on_error=1" "$work/check_thread"
