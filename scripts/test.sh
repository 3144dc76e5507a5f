#!/usr/bin/env bash
# Every test: set up if needed, then pytest (Python core, rpy2/anndata2ri bridge) in the
# R package's numpy<2 environment (.venv) and again with NumPy 2 (build/venv-numpy2, what
# Python users outside R get), then the R package (testthat on both Seurat stacks,
# vignettes). Real-data tests read ../shared/data and skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh numpy2
export PYTHONHASHSEED=0
# The R package is installed first: pytest compares its converter with anndata2ri.
mkdir -p build/Rlib build/r-test
R CMD INSTALL --no-multiarch --library=build/Rlib . > build/r-test/install.log 2>&1 || {
  cat build/r-test/install.log >&2; exit 1; }
.venv/bin/python -m pytest tests/python -q "$@"
echo "== pytest again with NumPy 2 (the R converter's side runs in .venv: reticulate 1.28 needs numpy<2)"
REGULARIZEDVI_R_PYTHON="$PWD/.venv/bin/python" build/venv-numpy2/bin/python -m pytest tests/python -q -p no:cacheprovider "$@"
# RVI_TEST_INSTALL=1: testthat also installs the Python core from R into a fresh environment
# (install_regularizedvi(), PyPI) and runs it from a new R session, as a new user would.
RVI_TEST_INSTALL=1 RVI_R_INSTALLED=1 RVI_R_CHECK=1 bash scripts/test_r.sh
