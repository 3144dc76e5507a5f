# Decoder attribution of a multimodal model: which latent dimensions each modality uses.

# ggplot2's .data pronoun (tidy evaluation inside aes()).
utils::globalVariables(".data")

#' Which latent dimensions each modality's decoder uses
#'
#' `getModalityAttribution()` returns, for each modality's decoder, the mean
#' absolute derivative of its expected counts with respect to each latent
#' dimension (Python `get_modality_attribution()`). `plotModalityAttribution()`
#' draws it as a heatmap (ggplot2 when installed, base graphics otherwise).
#'
#' The attribution takes one forward-mode derivative per latent dimension over
#' all cells and features (tens of seconds on thousands of cells), so it is
#' computed once per model and set of arguments and kept with the model (in
#' the object's reduction / reducedDim as well): later calls, and
#' `plotModalityAttribution(object)`, reuse it. Training the model again with
#' [trainRegularizedVI()] drops it; `recompute = TRUE` forces a new one.
#'
#' @param object A trained `regularizedviMultimodalModel`, or a Seurat /
#'   SingleCellExperiment object holding one (see [getRegularizedVIModel()]).
#'   `plotModalityAttribution()` also takes the matrix itself.
#' @param name Reduction / reducedDim name under which the model is stored.
#' @param recompute Compute again even if an attribution with the same
#'   arguments is kept with the model (default `FALSE`).
#' @param ... Further arguments of the Python `get_modality_attribution()`
#'   (e.g. `method = "finite_difference"`).
#' @return `getModalityAttribution()`: a numeric matrix, modalities (rows, in
#'   model order) x latent dimensions (columns `z0`, `z1`, ...).
#' @export
getModalityAttribution <- function(object, name = "regularizedmultivi", recompute = FALSE, ...) {
  model <- getRegularizedVIModel(object, name)
  if (!inherits(model, "regularizedviMultimodalModel")) {
    stop("Modality attribution needs a multimodal model (RunRegularizedMultimodalVI()), ",
         "not a single-modality regularizedviModel.", call. = FALSE)
  }
  args <- list(...)
  # Kept only for arguments that identify the result (numbers, strings): not for Python
  # objects such as another AnnData.
  key <- if (all(vapply(args, function(a) is.null(a) || (is.atomic(a) && length(a) <= 100), TRUE))) {
    paste0("attribution:", paste(deparse(if (length(args)) args[order(names(args))]), collapse = ""))
  }
  cache <- model$cache
  if (!isTRUE(recompute) && !is.null(key) && is.environment(cache) && !is.null(cache[[key]])) {
    return(cache[[key]])
  }
  df <- .py_call(do.call(model$py$get_modality_attribution, args),
                 "Computing the modality attribution failed")
  values <- reticulate::py_to_r(df$to_numpy(dtype = "float64"))
  rows <- .py_names(df$index)
  out <- matrix(as.double(values), nrow = length(rows), dimnames = list(rows, .py_names(df$columns)))
  if (!is.null(key) && is.environment(cache)) assign(key, out, envir = cache)
  out
}

#' @rdname getModalityAttribution
#' @param normalize Divide each row by its maximum (default `TRUE`), so that
#'   modalities with different count scales are comparable.
#' @param use.ggplot Draw with ggplot2 (default: when it is installed); `FALSE`
#'   uses base graphics `image()`.
#' @return `plotModalityAttribution()`: a ggplot object (printed when drawn by
#'   ggplot2), or the plotted matrix invisibly (base graphics).
#' @export
plotModalityAttribution <- function(object, normalize = TRUE, name = "regularizedmultivi",
                                    use.ggplot = requireNamespace("ggplot2", quietly = TRUE),
                                    ...) {
  values <- if (is.matrix(object)) object else getModalityAttribution(object, name = name, ...)
  if (is.null(rownames(values))) rownames(values) <- paste0("modality", seq_len(nrow(values)))
  if (is.null(colnames(values))) colnames(values) <- paste0("z", seq_len(ncol(values)) - 1L)
  if (normalize) values <- values / pmax(apply(values, 1, max), 1e-300)
  label <- if (normalize) "attribution /\nrow max" else "attribution"
  if (isTRUE(use.ggplot)) {
    df <- data.frame(modality = factor(rep(rownames(values), times = ncol(values)),
                                       levels = rev(rownames(values))),
                     dimension = factor(rep(colnames(values), each = nrow(values)),
                                        levels = colnames(values)),
                     value = as.vector(values))
    p <- ggplot2::ggplot(df, ggplot2::aes(x = .data$dimension, y = .data$modality,
                                          fill = .data$value)) +
      ggplot2::geom_tile() +
      ggplot2::scale_fill_viridis_c(name = label) +
      ggplot2::labs(x = "latent dimension", y = "decoder") +
      ggplot2::theme_minimal() +
      ggplot2::theme(axis.text.x = ggplot2::element_text(angle = 90, vjust = 0.5))
    return(p)
  }
  old <- graphics::par(mar = c(5, 6, 2, 1))
  on.exit(graphics::par(old))
  graphics::image(seq_len(ncol(values)), seq_len(nrow(values)), t(values[nrow(values):1, , drop = FALSE]),
                  col = grDevices::hcl.colors(50, "viridis"), axes = FALSE,
                  xlab = "latent dimension", ylab = "", main = label)
  graphics::axis(1, at = seq_len(ncol(values)), labels = colnames(values), las = 2)
  graphics::axis(2, at = seq_len(nrow(values)), labels = rev(rownames(values)), las = 1)
  graphics::box()
  invisible(values)
}
