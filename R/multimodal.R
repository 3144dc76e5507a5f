# Several modalities (RNA + ADT, RNA + ATAC, ...): Seurat assays / SCE altExps -> MuData,
# the RegularizedMultimodalVI model, and its decoder attribution. No modality is dropped:
# every requested assay / altExp becomes one MuData modality with its own sparse counts.

#' Convert a multi-assay Seurat object or an SCE with altExps to a MuData
#'
#' Builds a Python `mudata.MuData` in-process with one modality per Seurat
#' assay (`assays`) or, for a `SingleCellExperiment`, one for the main
#' experiment plus one per alternative experiment (`altexps`). Each modality's
#' raw counts cross to Python as a sparse matrix (CSR, cells x features, never
#' densified), exactly as in [as.AnnData()]. All modalities list the object's
#' cells in the object's order (cells are matched by name; a modality whose
#' cells differ is an error). Metadata columns go to the MuData's global
#' `obs`, as in [as.AnnData()]. The input object is not modified.
#'
#' Seurat 5 assays split into `counts.<group>` layers are read whole, as in
#' [as.AnnData()] (the layer of each cell is the metadata column
#' `counts_layer`); naming one layer in `layer` uses only its cells, which every
#' other modality must hold.
#'
#' Each modality's counts must be finite, non-negative whole numbers. With
#' `check.empty = TRUE`, no feature may have zero total counts and no cell may
#' have zero counts in every modality (a cell without counts in one modality is
#' allowed: the model masks that modality out for it).
#'
#' @param object A `Seurat` object with several assays, or a
#'   `SingleCellExperiment` with alternative experiments.
#' @param assays Seurat assays to use, in this order (default: all assays).
#'   They become the MuData modalities, named after the assays.
#' @param layer Seurat slot / layer with raw counts (default `"counts"`: on a
#'   split Seurat 5 assay, all its `counts.*` layers), the same for every assay.
#' @param altexps SingleCellExperiment alternative experiments to use besides
#'   the main one (default: all `altExpNames()`).
#' @param main.name Modality name of the SingleCellExperiment's main experiment
#'   (default: `mainExpName()`, or `"RNA"` when that is unset).
#' @param assay.type SingleCellExperiment assay with raw counts, in the main and
#'   in every alternative experiment (default `"counts"`).
#' @param features Optional named list: features to keep per modality (e.g.
#'   `list(RNA = genes)`); modalities not named keep all features.
#' @inheritParams as.AnnData
#' @return A Python `mudata.MuData` (reticulate reference, not converted to R)
#'   whose `mod` holds one AnnData per modality.
#' @seealso [as.AnnData()], [RunRegularizedMultimodalVI()]
#' @examples
#' \dontrun{
#' mdata <- as.MuData(cbmc, assays = c("RNA", "ADT"))
#' mdata <- as.MuData(sce, altexps = "ADT")
#' mdata$write_h5mu("cbmc.h5mu")
#' }
#' @export
as.MuData <- function(object, assays = NULL, layer = "counts", altexps = NULL, main.name = NULL,
                      assay.type = "counts", obs.columns = NULL, categorical = NULL,
                      continuous = NULL, features = NULL, check.empty = TRUE) {
  parts <- .multimodal_parts(object, assays = assays, layer = layer, altexps = altexps,
                             main.name = main.name, assay.type = assay.type)
  if (isTRUE(obs.columns)) obs.columns <- names(parts$meta)
  .parts_to_mudata(parts, features = features, obs.columns = obs.columns,
                   categorical = categorical, continuous = continuous, check.empty = check.empty)
}

.parts_to_mudata <- function(parts, features = NULL, obs.columns = NULL, categorical = NULL,
                             continuous = NULL, check.empty = TRUE) {
  parts$counts <- .subset_modality_features(parts$counts, features)
  .check_multimodal_counts(parts$counts, parts$where, check.empty = check.empty,
                           fixes = parts$fixes, subset = names(features))
  obs <- .build_obs(parts$meta, parts$cells, obs.columns = obs.columns,
                    categorical = categorical, continuous = continuous)
  .counts_to_mudata(parts$counts, obs, parts$cells)
}

# ggplot2's .data pronoun (tidy evaluation inside aes()).
utils::globalVariables(".data")

# ---------------------------------------------------------------- extraction

# list(counts = named list of features x cells dgCMatrix (object cell order), meta, cells, where)
.multimodal_parts <- function(object, assays = NULL, layer = "counts", altexps = NULL,
                              main.name = NULL, assay.type = "counts") {
  if (inherits(object, "Seurat")) return(.seurat_modalities(object, assays, layer))
  if (inherits(object, "SingleCellExperiment")) {
    return(.sce_modalities(object, altexps, main.name, assay.type))
  }
  stop("Expected a Seurat object (several assays) or a SingleCellExperiment (with altExps), ",
       "got an object of class '", class(object)[1], "'.", call. = FALSE)
}

.check_modality_names <- function(names, what) {
  if (!length(names) || !is.character(names) || anyNA(names) || any(!nzchar(names))) {
    stop("`", what, "` must name at least one modality.", call. = FALSE)
  }
  if (anyDuplicated(names)) {
    stop("`", what, "` names '", names[anyDuplicated(names)], "' twice.", call. = FALSE)
  }
  bad <- grep(".", names, fixed = TRUE, value = TRUE)
  if (length(bad)) {
    stop("Modality name '", bad[1], "' contains '.', which the model does not allow: ",
         "rename the assay / altExp first.", call. = FALSE)
  }
}

.sce_modalities <- function(object, altexps, main.name, assay.type) {
  .need("SingleCellExperiment")
  available <- SingleCellExperiment::altExpNames(object)
  if (is.null(altexps)) altexps <- available
  altexps <- as.character(altexps)
  missing <- setdiff(altexps, available)
  if (length(missing)) {
    stop("altExp(s) ", paste0("'", missing, "'", collapse = ", "), " not in the ",
         "SingleCellExperiment (altExpNames: ",
         if (length(available)) paste(available, collapse = ", ") else "none", ").", call. = FALSE)
  }
  if (is.null(main.name)) {
    main.name <- SingleCellExperiment::mainExpName(object)
    if (is.null(main.name) || is.na(main.name) || !nzchar(main.name)) main.name <- "RNA"
  }
  names <- c(main.name, altexps)
  .check_modality_names(names, "c(main.name, altexps)")
  cells <- colnames(object)
  if (is.null(cells)) {
    stop("The SingleCellExperiment has no cell names: set colnames(sce) first.", call. = FALSE)
  }
  main <- .sce_counts(object, assay.type)
  counts <- list()
  where <- character()
  fixes <- list()
  fixes[[main.name]] <- main$fixes
  where[[main.name]] <- paste0("main experiment, ", main$where)
  counts[[main.name]] <- .match_cells(main$counts, cells, where[[main.name]])
  for (alt in altexps) {
    # withDimnames = FALSE: the altExp's own cell names, so that a mismatch is seen.
    alt_sce <- SingleCellExperiment::altExp(object, alt, withDimnames = FALSE)
    what <- paste0("altExp '", alt, "'")
    assays_here <- SummarizedExperiment::assayNames(alt_sce)
    if (!assay.type %in% assays_here) {
      stop(what, " has no assay '", assay.type, "' with raw counts (assays: ",
           if (length(assays_here)) paste(assays_here, collapse = ", ") else "none",
           ").", call. = FALSE)
    }
    m <- SummarizedExperiment::assay(alt_sce, assay.type, withDimnames = TRUE)
    if (is.null(colnames(m))) colnames(m) <- cells
    where[[alt]] <- paste0(what, ", assay '", assay.type, "'")
    counts[[alt]] <- .match_cells(.as_dgc(m, where[[alt]]), cells, where[[alt]])
    code <- sprintf('SummarizedExperiment::assay(SingleCellExperiment::altExp(sce, "%s"), "%s")',
                    alt, assay.type)
    fixes[[alt]] <- list(genes = sprintf("names(which(Matrix::rowSums(%s) > 0))", code), object = "sce")
  }
  list(counts = counts, meta = main$meta, cells = cells, where = where, fixes = fixes,
       layers = character())
}

# Put a modality's columns in the order of `cells`; it must hold each of them once, and
# may hold other cells of the object (`unused`: cells of layers not used).
.match_cells <- function(counts, cells, where, unused = character()) {
  have <- colnames(counts)
  if (identical(have, cells) || (!length(cells) && !ncol(counts))) return(counts)
  if (is.null(have) || anyDuplicated(have) || !all(cells %in% have) ||
      !all(setdiff(have, cells) %in% unused)) {
    only_here <- setdiff(have, cells)
    only_object <- setdiff(cells, have)
    stop("The cells of ", where, " do not match the object's cells (", length(have), " vs ",
         length(cells), " cells; ",
         length(only_object), " of the object's cells missing there",
         if (length(only_object)) paste0(", e.g. '", only_object[1], "'") else "",
         "; ", length(only_here), " extra",
         if (length(only_here)) paste0(", e.g. '", only_here[1], "'") else "",
         "). Every modality must hold the same cells; give a cell without data an all-zero column.",
         call. = FALSE)
  }
  counts[, cells, drop = FALSE]
}

.subset_modality_features <- function(counts, features) {
  if (is.null(features)) return(counts)
  if (!is.list(features) || is.null(names(features)) || any(!nzchar(names(features)))) {
    stop("`features` must be a named list of features per modality, e.g. list(RNA = genes).",
         call. = FALSE)
  }
  unknown <- setdiff(names(features), names(counts))
  if (length(unknown)) {
    stop("`features` names unknown modality '", unknown[1], "' (modalities: ",
         paste(names(counts), collapse = ", "), ").", call. = FALSE)
  }
  for (mod in names(features)) counts[[mod]] <- .subset_features(counts[[mod]], features[[mod]])
  counts
}

.check_multimodal_counts <- function(counts, where, check.empty = TRUE, fixes = NULL,
                                     subset = character()) {
  for (mod in names(counts)) {
    .check_counts(counts[[mod]], where[[mod]], check.empty = FALSE)
    if (check.empty) {
      empty <- which(Matrix::rowSums(counts[[mod]]) == 0)
      if (length(empty)) {
        fix <- if (mod %in% subset || is.null(fixes[[mod]])) {
          paste0("leave them out of features$", mod)
        } else {
          paste0("pass features = list(", mod, " = ", fixes[[mod]]$genes, ") (", fixes[[mod]]$object,
                 ": your object)")
        }
        stop(where[[mod]], " has ", length(empty), " feature(s) with zero total counts (e.g. '",
             rownames(counts[[mod]])[empty[1]], "'): ", fix, ".", call. = FALSE)
      }
    }
  }
  if (check.empty) {
    totals <- Reduce(`+`, lapply(counts, Matrix::colSums))
    empty <- which(totals == 0)
    if (length(empty)) {
      stop(length(empty), " cell(s) have zero counts in every modality (e.g. '",
           colnames(counts[[1]])[empty[1]], "'): remove them first.", call. = FALSE)
    }
  }
  invisible(TRUE)
}

# ---------------------------------------------------------------- MuData

.counts_to_mudata <- function(counts, obs, cells) {
  md <- .py_module("mudata")
  pd <- .py_module("pandas")
  warnings <- .py_module("warnings")
  index <- pd$Index(reticulate::r_to_py(as.list(as.character(cells))), dtype = "object")
  mods <- lapply(counts, function(m) .counts_to_anndata(m, pd$DataFrame(index = index)))
  mods <- reticulate::py_dict(names(mods), unname(mods), convert = FALSE)
  # mudata warns about features shared by name across modalities (e.g. "CD4" in RNA
  # and ADT) and about its future update() defaults: harmless here.
  with(warnings$catch_warnings(), {
    warnings$simplefilter("ignore")
    mdata <- .py_call(md$MuData(mods), "Building the MuData failed")
    reticulate::py_set_attr(mdata, "obs", obs)
  })
  mdata
}

# ---------------------------------------------------------------- model

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
#' @param n.layers,dropout.rate Hidden layers (1) and dropout (0.1) of the
#'   encoders and decoders.
#' @param latent.mode `"concatenation"` (one encoder per modality, joint
#'   latent = their concatenation, default), `"weighted_mean"` (one shared
#'   latent mixing the modalities' posteriors; equal `n.latent` needed) or
#'   `"single_encoder"` (one encoder on all modalities).
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
                                         continuous.covariates = NULL, layer = "counts",
                                         main.name = NULL, assay.type = "counts", features = NULL,
                                         n.hidden = 128, n.latent = 10, n.layers = 1,
                                         dropout.rate = 0.1,
                                         latent.mode = c("concatenation", "weighted_mean",
                                                         "single_encoder"),
                                         seed = 0) {
  latent.mode <- match.arg(latent.mode)
  net <- .check_args(n.hidden = n.hidden, n.latent = n.latent, n.layers = n.layers,
                     dropout.rate = dropout.rate, seed = seed)
  parts <- .multimodal_parts(object, assays = assays, layer = layer, altexps = altexps,
                             main.name = main.name, assay.type = assay.type)
  covariates <- .default_batch(list(
    batch = batch, ambient = ambient, nn.conditioning = nn.conditioning,
    feature.scaling = feature.scaling, dispersion = dispersion, library.size = library.size,
    encoder.covariates = encoder.covariates, continuous.covariates = continuous.covariates
  ), parts$meta, parts$layers)
  setup_args <- .setup_args(covariates)
  columns <- .setup_columns(setup_args)
  mdata <- .parts_to_mudata(parts, features = features, categorical = columns$categorical,
                            continuous = columns$continuous)
  mods <- as.character(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(mdata$mod)))
  if (length(mods) < 2) {
    stop("A multimodal model needs at least 2 modalities, got ", length(mods), " (",
         paste(mods, collapse = ", "), "); for one modality use RunRegularizedVI() / ",
         "runRegularizedVI().", call. = FALSE)
  }
  rv <- .py_module("regularizedvi")
  modalities <- reticulate::py_dict(mods, as.list(mods), convert = FALSE)
  .py_call(do.call(rv$RegularizedMultimodalVI$setup_mudata,
                   c(list(mdata, modalities = modalities), setup_args)),
           "Setting up the data failed")
  .set_seed(net$seed)
  py <- .py_call(rv$RegularizedMultimodalVI(mdata, n_hidden = .per_modality(net$n.hidden, mods, "n.hidden"),
                                            n_latent = .per_modality(net$n.latent, mods, "n.latent"),
                                            n_layers = net$n.layers,
                                            dropout_rate = net$dropout.rate,
                                            latent_mode = latent.mode),
                 "Building the model failed")
  .multimodal_model_from_py(py, mdata)
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
  mods <- names(setup_args$modalities)
  features <- lapply(stats::setNames(mods, mods), function(m) {
    key <- setup_args$modalities[[m]]
    as.character(reticulate::py_to_r(reticulate::py_get_item(mdata$mod, key)$var_names$tolist()))
  })
  # `genes` = the first modality's features: what the Python outputs default to.
  structure(list(py = py, adata = mdata, mdata = mdata, cells = cells, genes = features[[1]],
                 features = features, modalities = mods, setup_args = setup_args),
            class = c("regularizedviMultimodalModel", "regularizedviModel"))
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
#'   `n.hidden`, `n.latent`, `features`, ...).
#' @param latent.mode `"concatenation"` (default), `"weighted_mean"` or
#'   `"single_encoder"`, see [regularizedviMultimodalModel()].
#' @param layer Layer / slot with raw counts (default `"counts"`).
#' @param reduction.name Name of the new reduction (default
#'   `"regularizedmultivi"`).
#' @param reduction.key Key of its dimensions (default `"rmvi_"`).
#' @param max.epochs,accelerator,devices,batch.size,progress Training options,
#'   see [trainRegularizedVI()].
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
                                       latent.mode = "concatenation", layer = "counts",
                                       reduction.name = "regularizedmultivi",
                                       reduction.key = "rmvi_", max.epochs = NULL,
                                       accelerator = "auto", devices = "auto", batch.size = 128,
                                       progress = TRUE, seed = 0) {
  if (!inherits(object, "Seurat")) {
    stop("RunRegularizedMultimodalVI() needs a Seurat object; for a SingleCellExperiment use ",
         "runRegularizedMultimodalVI().", call. = FALSE)
  }
  .check_train_args(max.epochs = max.epochs, batch.size = batch.size, accelerator = accelerator,
                    devices = devices, progress = progress, seed = seed)
  model <- regularizedviMultimodalModel(object, assays = assays, batch = batch, ...,
                                        layer = layer, latent.mode = latent.mode, seed = seed)
  trainRegularizedVI(model, max.epochs = max.epochs, accelerator = accelerator, devices = devices,
                     batch.size = batch.size, progress = progress)
  object <- .attach_seurat_reduction(object, model, model$modalities[1], reduction.name,
                                     reduction.key)
  # Several assays: logged without an assay suffix, as Seurat does.
  .log_command(object, "RunRegularizedMultimodalVI", assay.used = model$modalities[1])
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
#' @return The SingleCellExperiment with the new reducedDim.
#' @rdname runRegularizedMultimodalVI-sce
#' @examples
#' \dontrun{
#' sce <- runRegularizedMultimodalVI(sce, altexps = "ADT", max.epochs = 50)
#' getModalityAttribution(sce)
#' }
#' @export
runRegularizedMultimodalVI <- function(x, altexps = NULL, batch = NULL, ...,
                                       latent.mode = "concatenation",
                                       name = "regularizedmultivi", main.name = NULL,
                                       assay.type = "counts", max.epochs = NULL,
                                       accelerator = "auto", devices = "auto", batch.size = 128,
                                       progress = TRUE, seed = 0) {
  if (!inherits(x, "SingleCellExperiment")) {
    stop("runRegularizedMultimodalVI() needs a SingleCellExperiment; for a Seurat object use ",
         "RunRegularizedMultimodalVI().", call. = FALSE)
  }
  .check_train_args(max.epochs = max.epochs, batch.size = batch.size, accelerator = accelerator,
                    devices = devices, progress = progress, seed = seed)
  model <- regularizedviMultimodalModel(x, altexps = altexps, batch = batch, ...,
                                        main.name = main.name, assay.type = assay.type,
                                        latent.mode = latent.mode, seed = seed)
  trainRegularizedVI(model, max.epochs = max.epochs, accelerator = accelerator, devices = devices,
                     batch.size = batch.size, progress = progress)
  .attach_sce_reduction(x, model, name)
}

# ---------------------------------------------------------------- attribution

#' Which latent dimensions each modality's decoder uses
#'
#' `getModalityAttribution()` returns, for each modality's decoder, the mean
#' absolute derivative of its expected counts with respect to each latent
#' dimension (Python `get_modality_attribution()`). `plotModalityAttribution()`
#' draws it as a heatmap (ggplot2 when installed, base graphics otherwise).
#'
#' @param object A trained `regularizedviMultimodalModel`, or a Seurat /
#'   SingleCellExperiment object holding one (see [getRegularizedVIModel()]).
#'   `plotModalityAttribution()` also takes the matrix itself.
#' @param name Reduction / reducedDim name under which the model is stored.
#' @param ... Further arguments of the Python `get_modality_attribution()`
#'   (e.g. `method = "finite_difference"`).
#' @return `getModalityAttribution()`: a numeric matrix, modalities (rows, in
#'   model order) x latent dimensions (columns `z0`, `z1`, ...).
#' @export
getModalityAttribution <- function(object, name = "regularizedmultivi", ...) {
  model <- getRegularizedVIModel(object, name)
  if (!inherits(model, "regularizedviMultimodalModel")) {
    stop("Modality attribution needs a multimodal model (RunRegularizedMultimodalVI()), ",
         "not a single-modality regularizedviModel.", call. = FALSE)
  }
  df <- .py_call(model$py$get_modality_attribution(...), "Computing the modality attribution failed")
  values <- reticulate::py_to_r(df$to_numpy(dtype = "float64"))
  rows <- as.character(reticulate::py_to_r(df$index$astype("str")$tolist()))
  cols <- as.character(reticulate::py_to_r(df$columns$astype("str")$tolist()))
  matrix(as.double(values), nrow = length(rows), dimnames = list(rows, cols))
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
