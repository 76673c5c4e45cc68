#!/usr/bin/env bash
# How the learned fusion of registration guidance was designed (medfss.registration.fusion), on the folds
# the bundled default model trained on (CHAOST2 folds 1-4, supports 0-1, no query label), never on fold 0:
#
#   bash scripts/fusion_design.sh
#
# For each feature set, `medfss select-guidance --fusion learned` fits every fold's fusion on the other three
# folds and `medfss evaluate --guidance-selection` scores each fold with its own fit (nested cross-validation):
# all features (the fit of scripts/default_model.sh, reused), without the query's appearance model, and
# without the network. Beside them: registration alone on the same pairs, and the average fusion's nested
# choice (results/default_model/guidance/selection.json, made earlier on the same folds and supports).
# Everything lands in results/fusion_design/; the bundled model saw these folds' images in training, not
# their labels.
set -euo pipefail
cd "$(dirname "$0")/.."
model=src/medfss/weights/alpnet_chaost2.pt
common=(--dataset CHAOST2 --folds 1,2,3,4 --support-index 0,1 --registration-cache runs/registration-cache --quiet)
all=network_registered,network_chunks,prior_0mm,prior_2.5mm,prior_5mm,prior_10mm,signed_distance_cm
declare -A variants=(
  [no-appearance]="$all,network_x_prior"
  [no-network]="prior_0mm,prior_2.5mm,prior_5mm,prior_10mm,signed_distance_cm,appearance_log_ratio"
)
for name in all no-appearance no-network; do
  out=results/fusion_design/$name
  if [ "$name" = all ]; then
    selection=results/default_model/guidance-learned/selection.json
    [ -f "$selection" ] || { echo "run scripts/default_model.sh first (it fits $selection)" >&2; exit 2; }
  else
    selection=$out/selection.json
    .venv/bin/medfss select-guidance --model alpnet --checkpoint "$model" "${common[@]}" --fusion learned \
      --fusion-features "${variants[$name]}" --out "$out"
  fi
  .venv/bin/medfss evaluate --model alpnet --checkpoint "$model" "${common[@]}" --extent estimated \
    --guidance registration --guidance-selection "$selection" \
    --label "default model + learned fusion ($name), fitted per fold on the other folds 1-4" --out "$out"
done
.venv/bin/medfss evaluate --model registration "${common[@]}" --extent estimated --label "registration (syn)" \
  --out results/fusion_design/registration-syn
.venv/bin/medfss report results --out results/README.md
