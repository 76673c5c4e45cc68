#!/usr/bin/env bash
# Atlas registration as a floor (issue 15): ANTsPy affine, and affine + SyN, of each support volume onto
# each query volume of a fold, labels warped by nearest neighbour, scored under both protocols: without
# any query label (whole volume, as `medfss segment --method registration` outputs) and restricted to the
# query's ground-truth organ slices (the literature's protocol). Registrations are cached in
# runs/registration-cache, so the second protocol and later runs reuse them.
# Usage: bash scripts/registration_tables.sh DATASET FOLDS SUPPORTS [TRANSFORMS], e.g.
#   bash scripts/registration_tables.sh CHAOST2 0,1,2,3,4 0,1,2,3 "affine syn"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dataset=$1 folds=$2 supports=$3 transforms=${4:-affine syn}
for transform in $transforms; do
  for extent in estimated gt; do
    suffix=$([ "$extent" = gt ] && echo "" || echo "-extent-estimated")
    .venv/bin/medfss evaluate --model registration --registration-transform "$transform" \
      --registration-cache runs/registration-cache --dataset "$dataset" --folds "$folds" --support-index "$supports" \
      --extent "$extent" --quiet --label "registration ($transform)" \
      --out "results/floors/registration-$transform/$dataset-setting1$suffix"
  done
done
