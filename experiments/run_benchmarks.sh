#!/usr/bin/env bash
# The runs behind docs/benchmarks.md, one at a time (each writes experiments/results/NAME.json).
# DATA: the folder holding the test sets.
# Usage: DATA=../shared/data/test experiments/run_benchmarks.sh [baselines|emt|default|hybrids|compactir]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to the folder holding the test sets}"
out=experiments/results
bench() { python -m adaptir_cli bench --data "$DATA" -q "$@"; }

baselines() {
    for task in sr2 sr3 sr4 lr4-noise30 lr4-jpeg30; do
        bench --task "$task" --dataset Set5 --dataset Set14 --dataset B100 --baseline-only --json "$out/baseline_$task.json"
    done
    for sigma in 15 25 50; do
        bench --task denoise --sigma "$sigma" --dataset CBSD68 --dataset McMaster --dataset Set12 --baseline-only \
            --json "$out/baseline_denoise$sigma.json"
    done
    bench --task derain --dataset Rain100L --baseline-only --json "$out/baseline_derain.json"
}

# The shipped EMT bases: the default of sr2/sr3/sr4 (the bundled files hold the published tensors unchanged).
emt() {
    for scale in 4 3 2; do
        bench --task "sr$scale" --dataset Set5 --dataset Set14 --dataset B100 --base "emt-x$scale" \
            --device cpu --json "$out/emt_x$scale.json"
    done
}

# What restore uses without --base for the x1 tasks but light rain (the CompactIR x1 base and its
# shipped adapters), beside the degraded inputs: denoising at the three levels of the targets on
# CBSD68 and gray sigma 25 on Set12; Rain100L with its bare derain head and its heavy-rain adapter,
# below the first base's derain adapter, which stays the derain default (compactir() scores it).
# Low light and heavy rain have no test pairs here (LOL, Rain100H): they are scored on synthetic
# degradations of clean sets the base never saw.
default() {
    for sigma in 15 30 50; do
        bench --task denoise --sigma "$sigma" --dataset CBSD68 --baseline --json "$out/default_denoise$sigma.json"
    done
    bench --task denoise --sigma 25 --dataset Set12 --baseline --json "$out/default_denoise25_set12.json"
    # --force: the heavy-rain adapter was trained for derain-heavy; here it runs on light rain
    bench --task derain --dataset Rain100L --baseline --base compactir-x1 --adapter '' \
        --adapter compactir-x1-derain-heavy --force --json "$out/compactir-x1_derain.json"
    bench --task lowlight --dataset McMaster --baseline --json "$out/default_lowlight.json"
    bench --task derain-heavy --dataset CBSD68 --baseline --json "$out/default_derain-heavy.json"
}

# The x4 hybrids' defaults: the shipped AdaptIR adapters on the frozen EMT x4; lr4-jpeg30 beside
# EMT x4 without its adapter (on lr4-noise30 the bare EMT is below bicubic, 19.8 dB on Set5).
hybrids() {
    bench --task lr4-noise30 --dataset Set5 --dataset Set14 --dataset B100 --baseline --json "$out/default_lr4-noise30.json"
    bench --task lr4-jpeg30 --dataset Set5 --dataset Set14 --dataset B100 --baseline --adapter '' \
        --adapter emt-x4-lr4-jpeg30 --json "$out/default_lr4-jpeg30.json"
}

# The first CompactIR base (compactir-default, the x1 default until compactir-x1 shipped, and still
# the derain default with its derain adapter): its x1 tasks with its adapters, its own super-resolution heads (the default for sr2/sr4 until EMT shipped) and its
# x4-hybrid adapters (the default of lr4-noise30/lr4-jpeg30 until the EMT x4 adapters shipped).
compactir() {
    local first=(--base compactir-default --baseline)
    bench "${first[@]}" --task denoise --sigma 30 --dataset CBSD68 --json "$out/compactir_denoise30.json"
    bench "${first[@]}" --task derain --dataset Rain100L --adapter '' --adapter compactir-default-derain-heavy \
        --adapter compactir-default-derain --force --json "$out/compactir_derain.json"
    bench "${first[@]}" --task lowlight --dataset McMaster --json "$out/compactir_lowlight.json"
    bench "${first[@]}" --task derain-heavy --dataset CBSD68 --json "$out/compactir_derain-heavy.json"
    for task in sr2 sr4; do
        bench "${first[@]}" --task "$task" --dataset Set5 --dataset Set14 --dataset B100 --json "$out/default_$task.json"
    done
    for task in lr4-noise30 lr4-jpeg30; do
        bench "${first[@]}" --task "$task" --dataset Set5 --dataset Set14 --dataset B100 --json "$out/compactir_$task.json"
    done
}

"${1:-baselines}"
