# Lower-level interface: set up, train and embed with an R handle on the Python model.

# R argument name -> setup_anndata() argument, and whether it takes several columns.
.setup_map <- list(
  batch = c("batch_key", "one"),
  ambient = c("ambient_covariate_keys", "many"),
  nn.conditioning = c("nn_conditioning_covariate_keys", "many"),
  feature.scaling = c("feature_scaling_covariate_keys", "many"),
  dispersion = c("dispersion_key", "one"),
  library.size = c("library_size_key", "one"),
  encoder.covariates = c("encoder_covariate_keys", "many"),
  continuous.covariates = c("continuous_covariate_keys", "many"),
  labels = c("labels_key", "one")
)

# Python setup arguments (named R list) from the R covariate arguments.
.setup_args <- function(covariates) {
  args <- list()
  for (name in names(.setup_map)) {
    value <- covariates[[name]]
    if (is.null(value)) next
    if (name == "feature.scaling" && identical(value, FALSE)) {
      args[[.setup_map[[name]][1]]] <- list()  # off: one factor per gene
      next
    }
    if (!is.character(value) || anyNA(value) || !length(value)) {
      stop("`", name, "` must name metadata column(s), got ", deparse(value)[1], ".", call. = FALSE)
    }
    dotted <- grep(".", value, fixed = TRUE, value = TRUE)
    if (length(dotted)) {
      # scvi-tools' registry (a ConfigDict) refuses dots in covariate names.
      new <- gsub(".", "_", dotted[1], fixed = TRUE)
      stop("Covariate column '", dotted[1], "' (`", name, "`) has a '.' in its name, which the ",
           "model's registry does not accept: copy it to a name without dots first, e.g. obj$",
           new, " <- obj$`", dotted[1], "` (SingleCellExperiment: sce$", new, " <- sce$`",
           dotted[1], "`), and pass \"", new, "\".", call. = FALSE)
    }
    key <- .setup_map[[name]]
    if (key[2] == "one" && length(value) != 1) {
      stop("`", name, "` takes exactly one column, got ", length(value), ".", call. = FALSE)
    }
    args[[key[1]]] <- if (key[2] == "one") value else as.list(value)
  }
  args
}

# Which metadata columns a set of Python setup arguments needs, and how.
.setup_columns <- function(setup_args) {
  continuous <- unlist(setup_args[["continuous_covariate_keys"]])
  keys <- setdiff(names(setup_args), c("layer", "modalities", "continuous_covariate_keys"))
  categorical <- unlist(lapply(setup_args[keys], function(v) if (is.character(unlist(v))) unlist(v)))
  list(categorical = unique(as.character(categorical)), continuous = as.character(continuous))
}

# What both model builders (regularizedviModel(), regularizedviMultimodalModel()) make
# of their covariate arguments: the arguments named as in .setup_map, read from the
# builder's frame `env`, with the layer of each cell as the batch where .default_batch()
# says so; returns the Python setup arguments (`args`) and the metadata columns they need
# (`columns`).
.covariate_setup <- function(parts, env = parent.frame()) {
  covariates <- .default_batch(mget(names(.setup_map), envir = env), parts$meta, parts$layers)
  setup_args <- .setup_args(covariates)
  list(args = setup_args, columns = .setup_columns(setup_args))
}

# Seeds Python, NumPy and torch as scvi-tools does, without Lightning's "Seed set to" line.
.set_seed <- function(seed) {
  if (is.null(seed)) return(invisible())
  .py_call(.py_module("regularizedvi")$set_seed(as.integer(seed)), "Setting the seed failed")
  invisible()
}

# The R handle of a Python model. `cache`: an environment (shared by every copy of the
# handle, e.g. the one in a reduction's misc) holding results that are slow to compute
# (the modality attribution); emptied when the model is trained again.
.new_model <- function(py, adata, cells, genes, setup_args, class = "regularizedviModel", ...) {
  structure(list(py = py, adata = adata, cells = cells, genes = genes, setup_args = setup_args, ...,
                 cache = new.env(parent = emptyenv())),
            class = class)
}

#' Set up a regularizedvi model on a Seurat or SingleCellExperiment object
#'
#' Converts the raw counts with [as.AnnData()] (only the covariate columns
#' travel), registers them with `AmbientRegularizedSCVI.setup_anndata()` and
#' builds an untrained `AmbientRegularizedSCVI`. Train it with
#' [trainRegularizedVI()] and read results with [getLatent()],
#' [getNormalizedExpression()] and [getAmbientProfile()]. Most users call
#' [RunRegularizedVI()] (Seurat) or [runRegularizedVI()] (SingleCellExperiment),
#' which do all steps.
#'
#' @param object A `Seurat` or `SingleCellExperiment` object with raw counts.
#' @param batch One metadata column setting ambient, dispersion and
#'   library-size groups at once (typically the sample / 10x channel). Cannot be
#'   combined with `ambient`, `dispersion`, `library.size`.
#' @param ambient Columns whose categories each get an ambient RNA profile.
#' @param nn.conditioning Columns given to the decoder: technology batches
#'   (chemistry, protocol, site) and samples that differ by more than ambient RNA
#'   (e.g. `batch = "sample", nn.conditioning = "sample"`, the set-up of the
#'   integration benchmark). Their categories also get per-gene feature scaling.
#' @param feature.scaling Columns with per-gene multiplicative factors
#'   (default: the `nn.conditioning` columns; `FALSE`: one factor per gene).
#' @param dispersion One column: groups with their own dispersion.
#' @param library.size One column: groups with their own library-size prior.
#' @param encoder.covariates Columns also given to the encoder.
#' @param continuous.covariates Numeric columns given to encoder and decoder.
#' @param labels One column of cell labels (cell types, or clusters such as
#'   `seurat_clusters`) for the ambient adversary alone (`ambient.adversary` >
#'   0): the adversary then reads each cell's label beside the latent, so it
#'   removes only what tells the ambient groups apart within a label and keeps
#'   the composition differences (biology) in the latent. Where a condition
#'   (treatment, disease) differs between samples, the labels need it too (one
#'   column of cell type x condition, `paste(obj$seurat_clusters,
#'   obj$condition)`): with cell type alone the condition's response leaves the
#'   latent and the background absorbs it (fractions too high). Even then the
#'   adversary was unstable on a design with a planted condition (README), so
#'   there leave it off. Nothing else uses it:
#'   without `ambient.adversary` > 0 it is an error. A query mapped with
#'   [MapRegularizedVIQuery()] needs the column too: without labels, one
#'   placeholder value (e.g. `"unknown"`).
#' @param assay,layer Seurat assay (default: the default assay) and layer with
#'   raw counts (default `"counts"`; on a split Seurat 5 assay all its
#'   `counts.*` layers, see [as.AnnData()]).
#' @param assay.type SingleCellExperiment assay with raw counts.
#' @param features Genes to use (default all; genes without counts are kept,
#'   with a warning).
#' @param n.hidden,n.latent,n.layers,dropout.rate Network size: hidden width
#'   (128), latent dimensions (10), hidden layers (1): whole numbers >= 1;
#'   dropout rate (0.1) in \[0, 1), applied during training to the input of
#'   each encoder layer (latent and library-size encoders); the decoder uses
#'   no dropout.
#' @param seed Random seed set in scvi-tools before the weights are initialised
#'   (a whole number >= 0; `NULL`: leave it).
#' @param ambient.profile Optional measured soup: a data.frame of features
#'   (row names) x ambient categories, e.g. from [EstimateAmbientProfile()] on
#'   the raw (unfiltered) matrix of the same run(s). It fixes the shape of the
#'   background, so that only its amount is learned (default `NULL`: each
#'   category's cells' mean profile). Features are matched by name (every
#'   model gene must be there; extra ones are ignored); columns by ambient
#'   category (`batch` / `ambient` values), or one column for all.
#' @param ambient.background Form of the background: `"profile"` (the
#'   default: a fixed profile times a learned amount and a per-cell scale) or
#'   `"free"` (a learned value per gene and category).
#' @param ambient.adversary Weight of the ambient adversary (a number >= 0;
#'   `NULL`: the package default, 0 = off). A classifier on the latent learns
#'   to predict each cell's ambient group (`batch` / `ambient`) while the
#'   encoder learns to hide it, so that each group's soup is left to the
#'   background rather than expressed by the decoder. On the package's
#'   semi-synthetic benchmarks a weight of 20 roughly halves the error of the
#'   contamination fraction with 2-4 samples, but lowers cell-type purity of
#'   the latent where composition differs between samples; it does not help
#'   with many samples or with `nn.conditioning` on the sample. Meant for
#'   contamination estimates and corrected counts; see the README. Give
#'   `labels` too where you have cell types or clusters (x condition where one
#'   differs between samples): the purity cost then goes, and a weight of 100
#'   gives the most accurate fractions (about 0.03 from the truth), though
#'   not reliably where a condition differs between samples (README).
#'
#' @details Categorical covariates (`batch`, `ambient`, `nn.conditioning`,
#'   `feature.scaling`, `dispersion`, `library.size`, `encoder.covariates`) are
#'   factor, character, logical or whole-number columns. A numeric column with
#'   non-whole values, or with more distinct values than 50 or than half of
#'   the cells (e.g. `nCount_RNA`), is refused: convert it explicitly with
#'   `obj$col <- factor(obj$col)` if it really holds groups.
#'
#'   On a Seurat 5 object whose counts are split into several layers, and with
#'   none of `batch`, `ambient`, `dispersion`, `library.size` given, the layer
#'   of each cell (metadata column `counts_layer`) is the batch; a message says
#'   so.
#' @return A `regularizedviModel`: a list with the Python model (`py`), its
#'   AnnData (`adata`), the cell and gene names and the setup arguments.
#' @seealso [RunRegularizedVI()], [runRegularizedVI()]
#' @examples
#' \dontrun{
#' model <- regularizedviModel(SeuratObject::pbmc_small, batch = "groups")
#' trainRegularizedVI(model, max.epochs = 10)
#' head(getLatent(model))
#' }
#' @export
regularizedviModel <- function(object, batch = NULL, ambient = NULL, nn.conditioning = NULL,
                               feature.scaling = NULL, dispersion = NULL, library.size = NULL,
                               encoder.covariates = NULL, continuous.covariates = NULL,
                               labels = NULL, assay = NULL, layer = "counts", assay.type = "counts",
                               features = NULL, n.hidden = 128, n.latent = 10, n.layers = 1,
                               dropout.rate = 0.1, seed = 0, ambient.profile = NULL,
                               ambient.background = NULL, ambient.adversary = NULL) {
  net <- .check_args(n.hidden = n.hidden, n.latent = n.latent, n.layers = n.layers,
                     dropout.rate = dropout.rate, seed = seed)
  .check_profile(ambient.profile)
  form <- .background_form(ambient.background)
  adversary <- .ambient_adversary(ambient.adversary, labels)
  parts <- .extract_counts_and_meta(object, assay = assay, layer = layer, assay.type = assay.type)
  setup <- .covariate_setup(parts)
  .check_profile_features(ambient.profile, if (is.null(features)) rownames(parts$counts) else features)
  adata <- .parts_to_anndata(parts, features = features, categorical = setup$columns$categorical,
                             continuous = setup$columns$continuous)
  rv <- .py_module("regularizedvi")
  .py_call(.without_py_zero_feature_warning(
    do.call(rv$AmbientRegularizedSCVI$setup_anndata, c(list(adata), setup$args))),
    "Setting up the data failed")
  .set_seed(net$seed)
  model_args <- list(adata, n_hidden = net$n.hidden, n_latent = net$n.latent,
                     n_layers = net$n.layers, dropout_rate = net$dropout.rate,
                     ambient_profile = .profile_to_py(ambient.profile))
  if (!is.null(form)) model_args$ambient_background <- form
  model_args$ambient_adversary <- adversary
  py <- .py_call(do.call(rv$AmbientRegularizedSCVI, model_args), "Building the model failed")
  .model_from_py(py, adata)
}

.model_from_py <- function(py, adata) {
  cells <- as.character(reticulate::py_to_r(adata$obs_names$tolist()))
  genes <- as.character(reticulate::py_to_r(adata$var_names$tolist()))
  registry <- py$adata_manager$registry
  setup_args <- reticulate::py_to_r(reticulate::py_get_item(registry, "setup_args"))
  .new_model(py, adata, cells, genes, setup_args)
}

#' Train a regularizedvi model
#'
#' Trains the model in place: by default in regularizedvi's lean loop on the
#' in-memory data path (on a GPU each step is a replayed CUDA graph), otherwise in
#' scvi-tools' PyTorch Lightning loop; on the CPU both give the same model. Pass
#' `loop = "lightning"` to force Lightning.
#'
#' @param model A `regularizedviModel` from [regularizedviModel()].
#' @param max.epochs Epochs, a whole number >= 1 (default `NULL`:
#'   `min(round(20000 / n_cells * 400), 400)`).
#' @param accelerator,devices Passed to Lightning (`"auto"` uses a GPU when
#'   present; `"cpu"` forces the CPU).
#' @param batch.size Minibatch size, a whole number >= 1 (default 128).
#' @param progress Show the progress bar (default `TRUE`).
#' @param ... Further arguments of the Python `train()`, by their Python names
#'   (e.g. `early_stopping = TRUE`, `plan_kwargs = list(lr = 1e-3)`,
#'   `loop = "lightning"`, `train_size = 0.8`); an unknown name is an error.
#'   The run functions take the same as `train.args`.
#' @return The model, invisibly.
#' @export
trainRegularizedVI <- function(model, max.epochs = NULL, accelerator = "auto", devices = "auto",
                               batch.size = 128, progress = TRUE, ...) {
  .train_model(model, max.epochs = max.epochs, accelerator = accelerator, devices = devices,
               batch.size = batch.size, progress = progress, train.args = list(...), what = "...")
}

# What trainRegularizedVI() and every run function call: `train.args` (a list, see
# .check_train_list()) go to the Python train() as they are, never matched against R's
# argument names.
.train_model <- function(model, max.epochs = NULL, accelerator = "auto", devices = "auto",
                         batch.size = 128, progress = TRUE, train.args = NULL, what = "train.args") {
  .check_model(model)
  extra <- .check_train_list(train.args, what)
  args <- .check_train_args(max.epochs = max.epochs, batch.size = batch.size,
                            accelerator = accelerator, devices = devices, progress = progress)
  .py_call(do.call(model$py$train, c(list(max_epochs = args$max.epochs, accelerator = accelerator,
                                          devices = args$devices, batch_size = args$batch.size,
                                          enable_progress_bar = progress), extra)),
           "Training failed")
  if (is.environment(model$cache)) rm(list = ls(model$cache, all.names = TRUE), envir = model$cache)
  invisible(model)
}

# Trains a run function's model with the options .check_run() / .run_training() returned;
# `train` is .train_model() or, for a query, .train_query().
.train_run <- function(model, training, train = .train_model) {
  do.call(train, c(list(model), training))
}

.check_model <- function(model) {
  if (!inherits(model, "regularizedviModel")) {
    stop("Expected a regularizedviModel (from regularizedviModel(), LoadRegularizedVI() or ",
         "getRegularizedVIModel()), got '", class(model)[1], "'.", call. = FALSE)
  }
  if (reticulate::py_is_null_xptr(model$py)) {
    stop("This model's Python object no longer exists (an R object restored with readRDS() ",
         "or from another R session keeps no Python objects). Reload it with LoadRegularizedVI().",
         call. = FALSE)
  }
  invisible(model)
}

#' Latent representation of the cells
#'
#' @param model A trained `regularizedviModel` (or multimodal model).
#' @param modality Multimodal model: `NULL` (default) for the joint latent, or
#'   a modality for its own latent (its slice of the concatenation, or its
#'   posterior before mixing with `latent.mode = "weighted_mean"`).
#' @return A cells x latent-dimensions matrix with cell names as row names.
#' @export
getLatent <- function(model, modality = NULL) {
  .check_model(model)
  mod <- if (is.null(modality)) list(py = NULL) else .modality_of(model, modality)
  latent <- reticulate::py_to_r(.py_call(model$py$get_latent_representation(modality = mod$py),
                                         "Computing the latent representation failed"))
  latent <- as.matrix(latent)
  dimnames(latent) <- list(model$cells, paste0("rvi_", seq_len(ncol(latent))))
  latent
}

#' @export
print.regularizedviModel <- function(x, ...) {
  alive <- !reticulate::py_is_null_xptr(x$py)
  cat("regularizedviModel:", length(x$cells), "cells x", length(x$genes), "genes")
  if (alive) {
    cat(if (isTRUE(reticulate::py_to_r(x$py$is_trained_))) ", trained" else ", not trained")
  } else {
    cat(" (Python object gone: reload with LoadRegularizedVI())")
  }
  cat("\n")
  used <- Filter(Negate(is.null), x$setup_args[setdiff(names(x$setup_args), "layer")])
  if (length(used)) {
    cat("covariates:", paste(names(used), vapply(used, function(v) paste(unlist(v), collapse = ","), ""),
                             sep = "=", collapse = "; "), "\n")
  }
  invisible(x)
}
