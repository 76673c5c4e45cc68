#!/usr/bin/env bash
# Train (or reuse), evaluate and bundle the default model of `medfss segment` / `medfss demo`:
# ALPNet at the CPU preset, self-supervised on the CHAOST2 images of folds 1-4 (fold 0, the demo's
# patients, held out), scored on fold 0 with the protocol both ways (organ slices from the query's
# ground truth, and estimated without any query label), then copied into src/medfss/weights/ with a
# model card generated from the run and the two evaluations.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/alpnet_cpu/CHAOST2-setting1/fold0  # the fold-0 run of scripts/cpu_tables.sh: same config
if [ ! -f "$run/model.pt" ]; then
  .venv/bin/medfss train --config configs/alpnet_cpu.yaml --set data.dataset=CHAOST2 --set data.fold=0 \
    --set data.cache_dir=runs/superpixels --run-dir "$run" --resume auto
fi
results=()
for extent in gt estimated; do
  out=results/default_model/CHAOST2-setting1-extent-$extent
  .venv/bin/medfss evaluate --model alpnet --checkpoint "$run/model.pt" --dataset CHAOST2 --setting 1 --folds 0 \
    --support-index 0,1,2,3 --extent "$extent" --quiet --label "default model (alpnet CPU preset, fold 0)" --out "$out"
  results+=("$out/results.json")
done
.venv/bin/python -m medfss.weights.bundle "$run" "${results[@]}"
.venv/bin/medfss report results --out results/README.md
