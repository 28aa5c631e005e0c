#!/usr/bin/env bash
# Training on one CUDA GPU: the default preset, then the large preset for 2 epochs, eager and
# with torch.compile; then serving the large model from the GPU. For each run it prints
# tokens/s, MFU against the GPU's dense bf16 peak, wall time and validation bits per byte.
# Sized for one H100 or H200 (well under 10 minutes there). Run from anywhere:
#
#     bash benchmarks/gpu.sh                    # PEAK_TFLOPS=989: H100 SXM / H200 SXM, dense bf16
#     PEAK_TFLOPS=... bash benchmarks/gpu.sh    # another GPU: its dense bf16 peak, TFLOP/s
#
# It installs into .venv-gpu (PY=... to use another interpreter): torch 2.13.0 from PyPI,
# whose Linux x86-64 wheel is a CUDA build (the CUDA libraries come as nvidia-* wheels),
# then tinylm itself. Runs go to runs/gpu/ (OUT=... to change).
set -euo pipefail
cd "$(dirname "$0")/.."
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
OUT=${OUT:-runs/gpu}
PY=${PY:-.venv-gpu/bin/python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ ! -x "$PY" ]; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install --quiet --upgrade pip
  .venv-gpu/bin/pip install --quiet torch==2.13.0
  .venv-gpu/bin/pip install --quiet -e .
fi
"$PY" -c '
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")'

report() {  # run directory, wall seconds: one line of figures from training_metrics.json
  "$PY" - "$1" "$2" "$PEAK_TFLOPS" <<'PYEOF'
import json, sys
run, wall, peak = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) * 1e12
m = json.load(open(f"{run}/training_metrics.json"))
steps = [h["tokens_per_second"] for h in m["history"]]  # training steps only, per epoch
rate = sum(steps) / len(steps)
mfu = rate * m["model"]["flops_per_token"] / peak
print(f"{run}: {m['model']['parameters'] / 1e6:.1f}M parameters, {len(steps)} epochs, "
      f"compile {m['hyperparameters']['compile']}, {m['environment']['dtype']}: "
      f"{rate:,.0f} tokens/s, MFU {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s, "
      f"training {m['timing']['train_seconds']:.0f} s, wall {wall:.0f} s, "
      f"val {m['history'][-1]['val_bpb']:.3f} bits/byte")
PYEOF
}

train() {  # run name, then flags: train on the GPU (its output in OUT/name.log), report
  local name=$1 start=$SECONDS
  shift
  mkdir -p "$OUT"
  "$PY" -m tinylm.cli train --device cuda --output-dir "$OUT/$name" --fresh --no-eval --quiet "$@" \
    > "$OUT/$name.log" 2>&1 || { tail -n 30 "$OUT/$name.log"; exit 1; }
  report "$OUT/$name" $((SECONDS - start))
  if grep -q "torch.compile failed" "$OUT/$name.log"; then
    echo "  torch.compile failed and the run trained eager: see $OUT/$name.log"
  fi
}

train default --preset default
train large --preset large --epochs 2
train large-compiled --preset large --epochs 2 --compile true
"$PY" -c "
from tinylm.budget import measure_inference
m = measure_inference('$OUT/large/checkpoints/final.pt', device='cuda', requests=30)
print(f'large model served from the GPU (batch 1, 16 + 64 tokens): p50 {m[\"p50_ms\"]:.1f} ms, '
      f'p95 {m[\"p95_ms\"]:.1f} ms, {m[\"ms_per_token\"]:.2f} ms/token, '
      f'peak GPU memory {m[\"peak_gpu_mb\"]:.0f} MB, peak RSS {m[\"peak_rss_mb\"]:.0f} MB')"
