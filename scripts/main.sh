#!/usr/bin/env bash
# The main job: install, then `medfss demo`: segment liver, kidneys and spleen of CHAOST2 patient 2
# from patient 1's labels with the bundled default model (no label of patient 2 is used), print
# per-organ Dice and write outputs/demo/{prediction.nii.gz, overlay.png, summary.json}. Without
# CHAOST2 under the data root ($MEDFSS_DATA_ROOT or ../shared/data) it runs on a synthetic phantom.
# Extra arguments go to `medfss demo` (e.g. --data-root DIR, --query-case 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/medfss demo "$@"
