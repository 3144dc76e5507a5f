# Bad arguments are clear R errors, raised in R before any data reach Python and never
# coerced silently (issue 12). Each case is run through every run function.

bad_training <- list(
  list(list(max.epochs = 0), "`max.epochs` must be >= 1, not 0."),
  list(list(max.epochs = -1), "`max.epochs` must be >= 1, not -1."),
  list(list(max.epochs = "ten"), "`max.epochs` must be a whole number >= 1, not \"ten\" (character)."),
  list(list(max.epochs = 2.7), "`max.epochs` must be a whole number, not 2.7 (it is not rounded for you)."),
  list(list(max.epochs = NA), "`max.epochs` must be a whole number >= 1, not NA (logical)."),
  list(list(max.epochs = c(2, 3)), "`max.epochs` must be a single number, got 2 values."),
  list(list(batch.size = 0), "`batch.size` must be >= 1, not 0."),
  list(list(batch.size = 12.5), "`batch.size` must be a whole number, not 12.5"),
  list(list(batch.size = NULL), "`batch.size` must be given (it is NULL)."),
  list(list(seed = -1), "`seed` must be >= 0, not -1."),
  list(list(seed = 1.5), "`seed` must be a whole number, not 1.5"),
  list(list(seed = "a"), "`seed` must be a whole number >= 0, not \"a\" (character)."),
  list(list(accelerator = 1), "`accelerator` must be one string"),
  list(list(devices = 1.5), "`devices` must be \"auto\", a number of devices"),
  list(list(progress = NA), "`progress` must be TRUE or FALSE.")
)

bad_network <- list(
  list(list(n.latent = 0), "`n.latent` must be >= 1, not 0."),
  list(list(n.hidden = 0.5), "`n.hidden` must be a whole number, not 0.5"),
  list(list(n.hidden = "128"), "`n.hidden` must be a whole number >= 1, not \"128\" (character)."),
  list(list(n.layers = 0), "`n.layers` must be >= 1, not 0."),
  list(list(n.layers = TRUE), "`n.layers` must be a whole number >= 1, not TRUE (logical)."),
  list(list(dropout.rate = 1), "`dropout.rate` must be in [0, 1), not 1."),
  list(list(dropout.rate = -0.1), "`dropout.rate` must be in [0, 1), not -0.1."),
  list(list(dropout.rate = "0.1"), "`dropout.rate` must be a number in [0, 1), not \"0.1\" (character).")
)

# Each call names a covariate column that does not exist (or a reference that does not
# exist): an argument error that came after the data conversion would show that error.
run_cases <- function(obj, sce, mm, mm_sce) {
  list(
    RunRegularizedVI = function(a) do.call(RunRegularizedVI, c(list(obj, batch = "nope"), a)),
    runRegularizedVI = function(a) do.call(runRegularizedVI, c(list(sce, batch = "nope"), a)),
    RunRegularizedMultimodalVI = function(a) {
      do.call(RunRegularizedMultimodalVI, c(list(mm, batch = "nope"), a))
    },
    runRegularizedMultimodalVI = function(a) {
      do.call(runRegularizedMultimodalVI, c(list(mm_sce, batch = "nope"), a))
    }
  )
}

test_that("bad training and network arguments fail in R, before the data are converted", {
  skip_if_not_installed("SeuratObject")
  skip_if_not_installed("SingleCellExperiment")
  runs <- run_cases(pbmc(), synthetic_sce(), citeseq(), citeseq_sce())
  query <- list(
    MapRegularizedVIQuery = function(a) do.call(MapRegularizedVIQuery, c(list(pbmc(), tempfile()), a)),
    mapRegularizedVIQuery = function(a) do.call(mapRegularizedVIQuery, c(list(synthetic_sce(), tempfile()), a))
  )
  for (case in bad_training) {
    for (f in names(runs)) expect_error(runs[[f]](case[[1]]), case[[2]], fixed = TRUE, info = f)
    for (f in names(query)) expect_error(query[[f]](case[[1]]), case[[2]], fixed = TRUE, info = f)
  }
  for (case in bad_network) {
    for (f in names(runs)) expect_error(runs[[f]](case[[1]]), case[[2]], fixed = TRUE, info = f)
    expect_error(do.call(regularizedviModel, c(list(pbmc(), batch = "nope"), case[[1]])), case[[2]],
                 fixed = TRUE)
  }
  # per-modality sizes are checked value by value
  expect_error(RunRegularizedMultimodalVI(citeseq(), n.latent = list(RNA = 4, ADT = 0)),
               "`n.latent` must be >= 1, not 0.", fixed = TRUE)
  expect_error(RunRegularizedMultimodalVI(citeseq(), n.latent = c(4, 2)),
               "`n.latent` must be a single number, got 2 values.", fixed = TRUE)
})

test_that("trainRegularizedVI refuses bad epochs and leaves the model untrained", {
  skip_if_no_regularizedvi()
  model <- regularizedviModel(synthetic_sce(), n.hidden = 8, n.latent = 3)
  for (case in bad_training[1:9]) {
    expect_error(do.call(trainRegularizedVI, c(list(model), case[[1]])), case[[2]], fixed = TRUE)
  }
  expect_output(print(model), "not trained")
})

test_that("a GPU request on a machine without one is a short R error", {
  skip_if_no_regularizedvi()
  torch <- reticulate::import("torch", convert = FALSE)
  if (reticulate::py_to_r(torch$cuda$is_available())) skip("this machine has a GPU")
  model <- regularizedviModel(synthetic_sce(), n.hidden = 8, n.latent = 3)
  err <- tryCatch(trainRegularizedVI(model, max.epochs = 1, accelerator = "gpu", progress = FALSE),
                  error = identity)
  expect_s3_class(err, "error")
  expect_match(conditionMessage(err), "^Training failed: ")
  expect_false(grepl("Traceback|File \"", conditionMessage(err)))
})

test_that("numeric columns with many values are refused as categorical covariates", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  msg <- paste0("Column 'nCount_RNA' is numeric with 71 distinct values for 80 cells: it looks ",
                "like a measurement, not groups of cells")
  fix <- "convert it explicitly first: obj$nCount_RNA <- factor(obj$nCount_RNA)"
  for (arg in c("batch", "ambient", "nn.conditioning", "feature.scaling", "dispersion",
                "library.size", "encoder.covariates")) {
    args <- stats::setNames(list("nCount_RNA"), arg)
    if (arg == "feature.scaling") args$nn.conditioning <- "groups"
    err <- tryCatch(do.call(RunRegularizedVI, c(list(obj), args, tiny_fit)), error = identity)
    expect_match(conditionMessage(err), msg, fixed = TRUE, info = arg)
    expect_match(conditionMessage(err), fix, fixed = TRUE, info = arg)
  }
  expect_error(as.AnnData(obj, categorical = "nCount_RNA"), msg, fixed = TRUE)
  expect_error(as.MuData(citeseq(), categorical = "nCount_RNA"), msg, fixed = TRUE)
  expect_error(runRegularizedVI(synthetic_sce(), batch = "score"),
               "Column 'score' is numeric with 60 distinct values (not whole numbers) for 60 cells",
               fixed = TRUE)
  # the bound: more distinct whole values than half of the cells (or than 50), as in Python
  expect_identical(as.integer(reticulate::import("regularizedvi._constants")$MAX_NUMERIC_CATEGORIES),
                   as.integer(regularizedvi:::.max_numeric_levels))
  obj$forty <- rep(1:40, 2)
  obj$forty_one <- c(1:41, rep(1, 39))
  expect_error(as.AnnData(obj, categorical = "forty_one"),
               "Column 'forty_one' is numeric with 41 distinct values for 80 cells", fixed = TRUE)
  skip_if_no_regularizedvi()
  expect_identical(categories(as.AnnData(obj, categorical = "forty"), "forty")$levels,
                   sort(as.character(1:40)))
  # an explicit factor (or character) column is taken as groups
  obj$nCount_RNA <- factor(obj$nCount_RNA)
  expect_length(categories(as.AnnData(obj, categorical = "nCount_RNA"), "nCount_RNA")$levels, 71)
})

test_that("no cells says so; the zero-gene and zero-cell fixes are code that works", {
  skip_if_not_installed("SingleCellExperiment")
  sce <- synthetic_sce()
  expect_error(as.AnnData(sce[, 0]), "assay 'counts' has no cells (0 cells, e.g. after subsetting)",
               fixed = TRUE)
  expect_error(runRegularizedVI(sce[, 0], max.epochs = 2), "has no cells (0 cells", fixed = TRUE)
  expect_error(as.MuData(citeseq_sce()[, 0]), "has no cells (0 cells", fixed = TRUE)
  expect_error(as.AnnData(sce[0, ]), "assay 'counts' has no genes (0 genes).", fixed = TRUE)
  SummarizedExperiment::assay(sce, "counts")[5, ] <- 0
  SummarizedExperiment::assay(sce, "counts")[, 7] <- 0
  err <- conditionMessage(tryCatch(as.AnnData(sce), error = identity))
  expect_match(err, "1 cell(s) with zero total counts (e.g. 'cell7'): remove them first: sce <- ",
               fixed = TRUE)
  env <- new.env()
  env$sce <- sce
  eval(parse(text = suggested_code(err, "remove them first: ")), env)
  expect_identical(colnames(env$sce), setdiff(colnames(sce), "cell7"))
  err <- conditionMessage(tryCatch(as.AnnData(env$sce), warning = identity))
  expect_match(err, "1 gene(s) with zero total counts (e.g. 'gene5'); they are kept and learned as unexpressed. To drop them: pass features = ", fixed = TRUE)
  expect_false(grepl("rownames(counts)", err, fixed = TRUE))
  features <- eval(parse(text = suggested_code(err, "pass features = ")), list(sce = env$sce))
  expect_identical(features, setdiff(rownames(sce), "gene5"))

  skip_if_not_installed("SeuratObject")
  obj <- pbmc()
  counts <- layer_data(obj, "counts")
  counts["MS4A1", ] <- 0
  obj <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = counts, meta.data = obj[[]]))
  err <- conditionMessage(tryCatch(RunRegularizedVI(obj, max.epochs = 2), warning = identity))
  expect_match(err, "1 gene(s) with zero total counts (e.g. 'MS4A1'); they are kept", fixed = TRUE)
  features <- eval(parse(text = suggested_code(err, "pass features = ")), list(obj = obj))
  expect_identical(features, setdiff(rownames(obj), "MS4A1"))
  skip_if_no_regularizedvi()
  expect_identical(reticulate::py_to_r(as.AnnData(obj, features = features)$n_vars), 229L)
  # kept: the model trains with the gene and gives finite results for it
  # one warning, R's: the Python core's own (with Python advice) is silenced for R's set-up
  printed <- reticulate::py_capture_output(
    fit <- suppressWarnings(do.call(RunRegularizedVI, c(list(obj, batch = "groups"), tiny_fit))))
  expect_false(grepl("have zero total counts", printed, fixed = TRUE))
  expect_true(all(is.finite(SeuratObject::Embeddings(fit, "regularizedvi"))))
  expr <- getNormalizedExpression(fit, features = "MS4A1")
  expect_true(all(is.finite(as.matrix(expr))))
  adata <- as.AnnData(env$sce, features = features <- setdiff(rownames(sce), "gene5"))
  expect_identical(reticulate::py_to_r(adata$shape), list(59L, 39L))
})

test_that("covariate names with dots are refused with the rename to do", {
  expect_error(RunRegularizedVI(pbmc(), batch = "letter.idents"),
               paste0("Covariate column 'letter.idents' (`batch`) has a '.' in its name, which the model's ",
                      "registry does not accept: copy it to a name without dots first, e.g. ",
                      "obj$letter_idents <- obj$`letter.idents`"), fixed = TRUE)
  expect_error(regularizedviModel(synthetic_sce(), nn.conditioning = c("sample", "a.b")),
               "Covariate column 'a.b' (`nn.conditioning`)", fixed = TRUE)
})
