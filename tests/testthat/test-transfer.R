# Label transfer with query mapping: MapRegularizedVIQuery / mapRegularizedVIQuery(transfer =).

test_that("kang: labels of two samples transfer to the other two (accuracy > 0.8), in query order", {
  skip_if_no_regularizedvi()
  sce <- read_kang()
  ref_cells <- sce$sample_id %in% c("ctrl101", "stim101")
  reference <- sce[, ref_cells]
  reference$sample_id <- droplevels(reference$sample_id)
  set.seed(41)
  query <- sce[, !ref_cells]
  query <- query[, sample(colnames(query))]
  fit <- runRegularizedVI(reference, batch = "sample_id", n.hidden = 64, n.latent = 8, max.epochs = 40,
                          progress = FALSE, accelerator = "cpu", seed = 0)
  dir <- tempfile("rvi-kang-transfer-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(fit, dir)
  mapped <- mapRegularizedVIQuery(query, dir, max.epochs = 40, progress = FALSE, accelerator = "cpu",
                                  transfer = "cluster_id", reference.object = reference)
  cd <- SummarizedExperiment::colData(mapped)
  truth <- as.character(query$cluster_id)
  # 702 query cells of 5 types; measured 0.862 (the errors: CD4 T cells called CD8, FCGR3A+
  # monocytes called CD14+); B cells 0.99, CD14+ monocytes 0.93
  accuracy <- mean(cd$predicted_cluster_id == truth)
  expect_gt(accuracy, 0.8)
  for (type in c("B cells", "CD14+ Monocytes")) {
    expect_gt(mean(cd$predicted_cluster_id[truth == type] == type), 0.85, label = type)
  }
  expect_true(all(cd$predicted_cluster_id_confidence >= 0 & cd$predicted_cluster_id_confidence <= 1))
  expect_lt(mean(cd$predicted_cluster_id_unknown), 0.05)
  # confident calls are the more accurate ones
  sure <- cd$predicted_cluster_id_confidence > 0.9
  expect_gt(mean(cd$predicted_cluster_id_best[sure] == truth[sure]), accuracy)
  expect_true(all(cd$regularizedvi_contamination >= 0 & cd$regularizedvi_contamination <= 1))
})

test_that("Seurat: label columns in query cell order, named by the prefix", {
  skip_if_no_regularizedvi()
  ref <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups"), tiny_fit))
  dir <- tempfile("rvi-transfer-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(ref, dir)
  set.seed(42)
  query <- pbmc()[, sample(colnames(pbmc()))]
  query$groups <- paste0("query_", query$groups)
  mapped <- MapRegularizedVIQuery(query, dir, max.epochs = 2, progress = FALSE, accelerator = "cpu",
                                  transfer = "RNA_snn_res.1", reference.object = ref,
                                  transfer.prefix = "ref_", transfer.options = list(k = 5))
  columns <- paste0("ref_RNA_snn_res.1", c("", "_best", "_confidence", "_unknown"))
  expect_true(all(columns %in% names(mapped[[]])))
  expect_true("MapRegularizedVIQuery.RNA" %in% command_names(mapped))
  labels <- mapped[[]][, columns]
  expect_identical(rownames(labels), colnames(query))
  expect_type(labels$ref_RNA_snn_res.1_unknown, "logical")
  flagged <- labels$ref_RNA_snn_res.1_unknown
  expect_identical(labels$ref_RNA_snn_res.1[!flagged], labels$ref_RNA_snn_res.1_best[!flagged])
  expect_true(all(labels$ref_RNA_snn_res.1[flagged] == "unknown"))
  # matched by cell name to the Python result on the same query model
  model <- getRegularizedVIModel(mapped)
  ref_data <- regularizedvi:::.data_for_saved(ref, regularizedvi:::.read_model_json(dir),
                                              obs.columns = "RNA_snn_res.1")
  direct <- regularizedvi:::.py_frame_to_r(regularizedvi:::.without_scvi_info(
    model$py$transfer_labels(ref_data, "RNA_snn_res.1", k = 5L)))
  expect_identical(labels$ref_RNA_snn_res.1_confidence, direct[colnames(query), "confidence"])
  expect_identical(labels$ref_RNA_snn_res.1_best, direct[colnames(query), "predicted"])
})

test_that("label transfer without a reference object or label column is refused before training", {
  skip_if_no_regularizedvi()
  dir <- tempfile("rvi-transfer-errors-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  ref <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups"), tiny_fit))
  SaveRegularizedVI(ref, dir)
  query <- pbmc()
  expect_error(MapRegularizedVIQuery(query, dir, transfer = "RNA_snn_res.1"),
               "transfer = \"RNA_snn_res.1\" needs the reference's cells and labels: pass reference.object")
  expect_error(MapRegularizedVIQuery(query, dir, transfer = "cell_type", reference.object = ref),
               "The reference object has no column 'cell_type' to transfer \\(columns: orig.ident")
  expect_error(MapRegularizedVIQuery(query, dir, reference.object = ref),
               "`reference.object` is given but `transfer` is not")
  bad <- ref
  bad$RNA_snn_res.1[3] <- NA
  expect_error(MapRegularizedVIQuery(query, dir, transfer = "RNA_snn_res.1", reference.object = bad),
               "Column 'RNA_snn_res.1' of the reference object has 1 NA value\\(s\\) \\(e.g. cell '")
  expect_error(MapRegularizedVIQuery(query, dir, transfer = "RNA_snn_res.1", reference.object = ref,
                                     transfer.options = list(kk = 3)),
               "Unknown `transfer.options` entry 'kk' \\(known: k, min.confidence")
  expect_error(MapRegularizedVIQuery(query, dir, transfer = "RNA_snn_res.1", reference.object = ref,
                                     transfer.options = list(k = 0)),
               "`transfer.options\\$k` must be a whole number >= 1, not 0")
  expect_error(mapRegularizedVIQuery(synthetic_sce(), dir, transfer = "label", reference.object = ref),
               "`reference.object` must be a SingleCellExperiment object like the query, not a 'Seurat'")
  expect_error(MapRegularizedVIQuery(query, dir, transfer = c("a", "b"), reference.object = ref),
               "`transfer` must name one label column")
})

test_that("input.correction is passed to load_query_data and validated", {
  skip_if_no_regularizedvi()
  dir <- tempfile("rvi-input-correction-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  # the README recipe: the batch also conditions the decoder (and so has feature scaling)
  ref <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups", nn.conditioning = "groups"), tiny_fit))
  SaveRegularizedVI(ref, dir)
  query <- pbmc()
  query$groups <- paste0("query_", query$groups)
  mapping <- function(input.correction) {
    mapped <- MapRegularizedVIQuery(query, dir, max.epochs = 1, progress = FALSE, accelerator = "cpu",
                                    input.correction = input.correction)
    reticulate::py_to_r(getRegularizedVIModel(mapped)$py$module$query_mapping())
  }
  on <- mapping(TRUE)
  expect_length(on$scaling_rows, length(unique(query$groups)))
  expect_identical(mapping(NULL), on)  # the default: Python's, on for a single-modality reference
  expect_null(mapping(FALSE))
  expect_error(MapRegularizedVIQuery(query, tempfile(), input.correction = "yes"),
               "`input.correction` must be TRUE, FALSE or NULL \\(one value\\), not \"yes\"")
  expect_error(mapRegularizedVIQuery(synthetic_sce(), tempfile(), input.correction = c(TRUE, FALSE)),
               "`input.correction` must be TRUE, FALSE or NULL \\(one value\\)")
})
