#!/usr/bin/env bash
# The GPU check, for a fresh GPU machine that has torch but none of this project's other dependencies and no
# network: installs the wheels brought along in wheels/gpu/ (made by scripts/gpu_wheels.sh), then runs the `gpu`
# tests, a small ablation sweep on one GPU with and without packing trials on it, the speed repeatability check
# and benchmarks/gpu_speed.py, then training from JPEGs through the harness vs a bare loop (benchmarks/gpu_data_path.py,
# issue 22: B0 bf16 channels_last, eager and compiled). Everything it prints goes to $OUT/gpu_check.log (OUT defaults to ./gpu_check_out).
# Budget: under 8 minutes on one H200 before the data-path step; that step adds about 5 (estimated, not yet run:
# 12,800 JPEGs written once, two compilations of B0 in each of bare loop and harness).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY=${PY:-python3}
DEPS=$PWD/.gpu-deps
t0=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - t0 )) s)"; }

step "install the brought wheels (no network)"
"$PY" -m pip install --quiet --no-index --no-deps --target "$DEPS" wheels/gpu/*.whl || exit 1
export PYTHONPATH=$DEPS:$PWD
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

step "gpu tests"
"$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -o addopts="" --durations=10

sweep() {  # the 11-variant digits ablation on this GPU, $1 trials at once on it
  local start=$(date +%s)
  "$PY" -m repvgg_search.sweep +sweep=ablation tracking.mode=disabled device=cuda speed=paper \
    "launcher.trials_per_gpu=$1" "sweep.dir=$OUT/ablation_pack$1" > "$OUT/ablation_pack$1.log" 2>&1
  local rc=$?
  echo "trials_per_gpu=$1: exit $rc, $(( $(date +%s) - start )) s"
  tail -n 30 "$OUT/ablation_pack$1.log"
}
step "ablation sweep, one trial at a time"; sweep 1
step "ablation sweep, packed (6 trials on the GPU at once)"; sweep 6

step "speed repeatability (paper protocol)"
"$PY" benchmarks/speed_repeatability.py --device cuda --protocol paper

step "gpu_speed (paper protocol, fp16 channels_last)"
"$PY" benchmarks/gpu_speed.py --device cuda --protocols paper,fp16_cl

step "data path: B0 bf16 channels_last from JPEGs, harness vs bare loop, eager and compiled (16 workers)"
"$PY" benchmarks/gpu_data_path.py --device cuda --model b0 --decoder torchvision --workers 16 --modes eager,compile

step "done"
