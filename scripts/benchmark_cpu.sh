#!/usr/bin/env bash
# Reproduce results/benchmark/*.json on this machine (run it on an otherwise idle machine):
#   cpu.json           speed and peak memory of every CPU preset and the paper presets;
#   lmsnet-K.json      LMS-Net and fLMS-Net (CPU preset) as the number of LMS blocks K grows;
#   lmsnet-Np.json     LMS-Net (CPU preset) as the number of representative prototypes N_p grows;
#   apscl-latent.json  APSCL (CPU preset) as the number of latent factors grows (its Table 4; the paper
#                      preset's cost at 32 factors is in cpu.json);
# then regenerate results/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bench=(.venv/bin/medfss benchmark)
"${bench[@]}" --config configs/alpnet_cpu.yaml --config configs/panet_cpu.yaml --config configs/lmsnet_cpu.yaml \
  --config configs/flmsnet_cpu.yaml --config configs/alpnet_paper.yaml --config configs/panet_paper.yaml \
  --config configs/lmsnet_paper.yaml --config configs/apscl_cpu.yaml --config configs/adnet_cpu.yaml \
  --config configs/apscl_paper.yaml --config configs/adnet_paper.yaml --out results/benchmark/cpu.json "$@"
"${bench[@]}" --config configs/lmsnet_cpu.yaml --config configs/flmsnet_cpu.yaml \
  --sweep model.options.num_blocks=1,2,3,5 --out results/benchmark/lmsnet-K.json "$@"
"${bench[@]}" --config configs/lmsnet_cpu.yaml --sweep model.options.num_prototypes=1,5,10,20,40 \
  --out results/benchmark/lmsnet-Np.json "$@"
"${bench[@]}" --config configs/apscl_cpu.yaml --sweep model.options.latent=8,16,32,64 \
  --out results/benchmark/apscl-latent.json "$@"
.venv/bin/medfss report results --out results/README.md
