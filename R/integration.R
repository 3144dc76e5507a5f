# regularizedvi as an integration method of Seurat 5's IntegrateLayers().
# Contract (Seurat's ?IntegrateLayers / ?writing-integration): the method receives the
# assay object (object[[assay]]), its name (`assay`), the reduction to correct (`orig`),
# the normalized layers (`layers`), the scaled layer (`scale.layer`) and the features,
# but no cell metadata; it returns a named list of objects added to the Seurat object.

#' regularizedvi integration for Seurat 5's `IntegrateLayers()`
#'
#' An integration method for `Seurat::IntegrateLayers()` (Seurat 5): it trains an
#' `AmbientRegularizedSCVI` model on the raw counts of all the assay's
#' `counts.*` layers (after `obj[["RNA"]] <- split(obj[["RNA"]], f = obj$sample)`)
#' with the layer of each cell as the batch, and returns its latent space as a
#' new reduction, `"integrated.rvi"` by default, for `FindNeighbors()`,
#' `RunUMAP()` and `FindClusters()`. The model reads the counts, whatever
#' normalized `layers` `IntegrateLayers()` passes: `data.<group>` stands for
#' `counts.<group>`. The trained model is kept in the reduction:
#' `getRegularizedVIModel(obj, "integrated.rvi")`,
#' `SaveRegularizedVI(obj, dir, name = "integrated.rvi")`.
#'
#' By default the layer of each cell (metadata column `counts_layer`) sets the
#' ambient, dispersion and library-size groups (`batch`) and is given to the
#' decoder (`nn.conditioning`), the set-up of regularizedvi's integration
#' benchmark. The method does not see the object's metadata: to use other
#' covariates, pass `metadata = obj[[]]` and name its columns (e.g.
#' `batch = "channel", nn.conditioning = c("counts_layer", "chemistry")`).
#'
#' @param object The assay (`IntegrateLayers()` passes `object[[assay]]`), a
#'   Seurat 5 `Assay5` with raw counts split into layers. SCTransform assays are
#'   refused (their counts are not raw).
#' @param assay Name of the assay (passed by `IntegrateLayers()`).
#' @param orig,scale.layer Passed by `IntegrateLayers()`; not used (the model
#'   works on the counts, not on a PCA).
#' @param layers Layers to integrate (passed by `IntegrateLayers()`; default
#'   all `counts.*` layers): `counts.<group>` layers, or the normalized
#'   `data.<group>` layers, whose counts are then used.
#' @param features Genes the model is trained on (`IntegrateLayers()` passes the
#'   variable features; `NULL`: all genes of the layers).
#' @param groups Optional one-column data.frame of per-cell groups (row names:
#'   cells), as described in `?Seurat::writing-integration`; it replaces the
#'   layer of each cell in the `counts_layer` column.
#' @param new.reduction Name of the new reduction (default `"integrated.rvi"`).
#' @param reduction.key Key of its dimensions (default `"integratedrvi_"`).
#' @param contamination.column Name of the metadata column that receives each
#'   cell's ambient contamination fraction (default
#'   `"regularizedvi_contamination"`; `NULL`: none), see
#'   [getContaminationFraction()]; cells of layers not integrated get `NA`.
#' @param metadata Per-cell metadata (a data.frame with the cells as row names,
#'   typically `obj[[]]`) holding the columns named in `batch`,
#'   `nn.conditioning` and `...`.
#' @param batch Column setting the ambient, dispersion and library-size groups
#'   (default: `"counts_layer"`, the layer of each cell, unless `ambient`,
#'   `dispersion` or `library.size` are given in `...`).
#' @param nn.conditioning Columns given to the decoder (default `NULL`: the
#'   batch column; `FALSE`: none).
#' @param ... Further arguments of [regularizedviModel()]: `ambient`,
#'   `dispersion`, `library.size`, `feature.scaling`, `encoder.covariates`,
#'   `continuous.covariates`, `labels` (columns of `metadata`), `n.hidden`, `n.latent`,
#'   `n.layers`, `dropout.rate` (any other name is an error: options of
#'   training go in `train.args`).
#' @param max.epochs,accelerator,devices,batch.size Training options, see
#'   [trainRegularizedVI()].
#' @inheritParams RunRegularizedVI
#' @param seed Random seed (default 0).
#' @param verbose Show messages and the progress bar (default `TRUE`).
#' @param progress Show the training progress bar (default: `verbose`).
#' @return A named list with one `DimReduc` (cells of the layers used, in the
#'   assay's cell order; key `reduction.key`; assay `assay`; the model in its
#'   `misc`) and the contamination column (a one-column data.frame with the
#'   cells as row names), which `IntegrateLayers()` adds to the object.
#' @examples
#' \dontrun{
#' obj[["RNA"]] <- split(obj[["RNA"]], f = obj$sample)
#' obj <- NormalizeData(obj)
#' obj <- FindVariableFeatures(obj)
#' obj <- ScaleData(obj)
#' obj <- RunPCA(obj)
#' obj <- IntegrateLayers(obj, method = RegularizedVIIntegration,
#'                        new.reduction = "integrated.rvi", max.epochs = 100)
#' obj <- FindNeighbors(obj, reduction = "integrated.rvi", dims = 1:10)
#' obj <- FindClusters(obj)
#' obj <- RunUMAP(obj, reduction = "integrated.rvi", dims = 1:10)
#' SaveRegularizedVI(obj, "rvi_model", name = "integrated.rvi")
#' }
#' @export
RegularizedVIIntegration <- function(object, assay = NULL, orig = NULL, layers = NULL,
                                     features = NULL, scale.layer = NULL, groups = NULL,
                                     new.reduction = "integrated.rvi",
                                     reduction.key = "integratedrvi_",
                                     contamination.column = "regularizedvi_contamination",
                                     metadata = NULL,
                                     batch = NULL, nn.conditioning = NULL, ...,
                                     max.epochs = NULL, accelerator = "auto", devices = "auto",
                                     batch.size = 128, train.args = list(), seed = 0, verbose = TRUE,
                                     progress = verbose) {
  .need("SeuratObject")
  if (!.seurat_v5()) {
    stop("RegularizedVIIntegration() is an IntegrateLayers() method, which needs Seurat >= 5 and ",
         "SeuratObject >= 5; with Seurat 4 use RunRegularizedVI(obj, batch = \"sample\").",
         call. = FALSE)
  }
  if (!inherits(object, "StdAssay") && !inherits(object, "Assay")) {
    stop("RegularizedVIIntegration() receives an assay from IntegrateLayers(): call ",
         "obj <- IntegrateLayers(obj, method = RegularizedVIIntegration) (got a '",
         class(object)[1], "'). For a whole Seurat object use RunRegularizedVI().", call. = FALSE)
  }
  if (!is.character(new.reduction) || length(new.reduction) != 1 || !nzchar(new.reduction)) {
    stop("`new.reduction` must be one name.", call. = FALSE)
  }
  .check_key(reduction.key)
  .check_column_name(contamination.column, "contamination.column")
  training <- .run_training()
  .check_model_dots(list(...), "RegularizedVIIntegration", "regularizedviModel")
  if (is.null(assay)) assay <- SeuratObject::DefaultAssay(object)
  cells <- colnames(object)
  meta <- .integration_metadata(metadata, groups, cells)
  parts <- .assay_parts(object, assay, .integration_layers(object, layers), meta$meta, cells)
  if (!is.null(meta$groups)) parts$meta[[.layer_column]] <- meta$groups[colnames(parts$counts)]
  sample_level <- any(c("ambient", "dispersion", "library.size") %in% names(list(...)))
  if (is.null(batch) && !.layer_column %in% names(parts$meta)) {
    stop("Assay '", assay, "' is not split into layers, so there is nothing to integrate: ",
         "split it first (obj[[\"", assay, "\"]] <- split(obj[[\"", assay, "\"]], f = obj$sample)) ",
         "or pass metadata = obj[[]] and batch = \"<column>\".", call. = FALSE)
  }
  if (is.null(batch) && !sample_level) batch <- .layer_column
  if (is.null(nn.conditioning)) nn.conditioning <- if (is.null(batch)) .layer_column else batch
  if (isFALSE(nn.conditioning)) nn.conditioning <- NULL
  class(parts) <- "rvi_parts"
  build <- function() {
    regularizedviModel(parts, batch = batch, nn.conditioning = nn.conditioning, ...,
                       features = features, seed = seed)
  }
  model <- if (verbose) build() else suppressMessages(build())
  .train_run(model, training)
  out <- stats::setNames(list(.model_reduction(model, assay, reduction.key, cells)), new.reduction)
  # IntegrateLayers() assigns each element with obj[[name]] <- value: a data.frame named
  # like its column becomes that metadata column (matched by cell name).
  if (!is.null(contamination.column)) {
    out[[contamination.column]] <- .contamination_table(model, contamination.column)
  }
  out
}
attr(RegularizedVIIntegration, "Seurat.method") <- "integration"

# The counts layers behind the layers IntegrateLayers() passes (data.<g> -> counts.<g>).
.integration_layers <- function(object, layers) {
  if (is.null(layers)) return("counts")
  layers <- as.character(layers)
  counts <- ifelse(startsWith(layers, "counts"), layers, sub("^[^.]*", "counts", layers))
  unique(counts)
}

# The per-cell metadata for the assay's cells (row names matched), and `groups`.
.integration_metadata <- function(metadata, groups, cells) {
  if (is.null(metadata)) {
    meta <- data.frame(row.names = cells)
  } else {
    if (!is.data.frame(metadata) || is.null(rownames(metadata))) {
      stop("`metadata` must be a data.frame with the cells as row names, e.g. obj[[]].", call. = FALSE)
    }
    missing <- setdiff(cells, rownames(metadata))
    if (length(missing)) {
      stop("`metadata` lacks ", length(missing), " of the assay's ", length(cells), " cells (e.g. '",
           missing[1], "'): pass obj[[]] of the same object.", call. = FALSE)
    }
    meta <- metadata[cells, , drop = FALSE]
  }
  if (!is.null(groups)) {
    if (!is.data.frame(groups) || ncol(groups) < 1 || !all(cells %in% rownames(groups))) {
      stop("`groups` must be a data.frame with a group for every cell (row names: cells).",
           call. = FALSE)
    }
    groups <- stats::setNames(as.character(groups[cells, 1]), cells)
  }
  list(meta = meta, groups = groups)
}
