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
#' @param features Genes (features) to return, in this order (default: all of
#'   the model's); the values are still normalized over all genes.
#' @param ... Further arguments of the Python `get_normalized_expression()`
#'   (e.g. `n_samples = 10L`; `modality = "ADT"` for a multimodal model).
#' @return A dense genes x cells matrix with dimnames (the mean over
#'   `n_samples` posterior draws).
#' @export
getNormalizedExpression <- function(model, library.size = 1, name = "regularizedvi",
                                    features = NULL, ...) {
  model <- getRegularizedVIModel(model, name)
  if (!is.numeric(library.size) || length(library.size) != 1 || !is.finite(library.size) ||
      library.size <= 0) {
    stop("`library.size` must be one positive number, not ", deparse(library.size)[1], ".",
         call. = FALSE)
  }
  args <- list(library_size = as.numeric(library.size), return_numpy = FALSE, return_mean = TRUE, ...)
  if (!is.null(features)) {
    multimodal <- inherits(model, "regularizedviMultimodalModel")
    modality <- if (is.null(args$modality)) model$modalities[1] else args$modality
    known <- if (multimodal) model$features[[modality]] else model$genes
    features <- unique(as.character(features))
    missing <- setdiff(features, known)
    if (length(missing) || !length(features)) {
      stop(length(missing), " of `features` are not the model's genes (e.g. ",
           paste(utils::head(missing, 5), collapse = ", "), ").", call. = FALSE)
    }
    args$gene_list <- reticulate::r_to_py(as.list(features))
  }
  df <- .py_call(do.call(model$py$get_normalized_expression, args),
                 "Computing the normalized expression failed")
  values <- t(reticulate::py_to_r(df$to_numpy(dtype = "float64")))
  dimnames(values) <- list(as.character(reticulate::py_to_r(df$columns$astype("str")$tolist())),
                           as.character(reticulate::py_to_r(df$index$astype("str")$tolist())))
  if (!is.null(features)) values <- values[features, , drop = FALSE]
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
#' Stores the model's normalized expression (dense: one value per gene and
#' cell) as a new assay: an `Assay5` (layer `data`) on SeuratObject >= 5, an
#' `Assay` (slot `data`) on SeuratObject 4. By default only the variable
#' features of the model's assay are stored when they are set (a message says
#' how many); `features` chooses others. The call is logged in
#' `Command(object)` as `AddNormalizedExpression.<new.assay>`.
#'
#' @param object A `Seurat` object after [RunRegularizedVI()] (or
#'   `IntegrateLayers(method = RegularizedVIIntegration)`).
#' @param new.assay Name of the new assay (default `"RVI"`); its `data` layer
#'   holds the normalized expression.
#' @param reduction Reduction under which the model is stored.
#' @param library.size What each cell sums to over all genes (default 1e4).
#' @param features Genes to store (default: the assay's variable features that
#'   the model has, when any are set; otherwise all the model's genes).
#' @param max.values Refuse to store more than this many values (genes x
#'   cells; default 2e8, i.e. 1.6 GB of doubles): pass fewer `features` or
#'   raise it.
#' @param ... Passed to [getNormalizedExpression()] (e.g. `n_samples = 10L`).
#' @return The Seurat object with the new assay (the default assay unchanged;
#'   the cells of the model only) and a command log entry.
#' @export
AddNormalizedExpression <- function(object, new.assay = "RVI", reduction = "regularizedvi",
                                    library.size = 1e4, features = NULL, max.values = 2e8, ...) {
  model <- getRegularizedVIModel(object, reduction)
  assay <- SeuratObject::DefaultAssay(object[[reduction]])
  if (is.null(features)) {
    variable <- if (assay %in% SeuratObject::Assays(object)) {
      SeuratObject::VariableFeatures(object, assay = assay)
    }
    features <- intersect(variable, model$genes)
    if (length(features)) {
      message("Storing the normalized expression of the ", length(features), " variable features ",
              "of assay '", assay, "' (of the model's ", length(model$genes), " genes); ",
              "pass `features` to choose others.")
    } else {
      features <- model$genes
    }
  }
  cells <- colnames(object)[colnames(object) %in% model$cells]
  if (!length(cells)) stop("None of the object's cells are the model's cells.", call. = FALSE)
  if (!.seurat_v5() && length(cells) < ncol(object)) {
    stop("The model describes ", length(cells), " of the object's ", ncol(object), " cells; ",
         "a Seurat 4 assay must hold every cell: subset the object to the model's cells first.",
         call. = FALSE)
  }
  .check_dense_size(length(unique(features)), length(cells), max.values)
  values <- getNormalizedExpression(model, library.size = library.size, features = features, ...)
  values <- values[, cells, drop = FALSE]
  assay_obj <- .dense_data_assay(values)
  # A key of its own, so that it never collides with the reduction's "rvi_".
  SeuratObject::Key(assay_obj) <- paste0(gsub("[^[:alnum:]]", "", tolower(new.assay)), "expr_")
  # SeuratObject 5 warns that an assay without counts has no counts layer: none is meant.
  object <- withCallingHandlers({
    object[[new.assay]] <- assay_obj
    object
  }, warning = function(w) {
    if (grepl("No layers found", conditionMessage(w), fixed = TRUE)) invokeRestart("muffleWarning")
  })
  .log_command(object, "AddNormalizedExpression", assay = new.assay, assay.used = assay)
}

# An assay whose data layer / slot is the dense matrix as it is (CreateAssay5Object()
# would convert it to a sparse matrix without zeros, 1.5x its size).
.dense_data_assay <- function(values) {
  if (!.seurat_v5()) return(SeuratObject::CreateAssayObject(data = values))
  empty <- Matrix::sparseMatrix(i = integer(0), j = integer(0), x = numeric(0), dims = dim(values),
                                dimnames = dimnames(values))
  assay <- getExportedValue("SeuratObject", "CreateAssay5Object")(data = empty)
  layer_data <- getExportedValue("SeuratObject", "LayerData<-")
  layer_data(assay, layer = "data", value = values)
}

# Normalized expression is dense: refuse sizes the user did not ask for knowingly.
.check_dense_size <- function(n_genes, n_cells, max.values) {
  if (!is.numeric(max.values) || length(max.values) != 1 || is.na(max.values) || max.values <= 0) {
    stop("`max.values` must be one positive number.", call. = FALSE)
  }
  if (n_genes * n_cells > max.values) {
    stop("The normalized expression of ", n_genes, " genes x ", n_cells, " cells is a dense matrix ",
         "of ", format(n_genes * n_cells * 8 / 2^30, digits = 3), " GB (", format(n_genes * n_cells),
         " values > max.values = ", format(max.values), "). Pass fewer `features` (e.g. ",
         "features = VariableFeatures(obj)) or raise `max.values`.", call. = FALSE)
  }
  invisible(TRUE)
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
                                    name = "regularizedvi", library.size = 1e4, max.values = 2e8,
                                    ...) {
  .check_dense_size(nrow(x), ncol(x), max.values)
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
