# Shared helpers for the tests: skips, data paths, tiny synthetic objects.

skip_if_no_regularizedvi <- function() {
  if (!regularizedvi_available()) {
    skip("Python module 'regularizedvi' is not importable (set RETICULATE_PYTHON)")
  }
}

# kang_ifnb_sce.rds: ../shared/data from the package root, found from wherever tests run.
kang_path <- function() {
  roots <- c(Sys.getenv("REGULARIZEDVI_ROOT"), testthat::test_path("..", ".."), getwd(),
             file.path(getwd(), ".."), file.path(getwd(), "..", ".."), file.path(getwd(), "..", "..", ".."))
  candidates <- c(Sys.getenv("REGULARIZEDVI_KANG"),
                  file.path(roots[nzchar(roots)], "..", "shared", "data", "kang_ifnb_sce.rds"),
                  "/work/shared/data/kang_ifnb_sce.rds")
  hit <- candidates[nzchar(candidates) & file.exists(candidates)]
  if (length(hit)) normalizePath(hit[1]) else NA_character_
}

read_kang <- function() {
  skip_if_not_installed("SingleCellExperiment")
  path <- kang_path()
  if (is.na(path)) skip("kang_ifnb_sce.rds not found (expected at ../shared/data/ from the package root)")
  rebuild_sce(suppressMessages(readRDS(path)))
}

# kang_ifnb_sce.rds was saved by a newer Bioconductor: its rowRanges need the 'Seqinfo'
# package, absent here, and any validity check of the object fails. Rebuild it from its
# assays and colData (what the tests use).
rebuild_sce <- function(sce) {
  SingleCellExperiment::SingleCellExperiment(
    assays = lapply(stats::setNames(nm = SummarizedExperiment::assayNames(sce)),
                    function(a) SummarizedExperiment::assay(sce, a, withDimnames = TRUE)),
    colData = SummarizedExperiment::colData(sce))
}

# A small synthetic count matrix (genes x cells) with every cell and gene non-empty.
synthetic_counts <- function(n_genes = 40, n_cells = 60, seed = 1) {
  set.seed(seed)
  m <- matrix(stats::rpois(n_genes * n_cells, 2), n_genes, n_cells,
              dimnames = list(paste0("gene", seq_len(n_genes)), paste0("cell", seq_len(n_cells))))
  m[, colSums(m) == 0] <- 1
  m[rowSums(m) == 0, ] <- 1
  Matrix::Matrix(m, sparse = TRUE)
}

synthetic_sce <- function(...) {
  skip_if_not_installed("SingleCellExperiment")
  counts <- synthetic_counts(...)
  n <- ncol(counts)
  sce <- SingleCellExperiment::SingleCellExperiment(assays = list(counts = counts))
  sce$sample <- factor(rep(c("s1", "s2", "s3"), length.out = n), levels = c("s3", "s1", "s2", "unused"))
  sce$label <- rep(c("a", "b"), length.out = n)
  sce$score <- seq_len(n) / n
  sce
}

pbmc <- function() {
  skip_if_not_installed("SeuratObject")
  SeuratObject::pbmc_small
}

# Read a cells x genes scipy matrix held by reticulate back as a genes x cells dgCMatrix.
py_counts <- function(adata) {
  regularizedvi:::.csr_to_dgc(adata$X, as.character(reticulate::py_to_r(adata$var_names$tolist())),
                              as.character(reticulate::py_to_r(adata$obs_names$tolist())))
}

# A column of adata.obs (item access: `$sample` would be the DataFrame method).
obs_col <- function(adata, col) reticulate::py_get_item(adata$obs, col)

# Names of the logged Seurat commands (Seurat appends the assay: "RunRegularizedVI.RNA").
command_names <- function(object) names(object@commands)

tiny_fit <- list(n.hidden = 16, n.latent = 4, max.epochs = 2, progress = FALSE,
                 accelerator = "cpu")
