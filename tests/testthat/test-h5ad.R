# readH5ADCounts(): an h5ad file written by anndata read back as a features x cells
# dgCMatrix and a data.frame of cell metadata, values exactly as stored.

write_h5ad <- function(obs_names = c("c1", "c2", "c3"), with_obs = TRUE) {
  skip_if_no_regularizedvi()
  np <- reticulate::import("numpy", convert = FALSE)
  pd <- reticulate::import("pandas", convert = FALSE)
  sp <- reticulate::import("scipy.sparse", convert = FALSE)
  ad <- reticulate::import("anndata", convert = FALSE)
  x <- np$array(list(c(0, 2.5, 0, 1), c(3, 0, 0, 0), c(0, 0, 7, 1)), dtype = "float32")
  obs <- if (with_obs) {
    pd$DataFrame(reticulate::dict(
      sample = pd$Categorical(c("b", "a", "b")), depth = c(10.5, 3, 8), n = c(4L, 1L, 2L),
      kept = c(TRUE, FALSE, TRUE), note = c("x", "y", "z")), index = obs_names)
  } else {
    pd$DataFrame(index = obs_names)
  }
  adata <- ad$AnnData(X = sp$csr_matrix(x), obs = obs,
                      var = pd$DataFrame(index = c("g1", "g2", "g3", "g4")))
  reticulate::py_set_item(adata$layers, "counts", np$array(list(c(1, 0, 0, 0), c(0, 0, 5, 0), c(0, 2, 0, 0)),
                                                           dtype = "int64"))
  path <- tempfile(fileext = ".h5ad")
  adata$write_h5ad(path)
  path
}

test_that("readH5ADCounts returns X and a layer as features x cells dgCMatrix, obs as a data.frame", {
  path <- write_h5ad()
  got <- readH5ADCounts(path)
  expected <- Matrix::Matrix(c(0, 2.5, 0, 1, 3, 0, 0, 0, 0, 0, 7, 1), nrow = 4, sparse = TRUE,
                             dimnames = list(paste0("g", 1:4), paste0("c", 1:3)))
  expect_s4_class(got$counts, "dgCMatrix")
  expect_identical(as.matrix(got$counts), as.matrix(expected))
  expect_identical(got$counts@x, c(2.5, 1, 3, 7, 1))  # only the nonzeros are stored
  expect_identical(rownames(got$obs), paste0("c", 1:3))
  expect_identical(got$obs$sample, c("b", "a", "b"))
  expect_identical(got$obs$depth, c(10.5, 3, 8))
  expect_identical(got$obs$n, c(4L, 1L, 2L))
  expect_identical(got$obs$kept, c(TRUE, FALSE, TRUE))
  expect_identical(got$obs$note, c("x", "y", "z"))
  layer <- readH5ADCounts(path, layer = "counts")  # stored dense: returned sparse
  expect_s4_class(layer$counts, "dgCMatrix")
  expect_identical(unname(as.matrix(layer$counts)), matrix(c(1, 0, 0, 0, 0, 0, 5, 0, 0, 2, 0, 0), nrow = 4))
  expect_identical(length(layer$counts@x), 3L)
})

test_that("readH5ADCounts without obs columns gives a data.frame of the cells only", {
  got <- readH5ADCounts(write_h5ad(with_obs = FALSE))
  expect_identical(dim(got$obs), c(3L, 0L))
  expect_identical(rownames(got$obs), colnames(got$counts))
})

test_that("readH5ADCounts refuses a missing file, an unknown layer and repeated cell names", {
  expect_error(readH5ADCounts(file.path(tempdir(), "nope.h5ad")), "nope.h5ad' does not exist")
  expect_error(readH5ADCounts(c("a", "b")), "must be the path of one .h5ad file")
  path <- write_h5ad()
  expect_error(readH5ADCounts(path, layer = "raw"), "has no layer 'raw'; its layers: counts \\(layer = NULL reads X\\)")
  expect_error(readH5ADCounts(path, layer = 2), "`layer` must be NULL")
  expect_error(readH5ADCounts(write_h5ad(obs_names = c("c1", "c1", "c3"))),
               "repeated cell names \\(e.g. 'c1'\\); make them unique in Python first \\(adata.obs_names_make_unique\\(\\)\\)")
})
