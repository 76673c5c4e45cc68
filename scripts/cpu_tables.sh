#!/usr/bin/env bash
# Train and evaluate one model at a CPU preset for one results table (issue 3's tables).
#
#   bash scripts/cpu_tables.sh MODEL DATASET SETTING FOLDS [--set KEY=VALUE ...]
#   e.g. bash scripts/cpu_tables.sh alpnet CHAOST2 1 0,1,2,3,4
#
# Self-supervised training (superpixel pseudolabels, no manual labels) with configs/MODEL_cpu.yaml,
# one model per fold on the other folds' volumes; in setting 2 one model per fold and test group,
# trained without any slice of that group. Supervised training (data.supervision: supervised in the
# preset or in a --set, e.g. APSCL as its paper trains it) uses the manual labels of the other classes:
# one model per fold and test group in both settings (CMR, which has no groups: one per class), so no
# test class is ever a training label, e.g.
#   TAG=supervised bash scripts/cpu_tables.sh apscl CHAOST2 1 0 --set data.supervision=supervised
# Runs live in runs/ (not committed) and resume where
# they stopped; finished runs are reused. The evaluation sweeps every support volume of each fold
# and writes results/MODEL_cpu/DATASET-settingS/results.json, then results/README.md is regenerated.
# Experiments: TAG=name with extra --set overrides writes runs/ and results/MODEL_cpu-TAG/ instead, e.g.
#   TAG=no-align bash scripts/cpu_tables.sh alpnet CHAOST2 1 0 --set model.options.align_weight=0
# TRAIN_ONLY=1 trains and stops, so that folds can train side by side (one thread each) before one
# evaluation of all of them:
#   for f in 0,2,4 1,3; do TRAIN_ONLY=1 OMP_NUM_THREADS=1 bash scripts/cpu_tables.sh lmsnet CHAOST2 1 $f & done; wait
#   bash scripts/cpu_tables.sh lmsnet CHAOST2 1 0,1,2,3,4
# GROUP=upper (with TRAIN_ONLY=1) trains only that test group's models, so groups can train side by side.
# PARTIAL=1 trains nothing and evaluates a snapshot of each run's last training checkpoint (a run cut
# short by the time it had), into results/MODEL_cpu[-TAG]-partial/ labelled with the steps done;
# SUPPORTS=0 narrows the support sweep; GROUP also narrows the evaluated classes to that group's.
# INNER=1 is the inner validation split on which settings are chosen, never on a test fold: fold F's
# model trains without fold F and without the next fold V (data.validation_fold), in runs/.../inner-valV
# ({group}-inner-valV), and the evaluation scores fold V with it, into results/MODEL_cpu[-TAG]-inner/.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 dataset=$2 setting=$3 folds=$4
shift 4
preset=configs/${model}_cpu.yaml
name=${model}_cpu${TAG:+-$TAG}
runs=runs/$name/${dataset}-setting${setting}
case $dataset in CHAOST2) supports=0,1,2,3 ;; CMR) supports=0,1,2,3,4,5,6 ;; *) supports=0 ;; esac
supports=${SUPPORTS:-$supports}
common=(--config "$preset" --set "data.dataset=$dataset" --set "data.cache_dir=runs/superpixels" "$@")

train() {  # run_dir, extra overrides...
  local dir=$1; shift
  if [ -f "$dir/model.pt" ]; then echo "reusing $dir/model.pt"; return; fi
  .venv/bin/medfss train "${common[@]}" "$@" --run-dir "$dir" --resume auto
}

supervision=$(sed -n 's/^ *supervision: *\([a-z]*\).*/\1/p' "$preset")  # --set data.supervision=... wins
for arg in "$@"; do case $arg in data.supervision=*) supervision=${arg#data.supervision=} ;; esac; done
supervised= kind=self-supervised
[ "$supervision" = supervised ] && supervised=1 kind=supervised
case $dataset in
  CMR) groups=("LV-BP:[LV-BP]" "LV-MYO:[LV-MYO]" "RV:[RV]") ;;
  *) groups=("upper:[liver, spleen]" "lower:[left_kidney, right_kidney]") ;;
esac
per_group=
[ "$setting" = 2 ] || [ -n "$supervised" ] && per_group=1

groups_of_run() {  # the run folders of one fold
  if [ -z "$per_group" ]; then echo "$runs/fold$1"; return; fi
  for group in "${groups[@]}"; do
    [ -n "${GROUP:-}" ] && [ "${group%%:*}" != "$GROUP" ] && continue
    echo "$runs/${group%%:*}-fold$1"
  done
}

classes=()  # GROUP narrows the evaluation to that group's classes
if [ -n "${GROUP:-}" ]; then
  for group in "${groups[@]}"; do
    [ "${group%%:*}" = "$GROUP" ] && classes=(--classes "$(echo "${group#*:}" | tr -d '[] ')")
  done
fi

if [ -n "${PARTIAL:-}" ]; then
  steps=()
  for fold in ${folds//,/ }; do
    for dir in $(groups_of_run "$fold"); do
      cp "$dir/checkpoints/last.ckpt" "$dir/checkpoints/partial.ckpt"
      steps+=("$(basename "$dir"):$(.venv/bin/python -c "import sys, torch
print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['global_step'])" "$dir/checkpoints/partial.ckpt")")
    done
  done
  checkpoint="$runs/fold{fold}/checkpoints/partial.ckpt"
  [ -n "$per_group" ] && checkpoint="$runs/{group}-fold{fold}/checkpoints/partial.ckpt"
  .venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" --dataset "$dataset" \
    --setting "$setting" --folds "$folds" --support-index "$supports" --quiet "${classes[@]}" \
    --label "$model (CPU preset, $kind${TAG:+, $TAG: $*}; PARTIAL, steps done of $(grep -o 'iterations: [0-9]*' "$preset" | grep -o '[0-9]*'): ${steps[*]})" \
    --out "results/$name-partial/${dataset}-setting${setting}"
  .venv/bin/medfss report results --out results/README.md
  exit 0
fi

run=fold inner=() scored=$folds out=results/$name/${dataset}-setting${setting} what=
if [ -n "${INNER:-}" ]; then
  n_folds=$(.venv/bin/python -c "from medfss.data.datasets import Dataset
print(Dataset.from_name('$dataset').spec.n_folds)")
  run=inner-val scored= out=results/$name-inner/${dataset}-setting${setting} what=", inner validation"
fi
for fold in ${folds//,/ }; do
  dir=fold$fold
  if [ -n "${INNER:-}" ]; then
    validation=$(( (fold + 1) % n_folds ))
    dir=inner-val$validation inner=(--set "data.validation_fold=$validation") scored=${scored:+$scored,}$validation
  fi
  if [ -z "$per_group" ]; then
    train "$runs/$dir" --set "data.fold=$fold" "${inner[@]}"
  else
    for group in "${groups[@]}"; do
      [ -n "${GROUP:-}" ] && [ "${group%%:*}" != "$GROUP" ] && continue
      train "$runs/${group%%:*}-$dir" --set "data.fold=$fold" "${inner[@]}" --set "data.setting=$setting" \
        --set "data.test_classes=${group#*:}"
    done
  fi
done

[ -n "${TRAIN_ONLY:-}" ] && exit 0

checkpoint="$runs/$run{fold}/model.pt"
[ -n "$per_group" ] && checkpoint="$runs/{group}-$run{fold}/model.pt"
.venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" --dataset "$dataset" \
  --setting "$setting" --folds "$scored" --support-index "$supports" --quiet "${classes[@]}" \
  --label "$model (CPU preset, $kind$what${TAG:+, $TAG: $*})" --out "$out"
.venv/bin/medfss report results --out results/README.md
