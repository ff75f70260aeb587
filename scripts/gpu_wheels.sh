#!/usr/bin/env bash
# Download the GPU path's wheels for a machine without network: bitsandbytes, Unsloth and everything
# constraints/colab-gpu.txt pins, for CPython 3.12 on manylinux x86_64 (Colab's Python, and typical GPU images'),
# into batches of at most BATCH_MB (default 60) megabytes each, ready to carry over and install with
#
#     python scripts/gpu_check.py --wheels DIR/batch-01 --wheels DIR/batch-02 ...
#
# torch, torchvision, triton, xformers and the CUDA runtime are not downloaded: the GPU machine's torch stays.
# Usage: scripts/gpu_wheels.sh [DIR]   (default DIR: build/gpu/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/gpu/wheels}"
limit=$(( ${BATCH_MB:-60} * 1000 * 1000 ))
python="${PYTHON:-python3}"
all="$out/all"
mkdir -p "$all"

platforms=()
for minor in $(seq 35 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)

# Wheels only, for another Python and platform: pip resolves nothing here (--no-deps), the constraints file
# already is the resolved set. Packages published as source only are built into wheels on this machine.
pins=$(grep -v '^#' constraints/colab-gpu.txt | grep -v '^$')
source_only=$(sed -n 's/^# Source-only, version from constraints\/ci-cpu.txt: \(.*\)\.$/\1/p' constraints/colab-gpu.txt)
binary=()
built=()
for pin in $pins; do
  name="${pin%%==*}"
  if [[ ",${source_only// /}," == *",${name},"* ]]; then built+=("$pin"); else binary+=("$pin"); fi
done
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 "${platforms[@]}" \
  --dest "$all" "${binary[@]}"
if (( ${#built[@]} )); then
  "$python" -m pip wheel --quiet --no-deps --wheel-dir "$all" "${built[@]}"
fi

# Batches: largest wheels first, each into the first batch with room (a wheel larger than the limit gets its own).
"$python" - "$all" "$out" "$limit" <<'EOF'
import shutil, sys
from pathlib import Path

source, out, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for old in out.glob("batch-*"):
    shutil.rmtree(old)
batches: list[list[Path]] = []
sizes: list[int] = []
for wheel in sorted(source.glob("*.whl"), key=lambda p: -p.stat().st_size):
    size = wheel.stat().st_size
    slot = next((i for i, used in enumerate(sizes) if used + size <= limit), None)
    if slot is None:
        batches.append([]), sizes.append(0)
        slot = len(batches) - 1
    batches[slot].append(wheel)
    sizes[slot] += size
for i, wheels in enumerate(batches, 1):
    folder = out / f"batch-{i:02d}"
    folder.mkdir(parents=True)
    for wheel in wheels:
        shutil.copy2(wheel, folder / wheel.name)
    print(f"{folder}: {len(wheels)} wheels, {sizes[i - 1] / 1e6:.1f} MB")
print("install them with: python scripts/gpu_check.py " + " ".join(f"--wheels {out}/batch-{i:02d}"
                                                                    for i in range(1, len(batches) + 1)))
EOF
