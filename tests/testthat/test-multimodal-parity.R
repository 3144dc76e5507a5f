# The multimodal model from R at parity with the single one: save -> load, outputs and DE
# for any modality, query mapping with label transfer, contamination, kept attribution.

# One small CITE-seq fit for the file (cells shuffled), and its saved folder.
citeseq_fit <- local({
  fit <- NULL
  function() {
    if (is.null(fit)) {
      set.seed(31)
      obj <- citeseq()
      obj <- obj[, sample(colnames(obj))]
      fit <<- do.call(RunRegularizedMultimodalVI, c(list(obj, batch = "groups"), tiny_multi))
    }
    fit
  }
})

saved_citeseq <- local({
  dir <- NULL
  function() {
    if (is.null(dir)) {
      dir <<- tempfile("rvi-multi-")
      SaveRegularizedVI(citeseq_fit(), dir, name = "regularizedmultivi")
    }
    dir
  }
})

test_that("a multimodal model saved from R loads from R with bitwise-equal latents", {
  skip_if_no_regularizedvi()
  obj <- citeseq_fit()
  dir <- saved_citeseq()
  expect_identical(jsonlite::fromJSON(file.path(dir, "model.json"))$class, "RegularizedMultimodalVI")
  set.seed(32)
  other_order <- obj[, sample(colnames(obj))]
  loaded <- LoadRegularizedVI(dir, other_order)
  expect_s3_class(loaded, "regularizedviMultimodalModel")
  expect_identical(loaded$modalities, c("RNA", "ADT"))
  expect_identical(loaded$cells, colnames(other_order))
  original <- getLatent(getRegularizedVIModel(obj, "regularizedmultivi"))
  expect_identical(getLatent(loaded)[rownames(original), ], original)
  # each modality's own latent: its slice of the concatenation
  expect_identical(unname(getLatent(loaded, modality = "ADT")), unname(getLatent(loaded)[, 3:4]))
  # an object without one of the saved assays, or without some of its features
  expect_error(LoadRegularizedVI(dir, pbmc()),
               "saved with modalities RNA, ADT; the Seurat object lacks assay\\(s\\) 'ADT'")
  fewer <- citeseq()
  adt <- SeuratObject::CreateAssayObject(counts = adt_counts(colnames(fewer))[1:8, ])
  suppressWarnings(fewer[["ADT"]] <- adt)  # SeuratObject 5: "Different cells and/or features"
  expect_error(LoadRegularizedVI(dir, fewer),
               "lacks 2 of the model's 10 features of modality 'ADT' \\(e.g. prot9, prot10; Seurat assay 'ADT'")
})

test_that("an SCE multimodal model saves and loads with its altExps", {
  skip_if_no_regularizedvi()
  sce <- citeseq_sce()
  fit <- do.call(runRegularizedMultimodalVI, c(list(sce, altexps = "ADT", batch = "sample"), tiny_multi))
  dir <- tempfile("rvi-multi-sce-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(fit, dir, name = "regularizedmultivi")
  loaded <- LoadRegularizedVI(dir, sce)
  expect_identical(getLatent(loaded), getLatent(getRegularizedVIModel(fit, "regularizedmultivi")))
  no_alt <- sce
  SingleCellExperiment::altExps(no_alt) <- list()
  expect_error(LoadRegularizedVI(dir, no_alt),
               "saved with modalities RNA, ADT; the SingleCellExperiment has altExp\\(s\\) none, so 1 of them \\(RNA or ADT\\) are missing")
  renamed <- sce
  SingleCellExperiment::altExpNames(renamed) <- "PROT"
  expect_error(LoadRegularizedVI(dir, renamed), "altExp\\(s\\) PROT, so 1 of them \\(RNA or ADT\\)")
  # contamination columns per modality with background, in cell order
  cd <- SummarizedExperiment::colData(fit)
  expect_true(all(c("regularizedvi_contamination_RNA", "regularizedvi_contamination_ADT") %in% names(cd)))
  expect_identical(cd$regularizedvi_contamination_ADT,
                   unname(getContaminationFraction(fit, name = "regularizedmultivi", modality = "ADT")[colnames(sce)]))
  # the second modality's outputs go to its altExp
  out <- addAmbientCorrectedCounts(fit, name = "regularizedmultivi", modality = "ADT")
  adt <- SingleCellExperiment::altExp(out, "ADT")
  corrected <- SummarizedExperiment::assay(adt, "regularizedvi_corrected")
  expect_s4_class(corrected, "dgCMatrix")
  expect_identical(dimnames(corrected), dimnames(adt))
  out <- addNormalizedExpression(out, name = "regularizedmultivi", modality = "ADT", library.size = 1)
  normalized <- SummarizedExperiment::assay(SingleCellExperiment::altExp(out, "ADT"), "regularizedvi_normalized")
  expect_equal(unname(colSums(normalized)), rep(1, ncol(sce)), tolerance = 1e-5)
  expect_false("regularizedvi_normalized" %in% SummarizedExperiment::assayNames(out))
})

test_that("outputs for the second modality have that modality's features", {
  skip_if_no_regularizedvi()
  obj <- citeseq_fit()
  adt <- rownames(obj[["ADT"]])
  for (modality in list(NULL, "RNA", "ADT")) {
    features <- if (identical(modality, "ADT")) adt else rownames(obj[["RNA"]])
    normalized <- getNormalizedExpression(obj, name = "regularizedmultivi", modality = modality)
    expect_identical(dimnames(normalized), list(features, colnames(obj)))
    expect_equal(unname(colSums(normalized)), rep(1, ncol(obj)), tolerance = 1e-5)
    corrected <- getAmbientCorrectedCounts(obj, name = "regularizedmultivi", modality = modality)
    expect_identical(dimnames(corrected), list(features, colnames(obj)))
    counts <- layer_data(obj, "counts", if (is.null(modality)) "RNA" else modality)[features, colnames(obj)]
    ambient <- getAmbientCounts(obj, name = "regularizedmultivi", modality = modality)
    expect_equal(as.matrix(corrected + ambient), as.matrix(counts), tolerance = 1e-5, ignore_attr = TRUE)
    expect_identical(rownames(getAmbientProfile(obj, name = "regularizedmultivi", modality = modality)),
                     features)
  }
  de <- regularizedviDE(obj, obj$groups == "g1", name = "regularizedmultivi", modality = "ADT",
                        mode = "vanilla")
  expect_setequal(rownames(de), adt)
  expect_true(all(c("bayes_factor", "raw_mean1") %in% names(de)))
  picked <- getNormalizedExpression(obj, name = "regularizedmultivi", modality = "ADT",
                                    features = c("prot3", "prot1"))
  expect_identical(rownames(picked), c("prot3", "prot1"))
  expect_error(getNormalizedExpression(obj, name = "regularizedmultivi", modality = "ADT",
                                       features = "MS4A1"),
               "1 of `features` are not the model's features of modality 'ADT' \\(e.g. MS4A1\\)")
  expect_error(getNormalizedExpression(obj, name = "regularizedmultivi", modality = "HTO"),
               "`modality` must be one of the model's modalities \\(RNA, ADT\\), not \"HTO\"")
  # Seurat assays of the second modality
  out <- AddNormalizedExpression(obj, reduction = "regularizedmultivi", modality = "ADT",
                                 new.assay = "ADTnorm")
  expect_identical(rownames(layer_data(out, "data", "ADTnorm")), adt)
  out <- AddAmbientCorrectedCounts(out, reduction = "regularizedmultivi", modality = "ADT")
  stored <- layer_data(out, "counts", "ADTcorrected")
  expect_s4_class(stored, "dgCMatrix")
  expect_identical(dimnames(stored), list(adt, colnames(obj)))
  # contamination of each modality with a background, by cell
  expect_identical(unname(obj$regularizedvi_contamination_ADT),
                   unname(getContaminationFraction(obj, name = "regularizedmultivi", modality = "ADT")[colnames(obj)]))
})

test_that("a query of a multimodal reference maps, with label transfer in query cell order", {
  skip_if_no_regularizedvi()
  reference <- citeseq_fit()
  dir <- saved_citeseq()
  query <- citeseq()
  set.seed(33)
  query <- query[, sample(colnames(query))]
  query$groups <- paste0("query_", query$groups)
  mapped <- MapRegularizedVIQuery(query, dir, max.epochs = 2, progress = FALSE, accelerator = "cpu",
                                  transfer = "letter.idents", reference.object = reference)
  emb <- SeuratObject::Embeddings(mapped, "regularizedvi")
  expect_identical(dim(emb), c(80L, 4L))
  expect_identical(rownames(emb), colnames(query))
  expect_identical(SeuratObject::DefaultAssay(mapped[["regularizedvi"]]), "RNA")
  model <- getRegularizedVIModel(mapped)
  expect_s3_class(model, "regularizedviMultimodalModel")
  expect_identical(names(getAmbientProfile(mapped, modality = "ADT")), c("g1", "g2", "query_g1", "query_g2"))
  expect_true(all(mapped$regularizedvi_contamination_RNA >= 0 & mapped$regularizedvi_contamination_RNA <= 1))
  labels <- mapped[[]][, paste0("predicted_letter.idents", c("", "_best", "_confidence", "_unknown"))]
  expect_true(all(labels$predicted_letter.idents_best %in% levels(reference$letter.idents)))
  expect_identical(labels$predicted_letter.idents == "unknown", labels$predicted_letter.idents_unknown)
  # the columns are those of the Python result, matched by cell name
  ref_data <- regularizedvi:::.data_for_saved(reference, regularizedvi:::.read_model_json(dir),
                                              obs.columns = "letter.idents")
  direct <- regularizedvi:::.py_frame_to_r(regularizedvi:::.without_scvi_info(
    model$py$transfer_labels(ref_data, "letter.idents")))
  expect_identical(labels$predicted_letter.idents_confidence, direct[colnames(query), "confidence"])
  # the multimodal model has no input correction: the default maps (above), TRUE is refused
  # in R, with the R argument's name, before the query is converted (a traced .data_for_saved
  # counts the conversions), by both wrappers, and with no traceback
  conversions <- new.env()
  conversions$n <- 0L
  suppressMessages(trace(".data_for_saved", where = asNamespace("regularizedvi"), print = FALSE,
                         tracer = bquote(assign("n", get("n", .(conversions)) + 1L, .(conversions)))))
  on.exit(suppressMessages(untrace(".data_for_saved", where = asNamespace("regularizedvi"))),
          add = TRUE)
  refused <- paste0("^input\\.correction = TRUE does not apply to the RegularizedMultimodalVI ",
                    "reference in '.*': it maps a query without the input correction, which only a ",
                    "single-modality reference has\\. Leave input\\.correction = NULL \\(the ",
                    "default\\) or pass input\\.correction = FALSE\\.$")
  for (map in list(function() MapRegularizedVIQuery(query, dir, input.correction = TRUE,
                                                    progress = FALSE, accelerator = "cpu"),
                   function() mapRegularizedVIQuery(synthetic_sce(), dir, input.correction = TRUE,
                                                    progress = FALSE, accelerator = "cpu"))) {
    err <- tryCatch(map(), error = identity)
    expect_s3_class(err, "error")
    expect_match(conditionMessage(err), refused)
    expect_false(grepl("input_correction|Traceback|File \"|py_last_error", conditionMessage(err)))
  }
  expect_identical(conversions$n, 0L)
  # and the trace does count a conversion
  regularizedvi:::.data_for_saved(query, regularizedvi:::.read_model_json(dir))
  expect_identical(conversions$n, 1L)
})

test_that("plotModalityAttribution reuses the attribution kept with the model", {
  skip_if_no_regularizedvi()
  obj <- citeseq_fit()
  model <- getRegularizedVIModel(obj, "regularizedmultivi")
  rm(list = ls(model$cache), envir = model$cache)
  first <- getModalityAttribution(obj)
  expect_length(ls(model$cache), 1)
  # what is kept is what is drawn: replace it, and the plot shows the replacement
  key <- ls(model$cache)
  assign(key, first * 0 + c(2, 4), envir = model$cache)
  expect_equal(unname(plotModalityAttribution(obj, use.ggplot = FALSE)), matrix(1, 2, ncol(first)))
  expect_equal(getModalityAttribution(obj, recompute = TRUE), first)
  # other arguments: another entry; training again drops them
  fd <- getModalityAttribution(obj, method = "finite_difference")
  expect_length(ls(model$cache), 2)
  expect_equal(fd, first, tolerance = 1e-2)
  trainRegularizedVI(model, max.epochs = 1, progress = FALSE, accelerator = "cpu")
  expect_length(ls(model$cache), 0)
})
