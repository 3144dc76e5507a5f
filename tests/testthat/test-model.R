test_that("setup arguments map to Python names and are checked", {
  args <- regularizedvi:::.setup_args(list(batch = "s", nn.conditioning = c("a", "b")))
  expect_identical(args, list(batch_key = "s", nn_conditioning_covariate_keys = list("a", "b")))
  expect_error(regularizedvi:::.setup_args(list(batch = c("a", "b"))), "exactly one column")
  expect_error(regularizedvi:::.setup_args(list(ambient = 3)), "must name metadata column")
  off <- regularizedvi:::.setup_args(list(nn.conditioning = "a", feature.scaling = FALSE))
  expect_identical(off$feature_scaling_covariate_keys, list())
  expect_error(regularizedvi:::.setup_args(list(batch = FALSE)), "must name metadata column")
  cols <- regularizedvi:::.setup_columns(list(layer = "counts", batch_key = "s",
                                              continuous_covariate_keys = list("pct")))
  expect_identical(cols, list(categorical = "s", continuous = "pct"))
})

test_that("low-level set-up, training and embedding work on a synthetic SCE", {
  skip_if_no_regularizedvi()
  sce <- synthetic_sce()
  model <- regularizedviModel(sce, batch = "sample", continuous.covariates = "score",
                              n.hidden = 8, n.latent = 3)
  expect_s3_class(model, "regularizedviModel")
  expect_output(print(model), "60 cells x 40 genes, not trained")
  expect_identical(model$cells, colnames(sce))
  trainRegularizedVI(model, max.epochs = 2, progress = FALSE, accelerator = "cpu")
  expect_output(print(model), "trained")
  latent <- getLatent(model)
  expect_identical(dim(latent), c(60L, 3L))
  expect_identical(rownames(latent), colnames(sce))
  expect_true(all(is.finite(latent)))
})

test_that("Python set-up errors arrive as short R errors", {
  skip_if_no_regularizedvi()
  sce <- synthetic_sce()
  err <- tryCatch(regularizedviModel(sce, batch = "sample", ambient = "label"), error = identity)
  expect_s3_class(err, "error")
  expect_match(conditionMessage(err), "^Setting up the data failed")
  expect_false(grepl("Traceback", conditionMessage(err)))
})

test_that("a model object restored without Python is refused with the fix", {
  skip_if_no_regularizedvi()
  model <- regularizedviModel(synthetic_sce(), n.hidden = 8, n.latent = 3)
  dead <- unserialize(serialize(model, NULL))
  expect_error(getLatent(dead), "no longer exists.*LoadRegularizedVI")
  expect_error(getLatent(list()), "Expected a regularizedviModel")
})
