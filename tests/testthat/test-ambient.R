# Ambient outputs in R: per-cell contamination columns, ambient / corrected counts, assays.

# One small Seurat fit for the file (cells shuffled, so that object order != pbmc_small's).
seurat_fit <- local({
  fit <- NULL
  function() {
    if (is.null(fit)) {
      set.seed(21)
      obj <- pbmc()[, sample(colnames(pbmc()))]
      fit <<- do.call(RunRegularizedVI, c(list(obj, batch = "groups"), tiny_fit))
    }
    fit
  }
})

test_that("the run functions add the contamination fraction in object cell order, in [0, 1]", {
  skip_if_no_regularizedvi()
  obj <- seurat_fit()
  expect_true("regularizedvi_contamination" %in% names(obj[[]]))
  values <- obj$regularizedvi_contamination
  expect_identical(names(values), colnames(obj))
  expect_true(all(is.finite(values)) && all(values >= 0 & values <= 1))
  direct <- getContaminationFraction(obj)
  expect_setequal(names(direct), colnames(obj))
  expect_identical(unname(values), unname(direct[colnames(obj)]))
  # the other metadata columns are untouched
  expect_identical(obj[[]][, setdiff(names(obj[[]]), "regularizedvi_contamination")],
                   pbmc()[[]][colnames(obj), ])
  # NULL: no column; a bad name: an error before any fit
  none <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups", contamination.column = NULL),
                                      tiny_fit))
  expect_false("regularizedvi_contamination" %in% names(none[[]]))
  expect_error(RunRegularizedVI(pbmc(), contamination.column = c("a", "b")),
               "`contamination.column` must be one non-empty name \\(or NULL for none\\)")

  sce <- synthetic_sce()
  set.seed(22)
  sce <- sce[, sample(colnames(sce))]
  out <- do.call(runRegularizedVI, c(list(sce, batch = "sample"), tiny_fit))
  col <- SummarizedExperiment::colData(out)$regularizedvi_contamination
  expect_true(all(col >= 0 & col <= 1))
  expect_identical(col, unname(getContaminationFraction(out)[colnames(sce)]))
})

test_that("ambient + corrected counts = observed; corrected is sparse, never above the counts", {
  skip_if_no_regularizedvi()
  obj <- seurat_fit()
  counts <- layer_data(obj, "counts")
  corrected <- getAmbientCorrectedCounts(obj)
  ambient <- getAmbientCounts(obj)
  for (m in list(corrected, ambient)) {
    expect_s4_class(m, "dgCMatrix")
    expect_identical(dimnames(m), dimnames(counts))
  }
  # stored entries only where there are counts (zeros stay zeros), never above them
  entries <- Matrix::summary(corrected)
  observed <- as.matrix(counts)[cbind(entries$i, entries$j)]
  expect_true(all(observed > 0))
  expect_true(all(entries$x <= observed))
  expect_true(all(corrected@x >= 0) && all(ambient@x >= 0))
  expect_equal(as.matrix(corrected + ambient), as.matrix(counts), tolerance = 1e-5, ignore_attr = TRUE)
  # not whole numbers: a posterior-mean share
  expect_true(any(corrected@x != round(corrected@x)))
  expect_error(getAmbientCorrectedCounts(obj, modality = "ADT"),
               "modality = \"ADT\" was given, but this is a single-modality model")
})

test_that("AddAmbientCorrectedCounts stores a sparse counts assay, logged", {
  skip_if_no_regularizedvi()
  obj <- seurat_fit()
  out <- AddAmbientCorrectedCounts(obj)
  expect_true("RNAcorrected" %in% SeuratObject::Assays(out))
  expect_identical(SeuratObject::DefaultAssay(out), "RNA")
  expect_s4_class(out[["RNAcorrected"]], if (is_seurat5()) "Assay5" else "Assay")
  stored <- layer_data(out, "counts", "RNAcorrected")
  expect_s4_class(stored, "dgCMatrix")
  expect_identical(colnames(stored), colnames(obj))
  expect_equal(stored, getAmbientCorrectedCounts(obj)[rownames(stored), colnames(obj)])
  expect_identical(setdiff(command_names(out), command_names(obj)), "AddAmbientCorrectedCounts.RNAcorrected")
  named <- AddAmbientCorrectedCounts(obj, new.assay = "SOUPFREE")
  expect_true("SOUPFREE" %in% SeuratObject::Assays(named))
})

test_that("addAmbientCorrectedCounts adds a sparse SCE assay and refuses a partial gene set", {
  skip_if_no_regularizedvi()
  sce <- do.call(runRegularizedVI, c(list(synthetic_sce(), batch = "sample"), tiny_fit))
  out <- addAmbientCorrectedCounts(sce)
  stored <- SummarizedExperiment::assay(out, "regularizedvi_corrected")
  expect_s4_class(stored, "dgCMatrix")
  expect_identical(dimnames(stored), dimnames(sce))
  counts <- SummarizedExperiment::assay(sce, "counts")
  expect_true(all(as.matrix(stored) <= as.matrix(counts)))
  sub <- do.call(runRegularizedVI, c(list(synthetic_sce(), batch = "sample",
                                          features = paste0("gene", 1:30)), tiny_fit))
  expect_error(addAmbientCorrectedCounts(sub),
               "The model has 30 of the 40 features of the experiment \\(it lacks e.g. 'gene31'\\)")
})
