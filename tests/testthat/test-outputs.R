fit_small <- function() {
  do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups"), tiny_fit))
}

test_that("normalized expression comes back genes x cells, summing to library.size", {
  skip_if_no_regularizedvi()
  obj <- fit_small()
  values <- getNormalizedExpression(obj, library.size = 10)
  expect_identical(dimnames(values), list(rownames(obj), colnames(obj)))
  expect_equal(unname(colSums(values)), rep(10, ncol(obj)), tolerance = 1e-5)
  # pbmc_small has 20 variable features: they are what is stored by default.
  variable <- SeuratObject::VariableFeatures(obj)
  expect_length(variable, 20)
  # each call draws z once from the posterior: the same torch seed gives the same draw
  torch_seed()
  expect_message(out <- regularizedvi::AddNormalizedExpression(obj),
                 "normalized expression of the 20 variable features of assay 'RNA' \\(of the model's 230 genes\\)")
  expect_true("RVI" %in% SeuratObject::Assays(out))
  expect_identical(SeuratObject::DefaultAssay(out), "RNA")
  expect_s4_class(out[["RVI"]], if (is_seurat5()) "Assay5" else "Assay")
  data <- layer_data(out, "data", "RVI")
  expect_identical(dimnames(data), list(variable, colnames(obj)))
  torch_seed()
  full <- getNormalizedExpression(obj, library.size = 1e4)
  expect_equal(unname(as.matrix(data)), unname(full[variable, ]), tolerance = 1e-5)
  # all genes on request; each cell sums to library.size over all genes
  torch_seed()
  expect_no_warning(out <- regularizedvi::AddNormalizedExpression(obj, features = rownames(obj)))
  data <- layer_data(out, "data", "RVI")
  expect_identical(dimnames(data), dimnames(values))
  expect_equal(unname(colSums(as.matrix(data))), rep(1e4, ncol(obj)), tolerance = 1e-4)
  expect_equal(unname(as.matrix(data)), unname(full), tolerance = 1e-5)
  # logged like the run functions, with its arguments
  expect_identical(setdiff(command_names(out), command_names(obj)), "AddNormalizedExpression.RVI")
  expect_identical(out@commands[["AddNormalizedExpression.RVI"]]$features, rownames(obj))
  expect_match(out@commands[["AddNormalizedExpression.RVI"]]@call.string,
               "regularizedvi::AddNormalizedExpression(obj, features = rownames(obj))", fixed = TRUE)
  # a size guard instead of a dense genes x cells surprise
  expect_error(AddNormalizedExpression(obj, features = rownames(obj), max.values = 1000),
               "230 genes x 80 cells is a dense matrix of 0.000137 GB \\(18400 values > max.values = 1000\\)\\. Pass fewer `features`")
  expect_error(AddNormalizedExpression(obj, features = c("MS4A1", "nope")), "1 of `features` are not the model's genes \\(e.g. nope\\)")
  # unknown names: how many, up to 5 of them, where the names are; never dropped silently
  bad <- c("MS4A1", paste0("typo", 1:6))
  for (output in list(getNormalizedExpression, getForegroundProbability)) {
    err <- expect_error(output(obj, features = bad), class = "error")
    expect_identical(conditionMessage(err), paste0(
      "6 of `features` are not the model's genes (e.g. typo1, typo2, typo3, typo4, typo5, ...): ",
      "names must be among getRegularizedVIModel(object, name)$genes."))
    expect_error(output(obj, features = character(0)), "`features` is empty: give some of the model's genes")
    # the features come back in the order asked for
    expect_identical(rownames(output(obj, features = c("MS4A1", "CD79B", "CD3E"))), c("MS4A1", "CD79B", "CD3E"))
  }
  # Python's own check reaches R as a clean R error (gene_list passed through `...`)
  err <- expect_error(getNormalizedExpression(obj, gene_list = list("MS4A1", "nope")), class = "error")
  expect_match(conditionMessage(err), paste0("^Computing the normalized expression failed: ValueError: gene_list has 1 ",
                                             "name\\(s\\) that are not features of the model's data \\('nope'\\): ",
                                             "names must be among adata.var_names\\.$"))
  expect_false(grepl("Traceback|File \"", conditionMessage(err)))
  expect_error(getNormalizedExpression(obj, library.size = -1), "`library.size` must be one positive number")
})

test_that("the ambient profile is a genes x categories data.frame of profiles", {
  skip_if_no_regularizedvi()
  obj <- fit_small()
  profile <- getAmbientProfile(obj)
  expect_s3_class(profile, "data.frame")
  expect_identical(names(profile), c("g1", "g2"))
  expect_identical(rownames(profile), rownames(obj))
  expect_equal(unname(colSums(profile)), c(1, 1), tolerance = 1e-5)
})

test_that("SCE normalized expression becomes an assay", {
  skip_if_no_regularizedvi()
  sce <- synthetic_sce()
  sce <- do.call(runRegularizedVI, c(list(sce, batch = "sample"), tiny_fit))
  expect_error(addNormalizedExpression(sce, max.values = 100),
               "The normalized expression of 40 genes x 60 cells is a dense matrix")
  sce <- addNormalizedExpression(sce, library.size = 1)
  values <- SummarizedExperiment::assay(sce, "regularizedvi_normalized")
  expect_identical(dimnames(values), dimnames(sce))
  expect_equal(unname(colSums(values)), rep(1, ncol(sce)), tolerance = 1e-5)
  expect_identical(names(getAmbientProfile(sce)), c("s3", "s1", "s2", "unused"))
})

test_that("regularizedviDE recovers the clusters' fold changes and names bad cell sets", {
  skip_if_no_regularizedvi()
  obj <- RunRegularizedVI(pbmc(), batch = "groups", n.hidden = 32, n.latent = 6, max.epochs = 100,
                          progress = FALSE, seed = 1)
  ident <- SeuratObject::Idents(obj)
  c1 <- colnames(obj)[ident == "0"]
  c2 <- colnames(obj)[ident == "1"]
  de <- regularizedviDE(obj, c1, c2)
  expect_s3_class(de, "data.frame")
  expect_setequal(rownames(de), rownames(obj))
  expect_true(all(c("proba_de", "lfc_mean", "bayes_factor") %in% names(de)))
  # ground truth from the counts: log2 ratio of the two clusters' mean counts-per-10k
  counts <- as.matrix(layer_data(obj, "counts"))
  cp <- t(t(counts) / colSums(counts)) * 1e4
  raw <- log2((rowMeans(cp[, c1]) + 1) / (rowMeans(cp[, c2]) + 1))
  top <- names(sort(abs(raw), decreasing = TRUE))[1:20]
  expect_gte(mean(sign(de[top, "lfc_mean"]) == sign(raw[top])), 0.9)  # positive = higher in cells.1
  expect_gt(cor(de[names(raw), "lfc_mean"], raw), 0.8)
  # the rest of the cells by default, and a logical selection, give the same first group
  rest <- regularizedviDE(obj, ident == "0", mode = "vanilla")
  expect_setequal(rownames(rest), rownames(obj))
  expect_error(regularizedviDE(obj, c("nope", c1)), "cells.1 has 1 name\\(s\\) not among the model's cells, e.g. 'nope'")
  expect_error(regularizedviDE(obj, c(TRUE, FALSE)), "cells.1 is a logical vector of length 2; it must have one value per cell \\(80\\)")
  expect_error(regularizedviDE(obj, colnames(obj)), "cells.2 is empty")
})
