#!/usr/bin/env bash
# A second stage for the x1 base (issue 12): train_x1.sh's base continued for 5,000 steps with the
# derain head on rain of varied angle and width (derain-varied) instead of the light-rain preset.
# Why: the campaign's bare derain head scored 29.78 dB on Rain100L at step 4,500 and drifted to
# 27.38 by step 70,130 while its held-out light rain rose to 41 dB: it specialises in the preset's
# streak shape (experiments/default/rain_shape.py), which Rain100L's streaks do not have. Denoising
# goes on as in the campaign (one task drawn per step), at a tenth of the campaign's peak rate; the
# same seed keeps the same held-out images.
# Resumable as train_x1.sh: rerun the same command after an interruption.
# Usage: experiments/default/train_x1_varied.sh   (ADAPTIR_SHARED: the shared data folder; DEVICE: cpu or cuda)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${ADAPTIR_SHARED:-../shared}/data"
work=experiments/default/work
init="$work/compactir-x1.safetensors"
out="$work/compactir-x1-varied.safetensors"
[ -f "$init" ] || { echo "run experiments/default/train_x1.sh first: $init is missing" >&2; exit 1; }
mkdir -p experiments/default/logs
resume=()
[ -f "${out%.safetensors}.ckpt" ] && resume=(--resume)
adaptir pretrain --gt "$data/train/BSD400" --exclude experiments/default/rain100l_backgrounds.txt \
    --init "$init" --tasks denoise,derain=derain-varied --grey-share 0.25 \
    --steps 5000 --batch 16 --patch 48 --lr 5e-5 --warmup 250 --seed 0 \
    --val-fraction 0.02 --val-crop 64 --val-every 1000 --checkpoint-every 500 \
    --device "${DEVICE:-cpu}" --workers 1 --quiet --out "$out" "${resume[@]}"
mv "${out%.safetensors}.json" experiments/default/logs/
