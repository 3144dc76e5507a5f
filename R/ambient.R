# Ambient RNA outputs: per-cell contamination, expected ambient counts and corrected counts,
# as R matrices, Seurat assays / metadata columns and SingleCellExperiment assays / colData.

#' Ambient contamination of each cell, ambient and corrected counts
#'
#' Each observed count `x` of a cell is split, in expectation, between the
#' cell's own signal `rho` and the additive background `s` of its ambient
#' group (sample / channel), at the cell's posterior mean:
#' * `getContaminationFraction()`: the expected background share of each
#'   cell's counts, `sum_g s_g / sum_g (rho_g + s_g)` (technical feature
#'   scaling included), in \[0, 1\]; 0 for a modality without background;
#' * `getAmbientCounts()`: the expected ambient part of each count,
#'   `x * s / (rho + s)`;
#' * `getAmbientCorrectedCounts()`: the counts with it removed,
#'   `x * rho / (rho + s)`, so that corrected + ambient = observed.
#'
#' "Corrected" counts are a posterior-mean share of each observed count, not a
#' sample of clean counts: they are not whole numbers, never exceed the
#' observed count, and zeros stay zeros (the matrices are sparse, with the
#' pattern of the counts, and are never densified). Tools that need integer
#' counts must not be given them as raw counts.
#'
#' @inheritParams getNormalizedExpression
#' @return `getContaminationFraction()`: a numeric vector named by cell (the
#'   model's cells, in its order). `getAmbientCounts()` /
#'   `getAmbientCorrectedCounts()`: a features x cells `dgCMatrix`.
#' @seealso [AddAmbientCorrectedCounts()], [addAmbientCorrectedCounts()]; the
#'   run functions add the contamination fraction as a metadata / colData
#'   column (`regularizedvi_contamination`).
#' @export
getContaminationFraction <- function(model, name = "regularizedvi", modality = NULL) {
  model <- getRegularizedVIModel(model, name)
  mod <- .modality_of(model, modality)
  series <- .py_call(model$py$get_contamination_fraction(modality = mod$py),
                     "Computing the contamination fraction failed")
  stats::setNames(as.double(reticulate::py_to_r(series$to_numpy(dtype = "float64"))),
                  .py_names(series$index))
}

#' @rdname getContaminationFraction
#' @export
getAmbientCounts <- function(model, name = "regularizedvi", modality = NULL) {
  model <- getRegularizedVIModel(model, name)
  mod <- .modality_of(model, modality)
  csr <- .py_call(model$py$get_ambient_counts(modality = mod$py), "Computing the ambient counts failed")
  .csr_to_dgc(csr, mod$features, model$cells)
}

#' @rdname getContaminationFraction
#' @export
getAmbientCorrectedCounts <- function(model, name = "regularizedvi", modality = NULL) {
  model <- getRegularizedVIModel(model, name)
  mod <- .modality_of(model, modality)
  csr <- .py_call(model$py$get_ambient_corrected_counts(modality = mod$py),
                  "Computing the ambient-corrected counts failed")
  .csr_to_dgc(csr, mod$features, model$cells)
}

#' Foreground probability of each count (totalVI-style, per cell and protein)
#'
#' Per cell and feature, the probability that a count comes from the cell
#' itself rather than from the ambient background: `rho / (rho + s)` at the
#' cell's posterior mean, where `rho` is the cell's own signal and `s` the
#' background of its ambient group (with the cell's background scale). This
#' is totalVI's per-cell, per-protein foreground probability: for CITE-seq
#' protein (a multimodal model's `"ADT"` modality) values near 0 mark a
#' protein whose counts in that cell are background (isotype controls,
#' proteins the cell does not carry), near 1 a protein the cell expresses.
#' It is 1 everywhere for a modality without background. It is the same
#' share as [getAmbientCorrectedCounts()] / observed counts, but defined for
#' every feature and cell, zero counts included.
#'
#' Give the model the empty droplets' profile (`ambient.profile =`, see
#' [EstimateAmbientProfile()]) for protein: with the cells' mean profile as
#' background shape the probabilities say little.
#'
#' @inheritParams getNormalizedExpression
#' @param features Features to return, in this order (default: all of the
#'   modality's).
#' @return A dense features x cells matrix (the orientation of
#'   [getNormalizedExpression()]) of values in \[0, 1\], with dimnames. It
#'   is dense: on RNA pass `features`.
#' @seealso [getContaminationFraction()] for the per-cell background share.
#' @examples
#' \dontrun{
#' soup <- EstimateAmbientProfile(adt_raw, empty = droplet_class == "empty")
#' cbmc <- RunRegularizedMultimodalVI(cbmc, assays = c("RNA", "ADT"),
#'                                    ambient.profile = list(ADT = soup))
#' fg <- getForegroundProbability(cbmc, modality = "ADT", name = "regularizedmultivi")
#' }
#' @export
getForegroundProbability <- function(model, features = NULL, modality = NULL,
                                     name = "regularizedvi") {
  model <- getRegularizedVIModel(model, name)
  mod <- .modality_of(model, modality)
  args <- list(modality = mod$py)
  if (!is.null(features)) {
    features <- .check_features(features, mod)
    args$gene_list <- reticulate::r_to_py(as.list(features))
  }
  df <- .py_call(do.call(model$py$get_foreground_probability, args),
                 "Computing the foreground probability failed")
  values <- .features_by_cells(df)
  if (!is.null(features)) values <- values[features, , drop = FALSE]
  values
}

# A cells x genes scipy CSR is a genes x cells CSC: read its arrays into a dgCMatrix.
.csr_to_dgc <- function(csr, genes, cells) {
  csr <- csr$tocsr()
  csr$sort_indices()
  np <- .py_module("numpy")
  m <- methods::new("dgCMatrix",
                    i = as.integer(reticulate::py_to_r(np$asarray(csr$indices, dtype = "int32"))),
                    p = as.integer(reticulate::py_to_r(np$asarray(csr$indptr, dtype = "int32"))),
                    x = as.double(reticulate::py_to_r(np$asarray(csr$data, dtype = "float64"))),
                    Dim = c(length(genes), length(cells)))
  m@Dimnames <- list(genes, cells)
  m
}

#' Add ambient-corrected counts as a Seurat assay
#'
#' Stores [getAmbientCorrectedCounts()] (sparse, never densified) as the
#' `counts` layer of a new assay: an `Assay5` on SeuratObject >= 5, an `Assay`
#' on SeuratObject 4 (whose `data` slot then holds the same matrix until
#' normalized). The values are posterior-mean shares of the observed counts,
#' not whole numbers: normalize them (`NormalizeData()`) for plots and
#' clustering, but do not feed them to a model of raw counts. The call is
#' logged in `Command(object)` as `AddAmbientCorrectedCounts.<new.assay>`.
#'
#' @param object A `Seurat` object after [RunRegularizedVI()],
#'   [RunRegularizedMultimodalVI()], [MapRegularizedVIQuery()] or
#'   `IntegrateLayers(method = RegularizedVIIntegration)`.
#' @param new.assay Name of the new assay (default: the model's assay followed
#'   by `"corrected"`, e.g. `"RNAcorrected"`, `"ADTcorrected"`).
#' @param reduction Reduction under which the model is stored.
#' @param modality Multimodal model: the modality (default the first).
#' @return The Seurat object with the new assay (the default assay unchanged;
#'   the model's cells and features) and a command log entry.
#' @export
AddAmbientCorrectedCounts <- function(object, new.assay = NULL, reduction = "regularizedvi",
                                      modality = NULL) {
  model <- getRegularizedVIModel(object, reduction)
  mod <- .modality_of(model, modality)
  assay <- if (is.null(mod$mod_key)) SeuratObject::DefaultAssay(object[[reduction]]) else mod$mod_key
  if (is.null(new.assay)) new.assay <- paste0(assay, "corrected")
  .check_column_name(new.assay, "new.assay", null = FALSE)
  cells <- colnames(object)[colnames(object) %in% model$cells]
  if (!.seurat_v5() && length(cells) < ncol(object)) {
    stop("The model describes ", length(cells), " of the object's ", ncol(object), " cells; ",
         "a Seurat 4 assay must hold every cell: subset the object to the model's cells first.",
         call. = FALSE)
  }
  corrected <- getAmbientCorrectedCounts(model, modality = modality)
  if (!identical(colnames(corrected), cells)) corrected <- corrected[, cells, drop = FALSE]
  assay_obj <- if (.seurat_v5()) {
    getExportedValue("SeuratObject", "CreateAssay5Object")(counts = corrected)
  } else {
    SeuratObject::CreateAssayObject(counts = corrected)
  }
  SeuratObject::Key(assay_obj) <- paste0(gsub("[^[:alnum:]]", "", tolower(new.assay)), "_")
  object[[new.assay]] <- assay_obj
  .log_command(object, "AddAmbientCorrectedCounts", assay = new.assay, assay.used = assay)
}

#' Add ambient-corrected counts as a SingleCellExperiment assay
#'
#' Stores [getAmbientCorrectedCounts()] (a sparse `dgCMatrix`, never
#' densified) as a new assay of the experiment the modality came from (the
#' main experiment, or for a multimodal model the altExp of the modality's
#' name). The values are posterior-mean shares of the observed counts, not
#' whole numbers (see [getContaminationFraction()]).
#'
#' @param x A `SingleCellExperiment` after [runRegularizedVI()],
#'   [runRegularizedMultimodalVI()] or [mapRegularizedVIQuery()].
#' @param assay.name Name of the new assay (default
#'   `"regularizedvi_corrected"`).
#' @param name reducedDim name under which the model is stored.
#' @param modality Multimodal model: the modality (default the first).
#' @return The SingleCellExperiment with the new assay. The model must cover
#'   all the experiment's genes (a sparse assay has no room for "not
#'   modelled"): otherwise an error says how to subset.
#' @rdname addAmbientCorrectedCounts-sce
#' @export
addAmbientCorrectedCounts <- function(x, assay.name = "regularizedvi_corrected",
                                      name = "regularizedvi", modality = NULL) {
  model <- getRegularizedVIModel(x, name)
  mod <- .modality_of(model, modality)
  .check_column_name(assay.name, "assay.name", null = FALSE)
  target <- .sce_experiment(x, mod)
  missing <- setdiff(rownames(target), mod$features)
  if (length(missing)) {
    stop("The model has ", length(mod$features), " of the ", nrow(target), " features of the ",
         "experiment (it lacks e.g. '", missing[1], "'), and a sparse assay cannot mark the others ",
         "as not corrected: add the assay to the model's features only (x <- x[rownames(",
         "getAmbientCorrectedCounts(x, name = \"", name, "\")), ]) or take the matrix with ",
         "getAmbientCorrectedCounts().", call. = FALSE)
  }
  if (!setequal(colnames(target), model$cells)) {
    stop("The model describes other cells than the SingleCellExperiment's (", length(model$cells),
         " vs ", ncol(target), "): add the assay to the object the model was fit on.", call. = FALSE)
  }
  corrected <- getAmbientCorrectedCounts(model, modality = modality)
  corrected <- corrected[rownames(target), colnames(target), drop = FALSE]
  .sce_set_assay(x, mod, assay.name, corrected)
}

# ---------------------------------------------------------------- per-cell columns

# The contamination fraction of the model's cells as a data.frame (row names: cells): one
# column `column` (single-modality model) or `<column>_<modality>` per modality with
# background (multimodal). NULL when `column` is NULL.
.contamination_table <- function(model, column) {
  if (is.null(column)) return(NULL)
  out <- data.frame(row.names = model$cells)
  if (!inherits(model, "regularizedviMultimodalModel")) {
    out[[column]] <- unname(getContaminationFraction(model)[model$cells])
    return(out)
  }
  for (m in model$modalities) {
    observation <- model$py$module$observation_of(m)
    if (!isTRUE(reticulate::py_to_r(observation$use_background))) next
    out[[paste0(column, "_", m)]] <- unname(getContaminationFraction(model, modality = m)[model$cells])
  }
  out
}

# Add per-cell columns (a data.frame with cells as row names) to a Seurat object's metadata
# or an SCE's colData, in the object's cell order; cells not in the table get NA.
.add_cell_columns <- function(object, table) {
  if (is.null(table) || !ncol(table)) return(object)
  cells <- colnames(object)
  rows <- match(cells, rownames(table))
  if (inherits(object, "Seurat")) {
    full <- table[rows, , drop = FALSE]
    rownames(full) <- cells
    return(SeuratObject::AddMetaData(object, metadata = full))
  }
  for (col in names(table)) SummarizedExperiment::colData(object)[[col]] <- table[[col]][rows]
  object
}
