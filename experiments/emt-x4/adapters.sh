#!/usr/bin/env bash
# Reproduces the x4-hybrid AdaptIR adapters shipped for the frozen EMT x4 (see docs/training.md):
# trained with `adaptir finetune` on BSD400 minus the Rain100L backgrounds, the degradation made on
# the fly, on the CPU.
#   sweep [TASK]   learning rate and hidden width, 150 steps each, scored on a held-out split
#                  (logs: experiments/emt-x4/sweep/); TASK lr4-noise30 (default) or lr4-jpeg30
#   train TASK...  the shipped adapters with the settings of PLAN below; resumable: rerun the same
#                  command after an interruption and it continues from its checkpoint
# Usage: experiments/emt-x4/adapters.sh sweep [TASK] | train [TASK...]   (ADAPTIR_SHARED: the shared data folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${ADAPTIR_SHARED:-../shared}/data"
base="${BASE:-emt-x4}"
here=experiments/emt-x4
exclude=experiments/default/rain100l_backgrounds.txt
# task, learning rate, hidden width, steps, input patch. lr4-noise30: the sweep's best
# (experiments/emt-x4/sweep/, docs/training.md). lr4-jpeg30: its sweep's best rate (with LayerNorm;
# with BatchNorm 5e-4 diverged, experiments/emt-x4/logs/lr4-jpeg30-lr5e-4-diverged.json), on 32 px
# inputs for more context around the 8 x 8 JPEG blocks. Each log records the settings it ran with.
PLAN=("lr4-noise30 5e-4 32 2000 24" "lr4-jpeg30 5e-4 32 1000 32")
# The adapter's BatchNorm computes differently at inference (docs/training.md): a per-pixel
# LayerNorm instead (150 sweep steps: 21.91 dB against BatchNorm's 21.55, and no gap).
# min_hidden is moot beside --hidden; pinned to the method's own 8 (finetune's default floor is 16)
# so that the run that started before that default changed resumes with the same identity.
METHOD_SET=(--set batch_norm=false --set min_hidden=8)

finetune() {  # task lr hidden steps patch out [extra...]; continues from the run's checkpoint if there is one
    local task=$1 lr=$2 hidden=$3 steps=$4 patch=$5 out=$6
    shift 6
    local resume=()
    [ -f "${out%.safetensors}.ckpt" ] && resume=(--resume)
    # --phase-loss 0: L1 alone, as these adapters were trained before the option existed.
    adaptir finetune --base "$base" --task "$task" --gt "$data/train/BSD400" --exclude "$exclude" \
        --method adaptir --hidden "$hidden" --steps "$steps" --batch 8 --patch "$patch" --lr "$lr" --seed 0 \
        --val-fraction 0.02 --val-crop 48 --phase-loss 0 --device cpu --workers 1 --quiet --out "$out" \
        "${resume[@]}" "$@"
}

case "${1:-}" in
    sweep)
        # lr4-noise30 (with BatchNorm, before batch_norm=false existed): 1e-3 diverged (training
        # loss 0.12 -> 0.22 by step 90), so it looks below it. lr4-jpeg30 (LayerNorm, as shipped):
        # the long run's 2e-4 h32 against a higher rate and a wider adapter.
        task="${2:-lr4-noise30}"
        case "$task" in
            lr4-noise30) settings=("1e-3 16" "5e-4 16" "2e-4 16" "5e-4 32"); extra=(); tag="" ;;
            lr4-jpeg30) settings=("2e-4 32" "5e-4 32" "2e-4 64"); extra=("${METHOD_SET[@]}"); tag="-layernorm" ;;
            *) echo "no sweep for $task" >&2; exit 2 ;;
        esac
        mkdir -p "$here/sweep"
        for setting in "${settings[@]}"; do
            read -r lr hidden <<< "$setting"
            out="$here/sweep/$task-lr$lr-h$hidden$tag.safetensors"
            [ -f "${out%.safetensors}.json" ] && continue
            finetune "$task" "$lr" "$hidden" 150 24 "$out" --val-every 50 --checkpoint-every 50 "${extra[@]}"
            rm -f "$out"  # the sweep keeps its logs, not its adapters
        done
        ;;
    train)
        shift
        mkdir -p "$here/work" "$here/logs"
        for entry in "${PLAN[@]}"; do
            read -r task lr hidden steps patch <<< "$entry"
            if [ $# -gt 0 ] && [[ " $* " != *" $task "* ]]; then continue; fi
            out="$here/work/emt-x4-$task.safetensors"
            finetune "$task" "$lr" "$hidden" "$steps" "$patch" "$out" --val-every 250 --checkpoint-every 50 "${METHOD_SET[@]}"
            cp "${out%.safetensors}.json" "$here/logs/"
        done
        ;;
    *)
        echo "usage: $0 sweep [TASK] | train [TASK...]" >&2
        exit 2
        ;;
esac
