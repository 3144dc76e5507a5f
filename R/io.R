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
#'   `regularizedviModel`.
#' @export
SaveRegularizedVI <- function(object, dir, overwrite = FALSE, name = "regularizedvi") {
  model <- getRegularizedVIModel(object, name)
  .py_call(model$py$save(path.expand(dir), overwrite = overwrite), "Saving the model failed")
  invisible(dir)
}

#' @rdname SaveRegularizedVI
#' @param assay,layer Seurat assay (default: the default assay) and layer with
#'   raw counts.
#' @param assay.type SingleCellExperiment assay with raw counts.
#' @export
LoadRegularizedVI <- function(dir, object, assay = NULL, layer = "counts", assay.type = "counts") {
  setup_args <- .saved_setup_args(dir)
  adata <- .adata_for_saved(object, setup_args, .saved_genes(dir), assay, layer, assay.type)
  rv <- .py_module("regularizedvi")
  py <- .py_call(rv$AmbientRegularizedSCVI$load(path.expand(dir), adata), "Loading the model failed")
  .model_from_py(py, adata)
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
  content
}

.py_reason <- function(e) {
  msg <- sub("\n.*$", "", .short_py_message(e))
  sub("^[[:alnum:]_.]*(Error|Exception): ", "", msg)
}

.saved_setup_args <- function(dir) .read_model_json(dir)$registry$setup_args

.saved_genes <- function(dir) as.character(unlist(.read_model_json(dir)$var_names))

# An AnnData of `object` with the saved model's genes (in its order) and covariates.
.adata_for_saved <- function(object, setup_args, genes, assay, layer, assay.type) {
  columns <- .setup_columns(setup_args)
  parts <- .extract_counts_and_meta(object, assay = assay, layer = layer, assay.type = assay.type)
  missing <- setdiff(genes, rownames(parts$counts))
  if (length(missing)) {
    stop("The object lacks ", length(missing), " of the model's ", length(genes), " genes (e.g. ",
         paste(utils::head(missing, 5), collapse = ", "), "). Add them as all-zero rows first.",
         call. = FALSE)
  }
  adata <- .parts_to_anndata(parts, features = genes, categorical = columns$categorical,
                             continuous = columns$continuous, check.empty = FALSE)
  layer_name <- setup_args$layer
  if (!is.null(layer_name)) {
    # The model was set up on a layer: give the same counts that name (no copy).
    reticulate::py_set_item(adata$layers, layer_name, adata$X)
  }
  adata
}

#' Map a query dataset onto a saved reference model
#'
#' scArches-style query mapping: the query is registered with the reference's
#' set-up (its covariate columns must exist in the query; new categories such
#' as new samples get new parameters), the reference weights are copied and
#' frozen, the new parameters are trained on the query, and the query's latent
#' representation is stored like [RunRegularizedVI()] / [runRegularizedVI()]
#' do.
#'
#' @param query A `Seurat` object (`MapRegularizedVIQuery()`) or a
#'   `SingleCellExperiment` (`mapRegularizedVIQuery()`) with raw counts and all
#'   the reference's genes.
#' @param reference Folder written by [SaveRegularizedVI()].
#' @param max.epochs Query training epochs (default `NULL`: Python's default).
#' @param freeze Keep reference weights fixed (default `TRUE`).
#' @param reduction.name,reduction.key,name Where the query latent goes.
#' @param accelerator,devices,batch.size,progress Training options, see
#'   [trainRegularizedVI()].
#' @inheritParams RunRegularizedVI
#' @param assay.type SingleCellExperiment assay with raw counts.
#' @return The query object with the new reduction / reducedDim and the query
#'   model stored.
#' @export
MapRegularizedVIQuery <- function(query, reference, max.epochs = NULL, freeze = TRUE,
                                  assay = "RNA", layer = "counts",
                                  reduction.name = "regularizedvi", reduction.key = "rvi_",
                                  accelerator = "auto", devices = "auto", batch.size = 128,
                                  progress = TRUE, seed = 0) {
  if (!inherits(query, "Seurat")) {
    stop("MapRegularizedVIQuery() needs a Seurat object; for a SingleCellExperiment use ",
         "mapRegularizedVIQuery().", call. = FALSE)
  }
  .check_train_args(max.epochs = max.epochs, batch.size = batch.size, accelerator = accelerator,
                    devices = devices, progress = progress, seed = seed)
  model <- .query_model(query, reference, freeze, seed, assay = assay, layer = layer)
  .train_query(model, max.epochs = max.epochs, accelerator = accelerator, devices = devices,
               batch.size = batch.size, progress = progress)
  query <- .attach_seurat_reduction(query, model, assay, reduction.name, reduction.key)
  .log_command(query, "MapRegularizedVIQuery", assay = assay)
}

#' @rdname MapRegularizedVIQuery
#' @export
mapRegularizedVIQuery <- function(query, reference, max.epochs = NULL, freeze = TRUE,
                                  assay.type = "counts", name = "regularizedvi",
                                  accelerator = "auto", devices = "auto", batch.size = 128,
                                  progress = TRUE, seed = 0) {
  if (!inherits(query, "SingleCellExperiment")) {
    stop("mapRegularizedVIQuery() needs a SingleCellExperiment; for a Seurat object use ",
         "MapRegularizedVIQuery().", call. = FALSE)
  }
  .check_train_args(max.epochs = max.epochs, batch.size = batch.size, accelerator = accelerator,
                    devices = devices, progress = progress, seed = seed)
  model <- .query_model(query, reference, freeze, seed, assay.type = assay.type)
  .train_query(model, max.epochs = max.epochs, accelerator = accelerator, devices = devices,
               batch.size = batch.size, progress = progress)
  .attach_sce_reduction(query, model, name)
}

.query_model <- function(query, reference, freeze, seed, assay = NULL, layer = "counts",
                         assay.type = "counts") {
  if (!is.character(reference) || length(reference) != 1) {
    stop("`reference` must be the folder of a model saved with SaveRegularizedVI().", call. = FALSE)
  }
  setup_args <- .saved_setup_args(reference)
  adata <- .adata_for_saved(query, setup_args, .saved_genes(reference), assay, layer, assay.type)
  rv <- .py_module("regularizedvi")
  .set_seed(.check_args(seed = seed)$seed)
  py <- .py_call(rv$AmbientRegularizedSCVI$load_query_data(adata, path.expand(reference),
                                                           freeze = freeze),
                 "Mapping the query onto the reference failed")
  .model_from_py(py, adata)
}

# With frozen reference weights and no new category in the query, nothing is trainable:
# the reference model is used as it is (training would fail without gradients).
.train_query <- function(model, ...) {
  builtins <- reticulate::import_builtins(convert = FALSE)
  params <- builtins$list(model$py$module$parameters())
  trainable <- vapply(seq_len(reticulate::py_len(params)) - 1L, function(i) {
    isTRUE(reticulate::py_to_r(reticulate::py_get_item(params, i)$requires_grad))
  }, logical(1))
  if (!any(trainable)) {
    message("The query brings no new category: every parameter is the frozen reference's, ",
            "so the query is embedded without training.")
    reticulate::py_set_attr(model$py, "is_trained_", TRUE)
    model$py$module$eval()  # inference mode (no dropout), as after training
    return(invisible(model))
  }
  trainRegularizedVI(model, ...)
}
