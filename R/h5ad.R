# Reading an AnnData .h5ad file into R objects (the example data of the docs, or any file
# written by scanpy / anndata), through Python's anndata.

#' Read the counts and cell metadata of an h5ad file
#'
#' Reads an AnnData `.h5ad` file (as written by scanpy or anndata) through
#' Python's anndata and returns its counts as a features x cells sparse
#' `dgCMatrix`, the orientation of Seurat and SingleCellExperiment, with its
#' cell metadata, ready for `CreateSeuratObject()` or `SingleCellExperiment()`.
#' The values are returned as stored (nothing is normalized or rounded); a
#' dense matrix in the file is returned sparse (only its nonzero values are
#' stored).
#'
#' @param file Path of the `.h5ad` file.
#' @param layer `NULL` (default) for the main matrix `X`, or the name of one of
#'   the file's `layers` (e.g. `"counts"`).
#' @return A list with `counts`, a features x cells `dgCMatrix` (row names the
#'   file's `var_names`, column names its `obs_names`), and `obs`, a data.frame
#'   with one row per cell in the same order (row names the cell names;
#'   logical and numeric columns as such, integers as integers where they fit,
#'   every other column, categoricals included, as character).
#' @examples
#' \dontrun{
#' rna <- readH5ADCounts("../shared/data/snare_cortex_rna.h5ad")
#' obj <- SeuratObject::CreateSeuratObject(counts = rna$counts, meta.data = rna$obs)
#' }
#' @export
readH5ADCounts <- function(file, layer = NULL) {
  if (!is.character(file) || length(file) != 1 || is.na(file)) {
    stop("`file` must be the path of one .h5ad file.", call. = FALSE)
  }
  if (!file.exists(file)) stop(sprintf("The file '%s' does not exist.", file), call. = FALSE)
  if (!is.null(layer) && (!is.character(layer) || length(layer) != 1 || is.na(layer))) {
    stop("`layer` must be NULL (the matrix X) or the name of one layer.", call. = FALSE)
  }
  anndata <- .py_module("anndata")
  adata <- .py_call(anndata$read_h5ad(normalizePath(file)), sprintf("Reading '%s' as an h5ad file failed", file))
  if (is.null(layer)) {
    matrix <- adata$X
  } else {
    layers <- as.character(unlist(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(
      adata$layers$keys()))))
    if (!layer %in% layers) {
      stop(sprintf("'%s' has no layer '%s'; its layers: %s (layer = NULL reads X).", file, layer,
                   if (length(layers)) paste(layers, collapse = ", ") else "none"), call. = FALSE)
    }
    matrix <- reticulate::py_get_item(adata$layers, layer)
  }
  sparse <- .py_module("scipy.sparse")
  if (!reticulate::py_to_r(sparse$issparse(matrix))) matrix <- sparse$csr_matrix(matrix)
  cells <- .py_names(adata$obs_names)
  features <- .py_names(adata$var_names)
  for (what in list(list("cell", cells, "obs_names"), list("feature", features, "var_names"))) {
    if (anyDuplicated(what[[2]])) {
      stop(sprintf("'%s' has repeated %s names (e.g. '%s'); make them unique in Python first (adata.%s_make_unique()).",
                   file, what[[1]], what[[2]][anyDuplicated(what[[2]])], what[[3]]), call. = FALSE)
    }
  }
  list(counts = .csr_to_dgc(matrix, features, cells), obs = .py_frame_to_r(adata$obs))
}
