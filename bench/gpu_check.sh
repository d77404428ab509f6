#!/usr/bin/env bash
# GPU check: on a machine with one NVIDIA GPU, torch, CMake, ninja, pybind11 and
# scikit-build-core but no network, build pynas with its CUDA kernels, then run the CUDA
# tests and the op, sampling and DARTS-step benchmarks, and end with one summary table.
# With $OUT set, everything is also written to $OUT/gpu_check.log. Each step has a time
# limit; all of them together stay under 9 minutes.
#   usage: [PYTHON=python3] [OUT=dir] bench/gpu_check.sh
set -uo pipefail  # no -e: a failed step is recorded and the next one still runs

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
summary=()
failures=0

# step NAME LIMIT_SECONDS COMMAND...: run it under `timeout`, keep its status, time and
# last output line for the summary.
step() {
  local name="$1" limit="$2"
  shift 2
  printf '\n=== %s (limit %ss): %s\n' "$name" "$limit" "$*"
  local start=$SECONDS status result last
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$scratch/$name.log"
  status=$?
  case $status in
    0) result="ok" ;;
    124 | 137) result="TIMEOUT" ;;
    *) result="FAIL($status)" ;;
  esac
  [[ $status -eq 0 ]] || failures=$((failures + 1))
  last="$(grep -v '^[[:space:]]*$' "$scratch/$name.log" | tail -n 1 | cut -c 1-70)"
  summary+=("$(printf '%-6s | %-9s | %5d | %s' "$name" "$result" $((SECONDS - start)) "$last")")
}

main() {
  # Run from the scratch directory so that `import pynas` finds the installed build, not
  # the source tree (which has no compiled _C).
  cd "$scratch" || return 1
  export PIP_DISABLE_PIP_VERSION_CHECK=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
  step gpu 15 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  step build 120 env PYNAS_CUDA=ON "$python" -m pip install --no-build-isolation --no-deps \
    --no-index -v "$repo"
  step info 30 "$python" -m pynas info
  step tests 80 "$python" -m pytest -q -m cuda -p no:cacheprovider "$repo/tests"
  step ops 90 "$python" -m pynas bench ops --device cuda
  step sample 40 "$python" -m pynas bench sampling --device cuda
  step partial 40 "$python" -m pynas bench partial --device cuda
  step darts 100 "$python" -m pynas bench darts_step --device cuda --config paper --orders 1 \
    --repeats 3

  printf '\n%-6s | %-9s | %5s | %s\n' step result secs "last line of output"
  printf '%s\n' "${summary[@]}"
  echo "$failures step(s) failed"
  return $((failures > 0))
}

if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/gpu_check.log"
else
  main
fi
