# Several modalities: Seurat assays / SCE altExps -> MuData, the multimodal model, attribution.

test_that("as.MuData keeps every modality of a Seurat object, count for count", {
  skip_if_no_regularizedvi()
  obj <- citeseq()
  set.seed(2)
  obj <- obj[, sample(colnames(obj))]
  mdata <- as.MuData(obj, assays = c("ADT", "RNA"), obs.columns = "groups")
  expect_identical(mod_names(mdata), c("ADT", "RNA"))
  expect_identical(as.character(reticulate::py_to_r(mdata$obs_names$tolist())), colnames(obj))
  for (assay in c("RNA", "ADT")) {
    x <- reticulate::py_get_item(mdata$mod, assay)$X
    expect_true(reticulate::py_to_r(reticulate::import("scipy.sparse", convert = FALSE)$issparse(x)))
    expect_identical(mod_counts(mdata, assay),
                     methods::as(layer_data(obj, "counts", assay), "dgCMatrix"))
  }
  groups <- reticulate::py_to_r(obs_col(mdata, "groups")$astype("str")$tolist())
  expect_identical(as.character(groups), as.character(obj$groups))
  # Default: all assays, in the object's order.
  expect_identical(mod_names(as.MuData(obj)), SeuratObject::Assays(obj))
})

test_that("as.MuData turns an SCE's main experiment and altExps into modalities", {
  skip_if_no_regularizedvi()
  sce <- citeseq_sce()
  mdata <- as.MuData(sce, obs.columns = TRUE)
  expect_identical(mod_names(mdata), c("RNA", "ADT"))
  expect_identical(mod_counts(mdata, "RNA"), SummarizedExperiment::assay(sce, "counts"))
  expect_identical(mod_counts(mdata, "ADT"),
                   SummarizedExperiment::assay(SingleCellExperiment::altExp(sce, "ADT"), "counts"))
  expect_identical(as.character(reticulate::py_to_r(mdata$obs_names$tolist())), colnames(sce))
  expect_identical(reticulate::py_to_r(obs_col(mdata, "score")$tolist()), sce$score)
  expect_identical(mod_names(as.MuData(sce, altexps = "ADT", main.name = "GEX")), c("GEX", "ADT"))
})

test_that("missing assays, assays without counts and mismatched cells are refused", {
  skip_if_no_regularizedvi()
  obj <- citeseq()
  expect_error(as.MuData(obj, assays = c("RNA", "HTO")), "Assay\\(s\\) 'HTO' not in the Seurat object")
  # (SeuratObject 5 warns that the assay has no counts: what this test is about)
  suppressWarnings(obj[["LOG"]] <- SeuratObject::CreateAssayObject(
    data = log1p(as.matrix(layer_data(obj, "counts", "ADT")))))
  expect_error(as.MuData(obj, assays = c("RNA", "LOG")), "assay 'LOG' has no layer 'counts'.*no raw counts")
  bad <- citeseq()
  m <- bad@assays$ADT@counts
  colnames(m)[1] <- "not_a_cell"
  bad@assays$ADT@counts <- m
  # (SeuratObject 5 reads the layer through the assay's own cell names, 4 takes it whole)
  expect_error(as.MuData(bad, assays = c("RNA", "ADT")), "Seurat assay 'ADT', layer 'counts'.* do not match")
  expect_error(RunRegularizedMultimodalVI(citeseq(), assays = "RNA"), "at least 2 modalities")
  sce <- citeseq_sce()
  expect_error(as.MuData(sce, altexps = "HTO"), "altExp\\(s\\) 'HTO' not in")
  SingleCellExperiment::altExp(sce, "LOG") <- SingleCellExperiment::SingleCellExperiment(
    assays = list(logcounts = as.matrix(adt_counts(colnames(sce)))))
  expect_error(as.MuData(sce, altexps = "LOG"), "altExp 'LOG' has no assay 'counts'")
  alt <- SingleCellExperiment::SingleCellExperiment(
    assays = list(counts = adt_counts(paste0("other", seq_len(ncol(sce))))))
  SingleCellExperiment::altExp(sce, "ADT", withDimnames = FALSE) <- alt
  expect_error(as.MuData(sce, altexps = "ADT"), "cells of altExp 'ADT'.*do not match")
  expect_error(RunRegularizedMultimodalVI(sce), "needs a Seurat object")
  expect_error(runRegularizedMultimodalVI(obj), "needs a SingleCellExperiment")
})

test_that("RunRegularizedMultimodalVI attaches the joint latent in cell order, a log and the model", {
  skip_if_no_regularizedvi()
  obj <- citeseq()
  set.seed(4)
  shuffled <- obj[, sample(colnames(obj))]
  out <- RunRegularizedMultimodalVI(shuffled, batch = "groups", n.hidden = 8, n.latent = 2,
                                    max.epochs = 2, progress = FALSE, accelerator = "cpu")
  emb <- SeuratObject::Embeddings(out, "regularizedmultivi")
  expect_identical(rownames(emb), colnames(shuffled))
  expect_identical(colnames(emb), paste0("rmvi_", 1:4))  # concatenation: 2 + 2
  expect_identical(SeuratObject::Key(out[["regularizedmultivi"]]), "rmvi_")
  expect_identical(setdiff(command_names(out), command_names(shuffled)), "RunRegularizedMultimodalVI")
  expect_identical(out@commands[["RunRegularizedMultimodalVI"]]$batch, "groups")
  expect_identical(out@commands[["RunRegularizedMultimodalVI"]]$assays, c("RNA", "ADT"))
  model <- getRegularizedVIModel(out, "regularizedmultivi")
  expect_s3_class(model, "regularizedviMultimodalModel")
  expect_identical(model$modalities, c("RNA", "ADT"))
  expect_equal(emb, getLatent(model)[colnames(shuffled), ], ignore_attr = TRUE)
  expect_output(print(model), "RNA \\(230 features\\), ADT \\(10 features\\), trained")

  att <- getModalityAttribution(out)
  expect_true(is.matrix(att) && is.numeric(att))
  expect_identical(dimnames(att), list(c("RNA", "ADT"), paste0("z", 0:3)))
  expect_true(all(is.finite(att)) && all(att >= 0))
  # RNA (the first assay) is the primary modality: its decoder reads its own slice only
  expect_true(all(att["RNA", 1:2] > 0) && all(att["RNA", 3:4] == 0) && all(att["ADT", ] > 0))
  p <- plotModalityAttribution(att, use.ggplot = FALSE)
  expect_identical(dim(p), dim(att))
  expect_equal(unname(apply(p, 1, max)), c(1, 1))
  if (requireNamespace("ggplot2", quietly = TRUE)) {
    expect_s3_class(plotModalityAttribution(out), "ggplot")
  }
  expect_error(getModalityAttribution(out, name = "pca"), "needs a multimodal model|no reduction|No regularizedvi")
})

test_that("runRegularizedMultimodalVI stores a reducedDim and the model (weighted_mean)", {
  skip_if_no_regularizedvi()
  sce <- citeseq_sce()
  out <- do.call(runRegularizedMultimodalVI,
                 c(list(sce, altexps = "ADT", batch = "sample", latent.mode = "weighted_mean",
                        name = "mm"), tiny_multi))
  latent <- SingleCellExperiment::reducedDim(out, "mm")
  expect_identical(dim(latent), c(ncol(sce), 2L))  # one shared latent
  expect_identical(rownames(latent), colnames(sce))
  att <- getModalityAttribution(out, name = "mm")
  expect_identical(dim(att), c(2L, 2L))
  expect_identical(rownames(att), c("RNA", "ADT"))
  expect_true(all(is.finite(att)))
})

test_that("primary.modality chooses the decoder that reads its own slice; bad values are refused", {
  skip_if_no_regularizedvi()
  obj <- citeseq()
  primary <- function(model) reticulate::py_to_r(model$py$module$primary_modality)
  adt <- regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), n.hidden = 8, n.latent = 2,
                                      primary.modality = "ADT")
  expect_identical(primary(adt), "ADT")
  expect_null(primary(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), n.hidden = 8,
                                                   primary.modality = NA)))
  expect_null(primary(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), n.hidden = 8,
                                                   latent.mode = "weighted_mean")))
  expect_error(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), primary.modality = "HTO"),
               "must be \"first\", NA or one of the modalities RNA, ADT; got \"HTO\"")
  expect_error(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), latent.mode = "single_encoder",
                                            primary.modality = "RNA"), "concatenation\" only")
  expect_error(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), primary.modality = 1),
               "one modality name")
})
