#!/usr/bin/env bash
# Reproduce results/benchmark/cpu.json: speed and peak memory of the CPU presets and the paper
# preset on this machine (run it on an otherwise idle machine), then regenerate results/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/medfss benchmark --config configs/alpnet_cpu.yaml --config configs/panet_cpu.yaml \
  --config configs/alpnet_paper.yaml --config configs/panet_paper.yaml --out results/benchmark/cpu.json "$@"
.venv/bin/medfss report results --out results/README.md
