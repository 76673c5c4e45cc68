#!/usr/bin/env bash
# Reproduce results/floors/: the two no-training floors under the standard protocol,
# 1-way 1-shot, 3 chunks, 5 folds x every support volume of each fold (CHAOST2 folds hold
# 4 volumes, CMR folds 7). A floor does not train, so its setting-2 row equals its setting-1
# row; it is listed under both so every table carries its floors. Then regenerates results/README.md.
# Arguments restrict the data sets: `bash scripts/results_floors.sh CMR`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-results}
run() {  # dataset setting supports
  for model in copy-support intensity-prototype; do
    .venv/bin/medfss evaluate --model "$model" --dataset "$1" --setting "$2" --folds 0,1,2,3,4 \
      --support-index "$3" --quiet --out "$OUT/floors/$model/$1-setting$2"
  done
  if [ "$2" = 1 ]; then  # the floor of `medfss segment`: no query label, organ slices estimated
    .venv/bin/medfss evaluate --model copy-support --dataset "$1" --setting 1 --folds 0,1,2,3,4 \
      --support-index "$3" --extent estimated --quiet --out "$OUT/floors/copy-support/$1-setting1-extent-estimated"
  fi
}
datasets=${*:-CHAOST2 CMR}
for dataset in $datasets; do
  case $dataset in
    CHAOST2) run CHAOST2 1 0,1,2,3; run CHAOST2 2 0,1,2,3 ;;
    CMR) run CMR 1 0,1,2,3,4,5,6 ;;
    *) echo "unknown data set $dataset (CHAOST2 or CMR)" >&2; exit 2 ;;
  esac
done
.venv/bin/medfss report "$OUT" --out "$OUT/README.md"
