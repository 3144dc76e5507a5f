# Measured soups from R: EstimateAmbientProfile() on raw droplets, ambient.profile = on the
# single and multimodal models, getForegroundProbability(); real data from ../shared/data.

# Each column of a features x droplets matrix pooled into one profile summing to 1.
pooled <- function(counts, columns) {
  sums <- Matrix::rowSums(counts[, columns, drop = FALSE])
  sums / sum(sums)
}

py_profile <- function(...) {
  df <- reticulate::import("regularizedvi", convert = FALSE)$estimate_ambient_profile(...)
  regularizedvi:::.py_frame_to_r(df)
}

mbrain <- local({
  data <- NULL
  function() {
    if (is.null(data)) data <<- read_shared_h5ad("mbrain_raw_droplets.h5ad")
    data
  }
})

test_that("the soup of raw 10x droplets: equal to Python's, nearer the emptiest droplets than the cells' mean", {
  skip_if_no_regularizedvi()
  raw <- mbrain()
  counts <- raw$counts
  totals <- Matrix::colSums(counts)
  profile <- EstimateAmbientProfile(counts, min.counts = 10, max.counts = 100)
  expect_s3_class(profile, "data.frame")
  expect_identical(rownames(profile), rownames(counts))
  expect_identical(names(profile), "all droplets")
  expect_equal(colSums(profile), c("all droplets" = 1), tolerance = 1e-12)
  expect_identical(attr(profile, "n.empty.droplets"),
                   c("all droplets" = sum(totals >= 10 & totals <= 100)))
  # the R estimate is the Python core's on the same droplets
  reference <- py_profile(raw$adata, min_counts = 10L, max_counts = 100L)
  expect_identical(rownames(reference), rownames(profile))
  expect_lt(max(abs(profile[[1]] - reference[[1]])), 1e-10)
  # held out: the emptiest droplets (1-9 UMIs) are nearer the estimate than the cells' mean
  emptiest <- pooled(counts, totals >= 1 & totals < 10)
  cells <- pooled(counts, totals >= 500)
  r_estimate <- stats::cor(profile[[1]], emptiest)
  r_cells <- stats::cor(cells, emptiest)
  message(sprintf("corr with the emptiest droplets: estimate %.3f, cells' mean %.3f", r_estimate, r_cells))
  expect_gt(r_estimate, 0.93)
  expect_gt(r_estimate, r_cells + 0.08)
})

test_that("groups, objects and masks give the same soups; a filtered matrix is refused", {
  skip_if_no_regularizedvi()
  raw <- mbrain()
  counts <- raw$counts
  totals <- Matrix::colSums(counts)
  channel <- ifelse(seq_len(ncol(counts)) %% 2 == 0, "b", "a")
  by_channel <- EstimateAmbientProfile(counts, groupby = channel)
  expect_identical(names(by_channel), c("a", "b"))
  reference <- raw$adata$copy()
  reticulate::py_set_item(reference$obs, "channel", reticulate::np_array(channel))
  expect_lt(max(abs(as.matrix(by_channel) - as.matrix(py_profile(reference, groupby = "channel")))), 1e-10)
  # a named groupby is matched by droplet name, whatever its order
  shuffled <- stats::setNames(channel, colnames(counts))[rev(seq_along(channel))]
  expect_identical(EstimateAmbientProfile(counts, groupby = shuffled), by_channel)
  # a mask replaces the count range
  mask <- totals >= 1 & totals <= 100
  expect_equal(EstimateAmbientProfile(counts, empty = mask), EstimateAmbientProfile(counts),
               tolerance = 1e-12)

  # Seurat / SCE objects with every barcode, groups and masks as column names (a gene
  # subset: the object's feature names are Seurat's, '_' -> '-')
  sub <- counts[1:3000, ]
  expected <- EstimateAmbientProfile(sub, groupby = channel, empty = mask)
  obj <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = sub, min.cells = 0, min.features = 0))
  expect_equal(ncol(obj), ncol(sub))
  obj$channel <- channel
  obj$is_empty <- mask
  from_seurat <- EstimateAmbientProfile(obj, groupby = "channel", empty = "is_empty")
  expect_equal(unname(as.matrix(from_seurat)), unname(as.matrix(expected)), tolerance = 1e-12)
  expect_identical(rownames(from_seurat), rownames(obj))
  skip_if_not_installed("SingleCellExperiment")
  sce <- SingleCellExperiment::SingleCellExperiment(assays = list(counts = sub))
  sce$channel <- factor(channel, levels = c("b", "a", "unused"))
  from_sce <- EstimateAmbientProfile(sce, groupby = "channel", empty = mask)
  expect_identical(names(from_sce), c("b", "a"))  # factor order, levels without droplets dropped
  expect_equal(from_sce[, c("a", "b")], expected, tolerance = 1e-12, ignore_attr = TRUE)

  # cells only (>= 500 UMIs): no empty droplet left, an error that says why and what to read
  filtered <- counts[, totals >= 500]
  err <- expect_error(EstimateAmbientProfile(filtered),
                      "Only 0 droplet\\(s\\) with 1-100 counts.*looks like a filtered matrix.*Read10X")
  expect_false(grepl("Traceback|File \"|max_counts", conditionMessage(err)))
  expect_error(EstimateAmbientProfile(counts, empty = as.integer(mask)),
               "`empty` must be a logical vector.*compare first")
  expect_error(EstimateAmbientProfile(counts, groupby = "channel"),
               "names a metadata column, but `raw` is a matrix")
  expect_error(EstimateAmbientProfile(counts, groupby = channel[-1]), "one value per droplet \\(50000\\)")
  expect_error(EstimateAmbientProfile(obj, groupby = "sample"), "'sample' \\(groupby\\) not found")
  expect_error(EstimateAmbientProfile(counts, min.counts = 200), "`min.counts` \\(200\\) must be at most")
  expect_error(EstimateAmbientProfile(list(`Gene Expression` = counts, `Antibody Capture` = counts)),
               "pick one, e.g. raw\\[\\[\"Gene Expression\"\\]\\]")
})

# ---------------------------------------------------------------- ambient.profile = on models

test_that("ambient.profile sets the background's shape of either model; bad profiles are refused", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  genes <- rownames(obj)
  set.seed(3)
  soup <- data.frame(soup = stats::rexp(length(genes) + 5), row.names = c(genes, paste0("extra", 1:5)))
  model <- regularizedviModel(obj, ambient.profile = soup, n.hidden = 8, n.latent = 2)
  expected <- soup[genes, 1] / sum(soup[genes, 1])  # the model's features, renormalised
  expect_equal(getAmbientProfile(model)[[1]], expected, tolerance = 1e-5)
  # one column per ambient category, matched by name
  per_group <- data.frame(g2 = rev(expected), g1 = expected, row.names = genes)
  by_group <- regularizedviModel(obj, batch = "groups", ambient.profile = per_group, n.hidden = 8,
                                 n.latent = 2)
  expect_equal(as.matrix(getAmbientProfile(by_group)[, c("g1", "g2")]),
               as.matrix(per_group[, c("g1", "g2")]), tolerance = 1e-5, ignore_attr = TRUE)
  # the run functions pass it on
  fit <- do.call(RunRegularizedVI, c(list(obj, ambient.profile = soup), tiny_fit))
  expect_equal(getAmbientProfile(fit)[[1]], expected, tolerance = 1e-5)

  expect_error(regularizedviModel(obj, ambient.profile = as.matrix(soup)),
               "`ambient.profile` must be a data.frame of features \\(row names\\).*got a matrix")
  expect_error(regularizedviModel(obj, ambient.profile = data.frame(soup = soup[[1]])),
               "`ambient.profile` has no feature names")
  err <- expect_error(regularizedviModel(obj, ambient.profile = soup[-(1:3), , drop = FALSE]),
                      "Building the model failed: .*ambient_profile lacks 3 of the model's 230 features.*raw matrix of the same run")
  expect_false(grepl("Traceback|File \"|py_last_error", conditionMessage(err)))
  expect_error(regularizedviModel(obj, batch = "groups",
                                  ambient.profile = data.frame(g1 = expected, g3 = expected, row.names = genes)),
               "no column for ambient category \\['g2'\\]")
  underscored <- soup
  rownames(underscored) <- sub("-", "_", rownames(soup), fixed = TRUE)
  if (any(grepl("-", genes, fixed = TRUE))) {
    expect_error(regularizedviModel(obj, ambient.profile = underscored),
                 "Seurat replaces '_' by '-'.*gsub\\(\"_\", \"-\", rownames\\(profile\\)\\)")
  }
  expect_error(regularizedviModel(obj, ambient.background = "fixed"),
               "`ambient.background` must be \"profile\" or \"free\"")
})

test_that("ambient.adversary reaches either model; bad weights and a single group are refused", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  model <- regularizedviModel(obj, batch = "groups", ambient.adversary = 2.5, n.hidden = 8, n.latent = 2)
  expect_identical(reticulate::py_to_r(model$py$module$ambient_adversary), 2.5)
  expect_identical(unlist(reticulate::py_to_r(model$py$module$n_adversary_cats_per_key)), 2L)  # g1, g2
  # default: off, no classifier
  expect_null(reticulate::py_to_r(regularizedviModel(obj, batch = "groups", n.hidden = 8,
                                                     n.latent = 2)$py$module$ambient_adversary_net))
  fit <- do.call(RunRegularizedVI, c(list(obj, batch = "groups", ambient.adversary = 1), tiny_fit))
  expect_identical(dim(SeuratObject::Embeddings(fit, "regularizedvi")), c(ncol(obj), 4L))
  expect_error(regularizedviModel(obj, batch = "groups", ambient.adversary = -1),
               "`ambient.adversary` must be one number >= 0 \\(0: off\\), not -1")
  expect_error(regularizedviModel(obj, batch = "groups", ambient.adversary = "strong"),
               "`ambient.adversary` must be one number >= 0")
  err <- expect_error(regularizedviModel(obj, ambient.adversary = 1),
                      "Building the model failed: .*no ambient groups.*batch_key= or ambient_covariate_keys=")
  expect_false(grepl("Traceback|File \"", conditionMessage(err)))
  multi <- regularizedviMultimodalModel(citeseq(), assays = c("RNA", "ADT"), batch = "groups",
                                        ambient.adversary = 3, n.hidden = 8, n.latent = 2)
  expect_identical(reticulate::py_to_r(multi$py$module$ambient_adversary), 3)
})

test_that("labels reach the adversary of either model; without the adversary they are refused", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  obj$lab <- as.character(obj$letter.idents)  # a column name without dots (see .setup_args)
  model <- regularizedviModel(obj, batch = "groups", labels = "lab", ambient.adversary = 2,
                              n.hidden = 8, n.latent = 2)
  expect_identical(reticulate::py_to_r(model$py$module$n_adversary_labels), 2L)  # A, B
  expect_identical(reticulate::py_to_r(model$py$module$ambient_adversary_net[[0]]$in_features), 4L)
  expect_error(regularizedviModel(obj, batch = "groups", labels = "lab", n.hidden = 8, n.latent = 2),
               "`labels` serve the ambient adversary alone, which is off: pass ambient.adversary > 0")
  expect_error(regularizedviModel(obj, batch = "groups", labels = c("groups", "lab"), ambient.adversary = 1),
               "`labels` takes exactly one column, got 2")
  expect_error(regularizedviModel(obj, batch = "groups", labels = "no_such_column", ambient.adversary = 1),
               "'no_such_column'.*not found")
  fit <- do.call(RunRegularizedVI, c(list(obj, batch = "groups", labels = "lab",
                                          ambient.adversary = 1), tiny_fit))
  expect_identical(dim(SeuratObject::Embeddings(fit, "regularizedvi")), c(ncol(obj), 4L))
  multi <- regularizedviMultimodalModel(citeseq(), assays = c("RNA", "ADT"), batch = "groups",
                                        labels = "groups", ambient.adversary = 3, n.hidden = 8, n.latent = 2)
  expect_identical(reticulate::py_to_r(multi$py$module$n_adversary_labels), 2L)
})

test_that("multimodal: ambient.profile per modality, foreground probabilities in [0, 1]", {
  skip_if_no_regularizedvi()
  obj <- citeseq()
  proteins <- paste0("prot", 1:10)
  adt_soup <- data.frame(empties = c(10, 1:9), row.names = proteins)
  model <- regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), n.hidden = 8, n.latent = 2,
                                        ambient.profile = list(ADT = adt_soup))
  expect_equal(getAmbientProfile(model, modality = "ADT")[[1]], adt_soup[[1]] / sum(adt_soup[[1]]),
               tolerance = 1e-5)
  # RNA, not named, keeps its own (cells' mean) profile
  expect_identical(rownames(getAmbientProfile(model, modality = "RNA")), rownames(obj))
  fit <- do.call(RunRegularizedMultimodalVI,
                 c(list(obj, assays = c("RNA", "ADT"), ambient.profile = list(ADT = adt_soup),
                        ambient.background = list(RNA = "free")), tiny_multi))
  fg <- getForegroundProbability(fit, modality = "ADT", name = "regularizedmultivi")
  expect_identical(dimnames(fg), list(proteins, colnames(obj)))
  expect_true(all(fg >= 0 & fg <= 1))
  two <- getForegroundProbability(fit, features = c("prot3", "prot1"), modality = "ADT",
                                  name = "regularizedmultivi")
  expect_identical(two, fg[c("prot3", "prot1"), ])
  expect_error(getForegroundProbability(fit, features = "CD3", modality = "ADT", name = "regularizedmultivi"),
               "1 of `features` are not the model's features of modality 'ADT'")

  expect_error(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), ambient.profile = adt_soup),
               "takes a named list of profiles per modality, e.g. ambient.profile = list\\(ADT = profile\\)")
  expect_error(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), ambient.profile = list(HTO = adt_soup)),
               "must be named by modality \\(the model's: RNA, ADT\\), not 'HTO'")
  expect_error(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"),
                                            ambient.profile = list(ADT = adt_soup[1:8, , drop = FALSE])),
               "ambient_profile\\['ADT'\\] lacks 2 of the model's 10 features")
  expect_error(regularizedviMultimodalModel(obj, assays = c("RNA", "ADT"), ambient.background = c("free", "profile")),
               "a named list of them per modality \\(RNA, ADT\\)")
})

test_that("CITE-seq protein: the empties' soup removes the isotype controls' counts, which are background", {
  skip_if_no_regularizedvi()
  raw <- read_shared_h5ad("citeseq_adt_with_empties.h5ad")
  droplet <- as.character(reticulate::py_to_r(obs_col(raw$adata, "droplet")$astype("str")$tolist()))
  empty <- droplet == "empty"
  soup <- EstimateAmbientProfile(raw$counts, empty = empty)
  expect_identical(attr(soup, "n.empty.droplets"), c("all droplets" = 8005L))
  # the cells as a Seurat object (Seurat writes 'CD3-PROT' for 'CD3_PROT': the profile follows)
  obj <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = raw$counts[, !empty], assay = "ADT"))
  expect_error(regularizedviModel(obj, ambient.profile = soup), "Seurat replaces '_' by '-'")
  rownames(soup) <- gsub("_", "-", rownames(soup), fixed = TRUE)
  isotype <- grepl("sotype", rownames(obj))
  expect_identical(sum(isotype), 4L)
  counts <- layer_data(obj, "counts", "ADT")
  fit <- function(profile) {
    model <- regularizedviModel(obj, assay = "ADT", ambient.profile = profile, n.hidden = 32,
                                n.latent = 10)
    trainRegularizedVI(model, max.epochs = 60, progress = FALSE, accelerator = "cpu",
                       plan_kwargs = list(n_epochs_kl_warmup = NULL))
  }
  removed <- function(model) 1 - Matrix::rowSums(getAmbientCorrectedCounts(model)) / Matrix::rowSums(counts)
  given <- fit(soup)
  default <- fit(NULL)
  with_soup <- removed(given)
  without <- removed(default)
  overall <- 1 - sum(getAmbientCorrectedCounts(given)) / sum(counts)
  fg <- getForegroundProbability(given, features = c(rownames(obj)[isotype], "CD3-PROT"))
  message(sprintf(paste0("isotypes' counts removed: %.3f with the empties' soup, %.3f without ",
                         "(all proteins %.3f); foreground: isotypes %.3f, CD3 %.3f"),
                  mean(with_soup[isotype]), mean(without[isotype]), overall,
                  mean(fg[1:4, ]), mean(fg["CD3-PROT", ])))
  expect_gt(mean(with_soup[isotype]), 0.05)
  expect_gt(mean(with_soup[isotype]), 5 * mean(without[isotype]))
  expect_gt(mean(with_soup[isotype]), 2 * overall)
  expect_equal(dim(fg), c(5, ncol(obj)))
  expect_true(all(fg >= 0 & fg <= 1))
  expect_lt(mean(fg[1:4, ]), mean(fg["CD3-PROT", ]))
})
