#!/usr/bin/env bash
# R side of the test suite: install the R package into build/Rlib, run its testthat
# suite against the installed package and knit the vignettes. Run from the repo root.
# Exits non-zero on any failure.
#   RVI_R_CHECK=1  also runs R CMD build + R CMD check --no-manual (tests and vignettes
#                  are skipped there: they ran just above).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
export RETICULATE_PYTHON="${RETICULATE_PYTHON:-$ROOT/.venv/bin/python}"
export REGULARIZEDVI_ROOT="$ROOT"
RLIB="$ROOT/build/Rlib"
OUT="$ROOT/build/r-test"
mkdir -p "$RLIB" "$OUT"
export R_LIBS="$RLIB${R_LIBS:+:$R_LIBS}"

if ! command -v Rscript >/dev/null 2>&1; then
  echo "test_r.sh: Rscript not found (install r-base-core)" >&2
  exit 1
fi
if [ ! -x "$RETICULATE_PYTHON" ]; then
  echo "test_r.sh: no Python at $RETICULATE_PYTHON (create .venv or set RETICULATE_PYTHON); Python-dependent tests will skip" >&2
fi

echo "== R CMD INSTALL (into build/Rlib)"
start=$(date +%s)
if [ "${RVI_R_INSTALLED:-0}" != "1" ]; then
  R CMD INSTALL --no-multiarch --library="$RLIB" . > "$OUT/install.log" 2>&1 || {
    cat "$OUT/install.log" >&2
    exit 1
  }
fi

echo "== testthat"
Rscript -e '
  suppressMessages(library(testthat))
  options(warn = 1)
  results <- test_dir("tests/testthat", package = "regularizedvi", load_package = "installed",
                      reporter = SummaryReporter$new(show_praise = FALSE), stop_on_failure = FALSE)
  df <- as.data.frame(results)
  cat(sprintf("tests: %d expectations, %d failed, %d errors, %d skipped\n",
              sum(df$nb), sum(df$failed), sum(df$error), sum(df$skipped)))
  if (any(df$failed > 0) || any(df$error)) quit(status = 1)
'

echo "== vignettes"
for rmd in vignettes/*.Rmd; do
  t0=$(date +%s)
  Rscript -e "rmarkdown::render('$rmd', output_dir = '$OUT/vignettes', intermediates_dir = tempdir(), quiet = TRUE, envir = new.env())" \
    > "$OUT/$(basename "$rmd" .Rmd).log" 2>&1 || {
      cat "$OUT/$(basename "$rmd" .Rmd).log" >&2
      echo "test_r.sh: knitting $rmd failed" >&2
      exit 1
    }
  echo "knitted $rmd in $(( $(date +%s) - t0 )) s -> build/r-test/vignettes/"
done

if [ "${RVI_R_CHECK:-0}" = "1" ]; then
  echo "== R CMD build + check"
  (cd "$OUT" && R CMD build --no-build-vignettes "$ROOT" > build.log 2>&1) || { cat "$OUT/build.log" >&2; exit 1; }
  tarball=$(ls -t "$OUT"/regularizedvi_*.tar.gz | head -1)
  (cd "$OUT" && _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual --ignore-vignettes --no-tests "$tarball" > check.log 2>&1) || true
  tail -5 "$OUT/check.log"
  if grep -Eq "^Status: .*(ERROR|WARNING)" "$OUT/check.log"; then
    echo "test_r.sh: R CMD check reported errors or warnings (see build/r-test/check.log)" >&2
    exit 1
  fi
fi
echo "== R side passed in $(( $(date +%s) - start )) s"
