#!/usr/bin/env bash
# Train and evaluate one semi-supervised model (issue 17, MPER) at a preset and labelled fraction.
#
#   bash scripts/mper_tables.sh PRESET MODEL FRACTION [--set KEY=VALUE ...]
#   e.g. bash scripts/mper_tables.sh mper_acdc_cpu multi-prototype 0.1
#        TAG=no-cont bash scripts/mper_tables.sh mper_acdc_cpu multi-prototype 0.05 --set model.gamma=0
#
# MODEL: supervised-only, mean-teacher-copy-paste or multi-prototype. The run lives in
# runs/PRESET-MODEL-FRACTION[-TAG]/ (not committed; a finished run is reused); the evaluation on the
# validation volumes (ACDC val.list; LA: test.list of the sample) writes
# results/PRESET-MODEL-FRACTION[-TAG]/results.json. One torch thread per training (OMP_NUM_THREADS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=$1 model=$2 fraction=$3
shift 3
name=${preset}-${model}-${fraction}${TAG:+-$TAG}
medfss=(.venv/bin/medfss)
[ -x .venv/bin/medfss ] || medfss=(env PYTHONPATH=src "${PYTHON:-python}" -m medfss.cli)
case $preset in *acdc*) dataset=ACDC list=val.list ;; *) dataset=LA list=test.list ;; esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [ -f "runs/$name/model.pt" ]; then
  echo "reusing runs/$name/model.pt"
else
  "${medfss[@]}" train --config "configs/$preset.yaml" --set "model.name=$model" \
    --set "data.labeled_fraction=$fraction" "$@" --run-dir "runs/$name"
fi
[ -n "${TRAIN_ONLY:-}" ] && exit 0
"${medfss[@]}" evaluate --checkpoint "runs/$name/model.pt" --dataset "$dataset" --list "$list" --quiet \
  --label "$model, $(awk "BEGIN{print $fraction*100}") % labelled (${preset}${TAG:+, $TAG: $*})" --out "results/$name"
"${medfss[@]}" report results --out results/README.md
