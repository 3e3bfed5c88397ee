#!/usr/bin/env bash
# The x1 base campaign (train_x1.sh) continued on one CUDA GPU for at most MINUTES (default 8),
# inside one call of the device tool; the CPU campaign then resumes from what it leaves.
# Same settings as the CPU run (global batch 16 of 48 px; CompactIR runs fp32 because bf16 moves
# its outputs, see bases/compactir), so the checkpoint's identity matches and the trajectory is the
# one the CPU would have followed, only faster. At the time limit SIGINT makes the loop save a
# checkpoint and stop; the checkpoint and the log are then copied to OUT_DIR.
# Prepare here (the tree that travels is limited to 64 MiB):
#   mkdir -p .gpu-data && cp -r ../shared/data/train/BSD400 .gpu-data/ && echo /.gpu-data/ >> .git/info/exclude
# and on the device (carry .gpu-data and .whl, see docs/training.md):
#   experiments/default/train_x1_gpu.sh "$OUT" 8
# Back here: copy OUT_DIR/compactir-x1.ckpt to experiments/default/work/ and rerun train_x1.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
out_dir="${1:?usage: $0 OUT_DIR [MINUTES]}"
minutes="${2:-8}"
mkdir -p "$out_dir"
export ADAPTIR_SHARED="${ADAPTIR_SHARED:-$PWD/.gpu-data-root}"
if [ ! -d "$ADAPTIR_SHARED/data/train/BSD400" ] && [ -d .gpu-data/BSD400 ]; then
    mkdir -p "$ADAPTIR_SHARED/data/train" && ln -sfn "$PWD/.gpu-data/BSD400" "$ADAPTIR_SHARED/data/train/BSD400"
fi
status=0
DEVICE=cuda timeout --signal=INT --kill-after=60 "$((minutes * 60))" experiments/default/train_x1.sh || status=$?
work=experiments/default/work
cp -f "$work"/compactir-x1.ckpt "$out_dir"/ 2>/dev/null || true
cp -f "$work"/compactir-x1.safetensors experiments/default/logs/compactir-x1.json "$out_dir"/ 2>/dev/null || true
# 124: the time limit stopped it (checkpoint saved); 130: the loop's own "interrupted" exit.
case "$status" in 0|124|130) exit 0 ;; *) exit "$status" ;; esac
