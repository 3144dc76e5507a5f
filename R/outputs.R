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
