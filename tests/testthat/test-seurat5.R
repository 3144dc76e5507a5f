# Seurat 5 objects: Assay5, split counts layers. These run on the Seurat 5 stack only
# (SeuratObject >= 5); the Seurat 4 stack has no Assay5.

test_that("v4-style and v5 assays give identical AnnData and identical embeddings", {
  skip_if_not_seurat5()
  skip_if_no_regularizedvi()
  v4 <- pbmc()
  v5 <- pbmc5()
  expect_s4_class(v4[["RNA"]], "Assay")
  expect_false(methods::is(v4[["RNA"]], "Assay5"))
  expect_s4_class(v5[["RNA"]], "Assay5")
  cols <- c("groups", "RNA_snn_res.0.8", "letter.idents")
  a4 <- as.AnnData(v4, obs.columns = TRUE, categorical = cols)
  a5 <- as.AnnData(v5, obs.columns = TRUE, categorical = cols)
  x4 <- csr_arrays(a4)
  expect_identical(csr_arrays(a5), x4)
  # and they are the counts: the CSR of cells x genes is the CSC of genes x cells
  counts <- layer_data(v4, "counts")
  expect_identical(x4$indptr, counts@p)
  expect_identical(x4$indices, counts@i)
  expect_identical(x4$data, counts@x)
  expect_identical(x4$obs, colnames(v4))
  expect_identical(x4$var, rownames(v4))
  for (col in cols) expect_identical(categories(a5, col), categories(a4, col), info = col)
  e4 <- do.call(RunRegularizedVI, c(list(v4, batch = "groups", seed = 3), tiny_fit))
  e5 <- do.call(RunRegularizedVI, c(list(v5, batch = "groups", seed = 3), tiny_fit))
  expect_identical(SeuratObject::Embeddings(e5, "regularizedvi"),
                   SeuratObject::Embeddings(e4, "regularizedvi"))
})

test_that("split layers (2 and 3, uneven, shuffled cells) give one embedding in object order", {
  skip_if_not_seurat5()
  skip_if_no_regularizedvi()
  set.seed(5)
  obj <- pbmc5()
  obj <- obj[, sample(colnames(obj))]
  obj$three <- sample(rep(c("a", "b", "c"), c(10, 25, 45)))
  for (column in c("groups", "three")) {
    split <- split_rna(obj, column)
    groups <- unique(obj[[column, drop = TRUE]])
    expect_setequal(SeuratObject::Layers(split[["RNA"]], search = "counts"), paste0("counts.", groups))
    expect_message(
      a <- do.call(RunRegularizedVI, c(list(split), tiny_fit)),
      paste0("Using the counts layer of each cell as the batch \\(", length(groups), " layers: ",
             ".*column 'counts_layer'\\)"))
    b <- do.call(RunRegularizedVI, c(list(obj, batch = column), tiny_fit))
    emb <- SeuratObject::Embeddings(a, "regularizedvi")
    expect_identical(rownames(emb), colnames(obj), info = column)
    # the same model as on the joined counts with the split column as batch
    expect_identical(emb, SeuratObject::Embeddings(b, "regularizedvi"), info = column)
    expect_identical(getRegularizedVIModel(a)$setup_args$batch_key, "counts_layer")
    # the AnnData: every count, in object order; the layer as a categorical
    expect_identical(csr_arrays(as.AnnData(split)), csr_arrays(as.AnnData(obj)), info = column)
    expect_identical(categories(as.AnnData(split, categorical = "counts_layer"), "counts_layer"),
                     categories(as.AnnData(obj, categorical = column), column), info = column)
  }
})

test_that("metadata travels with the cells of the layers used", {
  skip_if_not_seurat5()
  skip_if_no_regularizedvi()
  set.seed(6)
  split <- split_rna(pbmc5()[, sample(colnames(pbmc()))], "groups")
  g1 <- colnames(split)[split$groups == "g1"]
  adata <- as.AnnData(split, layer = "counts.g1", obs.columns = TRUE)
  expect_identical(as.character(reticulate::py_to_r(adata$obs_names$tolist())), g1)
  expect_identical(py_counts(adata), layer_data(split, "counts.g1")[, g1])
  expect_equal(as.numeric(reticulate::py_to_r(obs_col(adata, "nCount_RNA")$to_numpy())),
               unname(split$nCount_RNA[g1]))
  expect_identical(categories(adata, "letter.idents")$codes,
                   as.integer(split$letter.idents[g1]) - 1L)
  expect_identical(as.character(reticulate::py_to_r(obs_col(adata, "counts_layer")$tolist())),
                   rep("g1", length(g1)))
  # several named layers: their cells, in object order
  both <- as.AnnData(split, layer = c("counts.g2", "counts.g1"))
  expect_identical(csr_arrays(both), csr_arrays(as.AnnData(split)))
  # one layer: fit and embed its cells only
  one <- do.call(RunRegularizedVI, c(list(split, layer = "counts.g1"), tiny_fit))
  expect_identical(rownames(SeuratObject::Embeddings(one, "regularizedvi")), g1)
  out <- AddNormalizedExpression(one, features = c("MS4A1", "CD79B"))
  expect_s4_class(out[["RVI"]], "Assay5")
  expect_identical(dimnames(layer_data(out, "data", "RVI")), list(c("MS4A1", "CD79B"), g1))
})

test_that("a model fit on split layers saves and loads on the split object", {
  skip_if_not_seurat5()
  skip_if_no_regularizedvi()
  split <- split_rna(pbmc5(), "groups")
  fit <- suppressMessages(do.call(RunRegularizedVI, c(list(split), tiny_fit)))
  dir <- tempfile("rvi-split-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(fit, dir)
  loaded <- LoadRegularizedVI(dir, split)
  expect_identical(getLatent(loaded), getLatent(getRegularizedVIModel(fit)))
  expect_error(LoadRegularizedVI(dir, pbmc5()),
               "'counts_layer' \\(categorical covariate\\) not found.*split the object's counts layers")
})

test_that("v5 assays without raw counts, SCT assays and mismatched layers are refused clearly", {
  skip_if_not_seurat5()
  obj <- pbmc5()
  data_only <- obj
  suppressWarnings(data_only[["LOG"]] <- SeuratObject::CreateAssay5Object(data = layer_data(obj, "data")))
  expect_error(as.AnnData(data_only, assay = "LOG"),
               paste0("Seurat assay 'LOG' has no layer 'counts' (layers: data). It holds no raw counts ",
                      "(no 'counts' layer): regularizedvi needs raw UMI counts"), fixed = TRUE)
  expect_error(RunRegularizedVI(obj, layer = "counts.nope"),
               "Seurat assay 'RNA' has no layer 'counts.nope' \\(layers: [a-z., ]+\\)\\. Pass `layer`")
  expect_error(as.AnnData(obj, layer = "data"), "layer 'data' contains non-integer values")
  # layers with different genes are not padded with zeros
  split <- split_rna(obj, "groups")
  m <- layer_data(split, "counts.g1")
  split[["RNA"]]$counts.g1 <- NULL
  split[["RNA"]]$counts.g1 <- m[-(1:5), ]
  expect_error(as.AnnData(split), "layers 'counts.g2' and 'counts.g1' hold different genes \\(230 vs 225\\)")
  # a metadata column that would be overwritten
  clash <- split_rna(obj, "groups")
  clash$counts_layer <- "x"
  expect_error(as.AnnData(clash), "already has a column 'counts_layer'")
  skip_if_not_seurat5_full()
  sct <- suppressMessages(suppressWarnings(Seurat::SCTransform(pbmc(), verbose = FALSE)))
  expect_error(RunRegularizedVI(sct, assay = "SCT"),
               "Seurat assay 'SCT' is an SCTransform assay: its counts are SCTransform's corrected counts")
  expect_error(RunRegularizedVI(sct, assay = "SCT"), "(usually assay = \"RNA\")", fixed = TRUE)
})

test_that("the zero-gene fix on split layers is code that works", {
  skip_if_not_seurat5()
  obj <- pbmc5()
  counts <- layer_data(obj, "counts")
  counts["MS4A1", ] <- 0
  obj <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = counts, meta.data = obj[[]]))
  split <- split_rna(obj, "groups")
  err <- conditionMessage(tryCatch(RunRegularizedVI(split), warning = identity))
  expect_match(err, "layers 'counts.g2', 'counts.g1' has 1 gene(s) with zero total counts (e.g. 'MS4A1')",
               fixed = TRUE)
  features <- eval(parse(text = suggested_code(err, "pass features = ")), list(obj = split))
  expect_identical(features, setdiff(rownames(split), "MS4A1"))
  skip_if_no_regularizedvi()
  expect_identical(reticulate::py_to_r(as.AnnData(split, features = features)$n_vars), 229L)
})

test_that("RunRegularizedMultimodalVI reads split v5 assays whole", {
  skip_if_not_seurat5()
  skip_if_no_regularizedvi()
  set.seed(8)
  obj <- pbmc5()
  obj[["ADT"]] <- SeuratObject::CreateAssay5Object(counts = adt_counts(colnames(obj)))
  obj <- obj[, sample(colnames(obj))]
  split <- split_rna(obj, "groups")
  expect_message(a <- do.call(RunRegularizedMultimodalVI, c(list(split), tiny_multi)),
                 "Using the counts layer of each cell as the batch \\(2 layers")
  b <- do.call(RunRegularizedMultimodalVI, c(list(obj, batch = "groups"), tiny_multi))
  emb <- SeuratObject::Embeddings(a, "regularizedmultivi")
  expect_identical(rownames(emb), colnames(obj))
  expect_identical(emb, SeuratObject::Embeddings(b, "regularizedmultivi"))
  mdata <- as.MuData(split, obs.columns = "groups")
  expect_identical(mod_counts(mdata, "ADT"), layer_data(obj, "counts", "ADT"))
  expect_identical(mod_counts(mdata, "RNA"), layer_data(obj, "counts", "RNA"))
  # both assays split the same way: the same; split differently: refused
  both <- obj
  suppressWarnings(both[["ADT"]] <- split(both[["ADT"]], f = both$groups))
  both <- split_rna(both, "groups")
  expect_identical(mod_counts(as.MuData(both), "ADT"), layer_data(obj, "counts", "ADT"))
  other <- obj
  suppressWarnings(other[["ADT"]] <- split(other[["ADT"]], f = other$letter.idents))
  other <- split_rna(other, "groups")
  expect_error(as.MuData(other), "Assay 'ADT' is split into layers differently from the first assay")
  # one layer of a split RNA assay: those cells, taken from the unsplit ADT assay too
  g1 <- colnames(obj)[obj$groups == "g1"]
  one <- as.MuData(split, layer = "counts.g1")
  expect_identical(as.character(reticulate::py_to_r(one$obs_names$tolist())), g1)
  expect_identical(mod_counts(one, "ADT"), layer_data(obj, "counts", "ADT")[, g1])
})
