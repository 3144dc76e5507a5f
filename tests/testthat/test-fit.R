test_that("RunRegularizedVI attaches a DimReduc in cell order, a command log and the model", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  set.seed(3)
  shuffled <- obj[, sample(colnames(obj))]
  # Called namespace-qualified, as in scripts: no warning about the command name.
  expect_no_warning(
    out <- regularizedvi::RunRegularizedVI(shuffled, batch = "groups", n.hidden = 16, n.latent = 4,
                                           max.epochs = 2, progress = FALSE, accelerator = "cpu"))
  expect_true("regularizedvi" %in% SeuratObject::Reductions(out))
  emb <- SeuratObject::Embeddings(out, "regularizedvi")
  expect_identical(rownames(emb), colnames(shuffled))
  expect_identical(colnames(emb), paste0("rvi_", 1:4))
  expect_identical(SeuratObject::Key(out[["regularizedvi"]]), "rvi_")
  expect_identical(SeuratObject::DefaultAssay(out[["regularizedvi"]]), "RNA")
  expect_identical(setdiff(command_names(out), command_names(shuffled)), "RunRegularizedVI.RNA")
  expect_identical(out@commands[["RunRegularizedVI.RNA"]]$batch, "groups")
  expect_identical(out@commands[["RunRegularizedVI.RNA"]]$n.latent, 4)  # `...` arguments too
  expect_identical(out@commands[["RunRegularizedVI.RNA"]]@call.string,
                   paste("regularizedvi::RunRegularizedVI(shuffled, batch = \"groups\", n.hidden = 16,",
                         "n.latent = 4, max.epochs = 2, progress = FALSE, accelerator = \"cpu\")"))
  model <- getRegularizedVIModel(out)
  expect_s3_class(model, "regularizedviModel")
  # The stored embedding is the model's, row for row by cell name.
  expect_equal(emb, getLatent(model)[colnames(shuffled), ], ignore_attr = TRUE)
  # Everything else is untouched.
  expect_identical(layer_data(out, "counts"),
                   layer_data(shuffled, "counts"))
  expect_identical(out[[]][, names(shuffled[[]])], shuffled[[]])
  expect_identical(setdiff(names(out[[]]), names(shuffled[[]])), "regularizedvi_contamination")
})

test_that("the same seed gives the same embedding", {
  skip_if_no_regularizedvi()
  a <- do.call(RunRegularizedVI, c(list(pbmc(), seed = 7), tiny_fit))
  b <- do.call(RunRegularizedVI, c(list(pbmc(), seed = 7), tiny_fit))
  expect_identical(SeuratObject::Embeddings(a, "regularizedvi"),
                   SeuratObject::Embeddings(b, "regularizedvi"))
  # do.call() inlines the object in the call: the log shows its class, not its contents
  expect_match(a@commands[["RunRegularizedVI.RNA"]]@call.string,
               "^RunRegularizedVI\\(<Seurat>, seed = 7, n.hidden = 16, ")
})

test_that("runRegularizedVI stores a reducedDim and the model on kang", {
  skip_if_no_regularizedvi()
  sce <- read_kang()
  out <- do.call(runRegularizedVI, c(list(sce, batch = "sample_id", name = "rvi"), tiny_fit))
  latent <- SingleCellExperiment::reducedDim(out, "rvi")
  expect_identical(dim(latent), c(ncol(sce), 4L))
  expect_identical(rownames(latent), colnames(sce))
  expect_identical(names(S4Vectors::metadata(out)$regularizedvi_models), "rvi")
  expect_identical(getRegularizedVIModel(out, "rvi")$setup_args$batch_key, "sample_id")
  expect_identical(SummarizedExperiment::assay(out, "counts"), SummarizedExperiment::assay(sce, "counts"))
  expect_error(getRegularizedVIModel(out, "regularizedvi"), "No regularizedvi model stored")
})

test_that("wrong object types and bad covariates fail early with clear messages", {
  skip_if_no_regularizedvi()
  expect_error(RunRegularizedVI(synthetic_sce()), "needs a Seurat object.*runRegularizedVI")
  expect_error(runRegularizedVI(pbmc()), "needs a SingleCellExperiment.*RunRegularizedVI")
  obj <- pbmc()
  obj$groups[2] <- NA
  expect_error(RunRegularizedVI(obj, batch = "groups"), "'groups' has 1 NA value")
  expect_error(RunRegularizedVI(pbmc(), batch = "sample"), "'sample' \\(categorical covariate\\) not found")
  expect_error(getRegularizedVIModel(pbmc()), "no reduction 'regularizedvi'")
})
