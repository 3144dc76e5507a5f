# The RegularizedMultimodalVI model on several modalities: set-up and the R handle.

#' Set up a multimodal regularizedvi model (RNA + protein, RNA + ATAC, ...)
#'
#' Converts the raw counts of several Seurat assays, or of a
#' SingleCellExperiment's main experiment and altExps, with [as.MuData()]
#' (only covariate columns travel), registers them with
#' `RegularizedMultimodalVI.setup_mudata()` and builds an untrained
#' `RegularizedMultimodalVI`. Train it with [trainRegularizedVI()]; read the
#' joint latent with [getLatent()] and the decoder attribution with
#' [getModalityAttribution()]. Most users call [RunRegularizedMultimodalVI()]
#' or [runRegularizedMultimodalVI()].
#'
#' @inheritParams as.MuData
#' @inheritParams regularizedviModel
#' @param n.hidden,n.latent Hidden width and latent dimensions: one number for
#'   all modalities or a named list / vector per modality (e.g.
#'   `list(RNA = 10, ADT = 5)`).
#' @param n.layers,dropout.rate Hidden layers (1) of the encoders and
#'   decoders, and the dropout rate (0.1, during training) on the input of each
#'   encoder layer (the modalities' latent and library-size encoders); the
#'   decoders use no dropout.
#' @param latent.mode `"concatenation"` (one encoder per modality, joint
#'   latent = their concatenation, default), `"weighted_mean"` (one shared
#'   latent mixing the modalities' posteriors; equal `n.latent` needed) or
#'   `"single_encoder"` (one encoder on all modalities).
#' @param primary.modality With `latent.mode = "concatenation"`: the modality
#'   whose decoder reads only its own latent slice, while the other decoders
#'   read the whole joint latent. `"first"` (default): the first modality (the
#'   first of `assays`, or the main experiment); a modality name; or `NA`:
#'   every decoder reads the whole latent (the model before format 4). With RNA
#'   primary, the RNA counts are explained by the RNA encoder's slice, and that
#'   slice is trained by the RNA likelihood alone, as in an RNA-only model (the
#'   other decoders read it without shaping it); the other modalities add slices
#'   of their own, whose KL weighs twice (Python's `detach_primary` and
#'   `secondary_kl_weight`). Each modality draws from a random stream of its
#'   own, the primary one as an RNA-only model does, so from the same seed the
#'   RNA slice is an RNA-only model's latent when the RNA options agree (RNA
#'   feature scaling, off here by default, is the difference). On SNARE-seq RNA
#'   + ATAC (3 seeds) the joint latent's scib bio conservation is 0.001-0.002
#'   above the RNA-only model's, its kNN purity 0.001 below on average
#'   (docs/multimodal.md).
#'   The other latent modes take `"first"` or `NA` (no primary modality).
#' @param ambient.profile Optional measured soups per modality: a named list
#'   of data.frames (features x ambient categories, e.g. from
#'   [EstimateAmbientProfile()] on the empty droplets), e.g.
#'   `list(ADT = adt_soup)`; modalities not named keep their cells' mean
#'   profile. For protein (ADT) give it: the cells' mean profile does not
#'   identify the protein background (isotype controls barely change).
#' @param ambient.background Form of each modality's background, `"profile"`
#'   (default) or `"free"`: one for all, or a named list per modality (e.g.
#'   `list(ADT = "free")`).
#' @return A `regularizedviMultimodalModel` (also a `regularizedviModel`): a
#'   list with the Python model (`py`), its MuData (`mdata`), the cell names,
#'   the features per modality (`features`) and the setup arguments.
#' @seealso [RunRegularizedMultimodalVI()], [runRegularizedMultimodalVI()]
#' @examples
#' \dontrun{
#' model <- regularizedviMultimodalModel(cbmc, assays = c("RNA", "ADT"), batch = "sample")
#' trainRegularizedVI(model, max.epochs = 20)
#' getModalityAttribution(model)
#' }
#' @export
regularizedviMultimodalModel <- function(object, assays = NULL, altexps = NULL, batch = NULL,
                                         ambient = NULL, nn.conditioning = NULL,
                                         feature.scaling = NULL, dispersion = NULL,
                                         library.size = NULL, encoder.covariates = NULL,
                                         continuous.covariates = NULL, labels = NULL,
                                         layer = "counts",
                                         main.name = NULL, assay.type = "counts", features = NULL,
                                         n.hidden = 128, n.latent = 10, n.layers = 1,
                                         dropout.rate = 0.1,
                                         latent.mode = c("concatenation", "weighted_mean",
                                                         "single_encoder"),
                                         seed = 0, ambient.profile = NULL,
                                         ambient.background = NULL, primary.modality = "first",
                                         ambient.adversary = NULL) {
  latent.mode <- match.arg(latent.mode)
  primary <- .check_primary_modality(primary.modality, latent.mode)
  net <- .check_args(n.hidden = n.hidden, n.latent = n.latent, n.layers = n.layers,
                     dropout.rate = dropout.rate, seed = seed)
  parts <- .multimodal_parts(object, assays = assays, layer = layer, altexps = altexps,
                             main.name = main.name, assay.type = assay.type)
  .check_profiles(ambient.profile, names(parts$counts), lapply(
    stats::setNames(nm = names(parts$counts)),
    function(m) if (is.null(features[[m]])) rownames(parts$counts[[m]]) else features[[m]]))
  form <- .background_form(ambient.background, names(parts$counts))
  adversary <- .ambient_adversary(ambient.adversary, labels)
  setup <- .covariate_setup(parts)
  mdata <- .parts_to_mudata(parts, features = features, categorical = setup$columns$categorical,
                            continuous = setup$columns$continuous)
  mods <- as.character(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(mdata$mod)))
  if (length(mods) < 2) {
    stop("A multimodal model needs at least 2 modalities, got ", length(mods), " (",
         paste(mods, collapse = ", "), "); for one modality use RunRegularizedVI() / ",
         "runRegularizedVI().", call. = FALSE)
  }
  rv <- .py_module("regularizedvi")
  modalities <- reticulate::py_dict(mods, as.list(mods), convert = FALSE)
  .py_call(.without_py_zero_feature_warning(
    do.call(rv$RegularizedMultimodalVI$setup_mudata, c(list(mdata, modalities = modalities), setup$args))),
    "Setting up the data failed")
  .set_seed(net$seed)
  model_args <- list(mdata, n_hidden = .per_modality(net$n.hidden, mods, "n.hidden"),
                     n_latent = .per_modality(net$n.latent, mods, "n.latent"),
                     n_layers = net$n.layers, dropout_rate = net$dropout.rate,
                     latent_mode = latent.mode, ambient_background = form,
                     ambient_profile = .profiles_to_py(ambient.profile, mods))
  model_args$ambient_adversary <- adversary  # NULL drops it: the Python default
  if (!identical(primary, "first")) {
    if (!is.null(primary) && !primary %in% mods) {
      stop("`primary.modality` must be \"first\", NA or one of the modalities ",
           paste(mods, collapse = ", "), "; got \"", primary, "\".", call. = FALSE)
    }
    model_args["primary_modality"] <- list(primary)  # NULL stays in the list: Python None
  }
  py <- .py_call(do.call(rv$RegularizedMultimodalVI, model_args), "Building the model failed")
  .multimodal_model_from_py(py, mdata)
}

# "first" (Python's default), NULL for NA (no primary modality) or a modality name.
.check_primary_modality <- function(value, latent.mode) {
  if (length(value) != 1 || !(is.na(value) || is.character(value))) {
    stop("`primary.modality` takes one modality name, \"first\" or NA.", call. = FALSE)
  }
  if (is.na(value)) return(NULL)
  if (latent.mode != "concatenation" && value != "first") {
    stop("`primary.modality` applies to latent.mode = \"concatenation\" only; use NA or \"first\" with \"",
         latent.mode, "\".", call. = FALSE)
  }
  value
}

# One integer for all modalities, or a named dict per modality.
.per_modality <- function(value, mods, what) {
  if (length(value) == 1 && is.null(names(value))) return(as.integer(value))
  value <- unlist(value)
  if (is.null(names(value)) || !setequal(names(value), mods) || anyNA(value)) {
    stop("`", what, "` takes one number or one per modality named ",
         paste(mods, collapse = ", "), ".", call. = FALSE)
  }
  reticulate::py_dict(mods, as.list(as.integer(value[mods])), convert = FALSE)
}

.multimodal_model_from_py <- function(py, mdata) {
  cells <- as.character(reticulate::py_to_r(mdata$obs_names$tolist()))
  registry <- py$adata_manager$registry
  setup_args <- reticulate::py_to_r(reticulate::py_get_item(registry, "setup_args"))
  modalities <- names(setup_args$modalities)
  # model modality name -> MuData modality (the Seurat assay / SCE experiment it came from)
  mod_keys <- vapply(setup_args$modalities, as.character, "")
  features <- lapply(stats::setNames(modalities, modalities), function(m) {
    as.character(reticulate::py_to_r(reticulate::py_get_item(mdata$mod, mod_keys[[m]])$var_names$tolist()))
  })
  # `genes` = the first modality's features: what the Python outputs default to.
  .new_model(py, mdata, cells, features[[1]], setup_args,
             class = c("regularizedviMultimodalModel", "regularizedviModel"), mdata = mdata,
             features = features, modalities = modalities, mod_keys = mod_keys)
}

#' @export
print.regularizedviMultimodalModel <- function(x, ...) {
  alive <- !reticulate::py_is_null_xptr(x$py)
  cat("regularizedviMultimodalModel:", length(x$cells), "cells;",
      paste0(x$modalities, " (", lengths(x$features), " features)", collapse = ", "))
  if (alive) {
    cat(if (isTRUE(reticulate::py_to_r(x$py$is_trained_))) ", trained" else ", not trained")
  } else {
    cat(" (Python object gone)")
  }
  cat("\n")
  invisible(x)
}
