#!/usr/bin/env bash
# Registration's own settings, chosen on training folds (issue 15: "registration SyN at its best settings").
#
#   [STAGE=candidates|table] bash scripts/registration_settings.sh DATASET SUPPORTS
#   e.g. bash scripts/registration_settings.sh CHAOST2 0,1,2,3
#
# 1. candidates: every candidate setting below registers support 0 of every fold onto the fold's other
#    volumes and is scored without any query label (whole volume), into
#    results/floors/registration-settings/CANDIDATE/DATASET-setting1-extent-estimated/;
# 2. per test fold F, the candidate with the best mean Dice over the other folds' pairs
#    (scripts/choose_on_inner.py --other-folds): fold F's own volumes play no part in its choice, written to
#    results/floors/registration-settings/DATASET-setting1-choice.json;
# 3. table: the chosen candidate scores the full table (all folds, SUPPORTS) under both protocols into
#    results/floors/registration-syn-tuned/DATASET-setting1[-extent-estimated]/. When the folds choose
#    different candidates, each group of folds is scored into its own CANDIDATE subfolder.
# STAGE=candidates stops after step 2, so the data sets' candidates can run side by side (one thread each).
# Registrations are cached in runs/registration-cache (shared with scripts/registration_tables.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then sed -n 4,5p "$0" >&2; exit 2; fi
dataset=$1 supports=$2
folds=0,1,2,3,4
# ANTsPy's default (the floor's row), its full-resolution level added (the default skips it), and the default
# with the warped labels relabelled by joint label fusion's patch search. Cross-correlation (the metric of
# ANTs' SyNCC) was tried and is no candidate: on both stages (--registration-metric CC) it did not finish one
# CMR pair in 17 minutes at one thread, on the SyN stage alone (--registration-syn-metric CC) not in 15 (wall
# time, four jobs sharing the two cores; mattes: about 40 s), beyond any use in `medfss segment`.
declare -A candidates=(
  [syn]="--registration-iterations 40,20,0"
  [syn-full-resolution]="--registration-iterations 40,20,10"
  [syn-jlf]="--registration-iterations 40,20,0 --registration-label-fusion jlf"
)
order=(syn syn-full-resolution syn-jlf)
settings=results/floors/registration-settings

score() {  # CANDIDATE OUT [evaluate options]: registration with the candidate's schedule, unless OUT is scored
  local name=$1 out=$2; shift 2
  # shellcheck disable=SC2086  # the candidate's flags are words
  [ -f "$out/results.json" ] || .venv/bin/medfss evaluate --model registration --registration-transform syn \
    ${candidates[$name]} --registration-cache runs/registration-cache --dataset "$dataset" --quiet --out "$out" "$@"
}

scored=()
for name in "${order[@]}"; do
  out=$settings/$name/$dataset-setting1-extent-estimated
  score "$name" "$out" --folds $folds --support-index 0 --extent estimated \
    --label "registration (syn, ${candidates[$name]}), a candidate setting"
  scored+=("$name=$out")
done
choice=$settings/$dataset-setting1-choice.json
.venv/bin/python scripts/choose_on_inner.py --other-folds "$choice" "${scored[@]}"
[ "${STAGE:-table}" = candidates ] && exit 0
chosen=$(.venv/bin/python -c "import json, sys
choices = json.load(open(sys.argv[1]))['folds']
for name in dict.fromkeys(c['choice'] for c in choices.values()):
    print(name, ','.join(f for f, c in sorted(choices.items()) if c['choice'] == name))" "$choice")
groups=$(wc -l <<< "$chosen")
while read -r name chosen_folds; do
  for extent in estimated gt; do
    out=results/floors/registration-syn-tuned/$dataset-setting1$([ "$extent" = gt ] || echo -extent-estimated)
    [ "$groups" = 1 ] || out=$out/$name
    score "$name" "$out" --folds "$chosen_folds" --support-index "$supports" --extent "$extent" \
      --label "registration (syn), settings chosen per fold on the other folds ($name: ${candidates[$name]}; $choice)"
  done
done <<< "$chosen"
.venv/bin/medfss report results --out results/README.md
