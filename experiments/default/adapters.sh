#!/usr/bin/env bash
# Reproduces the AdaptIR adapters shipped in adaptir_cli/weights/bundled/ (see docs/training.md):
# trained with `adaptir finetune` on a frozen CompactIR base, for the tasks the base was not
# pre-trained on, and for light rain, where the adapter beats the bare derain head on Rain100L
# (docs/benchmarks.md), on the CPU. Their logs land in experiments/default/logs/.
# Usage: experiments/default/adapters.sh [OUTPUT_DIR] [TASK...]   (ADAPTIR_SHARED: the shared data folder;
# BASE: the frozen base, a name or a file: compactir-x1, the x1 default, unless set;
# BASE=compactir-default reproduces the first base's adapters)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${ADAPTIR_SHARED:-../shared}/data"
base="${BASE:-compactir-x1}"
name="$(basename "${base%.safetensors}")"
out="${1:-adaptir_cli/weights/bundled}"
shift || true
logs=experiments/default/logs
exclude=experiments/default/rain100l_backgrounds.txt
mkdir -p "$out" "$logs"

# task, steps, input patch, phase loss, degradation: the x4 hybrids run the body at the input size,
# so their patches are smaller. The compactir-default adapters are listed as they were trained:
# the phase loss (issue 14) only for lowlight, where the x1 body's 2-pixel checkerboard showed;
# its derain adapter on rain of varied angle and width (`derain-varied`: 29.61 dB on Rain100L, the
# light preset's adapter before it 28.89; docs/training.md). Adapters for a new base get the finetune
# default phase loss (2; on the derain adapter it moved Rain100L by 0.01 dB). Such a base has only
# x1 heads (the x1 campaign's: denoise, derain), so no x4 hybrids, and no derain adapter: on
# compactir-x1 one trained on varied rain (`derain-varied`, 4000 steps) scored below the bare head on
# Rain100L, and the first base's stays the derain default (experiments/default/x1-derain/).
if [ "$name" = compactir-default ]; then
    plan=("lr4-noise30 2000 24 0 lr4-noise30" "lr4-jpeg30 1000 24 0 lr4-jpeg30" "lowlight 1000 32 8 lowlight"
          "derain-heavy 1000 32 0 derain-heavy" "derain 4000 32 0 derain-varied")
else
    plan=("lowlight 1000 32 8 lowlight" "derain-heavy 1000 32 2 derain-heavy")
fi
for entry in "${plan[@]}"; do
    read -r task steps patch phase degradation <<< "$entry"
    if [ $# -gt 0 ] && [[ " $* " != *" $task "* ]]; then continue; fi
    synthetic=()  # named only when it is not the task's own, as the shipped adapters' logs record
    [ "$degradation" != "$task" ] && synthetic=(--degradation "$degradation")
    adaptir finetune --base "$base" --task "$task" "${synthetic[@]}" --gt "$data/train/BSD400" --exclude "$exclude" \
        --method adaptir --hidden 16 --steps "$steps" --batch 8 --patch "$patch" --lr 5e-4 --phase-loss "$phase" --seed 0 \
        --val-fraction 0.02 --val-crop 48 --val-every 500 --checkpoint-every 250 --device cpu --workers 1 \
        --quiet --out "$out/$name-$task.safetensors"
    mv "$out/$name-$task.json" "$logs/"
done
