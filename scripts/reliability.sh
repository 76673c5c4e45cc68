#!/usr/bin/env bash
# Reproduce results/reliability/results.json and fuzz_outcomes.md (about 15 minutes on 2 cores):
#   the fuzz sweep: 1,200 hostile NIfTI / DICOM / checkpoint / HDF5 inputs through the readers, segment and
#   prepare in process, and 24 through the medfss command line;
#   SIGKILL at 6 random steps of a tiny training, resumed and compared bit for bit with an uninterrupted run;
#   the peak memory of medfss segment on a 512 x 512 x 600 CT with one support (bundled default model),
#   plain and registration-guided (ANTsPy SyN, a few minutes).
# Exits non-zero when an input crashed or a kill point did not survive. Extra arguments go to
# python -m medfss.reliability (e.g. --fuzz-inputs 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, wherever medfss is installed
OMP_NUM_THREADS=1 .venv/bin/python -m medfss.reliability --out results/reliability "$@"
