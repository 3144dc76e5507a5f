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

# An h5ad from ../shared/data read through Python's anndata: list(adata, counts = features x
# cells dgCMatrix); skips with the reason when the file is absent.
read_shared_h5ad <- function(name) {
  path <- shared_data_path(name)
  if (is.na(path)) skip(paste0(name, " not found (expected at ../shared/data/ from the package root)"))
  adata <- reticulate::import("anndata", convert = FALSE)$read_h5ad(path)
  list(adata = adata, counts = py_counts(adata))
}

# Names of the logged Seurat commands (Seurat appends the assay: "RunRegularizedVI.RNA").
command_names <- function(object) names(object@commands)

tiny_fit <- list(n.hidden = 16, n.latent = 4, max.epochs = 2, progress = FALSE,
                 accelerator = "cpu")

# ---------------------------------------------------------------- Seurat 4 / 5 stacks

is_seurat5 <- function() {
  requireNamespace("SeuratObject", quietly = TRUE) && utils::packageVersion("SeuratObject") >= "5.0.0"
}

# Tests of Seurat 5 features (Assay5, split layers, IntegrateLayers) run on the Seurat 5
# stack only; the Seurat 4 stack (Debian's SeuratObject 4.1) has none of them.
skip_if_not_seurat5 <- function() {
  skip_if_not_installed("SeuratObject")
  if (!is_seurat5()) skip("Seurat 5 only (SeuratObject >= 5: Assay5, layers); this is the Seurat 4 stack")
}

skip_if_not_seurat5_full <- function() {
  skip_if_not_seurat5()
  skip_if_not_installed("Seurat", minimum_version = "5.0.0")
}

# A layer (v5) / slot (v4) of an assay, whichever SeuratObject is installed.
layer_data <- function(object, layer = "counts", assay = NULL) {
  if (is.null(assay)) assay <- SeuratObject::DefaultAssay(object)
  regularizedvi:::.layer_data(object[[assay]], layer)
}

# pbmc_small with its RNA assay as a Seurat 5 Assay5 (same counts, data, features).
pbmc5 <- function() {
  skip_if_not_seurat5()
  obj <- SeuratObject::pbmc_small
  suppressWarnings(obj[["RNA"]] <- methods::as(obj[["RNA"]], "Assay5"))
  obj
}

# Split the RNA counts of a v5 object by a metadata column (Seurat's own split()).
split_rna <- function(obj, column) {
  suppressMessages(suppressWarnings(
    obj[["RNA"]] <- split(obj[["RNA"]], f = obj[[column, drop = TRUE]])))
  obj
}

# The CSR arrays of an AnnData's X, read back into R.
csr_arrays <- function(adata) {
  np <- reticulate::import("numpy", convert = FALSE)
  x <- adata$X
  list(indptr = as.integer(reticulate::py_to_r(np$asarray(x$indptr, dtype = "int64"))),
       indices = as.integer(reticulate::py_to_r(np$asarray(x$indices, dtype = "int64"))),
       data = as.double(reticulate::py_to_r(np$asarray(x$data, dtype = "float64"))),
       shape = unlist(reticulate::py_to_r(x$shape)),
       obs = as.character(reticulate::py_to_r(adata$obs_names$tolist())),
       var = as.character(reticulate::py_to_r(adata$var_names$tolist())))
}

categories <- function(adata, col) {
  cat <- obs_col(adata, col)$cat
  list(levels = as.character(reticulate::py_to_r(cat$categories$tolist())),
       codes = as.integer(reticulate::py_to_r(cat$codes$to_numpy())))
}

# Evaluate the R code an error message suggests after "pass features = " (or the code
# of a cell fix), with `obj` / `sce` bound to the user's object.
suggested_code <- function(message, after) {
  start <- regexpr(after, message, fixed = TRUE)
  stopifnot(start > 0)
  rest <- substring(message, start + nchar(after))
  # the code is balanced R up to the " (obj: your object)" note
  end <- regexpr(" \\((obj|sce): your object\\)", rest)
  stopifnot(end > 0)
  substring(rest, 1, end - 1)
}

# Fraction of each cell's k nearest neighbours (Euclidean, in `emb`) from another group,
# divided by the fraction expected if groups were mixed at random: 1 = perfectly mixed,
# 0 = no neighbour from another group.
knn_mixing <- function(emb, group, k = 20) {
  d <- as.matrix(stats::dist(emb))
  diag(d) <- Inf
  group <- as.character(group)
  other <- vapply(seq_len(nrow(d)), function(i) {
    nn <- order(d[i, ])[seq_len(k)]
    mean(group[nn] != group[i])
  }, 1)
  expected <- 1 - (table(group)[group] - 1) / (length(group) - 1)
  mean(other / expected)
}

# Fraction of each cell's k nearest neighbours with the same label.
knn_purity <- function(emb, label, k = 20) {
  d <- as.matrix(stats::dist(emb))
  diag(d) <- Inf
  label <- as.character(label)
  mean(vapply(seq_len(nrow(d)), function(i) mean(label[order(d[i, ])[seq_len(k)]] == label[i]), 1))
}

# ---------------------------------------------------------------- multimodal

# pbmc_small RNA counts + a made-up ADT assay: 10 proteins with known counts.
adt_counts <- function(cells) {
  n <- length(cells)
  m <- matrix(as.double((seq_len(10 * n) %% 7) + rep(seq_len(10), times = n) %% 3), 10, n,
              dimnames = list(paste0("prot", 1:10), cells))
  m[1, ] <- m[1, ] + 1  # every cell has ADT counts
  Matrix::Matrix(m, sparse = TRUE)
}

citeseq <- function() {
  skip_if_not_installed("SeuratObject")
  obj <- SeuratObject::pbmc_small
  obj[["ADT"]] <- SeuratObject::CreateAssayObject(counts = adt_counts(colnames(obj)))
  obj
}

citeseq_sce <- function() {
  skip_if_not_installed("SingleCellExperiment")
  sce <- synthetic_sce()
  SingleCellExperiment::altExp(sce, "ADT") <- SingleCellExperiment::SingleCellExperiment(
    assays = list(counts = adt_counts(colnames(sce))))
  sce
}


tiny_multi <- list(n.hidden = 8, n.latent = 2, max.epochs = 2, progress = FALSE, accelerator = "cpu")

# ---------------------------------------------------------------- pbmc_3chem

shared_data_path <- function(name) {
  roots <- c(Sys.getenv("REGULARIZEDVI_ROOT"), testthat::test_path("..", ".."), getwd(),
             file.path(getwd(), ".."), file.path(getwd(), "..", ".."))
  candidates <- c(file.path(roots[nzchar(roots)], "..", "shared", "data", name),
                  file.path("/work/shared/data", name))
  hit <- candidates[file.exists(candidates)]
  if (length(hit)) normalizePath(hit[1]) else NA_character_
}

# Three 10x PBMC runs of different chemistries (strong technical batch effects), read
# through Python's anndata: `per_batch` random cells of each chemistry, genes with counts.
read_3chem <- function(per_batch = 400, seed = 1) {
  path <- shared_data_path("pbmc_3chem.h5ad")
  if (is.na(path)) skip("pbmc_3chem.h5ad not found (expected at ../shared/data/ from the package root)")
  ad <- reticulate::import("anndata", convert = FALSE)
  adata <- ad$read_h5ad(path)
  counts <- py_counts(adata)
  batch <- as.character(reticulate::py_to_r(
    reticulate::py_get_item(adata$obs, "batch")$astype("str")$tolist()))
  set.seed(seed)
  keep <- sort(unlist(lapply(split(seq_along(batch), batch), function(i) sample(i, per_batch))))
  counts <- counts[, keep]
  counts <- counts[Matrix::rowSums(counts) > 0, ]
  obj <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = counts))
  obj$chemistry <- batch[keep]
  obj
}

mod_counts <- function(mdata, mod) py_counts(reticulate::py_get_item(mdata$mod, mod))
mod_names <- function(mdata) {
  as.character(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(mdata$mod)))
}

# Posterior draws (normalized expression) repeat under the same torch seed.
torch_seed <- function(seed = 1L) {
  invisible(reticulate::import("torch", convert = FALSE)$manual_seed(as.integer(seed)))
}
