# Model outputs back in R: normalized expression, ambient profile, corrected counts.

#' Normalized (denoised) expression
#'
#' The decoder's biological signal per cell, normalized over all genes, with
#' the ambient background and technical scaling left out; each cell sums to
#' `library.size`.
#'
#' @param model A trained `regularizedviModel`, or an object holding one (see
#'   [getRegularizedVIModel()]).
#' @param library.size What each cell sums to (default 1; 1e4 gives
#'   counts-per-10k-like values).
#' @param name Name under which the model is stored in `model` when it is an
#'   object.
#' @param ... Further arguments of the Python `get_normalized_expression()`
#'   (e.g. `n_samples = 10L`).
#' @return A dense genes x cells matrix with dimnames.
#' @export
getNormalizedExpression <- function(model, library.size = 1, name = "regularizedvi", ...) {
  model <- getRegularizedVIModel(model, name)
  values <- .py_call(model$py$get_normalized_expression(library_size = as.numeric(library.size),
                                                        return_numpy = TRUE, ...),
                     "Computing the normalized expression failed")
  values <- t(reticulate::py_to_r(values))
  dimnames(values) <- list(model$genes, model$cells)
  values
}

#' Learned ambient RNA profile
#'
#' @inheritParams getNormalizedExpression
#' @param normalize Each column sums to 1 (default `TRUE`); `FALSE` gives the
#'   per-cell fractions of the library.
#' @return A data.frame, genes (row names) x ambient categories (columns).
#' @export
getAmbientProfile <- function(model, normalize = TRUE, name = "regularizedvi") {
  model <- getRegularizedVIModel(model, name)
  df <- .py_call(model$py$get_ambient_profile(normalize = normalize),
                 "Reading the ambient profile failed")
  values <- reticulate::py_to_r(df$to_numpy())
  columns <- as.character(reticulate::py_to_r(df$columns$astype("str")$tolist()))
  out <- as.data.frame(matrix(values, nrow = length(model$genes)), stringsAsFactors = FALSE)
  names(out) <- columns
  rownames(out) <- model$genes
  out
}

#' Counts with the ambient share removed
#'
#' Observed counts times the expected share of the cell's own signal,
#' `x * rho / (rho + s)`; zeros stay zeros. Returned sparse without densifying.
#'
#' @inheritParams getNormalizedExpression
#' @return A genes x cells `dgCMatrix`.
#' @export
getAmbientCorrectedCounts <- function(model, name = "regularizedvi") {
  model <- getRegularizedVIModel(model, name)
  csr <- .py_call(model$py$get_ambient_corrected_counts(),
                  "Computing the ambient-corrected counts failed")
  .csr_to_dgc(csr, model$genes, model$cells)
}

# A cells x genes scipy CSR is a genes x cells CSC: read its arrays into a dgCMatrix.
.csr_to_dgc <- function(csr, genes, cells) {
  csr <- csr$tocsr()
  csr$sort_indices()
  np <- .py_module("numpy")
  m <- methods::new("dgCMatrix",
                    i = as.integer(reticulate::py_to_r(np$asarray(csr$indices, dtype = "int32"))),
                    p = as.integer(reticulate::py_to_r(np$asarray(csr$indptr, dtype = "int32"))),
                    x = as.double(reticulate::py_to_r(np$asarray(csr$data, dtype = "float64"))),
                    Dim = c(length(genes), length(cells)))
  m@Dimnames <- list(genes, cells)
  m
}

#' Add regularizedvi normalized expression as a Seurat assay
#'
#' @param object A `Seurat` object after [RunRegularizedVI()].
#' @param new.assay Name of the new assay (default `"RVI"`); its `data` slot
#'   holds the normalized expression.
#' @param reduction Reduction under which the model is stored.
#' @param library.size What each cell sums to (default 1e4).
#' @param ... Passed to [getNormalizedExpression()].
#' @return The Seurat object with the new assay (the default assay unchanged).
#' @export
AddNormalizedExpression <- function(object, new.assay = "RVI", reduction = "regularizedvi",
                                    library.size = 1e4, ...) {
  values <- getNormalizedExpression(object, library.size = library.size, name = reduction, ...)
  values <- values[, colnames(object), drop = FALSE]
  assay <- SeuratObject::CreateAssayObject(data = values)
  # A key of its own, so that it never collides with the reduction's "rvi_".
  SeuratObject::Key(assay) <- paste0(gsub("[^[:alnum:]]", "", tolower(new.assay)), "expr_")
  object[[new.assay]] <- assay
  object
}

#' Add regularizedvi normalized expression as a SingleCellExperiment assay
#'
#' @param x A `SingleCellExperiment` after [runRegularizedVI()].
#' @param assay.name Name of the new assay (default
#'   `"regularizedvi_normalized"`).
#' @param name reducedDim name under which the model is stored.
#' @inheritParams AddNormalizedExpression
#' @rdname addNormalizedExpression-sce
#' @return The SingleCellExperiment with the new assay. Only the model's genes
#'   are filled: an object with more genes gets `NA` for the others.
#' @export
addNormalizedExpression <- function(x, assay.name = "regularizedvi_normalized",
                                    name = "regularizedvi", library.size = 1e4, ...) {
  values <- getNormalizedExpression(x, library.size = library.size, name = name, ...)
  full <- matrix(NA_real_, nrow(x), ncol(x), dimnames = dimnames(x))
  full[rownames(values), colnames(values)] <- values
  SummarizedExperiment::assay(x, assay.name, withDimnames = FALSE) <- full
  x
}

#' Differential expression between two sets of cells
#'
#' scvi-tools' Bayesian test on the model's normalized expression (background
#' and technical scaling left out). `mode = "change"` (default) gives the
#' probability that the log fold change exceeds `delta` in absolute value
#' (`proba_de`), `"vanilla"` compares the two groups' means.
#'
#' @inheritParams getNormalizedExpression
#' @param cells.1 Cell names of the first group (e.g. `WhichCells(object,
#'   idents = "B")`), or a logical vector over the model's cells.
#' @param cells.2 Cell names (or logical) of the second group; `NULL` (default)
#'   takes all other cells.
#' @param mode `"change"` or `"vanilla"`.
#' @param delta The smallest absolute log fold change that counts as a change
#'   (mode `"change"`; default 0.25).
#' @param ... Further arguments of the Python `differential_expression()`
#'   (e.g. `n_samples = 500L`, `fdr_target = 0.05`).
#' @return A data.frame with one row per gene (gene names as row names), in
#'   scvi-tools' order and columns (`proba_de`, `bayes_factor`, `lfc_mean`,
#'   `lfc_median`, ..., `is_de_fdr_*` in mode `"change"`); `lfc_mean > 0` means
#'   higher in `cells.1`.
#' @export
regularizedviDE <- function(model, cells.1, cells.2 = NULL, mode = c("change", "vanilla"),
                            delta = 0.25, name = "regularizedvi", ...) {
  model <- getRegularizedVIModel(model, name)
  mode <- match.arg(mode)
  idx1 <- .cell_positions(cells.1, model$cells, "cells.1")
  idx2 <- if (is.null(cells.2)) setdiff(seq_along(model$cells), idx1) else
    .cell_positions(cells.2, model$cells, "cells.2")
  if (!length(idx2)) stop("cells.2 is empty: there are no other cells to compare with.", call. = FALSE)
  np <- reticulate::import("numpy", convert = FALSE)
  df <- .py_call(model$py$differential_expression(idx1 = np$array(as.integer(idx1 - 1L)),
                                                  idx2 = np$array(as.integer(idx2 - 1L)),
                                                  mode = mode, delta = as.numeric(delta), ...),
                 "Differential expression failed")
  genes <- as.character(reticulate::py_to_r(df$index$astype("str")$tolist()))
  out <- reticulate::py_to_r(df$reset_index(drop = TRUE))
  out <- as.data.frame(out, stringsAsFactors = FALSE)
  rownames(out) <- genes
  out
}

.cell_positions <- function(cells, all, what) {
  if (is.logical(cells)) {
    if (length(cells) != length(all)) {
      stop(what, " is a logical vector of length ", length(cells), "; it must have one value per cell (",
           length(all), ").", call. = FALSE)
    }
    cells <- all[!is.na(cells) & cells]
  }
  cells <- as.character(cells)
  pos <- match(cells, all)
  if (anyNA(pos)) {
    stop(what, " has ", sum(is.na(pos)), " name(s) not among the model's cells, e.g. '",
         cells[is.na(pos)][1], "'.", call. = FALSE)
  }
  if (!length(pos)) stop(what, " is empty.", call. = FALSE)
  unique(pos)
}
