#!/usr/bin/env bash
# ADNet's supervoxel sizes on CHAOST2, chosen per test fold on the inner validation split of setting 1
# (issue 16): one size (the preset's 5000 voxels) or two mixed (5000 and 20000 voxels, segments 200
# and 50: --set 'data.pseudolabel_scales=[1, 4]'). No test fold takes part in its own choice.
#
#   bash scripts/adnet_supervoxel_scales.sh
#
# 1. each candidate's inner models and scores (INNER=1 scripts/cpu_tables.sh): fold F's model trains
#    without folds F and F + 1 and is scored on F + 1, into results/adnet_cpu[-scales-1-4]-inner/;
# 2. per test fold, the candidate best on its validation fold (scripts/choose_on_inner.py), written to
#    results/adnet_cpu-scales-1-4-inner/CHAOST2-setting1/choice.json;
# 3. the chosen candidate's model of each fold (trained on all of the fold's training volumes; the
#    preset's own are reused) is linked into runs/adnet_cpu-inner-choice/ and the five are scored on
#    their test folds into results/adnet_cpu-inner-choice/CHAOST2-settingS/, in setting 1 and, with
#    the same choice per fold (made in setting 1: the sizes are a property of the supervoxels, not of
#    the slices a setting drops), in setting 2 (SETTINGS="1 2" by default).
# Inner and final results already in results/ are reused (delete them to score again); trained models are reused
# as everywhere, so the candidates can be trained side by side first (INNER=1 TRAIN_ONLY=1 OMP_NUM_THREADS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
folds=0,1,2,3,4
scales=(--set 'data.pseudolabel_scales=[1, 4]')
inner=results/adnet_cpu-inner/CHAOST2-setting1 inner_scales=results/adnet_cpu-scales-1-4-inner/CHAOST2-setting1
[ -f $inner/results.json ] || INNER=1 bash scripts/cpu_tables.sh adnet CHAOST2 1 $folds
[ -f $inner_scales/results.json ] || INNER=1 TAG=scales-1-4 bash scripts/cpu_tables.sh adnet CHAOST2 1 $folds "${scales[@]}"
choice=results/adnet_cpu-scales-1-4-inner/CHAOST2-setting1/choice.json
.venv/bin/python scripts/choose_on_inner.py $choice adnet_cpu=$inner adnet_cpu-scales-1-4=$inner_scales
for setting in ${SETTINGS:-1 2}; do
  linked=runs/adnet_cpu-inner-choice/CHAOST2-setting$setting out=results/adnet_cpu-inner-choice/CHAOST2-setting$setting
  mkdir -p "$linked"
  for fold in ${folds//,/ }; do
    chosen=$(.venv/bin/python -c "import json, sys
print(json.load(open(sys.argv[1]))['folds'][sys.argv[2]]['choice'])" $choice "$fold")
    if [ "$chosen" = adnet_cpu ]; then
      TRAIN_ONLY=1 bash scripts/cpu_tables.sh adnet CHAOST2 "$setting" "$fold"
    else
      TRAIN_ONLY=1 TAG=scales-1-4 bash scripts/cpu_tables.sh adnet CHAOST2 "$setting" "$fold" "${scales[@]}"
    fi
    runs=(fold$fold)
    [ "$setting" = 2 ] && runs=(upper-fold$fold lower-fold$fold)
    for run in "${runs[@]}"; do ln -sfn "../../$chosen/CHAOST2-setting$setting/$run" "$linked/$run"; done
  done
  checkpoint="$linked/fold{fold}/model.pt"
  [ "$setting" = 2 ] && checkpoint="$linked/{group}-fold{fold}/model.pt"
  [ -f $out/results.json ] || .venv/bin/medfss evaluate --model adnet --checkpoint "$checkpoint" --dataset CHAOST2 \
    --setting "$setting" --folds $folds --support-index 0,1,2,3 --quiet \
    --label "adnet (CPU preset, self-supervised), supervoxel sizes chosen per fold on the inner split ($choice)" \
    --out $out
done
.venv/bin/medfss report results --out results/README.md
