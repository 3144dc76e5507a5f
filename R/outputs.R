# Model outputs back in R: normalized expression (matrix, Seurat assay, SCE assay) and the
# ambient profile, for any modality of either model class.

# The modality an output is asked for: `py` is what Python gets (NULL: the model's only
# or first one), `features` its feature names, `mod_key` the MuData modality (the Seurat
# assay / SCE experiment it came from; NULL for a single-modality model).
.modality_of <- function(model, modality) {
  if (inherits(model, "regularizedviMultimodalModel")) {
    if (is.null(modality)) modality <- model$modalities[1]
    if (!is.character(modality) || length(modality) != 1 || !modality %in% model$modalities) {
      stop("`modality` must be one of the model's modalities (", paste(model$modalities, collapse = ", "),
           "), not ", deparse(modality)[1], ".", call. = FALSE)
    }
    return(list(py = modality, name = modality, features = model$features[[modality]],
                mod_key = model$mod_keys[[modality]]))
  }
  if (!is.null(modality)) {
    stop("modality = ", deparse(modality)[1], " was given, but this is a single-modality model ",
         "(its genes only): `modality` applies to multimodal models (RunRegularizedMultimodalVI()).",
         call. = FALSE)
  }
  list(py = NULL, name = NULL, features = model$genes, mod_key = NULL)
}

# `features =` of an output: unique names, all of the modality's (checked here, so that the
# message names R's objects; Python's gene_list check is the same).
.check_features <- function(features, mod) {
  features <- unique(as.character(features))
  where <- if (is.null(mod$name)) "getRegularizedVIModel(object, name)$genes" else
    paste0("getRegularizedVIModel(object, name)$features[[\"", mod$name, "\"]]")
  if (!length(features)) {
    stop("`features` is empty: give some of the model's ", .features_word(mod), " (", where,
         "), or NULL for all.", call. = FALSE)
  }
  missing <- setdiff(features, mod$features)
  if (length(missing)) {
    stop(length(missing), " of `features` are not the model's ", .features_word(mod), " (e.g. ",
         paste(utils::head(missing, 5), collapse = ", "), if (length(missing) > 5) ", ...",
         "): names must be among ", where, ".", call. = FALSE)
  }
  features
}

# "genes", or "features of modality 'ADT'", for messages.
.features_word <- function(mod) {
  if (is.null(mod$name)) "genes" else paste0("features of modality '", mod$name, "'")
}

#' Normalized (denoised) expression
#'
#' The decoder's biological signal per cell, normalized over all of the
#' modality's features, with the ambient background and technical scaling
#' left out; each cell sums to `library.size`.
#'
#' @param model A trained `regularizedviModel` (or multimodal model), or an
#'   object holding one (see [getRegularizedVIModel()]).
#' @param library.size What each cell sums to (default 1; 1e4 gives
#'   counts-per-10k-like values).
#' @param name Name under which the model is stored in `model` when it is an
#'   object.
#' @param features Genes (features) to return, in this order (default: all of
#'   the modality's); the values are still normalized over all of them.
#' @param modality Multimodal model: the modality (e.g. `"ADT"`; default the
#'   first, usually RNA). Must be `NULL` for a single-modality model.
#' @param ... Further arguments of the Python `get_normalized_expression()`
#'   (e.g. `n_samples = 10L`, `transform_batch = "sample1"`).
#' @return A dense features x cells matrix with dimnames (the mean over
#'   `n_samples` posterior draws).
#' @export
getNormalizedExpression <- function(model, library.size = 1, name = "regularizedvi",
                                    features = NULL, modality = NULL, ...) {
  model <- getRegularizedVIModel(model, name)
  mod <- .modality_of(model, modality)
  if (!is.numeric(library.size) || length(library.size) != 1 || !is.finite(library.size) ||
      library.size <= 0) {
    stop("`library.size` must be one positive number, not ", deparse(library.size)[1], ".",
         call. = FALSE)
  }
  args <- list(library_size = as.numeric(library.size), return_numpy = FALSE, return_mean = TRUE,
               modality = mod$py, ...)
  if (!is.null(features)) {
    features <- .check_features(features, mod)
    args$gene_list <- reticulate::r_to_py(as.list(features))
  }
  df <- .py_call(do.call(model$py$get_normalized_expression, args),
                 "Computing the normalized expression failed")
  values <- .features_by_cells(df)
  if (!is.null(features)) values <- values[features, , drop = FALSE]
  values
}

#' Learned ambient RNA profile
#'
#' @inheritParams getNormalizedExpression
#' @param normalize Each column sums to 1 (default `TRUE`); `FALSE` gives the
#'   per-cell fractions of the library.
#' @return A data.frame, features (row names) x ambient categories (columns).
#'   A modality without additive background is an error.
#' @export
getAmbientProfile <- function(model, normalize = TRUE, name = "regularizedvi", modality = NULL) {
  model <- getRegularizedVIModel(model, name)
  mod <- .modality_of(model, modality)
  df <- .py_call(model$py$get_ambient_profile(normalize = normalize, modality = mod$py),
                 "Reading the ambient profile failed")
  values <- reticulate::py_to_r(df$to_numpy(dtype = "float64"))
  out <- as.data.frame(matrix(as.double(values), nrow = length(mod$features)), stringsAsFactors = FALSE)
  names(out) <- .py_names(df$columns)
  rownames(out) <- .py_names(df$index)
  out
}

# A cells x features pandas DataFrame as a dense features x cells matrix with dimnames.
.features_by_cells <- function(df) {
  values <- t(reticulate::py_to_r(df$to_numpy(dtype = "float64")))
  dimnames(values) <- list(.py_names(df$columns), .py_names(df$index))
  values
}

# A pandas Index as R character.
.py_names <- function(index) as.character(reticulate::py_to_r(index$astype("str")$tolist()))

# A pandas DataFrame as an R data.frame, column by column (reticulate's own conversion of a
# DataFrame calls pandas' deprecated Index.format and prints a FutureWarning).
.py_frame_to_r <- function(df) {
  names <- .py_names(df$columns)
  if (!length(names)) return(data.frame(row.names = .py_names(df$index)))
  columns <- lapply(names, function(col) {
    column <- reticulate::py_get_item(df, col)
    kind <- reticulate::py_to_r(column$dtype$kind)
    if (identical(kind, "b")) return(as.logical(reticulate::py_to_r(column$to_numpy(dtype = "bool"))))
    if (kind %in% c("f", "i", "u")) {
      values <- as.double(reticulate::py_to_r(column$to_numpy(dtype = "float64")))
      if (kind != "f" && all(abs(values) <= .Machine$integer.max)) values <- as.integer(values)
      return(values)
    }
    as.character(reticulate::py_to_r(column$astype("str")$tolist()))
  })
  out <- as.data.frame(stats::setNames(columns, names), stringsAsFactors = FALSE, check.names = FALSE)
  rownames(out) <- .py_names(df$index)
  out
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
#' @param modality Multimodal model: the modality to store (default the
#'   first); the variable features of its assay are the default `features`.
#' @param ... Passed to [getNormalizedExpression()] (e.g. `n_samples = 10L`).
#' @return The Seurat object with the new assay (the default assay unchanged;
#'   the cells of the model only) and a command log entry.
#' @export
AddNormalizedExpression <- function(object, new.assay = "RVI", reduction = "regularizedvi",
                                    library.size = 1e4, features = NULL, max.values = 2e8,
                                    modality = NULL, ...) {
  model <- getRegularizedVIModel(object, reduction)
  mod <- .modality_of(model, modality)
  assay <- if (is.null(mod$mod_key)) SeuratObject::DefaultAssay(object[[reduction]]) else mod$mod_key
  if (is.null(features)) {
    variable <- if (assay %in% SeuratObject::Assays(object)) {
      SeuratObject::VariableFeatures(object, assay = assay)
    }
    features <- intersect(variable, mod$features)
    if (length(features)) {
      message("Storing the normalized expression of the ", length(features), " variable features ",
              "of assay '", assay, "' (of the model's ", length(mod$features), " ", .features_word(mod),
              "); pass `features` to choose others.")
    } else {
      features <- mod$features
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
  values <- getNormalizedExpression(model, library.size = library.size, features = features,
                                    modality = modality, ...)
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
#' @param x A `SingleCellExperiment` after [runRegularizedVI()] or
#'   [runRegularizedMultimodalVI()].
#' @param assay.name Name of the new assay (default
#'   `"regularizedvi_normalized"`).
#' @param name reducedDim name under which the model is stored.
#' @param modality Multimodal model: the modality (default the first). The
#'   assay goes to the experiment the modality came from: the main experiment,
#'   or the altExp of that name (e.g. `altExp(x, "ADT")`).
#' @inheritParams AddNormalizedExpression
#' @rdname addNormalizedExpression-sce
#' @return The SingleCellExperiment with the new assay. Only the model's genes
#'   are filled: an object with more genes gets `NA` for the others.
#' @export
addNormalizedExpression <- function(x, assay.name = "regularizedvi_normalized",
                                    name = "regularizedvi", library.size = 1e4, max.values = 2e8,
                                    modality = NULL, ...) {
  model <- getRegularizedVIModel(x, name)
  mod <- .modality_of(model, modality)
  target <- .sce_experiment(x, mod)
  .check_dense_size(nrow(target), ncol(target), max.values)
  values <- getNormalizedExpression(model, library.size = library.size, modality = modality, ...)
  full <- matrix(NA_real_, nrow(target), ncol(target), dimnames = dimnames(target))
  full[rownames(values), colnames(values)] <- values
  .sce_set_assay(x, mod, assay.name, full)
}

# The experiment of an SCE a modality came from: the altExp of its name, or the main one.
.sce_experiment <- function(x, mod) {
  if (.in_altexp(x, mod)) return(SingleCellExperiment::altExp(x, mod$mod_key))
  x
}

.in_altexp <- function(x, mod) {
  !is.null(mod$mod_key) && mod$mod_key %in% SingleCellExperiment::altExpNames(x)
}

.sce_set_assay <- function(x, mod, assay.name, value) {
  if (!.in_altexp(x, mod)) {
    SummarizedExperiment::assay(x, assay.name, withDimnames = FALSE) <- value
    return(x)
  }
  alt <- SingleCellExperiment::altExp(x, mod$mod_key)
  SummarizedExperiment::assay(alt, assay.name, withDimnames = FALSE) <- value
  SingleCellExperiment::altExp(x, mod$mod_key) <- alt
  x
}
