test_that("a missing Python module gives the fix and the Python in use, not a traceback", {
  skip_if_no_regularizedvi()
  err <- tryCatch(regularizedvi:::.py_module("regularizedvi_no_such_module"), error = identity)
  expect_s3_class(err, "error")
  msg <- conditionMessage(err)
  expect_match(msg, "regularizedvi's Python core is not usable: importing 'regularizedvi_no_such_module' failed",
               fixed = TRUE)
  expect_match(msg, paste0("with the Python at ", reticulate::py_config()$python), fixed = TRUE)
  expect_match(msg, "install_regularizedvi()", fixed = TRUE)
  expect_match(msg, "RETICULATE_PYTHON", fixed = TRUE)
  # Python runs already in this session: the advice says that a restart is needed
  expect_match(msg, "restart R", fixed = TRUE)
  expect_false(grepl("Traceback", msg))
})

test_that("Python errors are reduced to their message", {
  e <- simpleError("ValueError: bad counts\n\nDetailed traceback:\n  File \"x.py\", line 1")
  expect_identical(regularizedvi:::.short_py_message(e), "ValueError: bad counts")
})

test_that("the module is found and imported lazily with convert = FALSE", {
  skip_if_no_regularizedvi()
  rv <- regularizedvi:::.py_module("regularizedvi")
  expect_true(inherits(rv, "python.builtin.module"))
  # convert = FALSE: results stay Python objects.
  expect_true(inherits(rv$`__version__`, "python.builtin.object"))
  expect_true(regularizedvi_available(initialize = FALSE))
})

test_that("the R package carries its Python core, and local sources are found or refused", {
  bundled <- regularizedvi:::.python_source(NULL)
  expect_true(file.exists(file.path(bundled, "pyproject.toml")))
  expect_true(file.exists(file.path(bundled, "regularizedvi", "_constants.py")))
  root <- Sys.getenv("REGULARIZEDVI_ROOT")
  if (nzchar(root)) {  # a clone's root means its inst/python
    expect_identical(regularizedvi:::.python_source(root), normalizePath(file.path(root, "inst", "python")))
  }
  expect_error(regularizedvi:::.python_source("/no/such/folder"), "is not a folder. regularizedvi is not on PyPI")
  expect_error(regularizedvi:::.python_source(tempdir()), "holds no pyproject.toml")
  expect_error(install_regularizedvi(package = "regularizedvi"), "is not a folder")
})

test_that("a failing pip call is reported in one line with its log", {
  python <- Sys.getenv("RETICULATE_PYTHON")
  skip_if(!nzchar(python) || !file.exists(python), "no Python to run pip with")
  err <- tryCatch(regularizedvi:::.pip(python, c("install", "--no-index", "regularizedvi-no-such-package"),
                                       "installing a test package"), error = identity)
  expect_match(conditionMessage(err), "^pip failed installing a test package: ERROR: .*\\(full log: .*\\.log\\)$")
  expect_false(grepl("\n", conditionMessage(err)))
})

test_that("install_regularizedvi() makes an environment a new R session finds and runs on its own", {
  # A real installation from PyPI (a few minutes): run when RVI_TEST_INSTALL=1 (scripts/test.sh).
  skip_if(Sys.getenv("RVI_TEST_INSTALL") != "1", "set RVI_TEST_INSTALL=1 to test a real installation")
  skip_if_not_installed("SeuratObject")
  # once per test run: the installation does not depend on the Seurat stack
  skip_if(utils::packageVersion("SeuratObject") >= "5", "the installation test runs on the Seurat 4 stack")
  home <- tempfile("workon-")
  dir.create(home)
  on.exit(unlink(home, recursive = TRUE), add = TRUE)
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "suppressMessages(library(regularizedvi))",
    "install_regularizedvi(extra = 'torch==2.13.0')",
    "stopifnot(regularizedvi_available())",
    "cat('PYTHON', reticulate::py_config()$python, '\\n')",
    "obj <- RunRegularizedVI(SeuratObject::pbmc_small, batch = 'groups', n.latent = 3, max.epochs = 2,",
    "                        progress = FALSE, accelerator = 'cpu')",
    "cat('EMBEDDING', dim(SeuratObject::Embeddings(obj, 'regularizedvi')), '\\n')"
  ), script)
  out <- system2("env", c("-u", "RETICULATE_PYTHON", "-u", "RETICULATE_PYTHON_ENV",
                          paste0("WORKON_HOME=", home), paste0("R_LIBS=", paste(.libPaths(), collapse = ":")),
                          file.path(R.home("bin"), "Rscript"), script),
                 stdout = TRUE, stderr = TRUE)
  status <- attr(out, "status")
  expect_true(is.null(status) || status == 0, info = paste(utils::tail(out, 30), collapse = "\n"))
  expect_true(any(grepl(paste0("PYTHON ", home, "/r-regularizedvi/bin/python"), out, fixed = TRUE)),
              info = paste(out, collapse = "\n"))
  expect_true(any(grepl("EMBEDDING 80 3", out, fixed = TRUE)), info = paste(utils::tail(out, 30), collapse = "\n"))
})
