fit_small <- function() {
  do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups"), tiny_fit))
}

test_that("normalized expression comes back genes x cells, summing to library.size", {
  skip_if_no_regularizedvi()
  obj <- fit_small()
  values <- getNormalizedExpression(obj, library.size = 10)
  expect_identical(dimnames(values), list(rownames(obj), colnames(obj)))
  expect_equal(unname(colSums(values)), rep(10, ncol(obj)), tolerance = 1e-5)
  out <- AddNormalizedExpression(obj)
  expect_true("RVI" %in% SeuratObject::Assays(out))
  expect_identical(SeuratObject::DefaultAssay(out), "RNA")
  data <- SeuratObject::GetAssayData(out, assay = "RVI", slot = "data")
  expect_identical(dimnames(data), dimnames(values))
  expect_equal(unname(colSums(as.matrix(data))), rep(1e4, ncol(obj)), tolerance = 1e-4)
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

test_that("ambient-corrected counts are sparse, same pattern, never above the counts", {
  skip_if_no_regularizedvi()
  obj <- fit_small()
  corrected <- getAmbientCorrectedCounts(obj)
  counts <- SeuratObject::GetAssayData(obj, slot = "counts")
  expect_s4_class(corrected, "dgCMatrix")
  expect_identical(dimnames(corrected), dimnames(counts))
  expect_true(all(corrected[counts == 0] == 0))
  expect_true(all(as.matrix(corrected) <= as.matrix(counts) + 1e-4))
  expect_gt(sum(corrected), 0.5 * sum(counts))
})

test_that("SCE normalized expression becomes an assay", {
  skip_if_no_regularizedvi()
  sce <- synthetic_sce()
  sce <- do.call(runRegularizedVI, c(list(sce, batch = "sample"), tiny_fit))
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
  counts <- as.matrix(SeuratObject::GetAssayData(obj, slot = "counts"))
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
