# One-call multimodal workflows: Seurat (RunRegularizedMultimodalVI) and SingleCellExperiment
# (runRegularizedMultimodalVI).

#' Run multimodal regularizedvi on a Seurat object with several assays
#'
#' Sets up, trains and embeds a `RegularizedMultimodalVI` model on the raw
#' counts of several assays (e.g. RNA + ADT from CITE-seq) and stores the
#' joint latent representation as a dimensional reduction (cells in object
#' order), like [Seurat::RunPCA()]. The trained model is retrievable with
#' `getRegularizedVIModel(object, reduction.name)` (kept for this R session).
#'
#' @param object A `Seurat` object with raw counts in each of `assays`.
#' @param assays Assays to model, in this order (at least 2; default
#'   `c("RNA", "ADT")`).
#' @param batch,... Covariates and network options of
#'   [regularizedviMultimodalModel()] (`ambient`, `nn.conditioning`,
#'   `n.hidden`, `n.latent`, `features`, ...; any other name is an error:
#'   options of training go in `train.args`).
#' @param latent.mode `"concatenation"` (default), `"weighted_mean"` or
#'   `"single_encoder"`, see [regularizedviMultimodalModel()].
#' @param ambient.profile Optional measured soups, a named list per modality
#'   (e.g. `list(ADT = EstimateAmbientProfile(adt_raw, empty = ...))`), see
#'   [regularizedviMultimodalModel()]; `ambient.background` (in `...`) sets
#'   each modality's background form.
#' @param layer Layer / slot with raw counts (default `"counts"`).
#' @param reduction.name Name of the new reduction (default
#'   `"regularizedmultivi"`).
#' @param reduction.key Key of its dimensions (default `"rmvi_"`).
#' @param contamination.column Prefix of the metadata columns that receive each
#'   cell's ambient contamination fraction, one per modality with an additive
#'   background (`<prefix>_<modality>`, e.g.
#'   `regularizedvi_contamination_RNA`; `NULL`: none), see
#'   [getContaminationFraction()].
#' @param max.epochs,accelerator,devices,batch.size,progress Training options,
#'   see [trainRegularizedVI()].
#' @inheritParams RunRegularizedVI
#' @param seed Random seed (default 0).
#' @return The Seurat object with the new reduction (its default assay the
#'   first of `assays`) and a command log entry.
#' @examples
#' \dontrun{
#' cbmc <- RunRegularizedMultimodalVI(cbmc, assays = c("RNA", "ADT"), max.epochs = 50)
#' cbmc <- Seurat::RunUMAP(cbmc, reduction = "regularizedmultivi", dims = 1:20)
#' plotModalityAttribution(cbmc)
#' }
#' @export
RunRegularizedMultimodalVI <- function(object, assays = c("RNA", "ADT"), batch = NULL, ...,
                                       ambient.profile = NULL,
                                       latent.mode = "concatenation", layer = "counts",
                                       reduction.name = "regularizedmultivi",
                                       reduction.key = "rmvi_",
                                       contamination.column = "regularizedvi_contamination",
                                       max.epochs = NULL, accelerator = "auto", devices = "auto",
                                       batch.size = 128, progress = TRUE, train.args = list(), seed = 0) {
  training <- .check_run(object, "RunRegularizedMultimodalVI", "runRegularizedMultimodalVI", contamination.column)
  .check_model_dots(list(...), "RunRegularizedMultimodalVI", "regularizedviMultimodalModel")
  model <- regularizedviMultimodalModel(object, assays = assays, batch = batch, ...,
                                        ambient.profile = ambient.profile, layer = layer,
                                        latent.mode = latent.mode, seed = seed)
  .train_run(model, training)
  object <- .attach_seurat_reduction(object, model, model$mod_keys[[1]], reduction.name,
                                     reduction.key)
  object <- .add_cell_columns(object, .contamination_table(model, contamination.column))
  # Several assays: logged without an assay suffix, as Seurat does.
  .log_command(object, "RunRegularizedMultimodalVI", assay.used = model$mod_keys[[1]])
}

#' Run multimodal regularizedvi on a SingleCellExperiment with altExps
#'
#' Sets up, trains and embeds a `RegularizedMultimodalVI` model on the raw
#' counts of the main experiment and of the alternative experiments `altexps`
#' (e.g. `"ADT"`), and stores the joint latent in `reducedDim(x, name)`. The
#' model is retrievable with `getRegularizedVIModel(x, name)`.
#'
#' @param x A `SingleCellExperiment` with raw counts in the main experiment and
#'   in each of `altexps`.
#' @param altexps Alternative experiments to model besides the main one
#'   (default: all).
#' @inheritParams RunRegularizedMultimodalVI
#' @param name Name of the new reducedDim (default `"regularizedmultivi"`).
#' @param main.name Modality name of the main experiment (default:
#'   `mainExpName(x)` or `"RNA"`).
#' @param assay.type Assay with raw counts, in the main experiment and the
#'   altExps (default `"counts"`).
#' @return The SingleCellExperiment with the new reducedDim and the
#'   contamination columns (`<contamination.column>_<modality>` in colData).
#' @rdname runRegularizedMultimodalVI-sce
#' @examples
#' \dontrun{
#' sce <- runRegularizedMultimodalVI(sce, altexps = "ADT", max.epochs = 50)
#' getModalityAttribution(sce)
#' }
#' @export
runRegularizedMultimodalVI <- function(x, altexps = NULL, batch = NULL, ...,
                                       ambient.profile = NULL, latent.mode = "concatenation",
                                       name = "regularizedmultivi", main.name = NULL,
                                       assay.type = "counts",
                                       contamination.column = "regularizedvi_contamination",
                                       max.epochs = NULL, accelerator = "auto", devices = "auto",
                                       batch.size = 128, progress = TRUE, train.args = list(), seed = 0) {
  training <- .check_run(x, "runRegularizedMultimodalVI", "RunRegularizedMultimodalVI", contamination.column)
  .check_model_dots(list(...), "runRegularizedMultimodalVI", "regularizedviMultimodalModel")
  model <- regularizedviMultimodalModel(x, altexps = altexps, batch = batch, ...,
                                        ambient.profile = ambient.profile, main.name = main.name,
                                        assay.type = assay.type, latent.mode = latent.mode, seed = seed)
  .train_run(model, training)
  x <- .attach_sce_reduction(x, model, name)
  .add_cell_columns(x, .contamination_table(model, contamination.column))
}

