#!/usr/bin/env bash
# Every test: set up if needed, then pytest (Python core, rpy2/anndata2ri bridge) and the
# R package (testthat, vignettes). Real-data tests read ../shared/data and skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONHASHSEED=0
# The R package is installed first: pytest compares its converter with anndata2ri.
mkdir -p build/Rlib build/r-test
R CMD INSTALL --no-multiarch --library=build/Rlib . > build/r-test/install.log 2>&1 || {
  cat build/r-test/install.log >&2; exit 1; }
.venv/bin/python -m pytest tests/python -q "$@"
RVI_R_INSTALLED=1 RVI_R_CHECK=1 bash scripts/test_r.sh
