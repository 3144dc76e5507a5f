# Seurat / SingleCellExperiment -> AnnData, in-process through reticulate.
# The counts cross as a scipy sparse matrix (never densified); AnnData is cells x genes,
# so the genes x cells dgCMatrix (scipy CSC) is transposed into a cells x genes CSR.

#' Convert a Seurat or SingleCellExperiment object to an AnnData
#'
#' Builds a Python `anndata.AnnData` (cells x genes) from the raw counts of a
#' `Seurat` object (Seurat 4 `Assay` or Seurat 5 `Assay5`) or a
#' `SingleCellExperiment`, without densifying: the sparse counts matrix crosses
#' to Python as a scipy sparse matrix (CSR, cells x genes). Cell and gene names
#' are kept; factors become pandas categoricals with all their levels (unused
#' levels included). Only the requested metadata columns travel. The input object
#' is not modified.
#'
#' The counts are checked in R before crossing: they must be finite,
#' non-negative whole numbers (normalized or log-transformed data is refused),
#' and with `check.empty = TRUE` no cell may have a zero total (the model cannot
#' fit it); genes with a zero total are kept with a warning (subset with
#' `features` to drop them).
#'
#' Seurat 5 split layers: when the assay's counts are split into `counts.<group>`
#' layers (after `obj[["RNA"]] <- split(obj[["RNA"]], f = obj$sample)`), all
#' cells of all these layers are used, in the object's cell order, without
#' `JoinLayers()`; the layer of each cell (the `<group>` part of its name) is
#' the metadata column `counts_layer`. Name one or several layers in `layer` to
#' use only their cells; the metadata then covers those cells only. SCTransform
#' assays are refused (their counts are corrected, not raw).
#'
#' @param object A `Seurat` or `SingleCellExperiment` object.
#' @param assay Seurat assay (default: the default assay).
#' @param layer Seurat layer (v5) / slot (v4) holding raw counts (default
#'   `"counts"`: on a split Seurat 5 assay, all its `counts.*` layers), or
#'   several layer names.
#' @param assay.type SingleCellExperiment assay holding raw counts (default
#'   `"counts"`).
#' @param obs.columns Metadata columns (`object[[]]` / `colData`) copied to
#'   `obs` as they are: factors as categoricals, characters as strings, numbers
#'   as numbers. `TRUE` copies all columns.
#' @param categorical Metadata columns copied as categoricals for use as model
#'   covariates: they must exist and have no `NA`; characters and numbers become
#'   categories (sorted unique values).
#' @param continuous Numeric metadata columns for use as continuous covariates
#'   (no `NA`).
#' @param features Genes to keep (default all); use it to drop genes with no
#'   counts.
#' @param check.empty Refuse cells with zero total counts, and warn about
#'   genes with zero total counts (default `TRUE`).
#' @return A Python `anndata.AnnData` object (reticulate reference, not
#'   converted to R).
#' @examples
#' \dontrun{
#' adata <- as.AnnData(SeuratObject::pbmc_small, obs.columns = "groups")
#' adata$write_h5ad("pbmc_small.h5ad")
#' }
#' @export
as.AnnData <- function(object, assay = NULL, layer = "counts", assay.type = "counts",
                       obs.columns = NULL, categorical = NULL, continuous = NULL,
                       features = NULL, check.empty = TRUE) {
  parts <- .extract_counts_and_meta(object, assay = assay, layer = layer, assay.type = assay.type)
  if (isTRUE(obs.columns)) obs.columns <- names(parts$meta)
  .parts_to_anndata(parts, features = features, obs.columns = obs.columns,
                    categorical = categorical, continuous = continuous, check.empty = check.empty)
}

# Checked counts and the requested metadata of extracted parts -> AnnData.
.parts_to_anndata <- function(parts, features = NULL, obs.columns = NULL, categorical = NULL,
                              continuous = NULL, check.empty = TRUE) {
  counts <- parts$counts
  if (!is.null(features)) counts <- .subset_features(counts, features)
  .check_counts(counts, parts$where, check.empty = check.empty, fixes = parts$fixes,
                subset = !is.null(features))
  obs <- .build_obs(parts$meta, colnames(counts), obs.columns = obs.columns,
                    categorical = categorical, continuous = continuous)
  .counts_to_anndata(counts, obs)
}

# ---------------------------------------------------------------- extraction

# list(counts = genes x cells dgCMatrix, meta = per-cell columns, where = text for messages,
# layers = Seurat layers used, fixes = code that drops empty genes / cells).
.extract_counts_and_meta <- function(object, assay = NULL, layer = "counts", assay.type = "counts") {
  if (inherits(object, "rvi_parts")) return(object)  # already extracted (IntegrateLayers)
  if (inherits(object, "Seurat")) return(.seurat_counts(object, assay, layer))
  if (inherits(object, "SingleCellExperiment") || inherits(object, "SummarizedExperiment")) {
    return(.sce_counts(object, assay.type))
  }
  stop("Expected a Seurat or SingleCellExperiment object, got an object of class '",
       class(object)[1], "'.", call. = FALSE)
}

.sce_counts <- function(object, assay.type = "counts") {
  .need("SummarizedExperiment")
  available <- SummarizedExperiment::assayNames(object)
  if (!assay.type %in% available) {
    stop("The SingleCellExperiment has no assay '", assay.type, "' (assays: ",
         paste(available, collapse = ", "), "). Pass the assay with raw counts as `assay.type`.",
         call. = FALSE)
  }
  counts <- SummarizedExperiment::assay(object, assay.type, withDimnames = TRUE)
  where <- paste0("assay '", assay.type, "'")
  cd <- SummarizedExperiment::colData(object)
  meta <- lapply(stats::setNames(names(cd), names(cd)), function(col) cd[[col]])
  code <- sprintf('SummarizedExperiment::assay(sce, "%s")', assay.type)
  fixes <- list(genes = sprintf("names(which(Matrix::rowSums(%s) > 0))", code),
                cells = sprintf("sce <- sce[, Matrix::colSums(%s) > 0]", code), object = "sce")
  list(counts = .as_dgc(counts, where), meta = meta, where = where, fixes = fixes)
}

.need <- function(pkg) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    stop("Package '", pkg, "' is needed for this; install it first.", call. = FALSE)
  }
}

# Any Matrix / base matrix -> dgCMatrix (sparse; a dense matrix is sparsified, not the reverse).
.as_dgc <- function(m, where) {
  if (inherits(m, "dgCMatrix")) return(m)
  if (is.matrix(m) || inherits(m, "Matrix")) {
    return(methods::as(methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix"), "dMatrix"))
  }
  stop(where, " is a '", class(m)[1], "'; convert it to a sparse dgCMatrix first, ",
       "e.g. as(x, \"dgCMatrix\") (regularizedvi never densifies the counts).", call. = FALSE)
}

.subset_features <- function(counts, features) {
  features <- as.character(features)
  missing <- setdiff(features, rownames(counts))
  if (length(missing)) {
    stop(length(missing), " of `features` are not genes of the object (e.g. ",
         paste(utils::head(missing, 5), collapse = ", "), ").", call. = FALSE)
  }
  counts[features, , drop = FALSE]
}

# ---------------------------------------------------------------- checks

# fixes: code that keeps the genes / cells with counts (see .seurat_fixes()); subset: the
# counts are a `features` subset (the fixes then apply to those genes).
.check_counts <- function(counts, where, check.empty = TRUE, fixes = NULL, subset = FALSE) {
  if (ncol(counts) == 0) {
    stop(where, " has no cells (0 cells, e.g. after subsetting): give an object with cells.",
         call. = FALSE)
  }
  if (nrow(counts) == 0) {
    stop(where, " has no genes (0 genes", if (subset) " in `features`" else "", ").", call. = FALSE)
  }
  if (is.null(rownames(counts)) || is.null(colnames(counts))) {
    stop(where, " has no gene or cell names: set rownames/colnames first.", call. = FALSE)
  }
  for (what in c("rownames", "colnames")) {
    names <- if (what == "rownames") rownames(counts) else colnames(counts)
    if (anyDuplicated(names)) {
      stop(where, " has duplicated ", if (what == "rownames") "gene" else "cell", " names (e.g. '",
           names[anyDuplicated(names)], "'): make them unique first.", call. = FALSE)
    }
  }
  x <- counts@x
  if (anyNA(x) || any(!is.finite(x))) {
    stop(where, " contains NA, NaN or infinite values; counts must be finite.", call. = FALSE)
  }
  if (length(x) && min(x) < 0) {
    stop(where, " contains negative values (min ", format(min(x)), "): it looks scaled or ",
         "centred. regularizedvi needs raw UMI counts (Seurat: layer = \"counts\"; ",
         "SingleCellExperiment: assay.type = \"counts\").", call. = FALSE)
  }
  fractional <- which(x != round(x))
  if (length(fractional)) {
    stop(where, " contains non-integer values (e.g. ", format(x[fractional[1]]), "): it looks ",
         "normalized or log-transformed. regularizedvi needs raw UMI counts (Seurat: ",
         "layer = \"counts\"; SingleCellExperiment: assay.type = \"counts\").", call. = FALSE)
  }
  if (!check.empty) return(invisible(TRUE))
  empty_cells <- which(Matrix::colSums(counts) == 0)
  if (length(empty_cells)) {
    fix <- if (subset) "keep more genes in `features` or remove these cells" else
      if (is.null(fixes)) "remove them first" else paste0("remove them first: ", fixes$cells, " (",
                                                         fixes$object, ": your object)")
    stop(where, " has ", length(empty_cells), " cell(s) with zero total counts",
         if (subset) " over `features`" else "", " (e.g. '", colnames(counts)[empty_cells[1]],
         "'): ", fix, ".", call. = FALSE)
  }
  empty_genes <- which(Matrix::rowSums(counts) == 0)
  if (length(empty_genes)) {
    fix <- if (subset) "leave them out of `features`" else
      if (is.null(fixes)) "pass `features` without them" else
        paste0("pass features = ", fixes$genes, " (", fixes$object, ": your object)")
    # kept, as scVI keeps them (common after subsetting cells): the model learns them as
    # unexpressed, with finite outputs
    warning(where, " has ", length(empty_genes), " gene(s) with zero total counts (e.g. '",
            rownames(counts)[empty_genes[1]], "'); they are kept and learned as unexpressed. ",
            "To drop them: ", fix, ".", call. = FALSE)
  }
  invisible(TRUE)
}

.check_columns <- function(meta, columns, role) {
  missing <- setdiff(columns, names(meta))
  if (length(missing)) {
    hint <- if (.layer_column %in% missing) {
      paste0(" '", .layer_column, "' is the counts layer of each cell of a split Seurat 5 assay: ",
             "split the object's counts layers as for the model (obj[[\"RNA\"]] <- split(",
             "obj[[\"RNA\"]], f = obj$sample)).")
    } else ""
    stop("Metadata column(s) ", paste0("'", missing, "'", collapse = ", "), " (", role,
         ") not found. Available columns: ", paste(names(meta), collapse = ", "), ".", hint,
         call. = FALSE)
  }
}

# ---------------------------------------------------------------- obs

.build_obs <- function(meta, cells, obs.columns = NULL, categorical = NULL, continuous = NULL) {
  categorical <- unique(as.character(categorical))
  continuous <- unique(as.character(continuous))
  obs.columns <- setdiff(unique(as.character(obs.columns)), c(categorical, continuous))
  .check_columns(meta, obs.columns, "obs.columns")
  .check_columns(meta, categorical, "categorical covariate")
  .check_columns(meta, continuous, "continuous covariate")
  columns <- list()
  for (col in obs.columns) columns[[col]] <- .column_to_py(meta[[col]], col)
  for (col in categorical) {
    values <- meta[[col]]
    if (anyNA(values)) {
      stop("Covariate column '", col, "' has ", sum(is.na(values)), " NA value(s) (e.g. cell '",
           cells[which(is.na(values))[1]], "'): fill them or remove those cells first.",
           call. = FALSE)
    }
    if (!is.factor(values)) {
      if (!is.atomic(values)) stop("Covariate column '", col, "' is not a vector.", call. = FALSE)
      .check_numeric_categorical(values, col)
      values <- factor(as.character(values))
    }
    columns[[col]] <- .factor_to_py(values)
  }
  for (col in continuous) {
    values <- meta[[col]]
    if (!is.numeric(values)) {
      stop("Continuous covariate '", col, "' must be numeric, not ", class(values)[1], ".",
           call. = FALSE)
    }
    if (anyNA(values) || any(!is.finite(values))) {
      stop("Continuous covariate '", col, "' has NA or infinite values: fill them first.",
           call. = FALSE)
    }
    columns[[col]] <- reticulate::np_array(as.double(values), dtype = "float64")
  }
  pd <- .py_module("pandas")
  index <- .py_index(cells)
  if (!length(columns)) return(pd$DataFrame(index = index))
  data <- reticulate::py_dict(names(columns), unname(columns), convert = FALSE)
  pd$DataFrame(data = data, index = index)
}

.factor_to_py <- function(values) {
  pd <- .py_module("pandas")
  codes <- as.integer(values) - 1L
  codes[is.na(codes)] <- -1L
  pd$Categorical$from_codes(
    codes = reticulate::np_array(codes, dtype = "int32"),
    categories = pd$Index(reticulate::r_to_py(as.list(levels(values))), dtype = "object")
  )
}

.column_to_py <- function(values, col) {
  if (is.factor(values)) return(.factor_to_py(values))
  if (is.logical(values) && !anyNA(values)) return(reticulate::np_array(values, dtype = "bool"))
  if (is.integer(values) && !anyNA(values)) return(reticulate::np_array(values, dtype = "int32"))
  if (is.numeric(values)) return(reticulate::np_array(as.double(values), dtype = "float64"))
  if (is.character(values) || is.logical(values) || is.integer(values)) {
    np <- .py_module("numpy")
    as_list <- lapply(values, function(v) if (is.na(v)) NULL else v)
    return(np$array(reticulate::r_to_py(as_list), dtype = "object"))
  }
  stop("Metadata column '", col, "' of class '", class(values)[1],
       "' cannot be copied to obs.", call. = FALSE)
}

# ---------------------------------------------------------------- AnnData

.counts_to_anndata <- function(counts, obs) {
  ad <- .py_module("anndata")
  pd <- .py_module("pandas")
  csc <- reticulate::r_to_py(counts)        # genes x cells, scipy CSC, no densifying
  x <- csc$T$tocsr()                         # cells x genes CSR (the transpose of a CSC is a CSR)
  var <- pd$DataFrame(index = .py_index(rownames(counts)))
  .py_call(ad$AnnData(X = x, obs = obs, var = var), "Building the AnnData failed")
}

# Names as a pandas Index of str. A character vector crosses as one list (a million names in
# 0.1 s; as.list() converts them one by one, about 40 s); one name must be wrapped in a list.
.py_index <- function(names) {
  names <- as.character(names)
  values <- if (length(names) == 1) list(names) else names
  .py_module("pandas")$Index(reticulate::r_to_py(values), dtype = "object")
}
