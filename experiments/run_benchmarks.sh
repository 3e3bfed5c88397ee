#!/usr/bin/env bash
# The runs behind docs/benchmarks.md, one at a time (each writes experiments/results/NAME.json).
# DATA: the folder holding the test sets; WEIGHTS: the folder holding EMT_LSR_x{2,3,4}.pth.
# Usage: DATA=../shared/data/test WEIGHTS=../shared/weights experiments/run_benchmarks.sh [baselines|emt|default]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to the folder holding the test sets}"
out=experiments/results
bench() { python -m adaptir_cli bench --data "$DATA" -q "$@"; }

baselines() {
    for task in sr2 sr3 sr4 lr4-noise30 lr4-jpeg30; do
        bench --task "$task" --dataset Set5 --dataset Set14 --dataset B100 --baseline --json "$out/baseline_$task.json"
    done
    for sigma in 15 25 50; do
        bench --task denoise --sigma "$sigma" --dataset CBSD68 --dataset McMaster --dataset Set12 --baseline \
            --json "$out/baseline_denoise$sigma.json"
    done
    bench --task derain --dataset Rain100L --baseline --json "$out/baseline_derain.json"
}

emt() {
    : "${WEIGHTS:?set WEIGHTS to the folder holding EMT_LSR_x{2,3,4}.pth}"
    for scale in 4 3 2; do
        bench --task "sr$scale" --dataset Set5 --dataset Set14 --dataset B100 --base "$WEIGHTS/EMT_LSR_x$scale.pth" \
            --device cpu --json "$out/emt_x$scale.json"
    done
}

# The shipped default base (what restore uses without --base) and its shipped adapters, beside the degraded inputs. Low light
# and heavy rain have no test pairs here (LOL, Rain100H): they are scored on synthetic degradations
# of clean sets the base never saw.
default() {
    local bundled=adaptir_cli/weights/bundled/compactir-default
    dbench() { bench --base compactir-default "$@"; }
    for task in sr2 sr4; do
        dbench --task "$task" --dataset Set5 --dataset Set14 --dataset B100 --baseline \
            --json "$out/default_$task.json"
    done
    dbench --task denoise --sigma 30 --dataset CBSD68 --baseline --json "$out/default_denoise30.json"
    dbench --task derain --dataset Rain100L --baseline --adapter '' --adapter "$bundled-derain.safetensors" \
        --json "$out/default_derain.json"
    for task in lr4-noise30 lr4-jpeg30; do
        dbench --task "$task" --dataset Set5 --dataset Set14 --dataset B100 --baseline \
            --adapter "$bundled-$task.safetensors" --json "$out/default_$task.json"
    done
    dbench --task lowlight --dataset McMaster --baseline --adapter "$bundled-lowlight.safetensors" \
        --json "$out/default_lowlight.json"
    dbench --task derain-heavy --dataset CBSD68 --baseline --adapter "$bundled-derain-heavy.safetensors" \
        --json "$out/default_derain-heavy.json"
}

"${1:-baselines}"
