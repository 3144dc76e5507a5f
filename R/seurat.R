# Seurat specifics shared by every Seurat entry point (single-modality, multimodal,
# IntegrateLayers, outputs, save/load): raw counts on SeuratObject 4 (`slot =`) and 5
# (`layer =`, split `counts.*` layers), and the command log.

# Name of the obs column holding the counts layer each cell comes from (split layers).
.layer_column <- "counts_layer"

.seurat_v5 <- function() utils::packageVersion("SeuratObject") >= "5.0.0"

# One layer (v5) / slot (v4) of an assay object. SeuratObject 4.1 has no `layer =`;
# on 5.3 `slot =` is defunct: one code path for both.
.layer_data <- function(assay_obj, layer) {
  if (.seurat_v5()) return(getExportedValue("SeuratObject", "LayerData")(assay_obj, layer = layer))
  SeuratObject::GetAssayData(assay_obj, slot = layer)
}

# Layers of an assay object that hold data (a v4 Assay's empty slots are left out).
.assay_layers <- function(assay_obj) {
  if (.seurat_v5()) return(as.character(getExportedValue("SeuratObject", "Layers")(assay_obj)))
  slots <- c("counts", "data", "scale.data")
  slots[vapply(slots, function(s) length(SeuratObject::GetAssayData(assay_obj, slot = s)) > 0, TRUE)]
}

# R code (as text, for error messages) that reads one layer of `obj`'s assay.
.layer_code <- function(assay, layer) {
  if (.seurat_v5()) {
    sprintf('SeuratObject::LayerData(obj, assay = "%s", layer = %s)', assay, layer)
  } else {
    sprintf('SeuratObject::GetAssayData(obj, assay = "%s", slot = %s)', assay, layer)
  }
}

# Code a user can run to keep genes / cells with counts (obj = their object).
.seurat_fixes <- function(assay, layers) {
  if (length(layers) == 1) {
    code <- .layer_code(assay, sprintf('"%s"', layers))
    genes <- sprintf("names(which(Matrix::rowSums(%s) > 0))", code)
    cells <- sprintf("names(which(Matrix::colSums(%s) > 0))", code)
  } else {
    code <- .layer_code(assay, "l")
    each <- sprintf('c(%s)', paste0('"', layers, '"', collapse = ", "))
    genes <- sprintf("names(which(Reduce(`+`, lapply(%s, function(l) Matrix::rowSums(%s))) > 0))",
                     each, code)
    cells <- sprintf("unlist(lapply(%s, function(l) names(which(Matrix::colSums(%s) > 0))))",
                     each, code)
  }
  list(genes = genes, cells = sprintf("obj <- subset(obj, cells = %s)", cells), object = "obj")
}

# Which layers of an assay hold the raw counts: `layer` itself, or its split layers
# (`counts.<group>`) when it is split; several layer names may be given.
.count_layers <- function(assay_obj, assay, layer) {
  layer <- unique(as.character(layer))
  if (!length(layer) || anyNA(layer)) stop("`layer` must name the layer(s) with raw counts.", call. = FALSE)
  available <- .assay_layers(assay_obj)
  if (length(layer) == 1 && !layer %in% available) {
    split <- available[startsWith(available, paste0(layer, "."))]
    if (length(split)) return(split)
  }
  missing <- setdiff(layer, available)
  if (!length(missing)) return(layer)
  has_counts <- any(available == "counts" | startsWith(available, "counts."))
  fix <- if (!has_counts) {
    paste0(" It holds no raw counts (no 'counts' layer): regularizedvi needs raw UMI counts, ",
           "e.g. an assay made with CreateAssay5Object(counts = ...) / CreateAssayObject(counts = ...).")
  } else {
    " Pass `layer` with the raw counts (default \"counts\", which takes all `counts.*` layers of a split assay)."
  }
  stop("Seurat assay '", assay, "' has no layer ", paste0("'", missing, "'", collapse = ", "),
       " (layers: ", if (length(available)) paste(available, collapse = ", ") else "none", ").", fix,
       call. = FALSE)
}

# Raw counts of one assay: all cells of all its counts layers, in `cells` order, never
# densified, plus the layer of each cell. meta: per-cell data.frame (row names = cells).
.assay_parts <- function(assay_obj, assay, layer, meta, cells) {
  if (inherits(assay_obj, "SCTAssay")) {
    stop("Seurat assay '", assay, "' is an SCTransform assay: its counts are SCTransform's ",
         "corrected counts, not the raw UMI counts regularizedvi models. Use the assay with the ",
         "raw counts instead (usually assay = \"RNA\").", call. = FALSE)
  }
  layers <- .count_layers(assay_obj, assay, layer)
  where <- sprintf("Seurat assay '%s', layer%s %s", assay, if (length(layers) > 1) "s" else "",
                   paste0("'", layers, "'", collapse = ", "))
  mats <- lapply(layers, function(l) {
    what <- sprintf("Seurat assay '%s', layer '%s'", assay, l)
    m <- tryCatch(.layer_data(assay_obj, l), error = function(e) {
      stop("Reading ", what, " failed (", conditionMessage(e), "): its cell or feature names ",
           "do not match the assay's own; rebuild the assay (e.g. CreateAssay5Object(counts = ...)).",
           call. = FALSE)
    })
    .as_dgc(m, what)
  })
  if (length(mats) > 1) mats <- .same_features(mats, layers, where)
  counts <- if (length(mats) == 1) mats[[1]] else do.call(cbind, mats)
  group <- rep(sub("^[^.]*\\.", "", layers), vapply(mats, ncol, 1L))
  used <- colnames(counts)
  if (length(used) && (is.null(used) || anyDuplicated(used) || anyNA(match(used, cells)))) {
    unknown <- setdiff(used, cells)
    stop("The cells of ", where, " do not match the object's cells (",
         if (length(unknown)) paste0(length(unknown), " unknown, e.g. '", unknown[1], "'") else
           "duplicated or missing names", "): check its cell names (colnames).", call. = FALSE)
  }
  order <- order(match(used, cells))
  counts <- counts[, order, drop = FALSE]
  meta <- meta[colnames(counts), , drop = FALSE]
  if (any(grepl(".", layers, fixed = TRUE))) {
    if (.layer_column %in% names(meta)) {
      stop("The metadata already has a column '", .layer_column, "', the name regularizedvi ",
           "gives the counts layer of each cell: rename that column first.", call. = FALSE)
    }
    meta[[.layer_column]] <- group[order]
  }
  list(counts = counts, meta = meta, where = where, layers = layers,
       fixes = .seurat_fixes(assay, layers))
}

# Split layers normally share their genes; different gene sets are refused, not padded.
.same_features <- function(mats, layers, where) {
  genes <- rownames(mats[[1]])
  for (i in seq_along(mats)[-1]) {
    if (identical(rownames(mats[[i]]), genes)) next
    if (!setequal(rownames(mats[[i]]), genes) || anyDuplicated(rownames(mats[[i]]))) {
      stop(where, ": layers '", layers[1], "' and '", layers[i], "' hold different genes (",
           length(genes), " vs ", nrow(mats[[i]]), "). Pass `layer` with layers that share their ",
           "genes, or join them first (obj <- JoinLayers(obj)).", call. = FALSE)
    }
    mats[[i]] <- mats[[i]][genes, , drop = FALSE]
  }
  mats
}

.seurat_counts <- function(object, assay = NULL, layer = "counts") {
  .need("SeuratObject")
  if (is.null(assay)) assay <- SeuratObject::DefaultAssay(object)
  if (!assay %in% SeuratObject::Assays(object)) {
    stop("Assay '", assay, "' is not in the Seurat object (assays: ",
         paste(SeuratObject::Assays(object), collapse = ", "), ").", call. = FALSE)
  }
  .assay_parts(object[[assay]], assay, layer, object[[]], colnames(object))
}

# Several assays of one object (RunRegularizedMultimodalVI, as.MuData).
.seurat_modalities <- function(object, assays, layer) {
  .need("SeuratObject")
  available <- SeuratObject::Assays(object)
  if (is.null(assays)) assays <- available
  assays <- as.character(assays)
  .check_modality_names(assays, "assays")
  missing <- setdiff(assays, available)
  if (length(missing)) {
    stop("Assay(s) ", paste0("'", missing, "'", collapse = ", "), " not in the Seurat object ",
         "(assays: ", paste(available, collapse = ", "), ").", call. = FALSE)
  }
  # The first assay's cells (all of them, or those of the layers named) are the cells used.
  counts <- list()
  where <- character()
  fixes <- list()
  meta <- NULL
  layers <- character()
  for (assay in assays) {
    one <- .seurat_counts(object, assay, .modality_layer(object[[assay]], layer, first = is.null(meta)))
    if (is.null(meta)) {
      meta <- one$meta
      cells <- colnames(one$counts)
    } else if (.layer_column %in% names(one$meta)) {
      meta <- .merge_layer_column(meta, one$meta[cells, , drop = FALSE], assay)
    }
    if (length(one$layers) > length(layers)) layers <- one$layers
    counts[[assay]] <- .match_cells(one$counts, cells, one$where, colnames(object))
    where[[assay]] <- one$where
    fixes[[assay]] <- one$fixes
  }
  list(counts = counts, meta = meta, cells = cells, where = where, fixes = fixes, layers = layers)
}

# A layer of a split first assay (e.g. "counts.g1") names cells: an assay that is not
# split gives its "counts" for them.
.modality_layer <- function(assay_obj, layer, first) {
  if (first) return(layer)
  available <- .assay_layers(assay_obj)
  base <- unique(sub("\\..*$", "", layer))
  if (!any(layer %in% available) && length(base) == 1 && base %in% available &&
      !any(startsWith(available, paste0(base, ".")))) {
    return(base)
  }
  layer
}

# Split assays of one object must agree on each cell's layer.
.merge_layer_column <- function(meta, other, assay) {
  if (!.layer_column %in% names(meta)) {
    meta[[.layer_column]] <- other[[.layer_column]]
    return(meta)
  }
  if (!identical(as.character(meta[[.layer_column]]), as.character(other[[.layer_column]]))) {
    stop("Assay '", assay, "' is split into layers differently from the first assay: ",
         "split every assay by the same column (or join the layers with JoinLayers()).",
         call. = FALSE)
  }
  meta
}

# With the counts of several layers and no sample-level covariate named, the layer of
# each cell is the batch (what a Seurat v5 user split the object by).
.default_batch <- function(covariates, meta, layers) {
  sample_level <- c("batch", "ambient", "dispersion", "library.size")
  if (length(layers) < 2 || any(!vapply(covariates[sample_level], is.null, TRUE)) ||
      !.layer_column %in% names(meta)) {
    return(covariates)
  }
  message("Using the counts layer of each cell as the batch (", length(layers), " layers: ",
          paste(layers, collapse = ", "), "; column '", .layer_column, "'). ",
          "Pass batch = \"<column>\" to use another column.")
  covariates$batch <- .layer_column
  covariates
}

# Arguments of the calling function, in the Seurat command log (object@commands), named
# like Seurat's own ("RunRegularizedVI.RNA"); written here rather than by
# SeuratObject::LogSeuratCommand(), which warns when called as regularizedvi::f().
.log_command <- function(object, name, assay = NULL, assay.used = assay) {
  fun <- sys.function(-1)
  env <- parent.frame()
  args <- setdiff(names(formals(fun)), c("object", "query", "..."))
  params <- list()
  for (arg in args) {
    value <- get(arg, envir = env)
    if (!inherits(value, "Seurat")) params[arg] <- list(value)
  }
  if ("..." %in% names(formals(fun))) {
    dots <- eval(quote(list(...)), env)
    if (length(dots) && !is.null(names(dots))) params <- c(params, dots[nzchar(names(dots))])
  }
  full <- paste(c(name, if (length(assay) == 1) assay), collapse = ".")
  command <- methods::new("SeuratCommand", name = full, time.stamp = Sys.time(),
                          assay.used = assay.used, call.string = .call_string(sys.call(-1), name),
                          params = params)
  object@commands[[full]] <- command
  object
}

# A call as text, with the values do.call() inlines (whole objects) shown by class only.
.call_string <- function(call, name) {
  parts <- as.list(call)
  parts[[1]] <- if (is.function(parts[[1]])) as.name(name) else parts[[1]]
  for (i in seq_along(parts)[-1]) {
    value <- parts[[i]]
    small <- is.null(value) || (is.atomic(value) && length(value) <= 10)
    if (!is.language(value) && !small) parts[[i]] <- as.name(paste0("<", class(value)[1], ">"))
  }
  text <- paste(deparse(as.call(parts), width.cutoff = 500L), collapse = " ")
  gsub("`(<[[:alnum:]._]+>)`", "\\1", text)
}
