test_that("a missing Python module gives the fix, not a traceback", {
  err <- tryCatch(regularizedvi:::.py_module("regularizedvi_no_such_module"), error = identity)
  expect_s3_class(err, "error")
  msg <- conditionMessage(err)
  expect_match(msg, "regularizedvi_no_such_module", fixed = TRUE)
  expect_match(msg, "install_regularizedvi()", fixed = TRUE)
  expect_match(msg, "RETICULATE_PYTHON", fixed = TRUE)
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
