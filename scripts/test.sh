#!/usr/bin/env bash
# Install what is needed, then run the default test suite (everything but the 'slow' marker).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `-k protocol`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -m "not slow" -q "$@"
