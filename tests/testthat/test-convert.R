test_that("pbmc_small converts exactly: every count, name and factor level", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  counts <- layer_data(obj, "counts")
  adata <- as.AnnData(obj, obs.columns = TRUE, categorical = "groups")
  sp <- reticulate::import("scipy.sparse", convert = FALSE)
  expect_true(reticulate::py_to_r(sp$issparse(adata$X)))
  expect_identical(reticulate::py_to_r(adata$X$format), "csr")
  expect_identical(unlist(reticulate::py_to_r(adata$shape)), c(ncol(counts), nrow(counts)))
  # Dense comparison is affordable at 80 x 230 and independent of the sparse reader.
  dense <- reticulate::py_to_r(adata$X$toarray())
  expect_identical(unname(dense), unname(t(as.matrix(counts))))
  expect_identical(as.character(reticulate::py_to_r(adata$obs_names$tolist())), colnames(obj))
  expect_identical(as.character(reticulate::py_to_r(adata$var_names$tolist())), rownames(obj))
  for (col in c("RNA_snn_res.0.8", "letter.idents", "orig.ident")) {
    cat <- obs_col(adata, col)$cat
    expect_identical(as.character(reticulate::py_to_r(cat$categories$tolist())),
                     levels(obj[[col, drop = TRUE]]), info = col)
    expect_identical(as.integer(reticulate::py_to_r(cat$codes$to_numpy())),
                     as.integer(obj[[col, drop = TRUE]]) - 1L, info = col)
  }
  # A character covariate becomes a categorical of its sorted values.
  expect_identical(as.character(reticulate::py_to_r(obs_col(adata, "groups")$cat$categories$tolist())),
                   c("g1", "g2"))
  expect_equal(as.numeric(reticulate::py_to_r(obs_col(adata, "nCount_RNA")$to_numpy())), unname(obj$nCount_RNA))
})

test_that("the input object is not modified and only requested columns travel", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  before <- obj
  adata <- as.AnnData(obj, categorical = "groups")
  expect_identical(as.character(reticulate::py_to_r(adata$obs$columns$tolist())), "groups")
  expect_identical(obj, before)
  adata0 <- as.AnnData(obj)
  expect_identical(reticulate::py_to_r(adata0$obs$shape), list(80L, 0L))
})

test_that("SCE factors keep unused levels, NA codes and exact sparse counts (kang)", {
  skip_if_no_regularizedvi()
  sce <- read_kang()
  counts <- SummarizedExperiment::assay(sce, "counts")
  adata <- as.AnnData(sce, obs.columns = TRUE)
  back <- py_counts(adata)
  expect_identical(back@Dimnames, counts@Dimnames)
  expect_identical(back@p, counts@p)
  expect_identical(back@i, counts@i)
  expect_identical(back@x, counts@x)
  for (col in c("sample_id", "group_id", "cluster_id")) {
    expect_identical(as.character(reticulate::py_to_r(obs_col(adata, col)$cat$categories$tolist())),
                     levels(sce[[col]]), info = col)
  }
})

test_that("synthetic SCE: unused levels kept, NA allowed only outside covariates", {
  skip_if_no_regularizedvi()
  sce <- synthetic_sce()
  adata <- as.AnnData(sce, obs.columns = c("sample", "label", "score"))
  cat <- obs_col(adata, "sample")$cat
  expect_identical(as.character(reticulate::py_to_r(cat$categories$tolist())),
                   c("s3", "s1", "s2", "unused"))
  expect_identical(as.integer(reticulate::py_to_r(cat$codes$to_numpy())), as.integer(sce$sample) - 1L)
  expect_identical(as.character(reticulate::py_to_r(obs_col(adata, "label")$tolist())), sce$label)
  sce$sample[3] <- NA
  adata <- as.AnnData(sce, obs.columns = "sample")
  expect_identical(reticulate::py_to_r(obs_col(adata, "sample")$cat$codes$to_numpy())[3], -1L)
  expect_error(as.AnnData(sce, categorical = "sample"), "'sample' has 1 NA value.*cell3")
})

test_that("bad input gives clear R errors", {
  skip_if_not_installed("SeuratObject")
  obj <- pbmc()
  expect_error(as.AnnData(obj, layer = "data"), "non-integer values.*raw UMI counts")
  expect_error(as.AnnData(obj, assay = "ADT"), "Assay 'ADT' is not in the Seurat object")
  expect_error(as.AnnData(obj, categorical = "no_such_column"),
               "'no_such_column' \\(categorical covariate\\) not found.*groups")
  no_counts <- suppressWarnings(SeuratObject::CreateSeuratObject(
    SeuratObject::CreateAssayObject(data = layer_data(obj, "data"))))
  expect_error(as.AnnData(no_counts),
               "assay 'RNA' has no layer 'counts' \\(layers: data\\)\\. It holds no raw counts")
  expect_error(as.AnnData(matrix(1:4, 2)), "Expected a Seurat or SingleCellExperiment")
  sce <- synthetic_sce()
  expect_error(as.AnnData(sce, assay.type = "logcounts"), "no assay 'logcounts'.*counts")
  neg <- sce
  SummarizedExperiment::assay(neg, "counts")[1, 1] <- -1
  expect_error(as.AnnData(neg), "negative values")
  empty <- sce
  SummarizedExperiment::assay(empty, "counts")[5, ] <- 0
  expect_warning(kept <- as.AnnData(empty), "1 gene\\(s\\) with zero total counts.*'gene5'.*kept")
  skip_if_no_regularizedvi()
  expect_identical(reticulate::py_to_r(kept$n_vars), nrow(empty))
  expect_error(as.AnnData(sce, continuous = "label"), "must be numeric")
  expect_error(as.AnnData(sce, features = c("gene1", "nope")), "not genes of the object")
})

test_that("logcounts of kang are refused as normalized", {
  sce <- read_kang()
  expect_error(as.AnnData(sce, assay.type = "logcounts"), "assay 'logcounts' contains non-integer")
})

test_that("features subsets genes in the given order", {
  skip_if_no_regularizedvi()
  sce <- synthetic_sce()
  adata <- as.AnnData(sce, features = c("gene3", "gene1"), check.empty = FALSE)
  expect_identical(as.character(reticulate::py_to_r(adata$var_names$tolist())), c("gene3", "gene1"))
  back <- py_counts(adata)
  expect_identical(as.matrix(back), as.matrix(SummarizedExperiment::assay(sce)[c("gene3", "gene1"), ]))
})
