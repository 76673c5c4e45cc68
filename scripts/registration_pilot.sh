#!/usr/bin/env bash
# A pilot of issue 15 on one fold and one support (CHAOST2 fold 0, support index 0: 3 query volumes), the
# bundled default model (fold 0 held out): atlas registration (SyN) alone, the network alone and the network
# guided by registration (GuidanceConfig's defaults, not tuned), each without any query label and with the
# query's ground-truth organ slices. Registrations are cached in runs/registration-cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=results/registration-pilot
common=(--dataset CHAOST2 --folds 0 --support-index 0 --quiet --registration-cache runs/registration-cache)
for extent in estimated gt; do
  .venv/bin/medfss evaluate --model registration "${common[@]}" --extent "$extent" \
    --label "registration (syn), pilot" --out "$out/registration-syn-extent-$extent"
  .venv/bin/medfss evaluate --model alpnet --checkpoint src/medfss/weights/alpnet_chaost2.pt "${common[@]}" \
    --extent "$extent" --label "default model, pilot" --out "$out/alpnet-extent-$extent"
  .venv/bin/medfss evaluate --model alpnet --checkpoint src/medfss/weights/alpnet_chaost2.pt "${common[@]}" \
    --extent "$extent" --guidance registration --label "default model + registration guidance, pilot" \
    --out "$out/alpnet-guided-extent-$extent"
done
