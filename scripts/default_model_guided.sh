#!/usr/bin/env bash
# The bundled default model with registration guidance at GuidanceConfig's defaults (what `medfss segment` and
# `medfss demo` use) on CHAOST2 fold 0, the fold it never saw, supports 0-3, under both protocols.
# The defaults were chosen on folds 1-4 alone (scripts/guided_tables.sh, fold 0's nested choice).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for extent in estimated gt; do
  suffix=$([ "$extent" = gt ] && echo "" || echo "-extent-estimated")
  .venv/bin/medfss evaluate --model alpnet --checkpoint src/medfss/weights/alpnet_chaost2.pt --dataset CHAOST2 \
    --folds 0 --support-index 0,1,2,3 --extent "$extent" --guidance registration \
    --registration-cache runs/registration-cache --quiet --label "default model + registration guidance (fold 0)" \
    --out "results/default_model_guided/CHAOST2-setting1$suffix"
done
.venv/bin/medfss report results --out results/README.md
