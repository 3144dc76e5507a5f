# Python environment: installation of the bundled Python core, the choice of Python when it
# is first needed, delay-loaded modules and clear errors.

.rvi <- new.env(parent = emptyenv())

# The virtual environment install_regularizedvi() makes by default (in reticulate's
# WORKON_HOME, ~/.virtualenvs unless set).
.default_envname <- "r-regularizedvi"

.onLoad <- function(libname, pkgname) {
  # Nothing is imported until first use: loading this package never starts Python.
  .rvi$modules <- list()
}

#' Install the Python core of regularizedvi
#'
#' Creates (or reuses) a Python virtual environment and installs into it the
#' Python core that ships inside this R package (`inst/python`), so the Python
#' and R sides always match; no download of regularizedvi itself is needed
#' (its dependencies, scvi-tools and PyTorch among them, come from PyPI). Run
#' it once per machine. The environment is then found automatically the next
#' time regularizedvi needs Python, unless `RETICULATE_PYTHON` or an explicit
#' `reticulate::use_virtualenv()` / `use_python()` names another Python first.
#' If Python was already started in this R session, restart R after
#' installing.
#'
#' @param envname Name or path of the virtual environment (default
#'   `"r-regularizedvi"`, created in reticulate's `WORKON_HOME`,
#'   `~/.virtualenvs` unless set).
#' @param package What pip installs as regularizedvi. `NULL` (default): the
#'   Python core bundled with this R package. Otherwise a local path, either
#'   to a clone of the repository (its root, which holds `DESCRIPTION`, or its
#'   `inst/python` folder) or to any folder with the Python package's
#'   `pyproject.toml`.
#' @param extras Optional parts of the Python package to install (default
#'   `c("multimodal", "plot")`: MuData for several modalities, matplotlib and
#'   UMAP for plots).
#' @param python Python (>= 3.11, with `venv`) used to create the
#'   environment; `NULL` takes the first usable one of `RETICULATE_PYTHON`,
#'   `python3` on the `PATH`, `/usr/bin/python3` and `python`.
#' @param extra Further pip requirements, for example `"torch==2.13.0"` to pin
#'   the PyTorch build (pip otherwise takes the newest torch for the
#'   platform; see PyTorch's install page for CUDA builds).
#' @return The path of the environment's Python, invisibly.
#' @details reticulate before 1.31 cannot exchange arrays with NumPy 2, so with
#'   such a reticulate the environment gets `numpy<2`. When pip fails, the
#'   error names the failing step and the log file with pip's whole output.
#' @examples
#' \dontrun{
#' install_regularizedvi()
#' # a clone of the repository instead of the bundled core:
#' install_regularizedvi(package = "~/src/regularizedvi")
#' }
#' @export
install_regularizedvi <- function(envname = .default_envname, package = NULL,
                                  extras = c("multimodal", "plot"), python = NULL,
                                  extra = character()) {
  source <- .python_source(package)
  if (!is.character(extras) || anyNA(extras)) stop("`extras` must be a character vector.", call. = FALSE)
  if (!reticulate::virtualenv_exists(envname)) {
    reticulate::virtualenv_create(envname, python = .starter_python(python), packages = NULL)
  }
  env_python <- reticulate::virtualenv_python(envname)
  problem <- .python_problem(env_python)
  if (!is.null(problem)) {
    stop("The environment '", envname, "' has a Python that cannot be used: ", problem, ". Remove it ",
         "(reticulate::virtualenv_remove(\"", envname, "\")) and run install_regularizedvi() again, ",
         "with python = \"/path/to/python3\" if needed.", call. = FALSE)
  }
  # pip may write build files next to the sources: copy them out of the R library first.
  staged <- file.path(tempfile("regularizedvi-python-"), "python")
  dir.create(staged, recursive = TRUE)
  file.copy(list.files(source, full.names = TRUE, all.files = FALSE), staged, recursive = TRUE)
  on.exit(unlink(dirname(staged), recursive = TRUE), add = TRUE)
  requirement <- if (length(extras)) paste0(staged, "[", paste(extras, collapse = ","), "]") else staged
  pins <- if (utils::packageVersion("reticulate") < "1.31") "numpy<2" else character()
  .pip(env_python, c("install", "--upgrade", "pip"), "upgrading pip")
  .pip(env_python, c("install", pins, extra, requirement), "installing regularizedvi")
  version <- system2(env_python, c("-c", shQuote("import regularizedvi; print(regularizedvi.__version__)")),
                     stdout = TRUE, stderr = FALSE)
  message("Installed regularizedvi ", version[length(version)], " into '", dirname(dirname(env_python)),
          "'. It is used automatically the next time regularizedvi needs Python",
          if (reticulate::py_available(initialize = FALSE))
            " (Python is already running in this R session: restart R first)." else ".")
  invisible(env_python)
}

# Folder with the Python package's pyproject.toml: the bundled one, or one given by the user.
.python_source <- function(package) {
  if (is.null(package)) {
    bundled <- system.file("python", package = "regularizedvi")
    if (!nzchar(bundled) || !file.exists(file.path(bundled, "pyproject.toml"))) {
      stop("This installation of the R package carries no Python core (inst/python is missing); ",
           "reinstall the R package from its source, or pass package = <path of a clone>.", call. = FALSE)
    }
    return(bundled)
  }
  if (!is.character(package) || length(package) != 1 || !dir.exists(package)) {
    stop("`package` must be NULL (the bundled Python core) or the path of a local folder; '",
         format(package), "' is not a folder. regularizedvi is not on PyPI.", call. = FALSE)
  }
  for (candidate in c(package, file.path(package, "inst", "python"))) {
    if (file.exists(file.path(candidate, "pyproject.toml"))) return(normalizePath(candidate))
  }
  stop("'", package, "' holds no pyproject.toml, neither at its top nor in inst/python: pass the root ",
       "of a clone of the repository (or its inst/python folder).", call. = FALSE)
}

# Why a Python cannot make and fill the environment from this R session (NULL when it can):
# it must be >= 3.11 and import venv, ensurepip and ssl (pip needs ssl for PyPI). Probed from
# R because R's library path can break a Python that works in a shell (e.g. a pyenv build
# loading the system's libpython).
.python_problem <- function(python) {
  if (!nzchar(python) || !file.exists(python)) return("it does not exist")
  probe <- "import sys, ssl, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
  out <- suppressWarnings(system2(python, c("-c", shQuote(probe)), stdout = TRUE, stderr = TRUE))
  version <- utils::tail(out, 1)
  if (!is.null(attr(out, "status")) || !length(version) || !grepl("^[0-9]+\\.[0-9]+$", version)) {
    return(paste0("importing ssl/venv/ensurepip fails there (", utils::tail(out, 1), ")"))
  }
  if (numeric_version(version) < "3.11") return(paste0("it is Python ", version, "; regularizedvi needs >= 3.11"))
  NULL
}

# The Python to create the environment with: the one given, else the first usable of
# RETICULATE_PYTHON, python3 on the PATH, /usr/bin/python3, python.
.starter_python <- function(python) {
  if (!is.null(python)) {
    problem <- .python_problem(path.expand(python))
    if (!is.null(problem)) stop("python = '", python, "' cannot be used: ", problem, ".", call. = FALSE)
    return(path.expand(python))
  }
  candidates <- unique(c(Sys.getenv("RETICULATE_PYTHON"), Sys.which("python3"), "/usr/bin/python3",
                         Sys.which("python")))
  candidates <- candidates[nzchar(candidates)]
  problems <- character()
  for (candidate in candidates) {
    problem <- .python_problem(candidate)
    if (is.null(problem)) return(candidate)
    problems <- c(problems, paste0(candidate, ": ", problem))
  }
  stop("No usable Python (>= 3.11, with venv, ensurepip and ssl) was found to create the environment ",
       "(", paste(problems, collapse = "; "), "). Install one (Debian/Ubuntu: apt-get install python3 ",
       "python3-venv) or pass python = \"/path/to/python3\".", call. = FALSE)
}

# Run pip; on failure one R error naming the step, pip's own error line and the full log.
.pip <- function(python, args, what) {
  log <- tempfile("regularizedvi-pip-", fileext = ".log")
  lines <- suppressWarnings(system2(python, c("-m", "pip", shQuote(args)), stdout = TRUE, stderr = TRUE))
  status <- attr(lines, "status")
  if (!is.null(status) && status != 0) {
    writeLines(lines, log)
    errors <- grep("^ERROR|error:", lines, value = TRUE)
    cause <- if (length(errors)) errors[1] else utils::tail(lines[nzchar(lines)], 1)
    stop("pip failed ", what, ": ", trimws(cause), " (full log: ", log, ")", call. = FALSE)
  }
  invisible(TRUE)
}

#' Is the regularizedvi Python module available?
#'
#' Checks that Python can be started and `import regularizedvi` succeeds,
#' without raising an error. Python is chosen as when regularizedvi first
#' needs it: `RETICULATE_PYTHON` or a Python chosen with reticulate first,
#' then the environment [install_regularizedvi()] made.
#'
#' @param initialize If `FALSE`, only look for the module without starting
#'   Python (a quick check; `TRUE` also imports it).
#' @return `TRUE` or `FALSE`.
#' @export
regularizedvi_available <- function(initialize = TRUE) {
  .choose_python()
  ok <- tryCatch(reticulate::py_module_available("regularizedvi"), error = function(e) FALSE)
  if (!ok || !initialize) return(isTRUE(ok))
  !inherits(try(.py_module("regularizedvi"), silent = TRUE), "try-error")
}

# Before Python starts: prefer the environment install_regularizedvi() made, unless the
# user named a Python (RETICULATE_PYTHON / RETICULATE_PYTHON_ENV / use_python(required =
# TRUE), which reticulate consults first). A hint, not a requirement: required = FALSE.
.choose_python <- function() {
  if (isTRUE(.rvi$python_chosen) || reticulate::py_available(initialize = FALSE)) return(invisible())
  .rvi$python_chosen <- TRUE
  if (nzchar(Sys.getenv("RETICULATE_PYTHON")) || nzchar(Sys.getenv("RETICULATE_PYTHON_ENV"))) {
    return(invisible())
  }
  if (isTRUE(tryCatch(reticulate::virtualenv_exists(.default_envname), error = function(e) FALSE))) {
    reticulate::use_virtualenv(.default_envname, required = FALSE)
  }
  invisible()
}

# Which Python reticulate uses (or would use), for messages; never starts Python itself.
.python_in_use <- function() {
  if (reticulate::py_available(initialize = FALSE)) {
    return(list(python = reticulate::py_config()$python, running = TRUE))
  }
  config <- tryCatch(reticulate::py_discover_config("regularizedvi"), error = function(e) NULL)
  list(python = if (is.null(config)) "none found" else config$python, running = FALSE)
}

.missing_python_message <- function(module, detail) {
  where <- .python_in_use()
  restart <- if (where$running) {
    paste0(" Python is already running in this R session, so after installing restart R ",
           "(reticulate cannot switch Python in a running session).")
  } else ""
  paste0(
    "regularizedvi's Python core is not usable: importing '", module, "' failed (", detail, ") ",
    "with the Python at ", where$python, ".\n",
    "Fix: run install_regularizedvi() once (it installs the Python core bundled with this package ",
    "into the 'r-regularizedvi' environment, found automatically afterwards), or point reticulate at a ",
    "Python that has it: Sys.setenv(RETICULATE_PYTHON = \"/path/to/python\") before regularizedvi ",
    "first needs Python.", restart
  )
}

# Import a Python module once, with convert = FALSE (reticulate 1.28 cannot convert
# scipy sparse results to R: every result is converted explicitly). regularizedvi itself
# is imported first: reticulate then looks for a Python that has it.
.py_module <- function(name) {
  module <- .rvi$modules[[name]]
  if (!is.null(module)) return(module)
  .choose_python()
  for (needed in unique(c("regularizedvi", name))) {
    if (!is.null(.rvi$modules[[needed]])) next
    .rvi$modules[[needed]] <- tryCatch(
      reticulate::import(needed, convert = FALSE),
      error = function(e) stop(.missing_python_message(needed, .short_py_message(e)), call. = FALSE)
    )
  }
  .rvi$modules[[name]]
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

# R warns about features without counts itself (.check_counts), in R terms; the Python
# core's warning of the same would repeat it with Python advice, so set-up calls run with
# that one warning silenced.
.without_py_zero_feature_warning <- function(expr) {
  warnings <- .py_module("warnings")
  with(warnings$catch_warnings(), {
    warnings$filterwarnings("ignore", message = ".* feature\\(s\\) have zero total counts")
    expr
  })
}

# scvi-tools logs "Input AnnData not setup with scvi-tools. attempting to transfer AnnData
# setup" (INFO) whenever a model meets data other than its own: expected where this package
# does it (label transfer embeds the reference data), so hidden for that call only.
.without_scvi_info <- function(expr) {
  logging <- .py_module("logging")
  logger <- logging$getLogger("scvi")
  level <- logger$level
  logger$setLevel(logging$WARNING)
  on.exit(logger$setLevel(level), add = TRUE)
  expr
}
