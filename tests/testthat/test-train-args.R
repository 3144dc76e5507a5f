# train.args: further options of the Python train() from every run function, one helper.

tiny_train <- list(n.hidden = 8, n.latent = 2, progress = FALSE, accelerator = "cpu")

# The KL weight of each epoch: 0, 1/n, 2/n, ... with plan_kwargs n_epochs_kl_warmup = n
# (no warm-up by default), i.e. plan_kwargs reached the training plan.
kl_weights <- function(model) {
  history <- reticulate::py_to_r(model$py$history_$get("kl_weight")$to_numpy(dtype = "float64"))
  as.double(history)
}

warmup3 <- list(plan_kwargs = list(n_epochs_kl_warmup = 3L))

test_that("train.args reach train() from the single-modality run functions", {
  skip_if_no_regularizedvi()
  obj <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups", max.epochs = 3, seed = 1,
                                          train.args = list(plan_kwargs = list(n_epochs_kl_warmup = 3L, lr = 5e-3),
                                                            loop = "lightning", train_size = 0.5)),
                                     tiny_train))
  model <- getRegularizedVIModel(obj)
  expect_equal(kl_weights(model), c(0, 1, 2) / 3, tolerance = 1e-6)
  expect_identical(reticulate::py_to_r(model$py$training_loop_used), "lightning")
  expect_equal(reticulate::py_to_r(model$py$trainer$lightning_module$lr), 5e-3)
  expect_identical(as.integer(reticulate::py_len(model$py$train_indices_)), ncol(obj) %/% 2L)
  # without train.args: no warm-up, the lean loop, 90% of the cells for training
  plain <- getRegularizedVIModel(do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups", max.epochs = 3),
                                                             tiny_train)))
  expect_equal(kl_weights(plain), c(1, 1, 1))
  expect_identical(reticulate::py_to_r(plain$py$training_loop_used), "lean")

  sce <- do.call(runRegularizedVI, c(list(synthetic_sce(), batch = "sample", max.epochs = 3,
                                          train.args = warmup3), tiny_train))
  expect_equal(kl_weights(getRegularizedVIModel(sce)), c(0, 1, 2) / 3, tolerance = 1e-6)
})

test_that("train.args reach train() from the multimodal run functions", {
  skip_if_no_regularizedvi()
  obj <- do.call(RunRegularizedMultimodalVI, c(list(citeseq(), batch = "groups", max.epochs = 3,
                                                    train.args = warmup3), tiny_train))
  expect_equal(kl_weights(getRegularizedVIModel(obj, "regularizedmultivi")), c(0, 1, 2) / 3, tolerance = 1e-6)
  sce <- do.call(runRegularizedMultimodalVI, c(list(citeseq_sce(), altexps = "ADT", batch = "sample",
                                                    max.epochs = 3, train.args = warmup3), tiny_train))
  expect_equal(kl_weights(getRegularizedVIModel(sce, "regularizedmultivi")), c(0, 1, 2) / 3, tolerance = 1e-6)
})

test_that("train.args reach train() from the IntegrateLayers method", {
  skip_if_not_seurat5()
  skip_if_no_regularizedvi()
  split <- split_rna(pbmc5(), "groups")
  out <- do.call(RegularizedVIIntegration, c(list(split[["RNA"]], assay = "RNA", max.epochs = 3,
                                                  train.args = warmup3, verbose = FALSE), tiny_train))
  expect_equal(kl_weights(SeuratObject::Misc(out[[1]], slot = "model")), c(0, 1, 2) / 3, tolerance = 1e-6)
})

test_that("misspelt or misplaced training options are clear R errors", {
  skip_if_no_regularizedvi()
  run <- function(...) do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups", max.epochs = 1, ...),
                                                    tiny_train))
  # names Python's train() does not know: its TypeError, without a traceback
  err <- expect_error(run(train.args = list(early_stoping = TRUE)), class = "error")
  expect_identical(conditionMessage(err), paste0("Training failed: TypeError: Trainer.__init__() got an ",
                                                 "unexpected keyword argument 'early_stoping'"))
  err <- expect_error(run(train.args = list(plan_kwargs = list(learning_rate = 1e-3, lr = 1e-3))),
                      class = "error")
  expect_match(conditionMessage(err), paste0("^Training failed: TypeError: plan_kwargs has 1 unknown option\\(s\\): ",
                                             "'learning_rate'\\. The training plan takes .*lr, "))
  expect_false(grepl("Traceback|File \"", conditionMessage(err)))
  # what R sees: before any data are converted, the same in every function
  model <- do.call(regularizedviModel, c(list(pbmc(), batch = "groups"), tiny_train[c("n.hidden", "n.latent")]))
  run_functions <- list(
    function(a) RunRegularizedVI(pbmc(), train.args = a),
    function(a) runRegularizedVI(synthetic_sce(), train.args = a),
    function(a) RunRegularizedMultimodalVI(citeseq(), train.args = a),
    function(a) runRegularizedMultimodalVI(citeseq_sce(), train.args = a),
    function(a) MapRegularizedVIQuery(pbmc(), "no_such_reference", train.args = a),
    function(a) mapRegularizedVIQuery(synthetic_sce(), "no_such_reference", train.args = a))
  if (is_seurat5()) {
    split <- split_rna(pbmc5(), "groups")
    run_functions <- c(run_functions, function(a) RegularizedVIIntegration(split[["RNA"]], train.args = a))
  }
  for (f in run_functions) {
    expect_error(f(list(early.stopping = TRUE)),
                 "`train.args` names are the Python train()'s, with underscores: early_stopping, not early.stopping.",
                 fixed = TRUE)
    expect_error(f(list(max_epochs = 5)),
                 "`train.args` sets 'max_epochs': pass it as the function's own argument `max.epochs` instead.",
                 fixed = TRUE)
    expect_error(f(list(TRUE)), "Every entry of `train.args` must be named by its train() argument", fixed = TRUE)
    expect_error(f("early_stopping"), "`train.args` must be a named list of further arguments of the Python train()",
                 fixed = TRUE)
  }
  # trainRegularizedVI()'s `...` follows the same rules
  expect_error(trainRegularizedVI(model, batch_size = 64),
               "`...` sets 'batch_size': pass it as the function's own argument `batch.size` instead.", fixed = TRUE)
  # a training option in `...` (which goes to the model): pointed to train.args
  expect_error(run(plan_kwargs = list(lr = 1e-3)),
               paste0("RunRegularizedVI() got `plan_kwargs`, which regularizedviModel() does not take (`...` goes ",
                      "there). Options of the Python train() go in `train.args`, e.g. ",
                      "train.args = list(plan_kwargs = ...)."),
               fixed = TRUE)
  expect_error(RunRegularizedMultimodalVI(citeseq(), early_stopping = TRUE),
               "RunRegularizedMultimodalVI() got `early_stopping`, which regularizedviMultimodalModel() does not take",
               fixed = TRUE)
})
