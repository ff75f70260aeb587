#!/usr/bin/env bash
# The wheels `make gpu-check` needs on a GPU machine without network (a lent one: its own CUDA torch, Python 3.12,
# at most 64 MiB carried per call with the working tree), in batches of at most LIMIT_MB (default 40) megabytes.
#
#     scripts/gpu_wheels.sh                      # download (PyPI), then write build/gpu/wheels/batch-NN/
#     scripts/gpu_wheels.sh --dry-run            # download, then only print the plan
#     scripts/gpu_wheels.sh --from DIR --dry-run # the plan for wheels already in DIR (no network)
#
# What is downloaded: every pin of constraints/colab-gpu.txt and the notebook runner's packages (papermill,
# ipykernel) at CI's versions, for CPython 3.12 on manylinux x86_64. The plan (scripts/gpu_wheel_plan.py) keeps
# what the workbook, its gpu extra and the runner require, skips what the GPU image has (scripts/
# gpu_image_packages.txt, or INSTALLED=FILE: that machine's `pip list --format=freeze`) and the torch family, and
# refuses a batch over the limit. Install them there with: python3 scripts/gpu_check.py --wheels DIR ...
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
dry_run=()
from=""
while (( $# )); do
  case "$1" in
    --dry-run) dry_run=(--dry-run); shift ;;
    --from) from="$2"; shift 2 ;;
    *) echo "usage: scripts/gpu_wheels.sh [--dry-run] [--from DIR]" >&2; exit 2 ;;
  esac
done
out=build/gpu/wheels
installed=()
if [[ -n "${INSTALLED:-}" ]]; then installed=(--installed "$INSTALLED"); fi

if [[ -z "$from" ]]; then
  from=build/gpu/wheel-downloads  # beside, not inside, the folder a call carries
  mkdir -p "$from"
  platforms=()
  for minor in $(seq 39 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64)
  mapfile -t pins < <("$python" scripts/gpu_wheel_plan.py pins)
  # Packages published as source only (named in colab-gpu.txt) are built into wheels on this machine.
  source_only=$(sed -n 's/^# Source-only, version from constraints\/ci-cpu.txt: \(.*\)\.$/\1/p' constraints/colab-gpu.txt)
  binary=()
  built=()
  for pin in "${pins[@]}"; do
    if [[ ",${source_only// /}," == *",${pin%%==*},"* ]]; then built+=("$pin"); else binary+=("$pin"); fi
  done
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --dest "$from" "${binary[@]}"
  if (( ${#built[@]} )); then
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$from" "${built[@]}"
  fi
fi
exec "$python" scripts/gpu_wheel_plan.py plan "$from" --out "$out" --limit-mb "${LIMIT_MB:-40}" \
  "${installed[@]}" "${dry_run[@]}"
