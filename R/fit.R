# One-call workflows: Seurat (RunRegularizedVI) and SingleCellExperiment (runRegularizedVI).

#' Run regularizedvi on a Seurat object
#'
#' Sets up, trains and embeds an `AmbientRegularizedSCVI` model on the raw
#' counts of `assay` and stores the latent representation as a dimensional
#' reduction (cell order as in the object), like [Seurat::RunPCA()]. The
#' trained model stays retrievable with [getRegularizedVIModel()] (it is kept in
#' `Misc(object[[reduction.name]], "model")` for this R session only; use
#' [SaveRegularizedVI()] to keep it across sessions).
#'
#' @param object A `Seurat` object with raw counts.
#' @param batch,ambient,nn.conditioning Covariate columns of `object[[]]`, see
#'   [regularizedviModel()].
#' @param ... Further arguments of [regularizedviModel()]: `feature.scaling`,
#'   `dispersion`, `library.size`, `encoder.covariates`,
#'   `continuous.covariates`, `labels`, `features`, `n.hidden`, `n.latent`,
#'   `n.layers`, `dropout.rate`, `ambient.background`, `ambient.adversary`
#'   (any other name is an error; options of training go in `train.args`).
#' @param ambient.profile Optional measured soup (features x ambient
#'   categories, from [EstimateAmbientProfile()] on the raw matrix of the same
#'   run(s)): the background's shape, so that only its amount is learned; see
#'   [regularizedviModel()].
#' @param assay Assay with raw counts (default `"RNA"`).
#' @param layer Layer / slot with raw counts (default `"counts"`). On a Seurat
#'   5 assay split into `counts.<group>` layers (`split(obj[["RNA"]], f = ...)`),
#'   all of them are used (no `JoinLayers()` needed) and, when no sample-level
#'   covariate is named, the layer of each cell is the batch. Naming one layer
#'   (e.g. `"counts.g1"`) fits and embeds only its cells.
#' @param reduction.name Name of the new reduction (default
#'   `"regularizedvi"`).
#' @param reduction.key Key of its dimensions (default `"rvi_"`).
#' @param contamination.column Name of the metadata column that receives each
#'   cell's ambient contamination fraction (the expected background share of
#'   its counts, in \[0, 1\], see [getContaminationFraction()]; default
#'   `"regularizedvi_contamination"`; `NULL`: no column). Cells the model does
#'   not describe (other layers) get `NA`.
#' @param max.epochs,accelerator,devices,batch.size,progress Training options,
#'   see [trainRegularizedVI()].
#' @param train.args Further options of the Python `train()`: a named list, by
#'   their Python names, passed as they are (the `...` of
#'   [trainRegularizedVI()]), e.g. `list(plan_kwargs = list(lr = 1e-3,
#'   n_epochs_kl_warmup = 50), early_stopping = TRUE, loop = "lightning",
#'   train_size = 0.8)`. An unknown name is an error from `train()`; the
#'   options set by this function's own arguments (`max.epochs`, ...) are
#'   refused here.
#' @param seed Random seed (default 0).
#' @return The Seurat object with the new reduction (for the cells used), the
#'   contamination column and a command log entry
#'   (`Command(object, "RunRegularizedVI.RNA")`).
#' @examples
#' \dontrun{
#' pbmc <- RunRegularizedVI(SeuratObject::pbmc_small, batch = "groups", max.epochs = 20)
#' Seurat::DimPlot(Seurat::RunUMAP(pbmc, reduction = "regularizedvi", dims = 1:10))
#' }
#' @export
RunRegularizedVI <- function(object, batch = NULL, ambient = NULL, nn.conditioning = NULL, ...,
                             ambient.profile = NULL, assay = "RNA", layer = "counts",
                             reduction.name = "regularizedvi",
                             reduction.key = "rvi_",
                             contamination.column = "regularizedvi_contamination",
                             max.epochs = NULL, accelerator = "auto", devices = "auto",
                             batch.size = 128, progress = TRUE, train.args = list(), seed = 0) {
  training <- .check_run(object, "RunRegularizedVI", "runRegularizedVI", contamination.column)
  .check_model_dots(list(...), "RunRegularizedVI", "regularizedviModel")
  model <- regularizedviModel(object, batch = batch, ambient = ambient,
                              nn.conditioning = nn.conditioning, ...,
                              ambient.profile = ambient.profile, assay = assay, layer = layer, seed = seed)
  .train_run(model, training)
  object <- .attach_seurat_reduction(object, model, assay, reduction.name, reduction.key)
  object <- .add_cell_columns(object, .contamination_table(model, contamination.column))
  .log_command(object, "RunRegularizedVI", assay = assay)
}

.attach_seurat_reduction <- function(object, model, assay, reduction.name, reduction.key) {
  object[[reduction.name]] <- .model_reduction(model, assay, reduction.key, colnames(object))
  object
}

# The model's latent as a DimReduc (cells in `cells` order, those of the model only),
# with the model in its misc.
.model_reduction <- function(model, assay, reduction.key, cells) {
  .check_key(reduction.key)
  latent <- getLatent(model)
  cells <- cells[cells %in% rownames(latent)]
  if (!identical(rownames(latent), cells)) latent <- latent[cells, , drop = FALSE]
  colnames(latent) <- paste0(reduction.key, seq_len(ncol(latent)))
  SeuratObject::CreateDimReducObject(embeddings = latent, key = reduction.key, assay = assay,
                                     misc = list(model = model))
}

# Seurat keys: letters and digits, ending in "_" (e.g. "rvi_", "integratedrvi_").
.check_key <- function(key) {
  if (!is.character(key) || length(key) != 1 || !grepl("^[[:alpha:]][[:alnum:]]*_$", key)) {
    stop("`reduction.key` must be letters and digits ending in '_' (e.g. \"rvi_\"), not ",
         deparse(key)[1], ".", call. = FALSE)
  }
  invisible(key)
}

#' Run regularizedvi on a SingleCellExperiment
#'
#' Sets up, trains and embeds an `AmbientRegularizedSCVI` model on the raw
#' counts in `assay.type` and stores the latent representation in
#' `reducedDim(sce, name)`, like `scater::runPCA()`. The trained model stays
#' retrievable with [getRegularizedVIModel()] (kept in
#' `metadata(sce)$regularizedvi_models[[name]]` for this R session; use
#' [SaveRegularizedVI()] to keep it).
#'
#' @param x A `SingleCellExperiment` with raw counts.
#' @inheritParams RunRegularizedVI
#' @param name Name of the new reducedDim (default `"regularizedvi"`).
#' @param assay.type Assay with raw counts (default `"counts"`).
#' @param contamination.column Name of the colData column that receives each
#'   cell's ambient contamination fraction (default
#'   `"regularizedvi_contamination"`; `NULL`: none), see
#'   [getContaminationFraction()].
#' @return The SingleCellExperiment with the new reducedDim and the
#'   contamination column.
#' @rdname runRegularizedVI-sce
#' @examples
#' \dontrun{
#' sce <- runRegularizedVI(sce, batch = "sample_id", max.epochs = 20)
#' plot(SingleCellExperiment::reducedDim(sce, "regularizedvi")[, 1:2])
#' }
#' @export
runRegularizedVI <- function(x, batch = NULL, ambient = NULL, nn.conditioning = NULL, ...,
                             ambient.profile = NULL, name = "regularizedvi",
                             assay.type = "counts",
                             contamination.column = "regularizedvi_contamination",
                             max.epochs = NULL, accelerator = "auto", devices = "auto",
                             batch.size = 128, progress = TRUE, train.args = list(), seed = 0) {
  training <- .check_run(x, "runRegularizedVI", "RunRegularizedVI", contamination.column)
  .check_model_dots(list(...), "runRegularizedVI", "regularizedviModel")
  model <- regularizedviModel(x, batch = batch, ambient = ambient,
                              nn.conditioning = nn.conditioning, ...,
                              ambient.profile = ambient.profile, assay.type = assay.type, seed = seed)
  .train_run(model, training)
  x <- .attach_sce_reduction(x, model, name)
  .add_cell_columns(x, .contamination_table(model, contamination.column))
}

.attach_sce_reduction <- function(x, model, name) {
  latent <- getLatent(model)
  if (!identical(rownames(latent), colnames(x))) latent <- latent[colnames(x), , drop = FALSE]
  SingleCellExperiment::reducedDim(x, name) <- latent
  meta <- S4Vectors::metadata(x)
  meta$regularizedvi_models[[name]] <- model
  S4Vectors::metadata(x) <- meta
  x
}

#' Get the regularizedvi model stored in an object
#'
#' @param object A `Seurat` object after [RunRegularizedVI()], a
#'   `SingleCellExperiment` after [runRegularizedVI()], or a
#'   `regularizedviModel` (returned as is).
#' @param name Reduction (Seurat) or reducedDim (SingleCellExperiment) name.
#' @return The `regularizedviModel`.
#' @export
getRegularizedVIModel <- function(object, name = "regularizedvi") {
  if (inherits(object, "regularizedviModel")) return(.check_model(object))
  model <- NULL
  if (inherits(object, "Seurat")) {
    if (!name %in% SeuratObject::Reductions(object)) {
      stop("The Seurat object has no reduction '", name, "' (reductions: ",
           paste(SeuratObject::Reductions(object), collapse = ", "), "). Run RunRegularizedVI() first.",
           call. = FALSE)
    }
    model <- SeuratObject::Misc(object[[name]], slot = "model")
  } else if (inherits(object, "SingleCellExperiment")) {
    model <- S4Vectors::metadata(object)$regularizedvi_models[[name]]
  } else {
    stop("Expected a Seurat object, a SingleCellExperiment or a regularizedviModel.", call. = FALSE)
  }
  if (is.null(model)) {
    stop("No regularizedvi model stored under '", name, "'. Run RunRegularizedVI()/",
         "runRegularizedVI() or load a saved model with LoadRegularizedVI().", call. = FALSE)
  }
  .check_model(model)
}
