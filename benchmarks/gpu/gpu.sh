#!/usr/bin/env bash
# Training on one CUDA GPU: the CUDA tests first (tests/integration/test_cuda.py), then the
# default preset, the large preset for 2 epochs eager and with torch.compile, and serving the
# large model from the GPU. For each run it prints tokens/s, MFU against the GPU's dense bf16
# peak, wall time and validation bits per byte, and writes them all to benchmarks/gpu/gpu.json.
# Sized for one H100 or H200 (minutes there). Run from anywhere:
#
#     bash benchmarks/gpu/gpu.sh                    # PEAK_TFLOPS=989: H100 SXM / H200 SXM, dense bf16
#     PEAK_TFLOPS=... bash benchmarks/gpu/gpu.sh    # another GPU: its dense bf16 peak, TFLOP/s
#     PY=python3 bash benchmarks/gpu/gpu.sh         # an interpreter that has torch and tinylm's needs
#
# Without PY it installs into .venv-gpu: torch 2.13.0 from PyPI, whose Linux x86-64 wheel is a
# CUDA build (the CUDA libraries come as nvidia-* wheels), then tinylm itself. Runs go to
# runs/gpu/<name> (RUNS=... to change); a run directory whose corpus and token files are
# already there (made by the same tinylm) skips those stages, so the GPU machine needs no
# corpus of its own. A run that fails is reported and the others go on.
set -uo pipefail
cd "$(dirname "$0")/../.."
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
RUNS=${RUNS:-runs/gpu}
RESULTS=${RESULTS:-benchmarks/gpu/gpu.json}
PY=${PY:-.venv-gpu/bin/python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} PYTHONUNBUFFERED=1

if ! command -v "$PY" >/dev/null; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install --quiet --upgrade pip
  .venv-gpu/bin/pip install --quiet torch==2.13.0
  .venv-gpu/bin/pip install --quiet -e .
fi
mkdir -p "$RUNS"
LINES="$RUNS/results.jsonl"
: > "$LINES"
"$PY" - "$LINES" <<'PYEOF' || exit 1
import json, sys, torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA GPU"
gpu = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
       "gpus": torch.cuda.device_count(), "bf16": torch.cuda.is_bf16_supported()}
print(", ".join(f"{k} {v}" for k, v in gpu.items()))
open(sys.argv[1], "a").write(json.dumps({"kind": "machine", **gpu}) + "\n")
PYEOF

start=$SECONDS
"$PY" -m pytest -q -p no:cacheprovider tests/integration/test_cuda.py tests/unit/test_cuda_dispatch.py \
  > "$RUNS/tests.log" 2>&1
code=$?
tail -n 3 "$RUNS/tests.log"
echo "{\"kind\": \"tests\", \"exit_code\": $code, \"summary\": \"$(tail -n 1 "$RUNS/tests.log" | tr -d '"=')\", \"wall_s\": $((SECONDS - start))}" >> "$LINES"

report() {  # run name, wall seconds: one line of figures from training_metrics.json
  "$PY" - "$RUNS/$1" "$2" "$PEAK_TFLOPS" "$LINES" <<'PYEOF'
import json, sys
run, wall, peak = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) * 1e12
m = json.load(open(f"{run}/training_metrics.json"))
steps = [h["tokens_per_second"] for h in m["history"]]  # training steps only, per epoch
rate = steps[-1]  # the last epoch's: the first one's includes torch.compile's compiling
row = {"kind": "train", "run": run.rsplit("/", 1)[-1], "parameters": m["model"]["parameters"],
       "epochs": len(steps), "compile": m["hyperparameters"]["compile"],
       "dtype": m["environment"]["dtype"], "tokens_per_second": round(rate),
       "first_epoch_tokens_per_second": round(steps[0]),
       "mfu": round(rate * m["model"]["flops_per_token"] / peak, 4), "peak_tflops": peak / 1e12,
       "train_seconds": round(m["timing"]["train_seconds"], 1), "wall_seconds": wall,
       "val_bpb": round(m["history"][-1]["val_bpb"], 4)}
print(f"{run}: {row['parameters'] / 1e6:.1f}M parameters, {row['epochs']} epochs, compile "
      f"{row['compile']}, {row['dtype']}: {rate:,.0f} tokens/s, MFU {100 * row['mfu']:.1f}% of "
      f"{peak / 1e12:.0f} TFLOP/s, training {row['train_seconds']:.0f} s, wall {wall:.0f} s, "
      f"val {row['val_bpb']:.3f} bits/byte")
open(sys.argv[4], "a").write(json.dumps(row) + "\n")
PYEOF
}

train() {  # run name, then flags: train on the GPU (its output in RUNS/name.log), report
  local name=$1 start=$SECONDS
  shift
  if ! "$PY" -m tinylm.cli train --device cuda --output-dir "$RUNS/$name" --fresh --no-eval --quiet "$@" \
      > "$RUNS/$name.log" 2>&1; then
    echo "$name failed:"; tail -n 30 "$RUNS/$name.log"
    echo "{\"kind\": \"train\", \"run\": \"$name\", \"failed\": true}" >> "$LINES"
    return
  fi
  report "$name" $((SECONDS - start))
  if grep -q "torch.compile failed" "$RUNS/$name.log"; then
    echo "  torch.compile failed and the run trained eager: see $RUNS/$name.log"
  fi
}

train default --preset default
train large --preset large --epochs 2
[ -d "$RUNS/large-compiled" ] || { [ -d "$RUNS/large/tokens" ] && mkdir -p "$RUNS/large-compiled" \
  && cp -r "$RUNS/large/corpus" "$RUNS/large/tokenizer" "$RUNS/large/tokens" "$RUNS/large-compiled/"; }
train large-compiled --preset large --epochs 2 --compile true
"$PY" - "$RUNS/large/checkpoints/final.pt" "$LINES" <<'PYEOF'
import json, sys
from tinylm.budget import measure_inference
m = measure_inference(sys.argv[1], device="cuda", requests=30)
print(f"large model served from the GPU (batch 1, 16 + 64 tokens): p50 {m['p50_ms']:.1f} ms, "
      f"p95 {m['p95_ms']:.1f} ms, {m['ms_per_token']:.2f} ms/token, "
      f"peak GPU memory {m['peak_gpu_mb']:.0f} MB, peak RSS {m['peak_rss_mb']:.0f} MB")
open(sys.argv[2], "a").write(json.dumps({"kind": "serve", "run": "large", **m}) + "\n")
PYEOF
"$PY" - "$LINES" "$RESULTS" <<'PYEOF'
import json, sys
out = {"train": {}}  # {"machine": .., "tests": .., "train": {run: ..}, "serve": ..}
for row in map(json.loads, open(sys.argv[1])):
    kind = row.pop("kind")
    if kind == "train":
        out["train"][row.pop("run")] = row
    else:
        out[kind] = row
json.dump(out, open(sys.argv[2], "w"), indent=1)
print("results in", sys.argv[2])
PYEOF
