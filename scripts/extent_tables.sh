#!/usr/bin/env bash
# The honest counterpart of a setting-1 CPU-preset table (scripts/cpu_tables.sh): the same trained models
# scored with --extent estimated, i.e. the query's organ slices estimated from the support as
# `medfss segment` does, with no query label at all. Writes results/MODEL_cpu/DATASET-setting1-extent-estimated/.
#
#   bash scripts/extent_tables.sh MODEL DATASET FOLDS      e.g. bash scripts/extent_tables.sh alpnet CHAOST2 0,1,2,3,4
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 dataset=$2 folds=$3
case $dataset in CHAOST2) supports=0,1,2,3 ;; CMR) supports=0,1,2,3,4,5,6 ;; *) supports=0 ;; esac
.venv/bin/medfss evaluate --model "$model" --checkpoint "runs/${model}_cpu/${dataset}-setting1/fold{fold}/model.pt" \
  --dataset "$dataset" --setting 1 --folds "$folds" --support-index "$supports" --extent estimated --quiet \
  --label "$model (CPU preset, self-supervised)" --out "results/${model}_cpu/${dataset}-setting1-extent-estimated"
.venv/bin/medfss report results --out results/README.md
