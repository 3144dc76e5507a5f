#!/usr/bin/env bash
# One-time set-up (idempotent): Debian packages for R, a Python 3.11 virtualenv in .venv
# with the Python core (inst/python) and numpy<2, which Debian 12's reticulate 1.28 needs.
# Called by scripts/demo.sh and scripts/test.sh.
#   bash scripts/setup.sh numpy2   also builds build/venv-numpy2: the Python core with
#                                  NumPy 2, where scripts/test.sh runs the Python suite again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v Rscript >/dev/null 2>&1 || need_apt+=(r-base-core)
if ! Rscript -e 'for (p in c("Seurat","SingleCellExperiment","reticulate","testthat","rmarkdown","knitr","roxygen2")) if (!requireNamespace(p, quietly=TRUE)) quit(status=1)' >/dev/null 2>&1; then
  need_apt+=(r-base-core r-base-dev r-cran-seurat r-cran-seuratobject r-bioc-singlecellexperiment
             r-cran-reticulate r-cran-testthat r-cran-knitr r-cran-rmarkdown pandoc r-cran-roxygen2)
fi
python3 -c 'import sys; assert sys.version_info[:2] >= (3, 11)' 2>/dev/null || need_apt+=(python3 python3-venv python3-dev)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# pip, quiet: its output goes to a log, shown (without the machine's notes about absent
# package folders) only when it fails.
pip_install() {
  local log; log=$(mktemp)
  if ! "$1/bin/pip" install -q "${@:2}" >"$log" 2>&1; then
    grep -v "^WARNING: Location '" "$log" >&2; rm -f "$log"
    echo "[setup] pip install ${*:2} failed (above)" >&2; exit 1
  fi
  rm -f "$log"
}

venv() {  # venv DIR STAMP REQUIREMENTS...: create DIR and install into it unless up to date
  local dir=$1 stamp=$1/.regularizedvi-installed; shift
  [ -x "$dir/bin/python" ] || { echo "[setup] creating $dir"; python3 -m venv "$dir"; }
  if [ ! -f "$stamp" ] || [ inst/python/pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
    echo "[setup] installing the Python core and test dependencies into $dir"
    pip_install "$dir" --upgrade pip
    # CPU torch from the machine's wheel; for a GPU see README ("GPU").
    pip_install "$dir" "$@" 'torch==2.13.0'
    pip_install "$dir" "$@" -e './inst/python[test,r]'
    "$dir/bin/python" -c 'import regularizedvi, numpy; print("[setup]", "'"$dir"'", "numpy", numpy.__version__)'
    touch "$stamp"
  fi
}

venv .venv 'numpy<2'
if [ "${1:-}" = "numpy2" ]; then
  venv build/venv-numpy2 'numpy>=2'
fi
