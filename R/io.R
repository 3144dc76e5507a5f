# Save / load trained models and map query data onto a saved reference.

#' Save and load a regularizedvi model
#'
#' `SaveRegularizedVI()` writes the model to a folder (`model.json` +
#' `weights.pt`, no pickle). `LoadRegularizedVI()` reads it back for an object
#' with the same genes (and the covariate columns the model was set up with).
#' A Python model does not survive `saveRDS()`: save it with these functions.
#'
#' @param object For saving: a `regularizedviModel`, or a Seurat /
#'   SingleCellExperiment object holding one. For loading: the Seurat /
#'   SingleCellExperiment object whose cells the model will describe.
#' @param dir Folder to write to / read from.
#' @param overwrite Replace a non-empty folder (default `FALSE`).
#' @param name Reduction / reducedDim name under which the model is stored.
#' @return `SaveRegularizedVI()`: `dir`, invisibly. `LoadRegularizedVI()`: a
#'   `regularizedviModel` (a `regularizedviMultimodalModel` for a multimodal
#'   model).
#' @export
SaveRegularizedVI <- function(object, dir, overwrite = FALSE, name = "regularizedvi") {
  model <- getRegularizedVIModel(object, name)
  .py_call(model$py$save(path.expand(dir), overwrite = overwrite), "Saving the model failed")
  invisible(dir)
}

#' @rdname SaveRegularizedVI
#' @param assay,layer Seurat assay (default: the default assay) and layer with
#'   raw counts. For a multimodal model, `layer` applies to every assay and
#'   `assay` is not used: the assays are those the model was saved with.
#' @param assay.type SingleCellExperiment assay with raw counts.
#' @param main.name Multimodal model on a SingleCellExperiment: which of the
#'   saved modalities is the main experiment (default: `mainExpName(object)`
#'   when it is one of them, otherwise the one saved modality that is not an
#'   altExp).
#' @details `LoadRegularizedVI()` reads the model's class from `model.json`: a
#'   single-modality model (`AmbientRegularizedSCVI`) is rebuilt on the counts
#'   of one assay, a multimodal model (`RegularizedMultimodalVI`) on the assays
#'   (Seurat) or main experiment and altExps (SingleCellExperiment) named like
#'   its saved modalities. Latents of the loaded model equal the saved model's
#'   bit for bit.
#' @export
LoadRegularizedVI <- function(dir, object, assay = NULL, layer = "counts", assay.type = "counts",
                              main.name = NULL) {
  description <- .read_model_json(dir)
  data <- .data_for_saved(object, description, assay = assay, layer = layer,
                          assay.type = assay.type, main.name = main.name)
  rv <- .py_module("regularizedvi")
  py <- .py_call(rv$load_model(path.expand(dir), data), "Loading the model failed")
  .model_handle(py, data, description)
}

# The R handle of a Python model of the class the description names.
.model_handle <- function(py, data, description) {
  if (.is_multimodal_description(description)) return(.multimodal_model_from_py(py, data))
  .model_from_py(py, data)
}

.is_multimodal_description <- function(description) {
  identical(description$class, "RegularizedMultimodalVI")
}

.read_model_json <- function(dir) {
  if (!is.character(dir) || length(dir) != 1 || is.na(dir)) {
    stop("`dir` must be the folder of a model saved with SaveRegularizedVI().", call. = FALSE)
  }
  file <- file.path(path.expand(dir), "model.json")
  if (!file.exists(file)) {
    stop("'", dir, "' holds no saved regularizedvi model (no model.json).", call. = FALSE)
  }
  damaged <- function(why) {
    stop("'", file, "' is damaged or not a regularizedvi model (", why, "). Save the model ",
         "again with SaveRegularizedVI(), or point to the folder it was saved to.", call. = FALSE)
  }
  json <- .py_module("json")
  builtins <- reticulate::import_builtins(convert = FALSE)
  read <- function() {
    handle <- builtins$open(file, encoding = "utf-8")
    on.exit(handle$close(), add = TRUE)
    reticulate::py_to_r(json$loads(handle$read()))
  }
  content <- tryCatch(read(), error = function(e) {
    damaged(paste("not valid JSON:", .py_reason(e)))
  })
  if (!is.list(content) || !is.list(content$registry) || !is.list(content$registry$setup_args) ||
      is.null(content$var_names)) {
    damaged("no model registry or gene names in it")
  }
  known <- c("AmbientRegularizedSCVI", "RegularizedMultimodalVI")
  if (!is.character(content$class) || length(content$class) != 1 || !content$class %in% known) {
    damaged(paste0("its class is ", if (is.character(content$class)) paste0("'", content$class[1], "'")
                   else "missing", ", not one of ", paste(known, collapse = ", ")))
  }
  if (.is_multimodal_description(content) && !is.list(content$registry$setup_args$modalities)) {
    damaged("a multimodal model without its modalities")
  }
  content
}

.py_reason <- function(e) {
  msg <- sub("\n.*$", "", .short_py_message(e))
  sub("^[[:alnum:]_.]*(Error|Exception): ", "", msg)
}

.saved_setup_args <- function(dir) .read_model_json(dir)$registry$setup_args

.saved_genes <- function(dir) as.character(unlist(.read_model_json(dir)$var_names))

# The data a saved model is rebuilt on: an AnnData (single-modality model) or a MuData
# (multimodal model) of `object`, with the saved features in their order and the covariates.
.data_for_saved <- function(object, description, assay = NULL, layer = "counts",
                            assay.type = "counts", main.name = NULL, obs.columns = NULL) {
  setup_args <- description$registry$setup_args
  features <- as.character(unlist(description$var_names))
  if (.is_multimodal_description(description)) {
    return(.mudata_for_saved(object, setup_args, features, layer, assay.type, main.name, obs.columns))
  }
  .adata_for_saved(object, setup_args, features, assay, layer, assay.type, obs.columns)
}

# An AnnData of `object` with the saved model's genes (in its order) and covariates.
.adata_for_saved <- function(object, setup_args, genes, assay, layer, assay.type, obs.columns = NULL) {
  columns <- .setup_columns(setup_args)
  parts <- .extract_counts_and_meta(object, assay = assay, layer = layer, assay.type = assay.type)
  .check_saved_features(rownames(parts$counts), genes, "genes", parts$where)
  .check_saved_labels(parts$meta, setup_args)
  adata <- .parts_to_anndata(parts, features = genes, obs.columns = obs.columns,
                             categorical = columns$categorical, continuous = columns$continuous,
                             check.empty = FALSE)
  layer_name <- setup_args$layer
  if (!is.null(layer_name)) {
    # The model was set up on a layer: give the same counts that name (no copy).
    reticulate::py_set_item(adata$layers, layer_name, adata$X)
  }
  adata
}

# A model set up with `labels` (the ambient adversary's) needs that column in any data given to it.
.check_saved_labels <- function(meta, setup_args) {
  key <- setup_args$labels_key
  if (is.null(key) || key %in% names(meta)) return(invisible())
  stop("The model was set up with labels = \"", key, "\" (the ambient adversary's labels), but the ",
       "object has no metadata column '", key, "'. Add it: the cells' labels or, for a query without ",
       "labels, one placeholder value (obj$", key, " <- \"unknown\"; it becomes a new label of the query).",
       call. = FALSE)
}

.check_saved_features <- function(have, saved, what, where) {
  missing <- setdiff(saved, have)
  if (length(missing)) {
    stop("The object lacks ", length(missing), " of the model's ", length(saved), " ", what, " (e.g. ",
         paste(utils::head(missing, 5), collapse = ", "), "; ", where, "). Add them as all-zero rows first.",
         call. = FALSE)
  }
  invisible(TRUE)
}

# A MuData of `object` with the saved model's modalities (Seurat assays / SCE main
# experiment and altExps named like them, in the saved order), features and covariates.
# The saved feature names are "<modality>:<feature>", modality by modality.
.mudata_for_saved <- function(object, setup_args, saved, layer, assay.type, main.name,
                              obs.columns = NULL) {
  mod_of <- sub(":.*$", "", saved)
  mods <- unique(mod_of)
  features <- lapply(stats::setNames(mods, mods), function(m) sub("^[^:]*:", "", saved[mod_of == m]))
  if (inherits(object, "Seurat")) {
    .need("SeuratObject")
    missing <- setdiff(mods, SeuratObject::Assays(object))
    if (length(missing)) {
      stop("The multimodal model was saved with modalities ", paste(mods, collapse = ", "),
           "; the Seurat object lacks assay(s) ", paste0("'", missing, "'", collapse = ", "),
           " (assays: ", paste(SeuratObject::Assays(object), collapse = ", "), ").", call. = FALSE)
    }
    parts <- .multimodal_parts(object, assays = mods, layer = layer)
  } else if (inherits(object, "SingleCellExperiment")) {
    main.name <- .saved_main_experiment(object, mods, main.name)
    parts <- .multimodal_parts(object, altexps = setdiff(mods, main.name), main.name = main.name,
                               assay.type = assay.type)
  } else {
    stop("A multimodal model loads onto a Seurat object (its assays) or a SingleCellExperiment ",
         "(with altExps), not a '", class(object)[1], "'.", call. = FALSE)
  }
  parts$counts <- parts$counts[mods]
  for (m in mods) .check_saved_features(rownames(parts$counts[[m]]), features[[m]],
                                        paste0("features of modality '", m, "'"), parts$where[[m]])
  .check_saved_labels(parts$meta, setup_args)
  columns <- .setup_columns(setup_args)
  mdata <- .parts_to_mudata(parts, features = features, obs.columns = obs.columns,
                            categorical = columns$categorical, continuous = columns$continuous,
                            check.empty = FALSE)
  layers <- setup_args$layer
  if (!is.null(layers)) {
    # Set up on layers: give the same counts those names (no copy).
    if (!is.list(layers)) layers <- stats::setNames(rep(list(layers), length(setup_args$modalities)),
                                                    names(setup_args$modalities))
    for (m in names(layers)) {
      if (is.null(layers[[m]])) next
      mod <- reticulate::py_get_item(mdata$mod, setup_args$modalities[[m]])
      reticulate::py_set_item(mod$layers, layers[[m]], mod$X)
    }
  }
  mdata
}

# Which saved modality is an SCE's main experiment.
.saved_main_experiment <- function(object, mods, main.name) {
  .need("SingleCellExperiment")
  alts <- SingleCellExperiment::altExpNames(object)
  if (!is.null(main.name)) {
    if (!main.name %in% mods) {
      stop("`main.name` '", main.name, "' is not one of the saved modalities (", paste(mods, collapse = ", "),
           ").", call. = FALSE)
    }
    return(main.name)
  }
  current <- SingleCellExperiment::mainExpName(object)
  if (length(current) == 1 && !is.na(current) && current %in% mods) return(current)
  candidates <- setdiff(mods, alts)
  if (length(candidates) == 1) return(candidates)
  have <- if (length(alts)) paste(alts, collapse = ", ") else "none"
  if (!length(candidates)) {
    stop("The multimodal model was saved with modalities ", paste(mods, collapse = ", "), ", all of ",
         "them altExps of the SingleCellExperiment: pass main.name = \"<modality of the main ",
         "experiment>\".", call. = FALSE)
  }
  stop("The multimodal model was saved with modalities ", paste(mods, collapse = ", "), "; the ",
       "SingleCellExperiment has altExp(s) ", have, ", so ", length(candidates) - 1, " of them ",
       "(", paste(candidates, collapse = " or "), ") are missing: every modality but the main ",
       "experiment's must be an altExp of that name (pass main.name = \"<modality of the main ",
       "experiment>\" to say which).", call. = FALSE)
}
