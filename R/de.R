# Bayesian differential expression between two sets of cells, for any modality.

#' Differential expression between two sets of cells
#'
#' scvi-tools' Bayesian test on the model's normalized expression (background
#' and technical scaling left out). `mode = "change"` (default) gives the
#' probability that the log fold change exceeds `delta` in absolute value
#' (`proba_de`), `"vanilla"` compares the two groups' means.
#'
#' @inheritParams getNormalizedExpression
#' @param modality Multimodal model: the modality whose features are tested
#'   (default the first).
#' @param cells.1 Cell names of the first group (e.g. `WhichCells(object,
#'   idents = "B")`), or a logical vector over the model's cells.
#' @param cells.2 Cell names (or logical) of the second group; `NULL` (default)
#'   takes all other cells.
#' @param mode `"change"` or `"vanilla"`.
#' @param delta The smallest absolute log fold change that counts as a change
#'   (mode `"change"`; default 0.25).
#' @param ... Further arguments of the Python `differential_expression()`
#'   (e.g. `n_samples = 500L`, `fdr_target = 0.05`).
#' @return A data.frame with one row per feature (feature names as row names), in
#'   scvi-tools' order and columns (`proba_de`, `bayes_factor`, `lfc_mean`,
#'   `lfc_median`, ..., `is_de_fdr_*` in mode `"change"`); `lfc_mean > 0` means
#'   higher in `cells.1`.
#' @export
regularizedviDE <- function(model, cells.1, cells.2 = NULL, mode = c("change", "vanilla"),
                            delta = 0.25, name = "regularizedvi", modality = NULL, ...) {
  model <- getRegularizedVIModel(model, name)
  mod <- .modality_of(model, modality)
  mode <- match.arg(mode)
  idx1 <- .cell_positions(cells.1, model$cells, "cells.1")
  idx2 <- if (is.null(cells.2)) setdiff(seq_along(model$cells), idx1) else
    .cell_positions(cells.2, model$cells, "cells.2")
  if (!length(idx2)) stop("cells.2 is empty: there are no other cells to compare with.", call. = FALSE)
  np <- reticulate::import("numpy", convert = FALSE)
  df <- .py_call(model$py$differential_expression(idx1 = np$array(as.integer(idx1 - 1L)),
                                                  idx2 = np$array(as.integer(idx2 - 1L)),
                                                  mode = mode, delta = as.numeric(delta),
                                                  modality = mod$py, ...),
                 "Differential expression failed")
  .py_frame_to_r(df)
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
