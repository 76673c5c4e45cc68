#!/usr/bin/env bash
# Choose, train (or reuse), evaluate and bundle the default model of `medfss segment` / `medfss demo`.
# The recipe is the candidate of configs/default_model/candidates.yaml best on CHAOST2 folds 1-4 (the folds
# it trains on; python -m medfss.weights.selection); it is trained self-supervised on the images of folds
# 1-4 (fold 0, the demo's patients, held out) and scored on fold 0 with the protocol both ways (organ
# slices from the query's ground truth, and estimated without any query label), alone and with
# registration guidance at its defaults (the learned fusion fitted on folds 1-4 with this model); then copied into
# src/medfss/weights/ with a model card generated from the selection, the run and the evaluations.
# RESCORE=1 keeps the bundled model (its run folder may be gone) and only fits the fusion, scores fold 0 and
# regenerates the card's scores (python -m medfss.weights.bundle --rescore).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
selection=results/default_model/selection.json
[ -n "${RESCORE:-}" ] || .venv/bin/python -m medfss.weights.selection configs/default_model/candidates.yaml \
  --out "$selection"
chosen() {  # a field of the chosen recipe; a list one item per line
  .venv/bin/python -c "import json, sys; v = json.load(open(sys.argv[1]))['chosen'][sys.argv[2]]
print(*(v if isinstance(v, list) else [v]), sep='\n')" "$selection" "$1"
}
run=$(chosen run_dir) model=$(chosen model)
checkpoint=$run/model.pt
if [ -n "${RESCORE:-}" ]; then
  checkpoint=src/medfss/weights/alpnet_chaost2.pt
elif [ ! -f "$run/model.pt" ]; then
  mapfile -t train_args < <(chosen train_arguments)
  .venv/bin/medfss train "${train_args[@]}"
fi
# registration guidance's learned fusion for this model, fitted on folds 1-4 (the fold-0 scores below use it as
# GuidanceConfig's defaults, which is what `medfss segment` and `medfss demo` use); a fit already made is kept
# unless REFIT=1, so that the run after setting the defaults does not fit again
fit=results/default_model/guidance-learned
if [ -n "${REFIT:-}" ] || [ ! -f "$fit/selection.json" ]; then
  .venv/bin/medfss select-guidance --model "$model" --checkpoint "$checkpoint" --dataset CHAOST2 --folds 1,2,3,4 \
    --support-index 0,1 --fusion learned --registration-cache runs/registration-cache --out "$fit"
fi
.venv/bin/python - <<'EOF'
import json
from medfss.registration.guided import GuidanceConfig
best = json.load(open("results/default_model/guidance-learned/selection.json"))["selection"]["best_overall"]["config"]
if GuidanceConfig(**best) != GuidanceConfig():
    raise SystemExit(f"set GuidanceConfig's defaults (src/medfss/registration/guided.py) to {best}, then rerun")
EOF
results=()
for guidance in position registration; do
  for extent in gt estimated; do
    if [ "$guidance" = position ]; then
      out=results/default_model/CHAOST2-setting1-extent-$extent label="default model (fold 0)"
    else
      out=results/default_model_guided/CHAOST2-setting1$([ "$extent" = gt ] || echo -extent-estimated)
      label="default model + registration guidance (fold 0)"
    fi
    .venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" --dataset CHAOST2 --setting 1 --folds 0 \
      --support-index 0,1,2,3 --extent "$extent" --guidance "$guidance" --registration-cache runs/registration-cache \
      --quiet --label "$label" --out "$out"
    results+=("$out/results.json")
  done
done
if [ -n "${RESCORE:-}" ]; then
  .venv/bin/python -m medfss.weights.bundle --rescore "${results[@]}"
else
  .venv/bin/python -m medfss.weights.bundle "$run" "${results[@]}" --selection "$selection"
fi
.venv/bin/medfss report results --out results/README.md
