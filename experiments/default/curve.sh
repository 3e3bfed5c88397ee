#!/usr/bin/env bash
# One point of the x1 campaign's learning curve on the test sets of its targets (docs/training.md):
# the running checkpoint written as a base file (experiments/snapshot.py), then the bench protocol on
# CBSD68 (sigma 15 / 30 / 50, RGB), Set12 (grey, sigma 25) and Rain100L (Y), the bare heads.
# Results: experiments/default/curve/LABEL-SET.json (LABEL: stepN for a checkpoint). Training goes on untouched.
# Usage: experiments/default/curve.sh [CHECKPOINT | BASE.safetensors LABEL]   (ADAPTIR_SHARED: the shared data folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${ADAPTIR_SHARED:-../shared}/data/test"
source="${1:-experiments/default/work/compactir-x1.ckpt}"
if [ "${source##*.}" = safetensors ]; then
    base="$source"
    label="${2:?give a label for a base file, e.g. final}"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    base="$scratch/compactir-x1.safetensors"
    python experiments/snapshot.py "$source" "$base" > /dev/null
    label="step$(python -c "import json, sys; from safetensors import safe_open
with safe_open(sys.argv[1], 'pt') as f: print(json.loads(f.metadata()['adaptir.training'])['step'])" "$base")"
fi
out=experiments/default/curve
mkdir -p "$out"
bench() { adaptir bench --base "$base" --adapter '' --data "$data" -q "$@"; }
for sigma in 15 30 50; do
    bench --task denoise --sigma "$sigma" --dataset CBSD68 --json "$out/$label-cbsd68-s$sigma.json"
done
bench --task denoise --sigma 25 --dataset Set12 --json "$out/$label-set12-s25.json"
bench --task derain --dataset Rain100L --json "$out/$label-rain100l.json"
