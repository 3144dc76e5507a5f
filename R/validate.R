# Arguments are checked in R before anything reaches Python, and never coerced
# silently: 2.7 epochs is an error, not 2; 0 epochs is an error, not an untrained model.

# What each checked argument may be: whole numbers with a minimum (`null`: NULL allowed,
# meaning "the default"), or a rate in [0, 1).
.arg_rules <- list(
  max.epochs = list(min = 1, null = TRUE),
  batch.size = list(min = 1, null = FALSE),
  n.hidden = list(min = 1, null = FALSE),
  n.latent = list(min = 1, null = FALSE),
  n.layers = list(min = 1, null = FALSE),
  seed = list(min = 0, null = TRUE),
  dropout.rate = list(rate = TRUE, null = FALSE),
  min.counts = list(min = 0, null = FALSE),
  max.counts = list(min = 0, null = FALSE),
  min.droplets = list(min = 1, null = FALSE)
)

# Check the named arguments against .arg_rules; returns them as Python will get them
# (whole numbers as integers). A named list / vector (one value per modality) is checked
# value by value.
.check_args <- function(...) {
  args <- list(...)
  for (name in names(args)) {
    rule <- .arg_rules[[name]]
    value <- args[[name]]
    if (is.null(value)) {
      if (!isTRUE(rule$null)) stop("`", name, "` must be given (it is NULL).", call. = FALSE)
      next
    }
    values <- if (is.list(value)) value else as.list(value)
    if (!length(values) || (length(values) > 1 && is.null(names(value)))) {
      stop("`", name, "` must be a single number, got ", length(values), " values.", call. = FALSE)
    }
    checked <- lapply(values, .check_one_arg, name = name, rule = rule)
    args[name] <- list(if (length(checked) == 1 && is.null(names(value))) checked[[1]] else
      stats::setNames(checked, names(value)))
  }
  args
}

.check_one_arg <- function(v, name, rule) {
  shown <- if (is.character(v)) paste0('"', v, '"') else paste(format(v), collapse = " ")
  if (length(v) != 1 || !(is.numeric(v) && !is.factor(v)) || is.na(v) || !is.finite(v)) {
    what <- if (isTRUE(rule$rate)) "a number in [0, 1)" else sprintf("a whole number >= %d", rule$min)
    stop("`", name, "` must be ", what, ", not ", shown,
         if (!is.numeric(v)) paste0(" (", class(v)[1], ")") else "", ".", call. = FALSE)
  }
  if (isTRUE(rule$rate)) {
    if (v < 0 || v >= 1) stop("`", name, "` must be in [0, 1), not ", shown, ".", call. = FALSE)
    return(as.numeric(v))
  }
  if (v != round(v)) {
    stop("`", name, "` must be a whole number, not ", shown, " (it is not rounded for you).",
         call. = FALSE)
  }
  if (v < rule$min) stop("`", name, "` must be >= ", rule$min, ", not ", shown, ".", call. = FALSE)
  if (v > .Machine$integer.max) stop("`", name, "` is too large (", shown, ").", call. = FALSE)
  as.integer(v)
}

# Numeric columns with many distinct values are measurements (nCount_RNA, percent.mt),
# not groups: refused as categorical covariates unless the user makes them a factor or
# character column. The bound: non-whole values, or more distinct values than
# .max_numeric_levels or than half of the cells: the rule of the Python core, applied here
# before Python starts (.max_numeric_levels = MAX_NUMERIC_CATEGORIES in
# inst/python/regularizedvi/_constants.py; tests/testthat/test-validate.R checks they agree).
.max_numeric_levels <- 50

.check_numeric_categorical <- function(values, col) {
  if (!is.numeric(values)) return(invisible(TRUE))
  distinct <- length(unique(values))
  fractional <- any(values != round(values))
  if (fractional || distinct > min(.max_numeric_levels, length(values) / 2)) {
    ref <- if (make.names(col) == col) col else paste0("`", col, "`")
    stop("Column '", col, "' is numeric with ", distinct, " distinct values",
         if (fractional) " (not whole numbers)" else "", " for ", length(values), " cells: ",
         "it looks like a measurement, not groups of cells, and cannot be a categorical ",
         "covariate (batch, ambient, nn.conditioning, ...). Use a column of groups (sample, ",
         "channel), give it as continuous.covariates, or, if it really holds group labels, ",
         "convert it explicitly first: obj$", ref, " <- factor(obj$", ref, ") ",
         "(SingleCellExperiment: sce$", ref, " <- factor(sce$", ref, ")).", call. = FALSE)
  }
  invisible(TRUE)
}

# The training options every run function takes, checked before any data are converted.
.check_train_args <- function(max.epochs = NULL, batch.size = 128, accelerator = "auto",
                              devices = "auto", progress = TRUE, seed = NULL, train.args = NULL) {
  .check_train_list(train.args)
  args <- .check_args(max.epochs = max.epochs, batch.size = batch.size, seed = seed)
  if (!is.character(accelerator) || length(accelerator) != 1 || is.na(accelerator)) {
    stop("`accelerator` must be one string (\"auto\", \"cpu\", \"gpu\", ...), not ",
         deparse(accelerator)[1], ".", call. = FALSE)
  }
  if (is.numeric(devices)) {
    if (!length(devices) || anyNA(devices) || any(devices != round(devices)) ||
        (length(devices) == 1 && (devices < -1 || devices == 0)) || (length(devices) > 1 && any(devices < 0))) {
      stop("`devices` must be \"auto\", a number of devices (-1: all) or device indices, not ",
           deparse(devices)[1], ".", call. = FALSE)
    }
    devices <- as.integer(devices)
  } else if (!is.character(devices) || length(devices) != 1 || is.na(devices)) {
    stop("`devices` must be \"auto\", a number of devices or device indices, not ",
         deparse(devices)[1], ".", call. = FALSE)
  }
  if (!is.logical(progress) || length(progress) != 1 || is.na(progress)) {
    stop("`progress` must be TRUE or FALSE.", call. = FALSE)
  }
  c(args, list(devices = devices))
}

# `train.args` of a run function (and `...` of trainRegularizedVI()): further arguments of
# the Python train(), by their Python names (early_stopping, plan_kwargs, loop, ...). R
# checks what it can see: a list of uniquely named entries, not the options the function
# sets from its own arguments; Python's train() refuses names it does not know (TypeError).
.own_train_args <- c(max_epochs = "max.epochs", batch_size = "batch.size", accelerator = "accelerator",
                     devices = "devices", enable_progress_bar = "progress")

.check_train_list <- function(train.args, what = "train.args") {
  example <- "e.g. list(plan_kwargs = list(lr = 1e-3), early_stopping = TRUE)"
  if (is.null(train.args)) return(list())
  if (!is.list(train.args) || is.data.frame(train.args)) {
    stop("`", what, "` must be a named list of further arguments of the Python train() (", example,
         "), not ", class(train.args)[1], ".", call. = FALSE)
  }
  keys <- names(train.args)
  if (length(train.args) && (is.null(keys) || anyNA(keys) || any(!nzchar(keys)))) {
    stop("Every entry of `", what, "` must be named by its train() argument (", example, ").",
         call. = FALSE)
  }
  if (anyDuplicated(keys)) {
    stop("`", what, "` names '", keys[duplicated(keys)][1], "' more than once.", call. = FALSE)
  }
  own <- keys[keys %in% c(names(.own_train_args), .own_train_args)]
  if (length(own)) {
    r_name <- ifelse(own %in% names(.own_train_args), .own_train_args[own], own)
    stop("`", what, "` sets ", paste0("'", own, "'", collapse = ", "), ": pass it as the function's own ",
         "argument ", paste0("`", r_name, "`", collapse = ", "), " instead.", call. = FALSE)
  }
  dotted <- keys[grepl(".", keys, fixed = TRUE)]
  if (length(dotted)) {
    stop("`", what, "` names are the Python train()'s, with underscores: ",
         paste0(gsub(".", "_", dotted, fixed = TRUE), collapse = ", "), ", not ",
         paste(dotted, collapse = ", "), ".", call. = FALSE)
  }
  train.args
}

# `...` of a run function goes to the model constructor (`builder`): a name it does not take
# is an error here, pointing training options (Python names such as plan_kwargs,
# early_stopping) to `train.args`.
.check_model_dots <- function(dots, fun, builder) {
  keys <- names(dots)
  takes <- names(formals(get(builder, mode = "function", envir = topenv(environment()))))
  unknown <- setdiff(keys[!is.na(keys) & nzchar(keys)], takes)
  if (length(unknown)) {
    stop(fun, "() got ", paste0("`", unknown, "`", collapse = ", "), ", which ", builder, "() does not take ",
         "(`...` goes there). Options of the Python train() go in `train.args`, e.g. train.args = list(",
         unknown[1], " = ...).", call. = FALSE)
  }
  invisible(TRUE)
}

# A column-name argument: one string (NULL: no column, where `null` allows it; "" where
# `empty` allows it, e.g. a prefix).
.check_column_name <- function(value, what, null = TRUE, empty = FALSE) {
  if (is.null(value) && null) return(invisible(NULL))
  if (!is.character(value) || length(value) != 1 || is.na(value) || (!empty && !nzchar(value))) {
    stop("`", what, "` must be one ", if (empty) "string" else "non-empty name",
         if (null) " (or NULL for none)" else "", ", not ", deparse(value)[1], ".", call. = FALSE)
  }
  invisible(value)
}

# The training arguments every run function takes, under these names: .run_training()
# reads them from the run function's frame.
.run_train_names <- c("max.epochs", "batch.size", "accelerator", "devices", "progress", "seed",
                      "train.args")

# A run function's training options, read by name from its frame `env` and checked
# (.check_train_args()); returned without `seed` (the model's builder takes it), as the
# options of .train_model() for .train_run().
.run_training <- function(env = parent.frame()) {
  training <- mget(.run_train_names, envir = env)
  do.call(.check_train_args, training)
  training[names(training) != "seed"]
}

# What every run function checks first: the object's class (naming the function for the
# other class), the training options (read from the run function's frame `env`, see
# .run_training()) and the contamination column's name. Returns the training options for
# .train_run().
.check_run <- function(object, fun, other, contamination.column, env = parent.frame()) {
  seurat <- startsWith(fun, toupper(substr(fun, 1, 1)))
  if (seurat && !inherits(object, "Seurat")) {
    stop(fun, "() needs a Seurat object; for a SingleCellExperiment use ", other, "().", call. = FALSE)
  }
  if (!seurat && !inherits(object, "SingleCellExperiment")) {
    stop(fun, "() needs a SingleCellExperiment; for a Seurat object use ", other, "().", call. = FALSE)
  }
  training <- .run_training(env)
  .check_column_name(contamination.column, "contamination.column")
  invisible(training)
}
