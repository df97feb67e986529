#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md still marked pending, as one short run (~3 min of an
# H200 plus start-up). Run from the repository root on a CUDA machine with torch and numpy
# (polars and Dagster are not needed); JSON lines land in ${OUT:-benchmarks/out}.
#   OUT=/some/dir bash benchmarks/gpu_pending.sh
set -euo pipefail
out=${OUT:-benchmarks/out}
py=${PYTHON:-python}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"
"$py" -c "import torch; print(torch.__version__)" >> "$out/gpu.txt"
# the CUDA-graph path with the lr warm-up (graph reads the lr tensor; no host sync in the loop)
rc=0
"$py" -m pytest -q --noconftest -m gpu tests/core/model/test_trainer.py tests/core/model/test_fused.py \
  > "$out/gpu_tests.txt" 2>&1 || rc=$?
echo "pytest exit code: $rc" >> "$out/gpu_tests.txt"  # recorded, and the timings still run
# K baseline models fused in one CUDA-graphed step vs the same K one after another (Trainer,
# CUDA-graphed too): samples/s, ratio and model FLOP/s against the bf16 peak (~2-3 min)
"$py" -m benchmarks.bench fused --device cuda --ks 1,4,8,16 --steps 180 --repeats 3 > "$out/fused_k.json" \
  || echo "fused bench failed: $?" >> "$out/gpu_tests.txt"
# large batch vs batch 32, time to batch 32's best val loss: without and with warm-up, 3 seeds
for seed in 1 2 3; do
  for warmup in 0 60; do
    "$py" -m benchmarks.bench large-batch --device cuda --batch-size 512 --warmup-steps "$warmup" \
      --seed "$seed" > "$out/large_batch_512_w${warmup}_s${seed}.json"
  done
done

# walk-forward, 8 folds of baseline side by side vs one after another (needs polars and pandera
# on the GPU machine: carry their wheels, see .library/device/README.md)
if "$py" -c "import polars, pandera" 2>/dev/null; then
  "$py" -m benchmarks.bench walk-forward --dataset nasdaq --variant baseline --folds 8 --device cuda \
    > "$out/walk_forward_baseline_8.json" || echo "walk-forward bench failed: $?" >> "$out/gpu_tests.txt"
else
  echo "walk-forward bench skipped: polars/pandera missing" >> "$out/gpu_tests.txt"
fi
