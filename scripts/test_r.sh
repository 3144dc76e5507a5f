#!/usr/bin/env bash
# R side of the test suite, on both Seurat stacks. Run from anywhere; exits non-zero on
# any failure.
#   v4: Debian's Seurat 4.3 / SeuratObject 4.1.3 (system library); the package is
#       installed into build/Rlib.
#   v5: Seurat 5.5.1 / SeuratObject 5.3.0, built from ../shared/r-src into
#       build/Rlib-seurat5 by ../shared/r-src/install.sh (idempotent: seconds when built,
#       ~10 min the first time); the package is installed into build/Rlib-v5, and
#       build/Rlib-seurat5 comes whole and first on .libPaths(). Skipped with a message
#       when ../shared/r-src is absent (a user's machine).
# On each stack: testthat against the installed package, then the vignettes (v4: all but
# the Seurat 5 one; v5: those that load Seurat). Logs and knitted HTML: build/r-test/<stack>/.
#   RVI_R_STACKS="v4 v5"  the stacks to run (default both)
#   RVI_R_INSTALLED=1     the package is already installed in build/Rlib (scripts/test.sh)
#   RVI_R_CHECK=1         also R CMD build + R CMD check --no-manual on the v4 stack
#                         (tests and vignettes are skipped there: they ran just above)
#   RVI_R_BUILD=DIR       where the package libraries and logs go (default build/; the
#                         Seurat 5 library stays in build/Rlib-seurat5)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
export RETICULATE_PYTHON="${RETICULATE_PYTHON:-$ROOT/.venv/bin/python}"
export REGULARIZEDVI_ROOT="$ROOT"
# torch on 1 thread by default: the machines are shared and have 2 cores (2 threads of
# several processes at once slowed a vignette here 7-fold).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
STACKS="${RVI_R_STACKS:-v4 v5}"
BUILD="${RVI_R_BUILD:-$ROOT/build}"
mkdir -p "$BUILD"
BUILD="$(cd "$BUILD" && pwd)"
OUT="$BUILD/r-test"
mkdir -p "$OUT"
start=$(date +%s)

if ! command -v Rscript >/dev/null 2>&1; then
  echo "test_r.sh: Rscript not found (install r-base-core)" >&2
  exit 1
fi
if [ ! -x "$RETICULATE_PYTHON" ]; then
  echo "test_r.sh: no Python at $RETICULATE_PYTHON (create .venv or set RETICULATE_PYTHON); Python-dependent tests will skip" >&2
fi

# run_stack NAME LIBS VIGNETTES...: testthat + vignettes with R_LIBS=LIBS.
run_stack() {
  local name=$1 libs=$2; shift 2
  local out="$OUT/$name" stack_start
  stack_start=$(date +%s)
  mkdir -p "$out/vignettes"
  echo "== [$name] testthat ($(R_LIBS="$libs" Rscript -e 'cat("Seurat", format(utils::packageVersion("Seurat")), "/ SeuratObject", format(utils::packageVersion("SeuratObject")))'))"
  set +e
  R_LIBS="$libs" Rscript -e '
    suppressMessages(library(testthat))
    options(warn = 1)
    results <- test_dir("tests/testthat", package = "regularizedvi", load_package = "installed",
                        reporter = SummaryReporter$new(show_praise = FALSE), stop_on_failure = FALSE)
    df <- as.data.frame(results)
    cat(sprintf("tests: %d expectations, %d failed, %d errors, %d skipped\n",
                sum(df$nb), sum(df$failed), sum(df$error), sum(df$skipped)))
    if (any(df$failed > 0) || any(df$error)) quit(status = 1)
  ' 2>&1 | tee "$out/testthat.log" | grep -v -e "^$"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || { echo "test_r.sh: testthat failed on the $name stack ($out/testthat.log)" >&2; exit 1; }
  echo "== [$name] vignettes"
  local rmd t0 log
  for rmd in "$@"; do
    t0=$(date +%s)
    log="$out/$(basename "$rmd" .Rmd).log"
    R_LIBS="$libs" Rscript -e "rmarkdown::render('$rmd', output_dir = '$out/vignettes', intermediates_dir = tempdir(), quiet = TRUE, envir = new.env())" \
      > "$log" 2>&1 || {
        cat "$log" >&2
        echo "test_r.sh: knitting $rmd failed on the $name stack" >&2
        exit 1
      }
    echo "knitted $rmd in $(( $(date +%s) - t0 )) s -> $out/vignettes/"
  done
  echo "== [$name] passed in $(( $(date +%s) - stack_start )) s"
}

for stack in $STACKS; do
  case "$stack" in
    v4)
      RLIB="$BUILD/Rlib"
      mkdir -p "$RLIB"
      if [ "${RVI_R_INSTALLED:-0}" != "1" ]; then
        echo "== [v4] R CMD INSTALL (into $RLIB)"
        R CMD INSTALL --no-multiarch --library="$RLIB" . > "$OUT/install.log" 2>&1 || {
          cat "$OUT/install.log" >&2; exit 1; }
      fi
      mapfile -t vignettes < <(ls vignettes/*.Rmd | grep -v '/seurat5-')
      run_stack v4 "$RLIB${R_LIBS:+:$R_LIBS}" "${vignettes[@]}"
      ;;
    v5)
      if [ ! -f "$ROOT/../shared/r-src/install.sh" ]; then
        echo "== [v5] skipped: ../shared/r-src (Seurat 5 source tarballs) is absent; the Seurat 5 stack is not tested here"
        continue
      fi
      echo "== [v5] Seurat 5 library (../shared/r-src/install.sh build/Rlib-seurat5 seurat5)"
      t0=$(date +%s)
      bash "$ROOT/../shared/r-src/install.sh" "$ROOT/build/Rlib-seurat5" seurat5 > "$OUT/install-seurat5.log" 2>&1 || {
        cat "$OUT/install-seurat5.log" >&2; echo "test_r.sh: building the Seurat 5 library failed" >&2; exit 1; }
      echo "Seurat 5 library ready in $(( $(date +%s) - t0 )) s"
      RLIB5="$BUILD/Rlib-v5"
      mkdir -p "$RLIB5"
      libs="$RLIB5:$ROOT/build/Rlib-seurat5"
      R_LIBS="$libs" R CMD INSTALL --no-multiarch --library="$RLIB5" . > "$OUT/install-v5.log" 2>&1 || {
        cat "$OUT/install-v5.log" >&2; exit 1; }
      mapfile -t vignettes < <(grep -l 'library(Seurat)' vignettes/*.Rmd)
      run_stack v5 "$libs" "${vignettes[@]}"
      ;;
    *) echo "test_r.sh: unknown stack '$stack' (use v4, v5)" >&2; exit 1 ;;
  esac
done

if [ "${RVI_R_CHECK:-0}" = "1" ]; then
  echo "== R CMD build + check (v4 stack)"
  (cd "$OUT" && R CMD build --no-build-vignettes "$ROOT" > build.log 2>&1) || { cat "$OUT/build.log" >&2; exit 1; }
  tarball=$(ls -t "$OUT"/regularizedvi_*.tar.gz | head -1)
  (cd "$OUT" && _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual --ignore-vignettes --no-tests "$tarball" > check.log 2>&1) || true
  tail -5 "$OUT/check.log"
  if grep -Eq "^Status: .*(ERROR|WARNING)" "$OUT/check.log"; then
    echo "test_r.sh: R CMD check reported errors or warnings (see $OUT/check.log)" >&2
    exit 1
  fi
fi
echo "== R side passed in $(( $(date +%s) - start )) s"
