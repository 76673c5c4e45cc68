#!/usr/bin/env bash
# A self-supervised CPU preset in CHAOST2 setting 2, retrained by the code of this revision and scored into
# results/MODEL_cpu-retrained/CHAOST2-setting2: the like-with-like baseline for a choice whose models were
# trained later than the preset's committed row (whose runs are not kept). Models in runs/MODEL_cpu are
# reused; missing ones are trained (one at a time: train groups side by side first with
# GROUP=upper|lower TRAIN_ONLY=1 OMP_NUM_THREADS=1 bash scripts/cpu_tables.sh MODEL CHAOST2 2 FOLDS).
#
#   bash scripts/setting2_retrained.sh MODEL
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then sed -n 7p "$0" >&2; exit 2; fi
model=$1
TRAIN_ONLY=1 bash scripts/cpu_tables.sh "$model" CHAOST2 2 0,1,2,3,4
out=results/${model}_cpu-retrained/CHAOST2-setting2
[ -f "$out/results.json" ] || .venv/bin/medfss evaluate --model "$model" \
  --checkpoint "runs/${model}_cpu/CHAOST2-setting2/{group}-fold{fold}/model.pt" --dataset CHAOST2 --setting 2 \
  --folds 0,1,2,3,4 --support-index 0,1,2,3 --quiet \
  --label "$model (CPU preset, self-supervised), retrained beside a later choice's models" --out "$out"
.venv/bin/medfss report results --out results/README.md
