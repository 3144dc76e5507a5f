# Several modalities (RNA + ADT, RNA + ATAC, ...) -> one MuData: Seurat assays / SCE altExps
# become MuData modalities, each with its own sparse counts. No modality is dropped.


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
#' `check.empty = TRUE`, features with zero total counts are kept with a
#' warning and no cell may have zero counts in every modality (a cell without counts in one modality is
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
        warning(where[[mod]], " has ", length(empty), " feature(s) with zero total counts (e.g. '",
                rownames(counts[[mod]])[empty[1]], "'); they are kept and learned as unexpressed. ",
                "To drop them: ", fix, ".", call. = FALSE)
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

