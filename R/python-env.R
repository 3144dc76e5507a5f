# Python environment: installation, delay-loaded modules and clear errors.

.rvi <- new.env(parent = emptyenv())

.onLoad <- function(libname, pkgname) {
  # Nothing is imported until first use: loading this package never starts Python.
  .rvi$modules <- list()
}

#' Install the Python core of regularizedvi
#'
#' Creates (or reuses) a Python virtual environment and installs the
#' `regularizedvi` Python package into it with pip. Run once per machine; then
#' restart R or set `RETICULATE_PYTHON` to the environment's Python.
#'
#' @param envname Name or path of the virtual environment (default
#'   `"r-regularizedvi"`).
#' @param package What pip installs: a PyPI requirement or a local path to the
#'   Python package source (a folder with `pyproject.toml`).
#' @param python Python (>= 3.11, < 3.12) used to create the environment;
#'   `NULL` lets reticulate choose.
#' @param extra Further pip requirements, for example `"torch==2.13.0"` to pin
#'   the CPU build of torch.
#' @param ... Passed to [reticulate::virtualenv_install()].
#' @return The environment's path, invisibly.
#' @examples
#' \dontrun{
#' install_regularizedvi(package = "/path/to/regularizedvi")
#' }
#' @export
install_regularizedvi <- function(envname = "r-regularizedvi", package = "regularizedvi",
                                  python = NULL, extra = character(), ...) {
  if (!reticulate::virtualenv_exists(envname)) {
    reticulate::virtualenv_create(envname, python = python)
  }
  # numpy < 2: reticulate < 1.31 cannot exchange arrays with NumPy 2.
  reticulate::virtualenv_install(envname, c("numpy<2", package, extra),
                                 ignore_installed = FALSE, ...)
  message("Installed regularizedvi into '", envname, "'. Restart R and call ",
          "reticulate::use_virtualenv(\"", envname, "\", required = TRUE) ",
          "(or set RETICULATE_PYTHON) before using regularizedvi.")
  invisible(reticulate::virtualenv_python(envname))
}

#' Is the regularizedvi Python module available?
#'
#' Checks that Python can be started and `import regularizedvi` succeeds,
#' without raising an error.
#'
#' @param initialize If `FALSE`, only look for the module without starting
#'   Python (a quick check; `TRUE` also imports it).
#' @return `TRUE` or `FALSE`.
#' @export
regularizedvi_available <- function(initialize = TRUE) {
  ok <- tryCatch(reticulate::py_module_available("regularizedvi"),
                 error = function(e) FALSE)
  if (!ok || !initialize) return(isTRUE(ok))
  !inherits(try(.py_module("regularizedvi"), silent = TRUE), "try-error")
}

.missing_python_message <- function(module, detail) {
  paste0(
    "The Python module '", module, "' cannot be imported (", detail, ").\n",
    "Fix: install the Python core once with install_regularizedvi() and restart R, ",
    "or point reticulate at a Python that has it, e.g. ",
    "Sys.setenv(RETICULATE_PYTHON = \"/path/to/.venv/bin/python\") before loading regularizedvi."
  )
}

# Import a Python module once, with convert = FALSE (reticulate 1.28 cannot convert
# scipy sparse results to R: every result is converted explicitly).
.py_module <- function(name) {
  module <- .rvi$modules[[name]]
  if (!is.null(module)) return(module)
  module <- tryCatch(
    reticulate::import(name, convert = FALSE),
    error = function(e) stop(.missing_python_message(name, .short_py_message(e)), call. = FALSE)
  )
  .rvi$modules[[name]] <- module
  module
}

# The first line(s) of a Python error, without reticulate's traceback.
.short_py_message <- function(e) {
  msg <- conditionMessage(e)
  msg <- sub("\n*Detailed traceback:.*$", "", msg)
  msg <- sub("\n*Run `reticulate::py_last_error\\(\\)` for details\\..*$", "", msg)
  trimws(msg)
}

# Run a Python call; a Python exception becomes an R error with its message only.
.py_call <- function(expr, what) {
  tryCatch(expr, error = function(e) {
    stop(what, ": ", .short_py_message(e), call. = FALSE)
  })
}
