#!/usr/bin/env bash
# A model's CPU preset or one variant of it, chosen per test fold on CHAOST2's inner validation split,
# then scored on the test folds (issue 16). No test fold takes part in its own choice.
# For the self-supervised presets (one model per fold in setting 1, per fold and test group in setting 2).
#
#   [CHOICE_SETTING=1|2 [PER_GROUP=1]] bash scripts/inner_choice.sh MODEL TAG --set KEY=VALUE [--set ...]
#   e.g. bash scripts/inner_choice.sh adnet scales-1-4 --set 'data.pseudolabel_scales=[1, 4]'
#        bash scripts/inner_choice.sh apscl no-mgd --set model.options.mgd=false
#
# 1. both candidates' inner models and scores (INNER=1 scripts/cpu_tables.sh) in setting CHOICE_SETTING
#    (default 1): fold F's model (in setting 2 one per test group, trained without any slice of the group)
#    trains without folds F and F + 1 and is scored on F + 1, into results/MODEL_cpu-inner/ and
#    results/MODEL_cpu-TAG-inner/;
# 2. per test fold, the candidate best on its validation fold (scripts/choose_on_inner.py), written to
#    results/MODEL_cpu-TAG-inner/CHAOST2-settingS/choice.json (recomputed only when an inner score is newer);
# 3. the chosen candidate's model of each fold (trained on all of the fold's training volumes; finished
#    models are reused) is linked into runs/NAME/ and the five are scored on their test folds into
#    results/NAME/CHAOST2-settingS/, in the settings of SETTINGS. Chosen in setting 1: NAME is
#    MODEL_cpu-TAG-choice and SETTINGS "1 2" (setting 2 takes setting 1's choice per fold); chosen in
#    setting 2: MODEL_cpu-TAG-setting2-choice and "2". Either can be set.
# PER_GROUP=1 chooses per test fold and group, on the group's classes of the inner split, and scores setting 2
# only, where each group has its own model (choice-per-group.json; NAME MODEL_cpu-TAG-setting2-choice-per-group
# when chosen on setting 2's inner split, MODEL_cpu-TAG-choice-per-group when chosen on setting 1's, whose
# inner models saw every class: the cheaper proxy, no setting-2 inner model to train).
# Inner and final results already in results/ are reused (delete them to score again); trained models are
# reused as everywhere, so the candidates can be trained side by side first
# (INNER=1 TRAIN_ONLY=1 OMP_NUM_THREADS=1 bash scripts/cpu_tables.sh MODEL CHAOST2 S ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then sed -n 6,8p "$0" >&2; exit 2; fi
model=$1 tag=$2
shift 2
folds=0,1,2,3,4
preset=${model}_cpu candidate=${model}_cpu-$tag
chosen_in=${CHOICE_SETTING:-1}
inner=results/$preset-inner/CHAOST2-setting$chosen_in inner_candidate=results/$candidate-inner/CHAOST2-setting$chosen_in
[ -f "$inner/results.json" ] || INNER=1 bash scripts/cpu_tables.sh "$model" CHAOST2 "$chosen_in" $folds
[ -f "$inner_candidate/results.json" ] ||
  INNER=1 TAG=$tag bash scripts/cpu_tables.sh "$model" CHAOST2 "$chosen_in" $folds "$@"
choice=$inner_candidate/choice.json name=${NAME:-$candidate-choice} settings=${SETTINGS:-1 2} per_group=()
[ "$chosen_in" = 2 ] && name=${NAME:-$candidate-setting2-choice} settings=${SETTINGS:-2}
if [ -n "${PER_GROUP:-}" ]; then
  [ "$chosen_in" = 1 ] && settings=${SETTINGS:-2}
  if [ "$settings" != 2 ]; then
    echo "inner_choice.sh: PER_GROUP=1 scores setting 2 only (SETTINGS=2: groups have their own models there)" >&2
    exit 2
  fi
  name=${NAME:-$candidate-choice-per-group}
  [ "$chosen_in" = 2 ] && name=${NAME:-$candidate-setting2-choice-per-group}
  choice=$inner_candidate/choice-per-group.json per_group=(--per-group)
fi
if [ ! "$choice" -nt "$inner/results.json" ] || [ ! "$choice" -nt "$inner_candidate/results.json" ]; then
  .venv/bin/python scripts/choose_on_inner.py "${per_group[@]}" "$choice" "$preset=$inner" "$candidate=$inner_candidate"
fi
chosen_for() {  # fold [group]: the candidate chosen for that fold's model (of that group, when chosen per group)
  .venv/bin/python -c "import json, sys
fold = json.load(open(sys.argv[1]))['folds'][sys.argv[2]]
print(fold['groups'][sys.argv[3]]['choice'] if sys.argv[3:] else fold['choice'])" "$choice" "$@"
}
for setting in $settings; do
  linked=runs/$name/CHAOST2-setting$setting out=results/$name/CHAOST2-setting$setting
  mkdir -p "$linked"
  for fold in ${folds//,/ }; do
    groups=("")
    [ "$setting" = 2 ] && groups=(upper lower)
    for group in "${groups[@]}"; do
      chosen=$(chosen_for "$fold" ${per_group:+$group})
      if [ "$chosen" = "$preset" ]; then
        GROUP=$group TRAIN_ONLY=1 bash scripts/cpu_tables.sh "$model" CHAOST2 "$setting" "$fold"
      else
        GROUP=$group TRAIN_ONLY=1 TAG=$tag bash scripts/cpu_tables.sh "$model" CHAOST2 "$setting" "$fold" "$@"
      fi
      run=${group:+$group-}fold$fold
      ln -sfn "../../$chosen/CHAOST2-setting$setting/$run" "$linked/$run"
    done
  done
  checkpoint="$linked/fold{fold}/model.pt"
  [ "$setting" = 2 ] && checkpoint="$linked/{group}-fold{fold}/model.pt"
  [ -f "$out/results.json" ] || .venv/bin/medfss evaluate --model "$model" --checkpoint "$checkpoint" \
    --dataset CHAOST2 --setting "$setting" --folds $folds --support-index 0,1,2,3 --quiet \
    --label "$model (CPU preset, self-supervised), the preset or $tag ($*) chosen per fold${per_group:+ and group} on the inner split of setting $chosen_in ($choice)" \
    --out "$out"
done
.venv/bin/medfss report results --out results/README.md
