#!/usr/bin/env bash
# How the learned fusion of registration guidance was designed (medfss.registration.fusion), on the folds
# the bundled default model trained on (CHAOST2 folds 1-4, supports 0-1, no query label), never on fold 0:
#
#   bash scripts/fusion_design.sh
#
# For each feature set, `medfss select-guidance --fusion learned` fits every fold's fusion on the other three
# folds and `medfss evaluate --guidance-selection` scores each fold with its own fit (nested cross-validation):
# all features (the fit of scripts/default_model.sh, reused), without the query's appearance model, and
# without the network; then, with all features, the per-class forms: each class its own coefficients where
# the other folds prefer them (per-class), its own threshold chosen for Dice on the other folds (thresholds),
# and both. Beside them: registration alone on the same pairs, and the average fusion's nested choice
# (results/default_model/guidance/selection.json, made earlier on the same folds and supports).
# Everything lands in results/fusion_design/ (a variant already scored is kept: delete it to score again);
# the bundled model saw these folds' images in training, not their labels.
set -euo pipefail
cd "$(dirname "$0")/.."
model=src/medfss/weights/alpnet_chaost2.pt
common=(--dataset CHAOST2 --folds 1,2,3,4 --support-index 0,1 --registration-cache runs/registration-cache --quiet)
all=network_registered,network_chunks,prior_0mm,prior_2.5mm,prior_5mm,prior_10mm,signed_distance_cm
thresholds=0.2,0.3,0.4,0.5,0.6,0.7
declare -A variants=(
  [no-appearance]="--fusion-features $all,network_x_prior"
  [no-network]="--fusion-features prior_0mm,prior_2.5mm,prior_5mm,prior_10mm,signed_distance_cm,appearance_log_ratio"
  [per-class]="--per-class"
  [thresholds]="--class-thresholds $thresholds"
  [per-class-thresholds]="--per-class --class-thresholds $thresholds"
)
for name in all no-appearance no-network per-class-thresholds thresholds per-class; do
  out=results/fusion_design/$name
  [ -f "$out/results.json" ] && continue
  if [ "$name" = all ]; then
    selection=results/default_model/guidance-learned/selection.json
    [ -f "$selection" ] || { echo "run scripts/default_model.sh first (it fits $selection)" >&2; exit 2; }
  else
    selection=$out/selection.json
    # shellcheck disable=SC2086  # a variant's options are words
    .venv/bin/medfss select-guidance --model alpnet --checkpoint "$model" "${common[@]}" --fusion learned \
      ${variants[$name]} --out "$out"
  fi
  .venv/bin/medfss evaluate --model alpnet --checkpoint "$model" "${common[@]}" --extent estimated \
    --guidance registration --guidance-selection "$selection" \
    --label "default model + learned fusion ($name), fitted per fold on the other folds 1-4" --out "$out"
done
[ -f results/fusion_design/registration-syn/results.json ] || .venv/bin/medfss evaluate --model registration \
  "${common[@]}" --extent estimated --label "registration (syn)" --out results/fusion_design/registration-syn
.venv/bin/medfss report results --out results/README.md
