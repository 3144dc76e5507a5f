#!/usr/bin/env bash
# Every test: set up if needed, then pytest (Python core, rpy2/anndata2ri bridge) and the
# R package (testthat, vignettes). Real-data tests read ../shared/data and skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONHASHSEED=0
.venv/bin/python -m pytest tests/python -q "$@"
if [ -f scripts/test_r.sh ]; then
  bash scripts/test_r.sh
fi
