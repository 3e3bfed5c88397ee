#!/usr/bin/env bash
# Reproduces the weights shipped in adaptir_cli/weights/bundled/ (see docs/training.md): the
# CompactIR default base, pre-trained on BSD400 minus the Rain100L backgrounds, on the CPU. Its log
# lands in experiments/default/logs/.
# Usage: experiments/default/train.sh [OUTPUT_DIR]   (ADAPTIR_SHARED: the shared data folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${ADAPTIR_SHARED:-../shared}/data"
out="${1:-adaptir_cli/weights/bundled}"
logs=experiments/default/logs
exclude=experiments/default/rain100l_backgrounds.txt
mkdir -p "$out" "$logs"

adaptir pretrain --gt "$data/train/BSD400" --exclude "$exclude" --tasks sr2,sr3,sr4,denoise,derain \
    --dim 48 --blocks 8 --attention-heads 3 --window 8 --mlp-ratio 2 \
    --steps 10000 --batch 8 --patch 32 --lr 5e-4 --seed 0 --checkpoint-every 1000 --device cpu --workers 1 \
    --quiet --out "$out/compactir-default.safetensors"
mv "$out/compactir-default.json" "$logs/"
