#!/usr/bin/env bash
# Registration-guided few-shot segmentation (issue 15), one model at its CPU preset on one data set:
#
#   bash scripts/guided_tables.sh MODEL DATASET FOLDS SUPPORTS [SELECTION]
#   e.g. bash scripts/guided_tables.sh alpnet CHAOST2 0,1,2,3,4 0,1,2,3
#
# 1. one model per fold (scripts/cpu_tables.sh, reused when trained) and the registration of every
#    support onto every query (cached in runs/registration-cache, as scripts/registration_tables.sh);
# 2. without SELECTION: `medfss select-guidance` sweeps the fusion grid on the tool's output (no query
#    label) and chooses each test fold's fusion on the other folds only (nested cross-validation),
#    writing results/guided/MODEL_cpu/DATASET-setting1/selection.json;
#    with SELECTION (a selection.json made on another data set): nothing is chosen on this one;
# 3. `medfss evaluate --guidance registration --guidance-selection` scores every fold with its choice
#    (SELECTION: every fold with that data set's best-overall choice) under both protocols, beside the same models
#    without guidance (the position rule) and registration alone, on the same folds and supports, into
#    results/guided/{MODEL_cpu,MODEL_cpu-position,registration-syn}/DATASET-setting1[-extent-estimated]/.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 dataset=$2 folds=$3 supports=$4 selection=${5:-}
runs=runs/${model}_cpu/${dataset}-setting1
out=results/guided/${model}_cpu/${dataset}-setting1
checkpoint="$runs/fold{fold}/model.pt"
SUPPORTS=$supports TRAIN_ONLY=1 bash scripts/cpu_tables.sh "$model" "$dataset" 1 "$folds"
cache=(--registration-cache runs/registration-cache)
protocol=(--dataset "$dataset" --folds "$folds" --support-index "$supports" --quiet)
if [ -z "$selection" ]; then
  selection=$out/selection.json
  .venv/bin/medfss select-guidance --model "$model" --checkpoint "$checkpoint" "${protocol[@]}" "${cache[@]}" \
    --out "$out"
  label="$model (CPU preset) + registration guidance, chosen per fold on the other folds"
else
  label="$model (CPU preset) + registration guidance, fusion chosen on another data set ($selection)"
fi
for extent in estimated gt; do
  suffix=$([ "$extent" = gt ] && echo "" || echo "-extent-estimated")
  .venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" "${protocol[@]}" --extent "$extent" \
    --guidance registration --guidance-selection "$selection" "${cache[@]}" --label "$label" \
    --out "$out$suffix"
  .venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" "${protocol[@]}" --extent "$extent" \
    --label "$model (CPU preset), same models without guidance" --out "results/guided/${model}_cpu-position/${dataset}-setting1$suffix"
  .venv/bin/medfss evaluate --model registration "${cache[@]}" "${protocol[@]}" --extent "$extent" \
    --label "registration (syn)" --out "results/guided/registration-syn/${dataset}-setting1$suffix"
done
.venv/bin/medfss report results --out results/README.md
