#!/usr/bin/env bash
# The x1 default base, compactir-x1 (issue 12): CompactIR pre-trained for blind denoising (a quarter
# of the samples grey, with grey noise) and synthetic light rain, on BSD400 minus the Rain100L
# backgrounds. 100,000 steps of 16 crops of 48 px: 1.6 M samples, 20x the first default base's 80 K.
# Long on a CPU, so it is resumable: rerun the same command after an interruption (Ctrl-C and
# SIGTERM save a checkpoint; one is also written every 500 steps) and it continues exactly where it
# stopped. Between working sessions the checkpoint and its log are committed under
# experiments/default/work/; the checkpoint is deleted when the base ships.
# Usage: experiments/default/train_x1.sh   (ADAPTIR_SHARED: the shared data folder; DEVICE: cpu or cuda)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${ADAPTIR_SHARED:-../shared}/data"
work=experiments/default/work
out="$work/compactir-x1.safetensors"
mkdir -p "$work" experiments/default/logs
resume=()
[ -f "${out%.safetensors}.ckpt" ] && resume=(--resume)
# Shape chosen for restore time: 10 blocks of width 48 and a 16-channel output-resolution tail
# restore 512 x 512 in about 1.4x the first default's time (benchmarks/base_speed.py).
adaptir pretrain --gt "$data/train/BSD400" --exclude experiments/default/rain100l_backgrounds.txt \
    --tasks denoise,derain --dim 48 --blocks 10 --attention-heads 3 --window 8 --mlp-ratio 2 --refine 16 \
    --grey-share 0.25 --steps 100000 --batch 16 --patch 48 --lr 5e-4 --warmup 1000 --seed 0 \
    --val-fraction 0.02 --val-crop 64 --val-every 2500 --checkpoint-every 500 \
    --device "${DEVICE:-cpu}" --workers 1 --quiet --out "$out" "${resume[@]}"
mv "${out%.safetensors}.json" experiments/default/logs/
