# Real paired RNA + ATAC from R: SNARE-seq adult mouse cortex (../shared/data), a Seurat
# object with an RNA and an ATAC assay, as in the R example of docs/multimodal.md.

# A seeded subset of nuclei with their RNA genes and most detected peaks (both with counts
# in the subset), library and cell type in the metadata.
read_snare <- local({
  data <- NULL
  function(n_cells = 800, n_peaks = 2000, seed = 7) {
    if (!is.null(data)) return(data)
    paths <- vapply(c("snare_cortex_rna.h5ad", "snare_cortex_atac.h5ad"), shared_data_path, "")
    if (anyNA(paths)) skip("snare_cortex_{rna,atac}.h5ad not found (expected at ../shared/data/ from the package root)")
    rna <- readH5ADCounts(paths[[1]])  # as in docs/multimodal.md
    rna_counts <- rna$counts
    atac_counts <- readH5ADCounts(paths[[2]])$counts
    obs <- function(col) as.character(rna$obs[[col]])
    stopifnot(identical(colnames(rna_counts), colnames(atac_counts)))
    set.seed(seed)
    keep <- sort(sample(ncol(rna_counts), n_cells))
    rna_counts <- rna_counts[, keep]
    atac_counts <- atac_counts[, keep]
    rna_counts <- rna_counts[Matrix::rowSums(rna_counts) > 0, ]
    detected <- Matrix::rowSums(atac_counts > 0)
    atac_counts <- atac_counts[sort(order(-detected)[seq_len(n_peaks)]), ]
    obj <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = rna_counts))
    suppressWarnings(obj[["ATAC"]] <- SeuratObject::CreateAssayObject(counts = atac_counts))
    obj$library <- obs("library")[keep]
    obj$cell_type <- obs("cell_type")[keep]
    data <<- obj
    obj
  }
})

purity <- function(latent, labels) {
  metrics <- reticulate::import("regularizedvi.metrics")
  metrics$knn_label_purity(latent, labels, k = 15L)
}

test_that("SNARE-seq RNA + ATAC trains from R: joint latent at the RNA-only level, per-modality outputs", {
  skip_if_no_regularizedvi()
  skip_if_not_installed("SeuratObject")
  obj <- read_snare()
  fit_args <- list(batch = "library", max.epochs = 25, progress = FALSE, accelerator = "cpu")
  joint <- do.call(RunRegularizedMultimodalVI, c(list(obj, assays = c("RNA", "ATAC")), fit_args))
  rna <- do.call(RunRegularizedVI, c(list(obj), fit_args))
  z_joint <- SeuratObject::Embeddings(joint, "regularizedmultivi")
  z_rna <- SeuratObject::Embeddings(rna, "regularizedvi")
  expect_identical(rownames(z_joint), colnames(obj))
  n_cells <- length(colnames(obj))  # ncol() of a Seurat 5 object is a double
  expect_identical(dim(z_joint), c(n_cells, 20L))  # 10 RNA + 10 ATAC dimensions
  labels <- obj$cell_type
  p_joint <- purity(z_joint, labels)
  p_rna <- purity(z_rna, labels)
  p_atac <- purity(z_joint[, 11:20], labels)
  set.seed(11)
  p_shuffled <- purity(z_joint, sample(labels))
  cat(sprintf("15-NN purity: joint %.3f, RNA-only %.3f, ATAC slice %.3f, shuffled labels %.3f\n",
              p_joint, p_rna, p_atac, p_shuffled))
  expect_gt(p_joint, p_rna - 0.04)
  expect_gt(p_joint, p_atac + 0.15)
  expect_gt(p_joint, p_shuffled + 0.25)

  model <- getRegularizedVIModel(joint, "regularizedmultivi")
  access <- getNormalizedExpression(model, modality = "ATAC", features = rownames(obj[["ATAC"]])[1:5])
  expect_identical(dim(access), c(5L, n_cells))
  expect_true(all(is.finite(access)) && all(access > 0))
  # RNA primary: its decoder reads the RNA slice only, exactly
  attribution <- getModalityAttribution(joint)
  expect_identical(rownames(attribution), c("RNA", "ATAC"))
  expect_identical(unname(attribution["RNA", 11:20]), rep(0, 10))
  expect_true(all(attribution["RNA", 1:10] > 0))
  de <- regularizedviDE(model, cells.1 = colnames(obj)[obj$cell_type == "Ast"], modality = "RNA")
  expect_setequal(rownames(de), rownames(obj[["RNA"]]))
  expect_error(regularizedviDE(model, cells.1 = colnames(obj)[1:20], modality = "DNA"), "DNA")

  dir <- tempfile("rvi-snare-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(joint, dir, name = "regularizedmultivi")
  loaded <- LoadRegularizedVI(dir, obj)
  expect_s3_class(loaded, "regularizedviMultimodalModel")
  expect_identical(getLatent(loaded), getLatent(model))
})
