#!/usr/bin/env bash
# Train one semi-supervised model on ACDC with an inner validation split held out, and score it there and on
# val.list (issue 17). Settings of the CPU preset are chosen on the inner split, never on val.list.
#
#   bash scripts/mper_selection.sh MODEL FRACTION SEED TAG [--set KEY=VALUE ...]
#   e.g. bash scripts/mper_selection.sh multi-prototype 0.1 0 emb16 --set model.channels=[16,16,32,64,128]
#
# The inner split (runs/acdc-inner/inner.list, written here) is both frames of the last 10 patients of
# train_slices.list: never labelled at the literature's fractions, left out of training altogether
# (data.holdout_list), scored in 3D from their stacked slices. The run lives in
# runs/mper_acdc_cpu-MODEL-FRACTION-TAG-sSEED/ (not committed; a finished run is reused); the scores go to
# results/mper_inner/<run>/results.json (inner split) and results/<run>/results.json (val.list).
# One torch thread per training (OMP_NUM_THREADS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 fraction=$2 seed=$3 tag=$4
shift 4
name=mper_acdc_cpu-${model}-${fraction}-${tag}-s${seed}
medfss=(.venv/bin/medfss)
[ -x .venv/bin/medfss ] || medfss=(env PYTHONPATH=src "${PYTHON:-python}" -m medfss.cli)
data=${MEDFSS_DATA_ROOT:-../shared/data}/ACDC
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

inner=runs/acdc-inner/inner.list
mkdir -p "$(dirname "$inner")"
tmp=$(mktemp -d)  # runs started side by side each write their own copy, then move it into place
# patients in list order, the last 10, each with both frames as the slice names give them
sed 's/_slice_[0-9]*$//' "$data/train_slices.list" | awk '!seen[$0]++' > "$tmp/frames"
cut -d_ -f1 "$tmp/frames" | awk '!seen[$0]++' | tail -n 10 > "$tmp/patients"
grep -F -f "$tmp/patients" "$tmp/frames" > "$tmp/inner.list"
mv "$tmp/inner.list" "$inner"
rm -r "$tmp"

if [ -f "runs/$name/model.pt" ]; then
  echo "reusing runs/$name/model.pt"
else
  "${medfss[@]}" train --config configs/mper_acdc_cpu.yaml --set "model.name=$model" \
    --set "data.labeled_fraction=$fraction" --set "data.holdout_list=$inner" --set "runtime.seed=$seed" "$@" \
    --run-dir "runs/$name"
fi
label="$model, $(awk "BEGIN{print $fraction*100}") % labelled (mper_acdc_cpu, $tag: ${*:-preset}, seed $seed)"
"${medfss[@]}" evaluate --checkpoint "runs/$name/model.pt" --dataset ACDC --list "$inner" --quiet \
  --label "$label" --out "results/mper_inner/$name"
"${medfss[@]}" evaluate --checkpoint "runs/$name/model.pt" --dataset ACDC --list val.list --quiet \
  --label "$label" --out "results/$name"
