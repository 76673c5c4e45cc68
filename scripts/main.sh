#!/usr/bin/env bash
# The main job: install, then evaluate the two no-training floors with the standard
# protocol (1-way 1-shot, 3 chunks, 5 folds) on CHAOST2 and CMR under the data root
# ($MEDFSS_DATA_ROOT or ../shared/data). Results go to outputs/floors/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for dataset in CHAOST2 CMR; do
  for model in copy-support intensity-prototype; do
    .venv/bin/medfss evaluate --model "$model" --dataset "$dataset" --folds 0,1,2,3,4 \
      --out "outputs/floors/$model/$dataset" "$@"
  done
done
