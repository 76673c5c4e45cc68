#!/usr/bin/env bash
# Seconds for `medfss segment` of one 256 x 256 x 40 scan from one labelled scan (issue 15's target:
# under 60 s on 2 cores, registration included), with the bundled default model:
#
#   bash scripts/segment_timing.sh [THREADS]   # default: every core
#
# Query CHAOST2 patient 38 (256 x 256 x 40), support patient 1, its four organs, once per guidance
# (registration: the default; position: the network alone; registration cache off, so every run
# registers). Wall seconds count the whole command (interpreter start, imports, reading and writing
# the files); `runtime_s` is segment's own count from its summary. Written to
# results/segment_timing/results.json with the command, machine and revision. Run it on an idle
# machine: the figure is meant for a user's wait.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
data=${MEDFSS_DATA_ROOT:-../shared/data}/CHAOST2
out=results/segment_timing
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
runs=()
for guidance in registration position; do
  start=$EPOCHREALTIME
  OMP_NUM_THREADS=$threads ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=$threads .venv/bin/medfss segment \
    --query "$data/image_38.nii.gz" --support-image "$data/image_1.nii.gz" --support-mask "$data/label_1.nii.gz" \
    --label 1,2,3,4 --guidance "$guidance" --out "$work/$guidance.nii.gz" --summary "$work/$guidance.json" --quiet
  runs+=("$guidance" "$start" "$EPOCHREALTIME" "$work/$guidance.json")
done
mkdir -p "$out"
.venv/bin/python - "$out/results.json" "$data" "$threads" "${runs[@]}" <<'EOF'
import json, sys
import nibabel
from medfss.provenance import provenance
path, data, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
rows = []
for guidance, start, stop, summary in zip(*(runs[i::4] for i in range(4))):
    record = json.load(open(summary))
    rows.append({"guidance": guidance, "wall_s": round(float(stop) - float(start), 1),
                 "runtime_s": round(record["runtime_s"], 1)})
record = {"query": "CHAOST2 image_38.nii.gz", "query_shape": list(nibabel.load(f"{data}/image_38.nii.gz").shape),
          "support": "CHAOST2 image_1.nii.gz, labels 1-4", "threads": threads, "rows": rows,
          "provenance": provenance(["scripts/segment_timing.sh", str(threads)])}
open(path, "w").write(json.dumps(record, indent=2) + "\n")
print(json.dumps(rows))
EOF
