# Measured soups: the ambient profile of each group from the empty droplets of a raw
# (unfiltered) matrix, and the checked hand-over of such a profile to a model
# (`ambient.profile =`).

#' Ambient profile (soup) from the empty droplets of a raw matrix
#'
#' A 10x run records many more barcodes than cells: droplets without a cell
#' hold only the ambient RNA (or protein) they captured. This pools the counts
#' of the empty droplets of each group (channel / sample) into a profile over
#' the features, which a model takes as `ambient.profile =` so that only the
#' amount of background is learned, not its shape.
#'
#' The counts cross to Python sparse, as in [as.AnnData()] (never densified);
#' barcodes without any count are allowed. Droplets are taken as empty when
#' their total count is in `[min.counts, max.counts]`, or as given by `empty`.
#' A group with fewer than `min.droplets` empty droplets is an error: the
#' matrix looks filtered (cells only) there.
#'
#' @param raw Every barcode of the run(s), cell-containing and empty droplets:
#'   a features x droplets count matrix (`dgCMatrix`, e.g.
#'   `Seurat::Read10X("<run>/outs/raw_feature_bc_matrix")`; any sparse or dense
#'   matrix is converted to a `dgCMatrix`), a `Seurat` object or a
#'   `SingleCellExperiment` holding them. Raw counts (whole numbers >= 0), with
#'   feature and barcode names.
#' @param groupby Each droplet's ambient group, as the model's `batch` /
#'   `ambient` covariate: a vector with one value per droplet (named by
#'   barcode, or in column order), or for an object the name of a metadata /
#'   colData column. `NULL` (default): one profile for all droplets.
#' @param empty Optional logical vector (one value per droplet, or for an
#'   object the name of a logical metadata column) marking droplets known to
#'   be empty, e.g. from hashing or genotypes (CITE-seq protein counts of empty
#'   droplets are in the hundreds); replaces the count range.
#' @param min.counts,max.counts Total-count range of the droplets taken as
#'   empty (defaults 1 and 100; cells have hundreds to tens of thousands):
#'   whole numbers with `0 <= min.counts <= max.counts`.
#' @param min.droplets Fewest empty droplets per group (default 100).
#' @param assay,layer Seurat assay (default: the default assay) and layer with
#'   the counts (default `"counts"`).
#' @param assay.type SingleCellExperiment assay with the counts (default
#'   `"counts"`).
#' @return A data.frame, features (row names, all of `raw`'s) x groups
#'   (columns: `"all droplets"`, or the levels of `groupby` that have
#'   droplets), each column summing to 1. Attributes `n.empty.droplets` and
#'   `empty.counts`: the droplets and counts used per group. Give it to
#'   [RunRegularizedVI()] / [runRegularizedVI()] / [regularizedviModel()] as
#'   `ambient.profile =`, or per modality to the multimodal functions
#'   (`ambient.profile = list(ADT = profile)`); features are matched by name,
#'   columns by ambient category (one column serves every category).
#' @seealso [getForegroundProbability()], [getAmbientCorrectedCounts()]
#' @examples
#' \dontrun{
#' raw <- Seurat::Read10X("run1/outs/raw_feature_bc_matrix")
#' soup <- EstimateAmbientProfile(raw)
#' cells <- Seurat::CreateSeuratObject(Seurat::Read10X("run1/outs/filtered_feature_bc_matrix"))
#' cells <- RunRegularizedVI(cells, ambient.profile = soup)
#'
#' # CITE-seq protein with empties known from hashing
#' adt_soup <- EstimateAmbientProfile(adt_raw, empty = droplet_class == "empty")
#' cbmc <- RunRegularizedMultimodalVI(cbmc, assays = c("RNA", "ADT"),
#'                                    ambient.profile = list(ADT = adt_soup))
#' }
#' @export
EstimateAmbientProfile <- function(raw, groupby = NULL, empty = NULL, min.counts = 1,
                                   max.counts = 100, min.droplets = 100, assay = NULL,
                                   layer = "counts", assay.type = "counts") {
  limits <- .check_args(min.counts = min.counts, max.counts = max.counts,
                        min.droplets = min.droplets)
  if (limits$min.counts > limits$max.counts) {
    stop("`min.counts` (", limits$min.counts, ") must be at most `max.counts` (", limits$max.counts,
         ").", call. = FALSE)
  }
  parts <- .droplet_parts(raw, assay = assay, layer = layer, assay.type = assay.type)
  counts <- parts$counts
  .check_counts(counts, parts$where, check.empty = FALSE)
  droplets <- colnames(counts)
  group <- .droplet_values(groupby, "groupby", parts$meta, droplets)
  mask <- .droplet_values(empty, "empty", parts$meta, droplets)
  if (!is.null(group)) {
    if (anyNA(group)) {
      stop("`groupby` has ", sum(is.na(group)), " NA value(s) (e.g. droplet '",
           droplets[which(is.na(group))[1]], "'): give every droplet a group.", call. = FALSE)
    }
    group <- if (is.factor(group)) droplevels(group) else factor(as.character(group))
  }
  if (!is.null(mask) && (!is.logical(mask) || anyNA(mask))) {
    stop("`empty` must be a logical vector (TRUE for the empty droplets) without NA, not ",
         if (is.logical(mask)) "one with NA" else paste0("of type ", typeof(mask)),
         ": compare first, e.g. empty = droplet_class == \"empty\".", call. = FALSE)
  }
  pd <- .py_module("pandas")
  index <- .py_index(droplets)
  obs <- if (is.null(group)) pd$DataFrame(index = index) else
    pd$DataFrame(data = reticulate::py_dict("group", list(.factor_to_py(group)), convert = FALSE),
                 index = index)
  adata <- .counts_to_anndata(counts, obs)
  rv <- .py_module("regularizedvi")
  profile <- tryCatch(
    rv$estimate_ambient_profile(
      adata, groupby = if (is.null(group)) NULL else "group",
      min_counts = limits$min.counts, max_counts = limits$max.counts,
      min_droplets = limits$min.droplets,
      empty = if (is.null(mask)) NULL else reticulate::np_array(mask, dtype = "bool")),
    error = function(e) {
      msg <- gsub("(min|max)_counts", "\\1.counts", .short_py_message(e))
      if (grepl("filtered matrix", msg, fixed = TRUE)) {
        msg <- paste0(msg, " From R: Seurat::Read10X(\"<run>/outs/raw_feature_bc_matrix\") reads ",
                      "every barcode.")
      }
      stop("Estimating the ambient profile failed: ", msg, call. = FALSE)
    })
  out <- .py_frame_to_r(profile)
  attrs <- reticulate::py_to_r(profile$attrs)
  attr(out, "n.empty.droplets") <- vapply(attrs$n_empty_droplets, as.integer, 1L)
  attr(out, "empty.counts") <- vapply(attrs$empty_counts, as.double, 1)
  out
}

# The counts (features x droplets dgCMatrix), per-droplet metadata (NULL for a matrix) and a
# description of a raw matrix / object.
.droplet_parts <- function(raw, assay, layer, assay.type) {
  if (inherits(raw, "Seurat") || inherits(raw, "SummarizedExperiment")) {
    return(.extract_counts_and_meta(raw, assay = assay, layer = layer, assay.type = assay.type))
  }
  if (is.list(raw) && !is.data.frame(raw)) {
    stop("`raw` is a list (", paste0("'", names(raw), "'", collapse = ", "), "), as Seurat::Read10X() ",
         "returns for a run with several feature types: pick one, e.g. raw[[\"Gene Expression\"]] or ",
         "raw[[\"Antibody Capture\"]].", call. = FALSE)
  }
  list(counts = .as_dgc(raw, "`raw`"), meta = NULL, where = "`raw`")
}

# A per-droplet argument: NULL, a metadata column (one string, objects only) or a vector of
# one value per droplet (named by droplet, in any order, or unnamed in column order).
.droplet_values <- function(value, what, meta, droplets) {
  if (is.null(value)) return(NULL)
  if (is.character(value) && length(value) == 1 && length(droplets) != 1) {
    if (is.null(meta)) {
      stop("`", what, "` = \"", value, "\" names a metadata column, but `raw` is a matrix: give ",
           "one value per droplet (", length(droplets), " droplets).", call. = FALSE)
    }
    .check_columns(meta, value, what)
    return(meta[[value]])
  }
  if (!is.atomic(value) || length(value) != length(droplets)) {
    stop("`", what, "` must have one value per droplet (", length(droplets), "), not ",
         length(value), if (!is.null(meta)) ", or name a metadata column" else "", ".", call. = FALSE)
  }
  if (!is.null(names(value))) {
    if (!setequal(names(value), droplets) || anyDuplicated(names(value))) {
      stop("The names of `", what, "` are not the droplets of `raw` (e.g. '",
           c(setdiff(names(value), droplets), names(value)[duplicated(names(value))])[1],
           "'): name it by barcode or pass it unnamed, in column order.", call. = FALSE)
    }
    value <- value[droplets]
  }
  unname(value)
}

# ---------------------------------------------------------------- ambient.profile =

# A measured profile for a model: a data.frame of features (row names) x ambient groups,
# checked in R (the feature and category matching is the Python core's, whose errors
# name what is missing).
.check_profile <- function(profile, what = "ambient.profile") {
  if (is.null(profile)) return(invisible(NULL))
  if (!is.data.frame(profile)) {
    stop("`", what, "` must be a data.frame of features (row names) x ambient groups (columns), ",
         "e.g. from EstimateAmbientProfile(raw); got a ", class(profile)[1], ".", call. = FALSE)
  }
  if (!nrow(profile) || !ncol(profile)) {
    stop("`", what, "` is empty (", nrow(profile), " features x ", ncol(profile), " groups).",
         call. = FALSE)
  }
  if (.row_names_info(profile) < 0L) {
    stop("`", what, "` has no feature names: its row names must be the features ",
         "(EstimateAmbientProfile() sets them).", call. = FALSE)
  }
  numeric <- vapply(profile, is.numeric, TRUE)
  if (!all(numeric)) {
    stop("`", what, "` column '", names(profile)[!numeric][1], "' is not numeric: every column ",
         "is the profile of one ambient group.", call. = FALSE)
  }
  invisible(profile)
}

# The model's features missing from a profile are reported by the Python core; one R cause
# gets its fix here: Seurat turns '_' into '-' in feature names (CreateSeuratObject()), so a
# soup estimated from the raw matrix keeps names the Seurat object no longer has.
.check_profile_features <- function(profile, features, what = "ambient.profile") {
  if (is.null(profile)) return(invisible(NULL))
  missing <- setdiff(features, rownames(profile))
  dashed <- gsub("_", "-", rownames(profile), fixed = TRUE)
  if (length(missing) && all(missing %in% dashed)) {
    stop("`", what, "` names ", length(missing), " of the model's features with '_' where the ",
         "object has '-' (e.g. '", rownames(profile)[match(missing[1], dashed)], "' vs '", missing[1],
         "'): Seurat replaces '_' by '-' in feature names. Rename the profile's rows first: ",
         "rownames(profile) <- gsub(\"_\", \"-\", rownames(profile)).", call. = FALSE)
  }
  invisible(profile)
}

# The checked profile as a pandas DataFrame (index: features, columns: groups); NULL -> None.
.profile_to_py <- function(profile, what = "ambient.profile") {
  if (is.null(profile)) return(NULL)
  .check_profile(profile, what)
  pd <- .py_module("pandas")
  values <- matrix(as.double(unlist(profile, use.names = FALSE)), nrow = nrow(profile))
  pd$DataFrame(data = reticulate::np_array(values, dtype = "float64"),
               index = .py_index(rownames(profile)), columns = .py_index(names(profile)))
}

# Multimodal: a named list {modality: profile}, checked against the modalities (and, given
# `features`, a named list of each modality's features, against those).
.check_profiles <- function(profiles, mods, features = NULL) {
  if (is.null(profiles)) return(invisible(NULL))
  example <- paste0("list(", mods[length(mods)], " = profile)")
  if (is.data.frame(profiles) || !is.list(profiles)) {
    stop("`ambient.profile` of a multimodal model takes a named list of profiles per modality, ",
         "e.g. ambient.profile = ", example, ", not a ", class(profiles)[1], ".", call. = FALSE)
  }
  unknown <- setdiff(names(profiles), mods)
  if (!length(profiles) || is.null(names(profiles)) || any(!nzchar(names(profiles))) ||
      length(unknown) || anyDuplicated(names(profiles))) {
    stop("`ambient.profile` must be named by modality (the model's: ", paste(mods, collapse = ", "),
         ")", if (length(unknown)) paste0(", not '", unknown[1], "'") else "", ", e.g. ",
         example, ".", call. = FALSE)
  }
  for (m in names(profiles)) {
    what <- paste0("ambient.profile$", m)
    .check_profile(profiles[[m]], what)
    if (!is.null(features)) .check_profile_features(profiles[[m]], features[[m]], what)
  }
  invisible(profiles)
}

.profiles_to_py <- function(profiles, mods) {
  if (is.null(profiles)) return(NULL)
  .check_profiles(profiles, mods)
  values <- lapply(names(profiles), function(m) .profile_to_py(profiles[[m]], paste0("ambient.profile$", m)))
  reticulate::py_dict(names(profiles), values, convert = FALSE)
}

# `ambient.background`: "profile" / "free" (NULL: the Python default), one for all or
# (multimodal, `mods` given) a named list / vector per modality; as Python takes it.
.background_form <- function(form, mods = NULL) {
  if (is.null(form)) return(NULL)
  values <- unlist(form)
  per_modality <- !is.null(mods) && !is.null(names(form))
  ok <- is.character(values) && length(values) >= 1 && !anyNA(values) &&
    all(values %in% c("profile", "free")) && (length(values) == 1 || per_modality)
  if (!ok || (per_modality && (!all(names(values) %in% mods) || anyDuplicated(names(values))))) {
    stop("`ambient.background` must be \"profile\" or \"free\"",
         if (!is.null(mods)) paste0(", or a named list of them per modality (",
                                   paste(mods, collapse = ", "), ")") else "",
         ", not ", deparse(form)[1], ".", call. = FALSE)
  }
  if (!per_modality) return(unname(values))
  reticulate::py_dict(names(values), as.list(unname(values)), convert = FALSE)
}

# `ambient.adversary`: NULL (the Python default) or one finite number >= 0. `labels` serve
# the adversary alone: given without it (off by default), they would do nothing.
.ambient_adversary <- function(weight, labels = NULL) {
  if (!is.null(labels) && (is.null(weight) || identical(as.numeric(weight), 0))) {
    stop("`labels` serve the ambient adversary alone, which is off: pass ambient.adversary > 0 ",
         "(e.g. 20) with them, or leave labels = NULL.", call. = FALSE)
  }
  if (is.null(weight)) return(NULL)
  if (length(weight) != 1 || !is.numeric(weight) || is.na(weight) || !is.finite(weight) || weight < 0) {
    stop("`ambient.adversary` must be one number >= 0 (0: off), not ", deparse(weight)[1], ".",
         call. = FALSE)
  }
  as.numeric(weight)
}
