#!/usr/bin/env bash
# ADNet in CHAOST2 setting 2, like with like: the preset everywhere and the per-fold choice of setting 2's
# inner split, scored with the models that the per-group choice uses
# (CHOICE_SETTING=2 PER_GROUP=1 bash scripts/adnet_supervoxel_scales.sh), all trained by the code of one
# revision. The runs of the committed preset and per-fold rows were trained earlier, by code that draws
# other episodes, and are not kept. Models in runs/ are reused; missing ones are trained.
#
#   bash scripts/adnet_setting2_retrained.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN_ONLY=1 bash scripts/cpu_tables.sh adnet CHAOST2 2 0,1,2,3,4
out=results/adnet_cpu-retrained/CHAOST2-setting2
[ -f "$out/results.json" ] || .venv/bin/medfss evaluate --model adnet \
  --checkpoint 'runs/adnet_cpu/CHAOST2-setting2/{group}-fold{fold}/model.pt' --dataset CHAOST2 --setting 2 \
  --folds 0,1,2,3,4 --support-index 0,1,2,3 --quiet \
  --label "adnet (CPU preset, self-supervised), retrained beside the per-group choice's models" --out "$out"
CHOICE_SETTING=2 NAME=adnet_cpu-scales-1-4-setting2-choice-retrained bash scripts/adnet_supervoxel_scales.sh
