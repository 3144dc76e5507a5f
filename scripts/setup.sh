#!/usr/bin/env bash
# One-time set-up (idempotent): Debian packages for R, a Python 3.11 virtualenv in .venv
# with the pinned Python core. Called by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v Rscript >/dev/null 2>&1 || need_apt+=(r-base-core)
if ! Rscript -e 'for (p in c("Seurat","SingleCellExperiment","reticulate","testthat","rmarkdown","knitr","roxygen2")) if (!requireNamespace(p, quietly=TRUE)) quit(status=1)' >/dev/null 2>&1; then
  need_apt+=(r-base-core r-base-dev r-cran-seurat r-cran-seuratobject r-bioc-singlecellexperiment
             r-cran-reticulate r-cran-testthat r-cran-knitr r-cran-rmarkdown pandoc r-cran-roxygen2)
fi
python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || need_apt+=(python3 python3-venv python3-dev)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.regularizedvi-installed
if [ ! -f "$stamp" ] || [ inst/python/pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "[setup] installing the Python core and test dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  # CPU torch from the machine's wheel; for a GPU see README ("GPU").
  .venv/bin/pip install -q 'numpy<2' 'torch==2.13.0'
  .venv/bin/pip install -q -e './inst/python[test,r]'
  touch "$stamp"
fi
