# IntegrateLayers(method = RegularizedVIIntegration): the Seurat 5 integration workflow.

# pbmc_small split by `groups`, through Seurat 5's usual steps up to PCA.
pbmc5_prepared <- function() {
  obj <- split_rna(pbmc5(), "groups")
  obj$letters <- obj$letter.idents  # covariate names cannot hold dots
  obj <- Seurat::NormalizeData(obj, verbose = FALSE)
  obj <- Seurat::FindVariableFeatures(obj, nfeatures = 100, verbose = FALSE)
  suppressWarnings(obj <- Seurat::ScaleData(obj, verbose = FALSE))  # pbmc_small's own scale.data
  suppressWarnings(Seurat::RunPCA(obj, npcs = 10, verbose = FALSE))
}

tiny_integration <- list(n.hidden = 16, n.latent = 4, max.epochs = 2, progress = FALSE,
                         accelerator = "cpu")

test_that("IntegrateLayers mixes the chemistries of pbmc_3chem better than PCA; Seurat's steps work on it", {
  skip_if_not_seurat5_full()
  skip_if_no_regularizedvi()
  obj <- split_rna(read_3chem(per_batch = 400), "chemistry")
  expect_length(SeuratObject::Layers(obj[["RNA"]], search = "counts"), 3)
  obj <- Seurat::NormalizeData(obj, verbose = FALSE)
  obj <- Seurat::FindVariableFeatures(obj, nfeatures = 2000, verbose = FALSE)
  obj <- Seurat::ScaleData(obj, verbose = FALSE)
  obj <- Seurat::RunPCA(obj, npcs = 10, verbose = FALSE)
  obj <- Seurat::IntegrateLayers(obj, method = RegularizedVIIntegration, max.epochs = 15,
                                 progress = FALSE, accelerator = "cpu", verbose = FALSE)
  reduction <- obj[["integrated.rvi"]]
  emb <- SeuratObject::Embeddings(reduction)
  expect_identical(dim(emb), c(1200L, 10L))
  expect_identical(rownames(emb), colnames(obj))
  expect_identical(colnames(emb), paste0("integratedrvi_", 1:10))
  expect_identical(SeuratObject::Key(reduction), "integratedrvi_")
  expect_identical(SeuratObject::DefaultAssay(reduction), "RNA")
  model <- getRegularizedVIModel(obj, "integrated.rvi")
  expect_identical(model$setup_args$batch_key, "counts_layer")
  expect_identical(unlist(model$setup_args$nn_conditioning_covariate_keys), "counts_layer")
  # trained on the variable features IntegrateLayers passed
  expect_setequal(model$genes, SeuratObject::VariableFeatures(obj))
  # layer mixing of each cell's 20 nearest neighbours (1 = random mixing): measured
  # 0.49 (integrated) vs 0.15 (10 PCs)
  mixing_pca <- knn_mixing(SeuratObject::Embeddings(obj, "pca"), obj$chemistry)
  mixing_rvi <- knn_mixing(emb, obj$chemistry)
  expect_lt(mixing_pca, 0.25)
  expect_gt(mixing_rvi, 0.4)
  expect_gt(mixing_rvi - mixing_pca, 0.2)
  # the usual steps on the new reduction
  obj <- Seurat::FindNeighbors(obj, reduction = "integrated.rvi", dims = 1:10, verbose = FALSE)
  obj <- Seurat::FindClusters(obj, resolution = 0.5, verbose = FALSE)
  obj <- suppressWarnings(Seurat::RunUMAP(obj, reduction = "integrated.rvi", dims = 1:10, verbose = FALSE))
  expect_gt(nlevels(obj$seurat_clusters), 3)
  expect_identical(dim(SeuratObject::Embeddings(obj, "umap")), c(1200L, 2L))
  # the model inside the reduction saves and loads on the split object
  dir <- tempfile("rvi-integrated-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(obj, dir, name = "integrated.rvi")
  loaded <- LoadRegularizedVI(dir, obj)
  expect_identical(getLatent(loaded), getLatent(model))
  expect_equal(unname(getLatent(loaded)), unname(emb), tolerance = 1e-6)
})

test_that("the integration method takes metadata covariates, layer choices and groups", {
  skip_if_not_seurat5_full()
  skip_if_no_regularizedvi()
  obj <- pbmc5_prepared()
  expect_identical(attr(RegularizedVIIntegration, "Seurat.method"), "integration")
  # covariates from the metadata the method cannot see otherwise
  out <- do.call(Seurat::IntegrateLayers,
                 c(list(obj, method = RegularizedVIIntegration, new.reduction = "rvi.meta",
                        reduction.key = "rvimeta_", metadata = obj[[]], ambient = "letters",
                        encoder.covariates = "groups", verbose = FALSE), tiny_integration))
  args <- getRegularizedVIModel(out, "rvi.meta")$setup_args
  expect_null(args$batch_key)
  expect_identical(unlist(args$ambient_covariate_keys), "letters")
  expect_identical(unlist(args$nn_conditioning_covariate_keys), "counts_layer")
  expect_identical(unlist(args$encoder_covariate_keys), "groups")
  expect_identical(SeuratObject::Key(out[["rvi.meta"]]), "rvimeta_")
  # the data layers IntegrateLayers passes stand for their counts; one layer = its cells
  one <- do.call(Seurat::IntegrateLayers,
                 c(list(obj, method = RegularizedVIIntegration, layers = "data.g1",
                        metadata = obj[[]], batch = "letters", verbose = FALSE),
                   tiny_integration))
  g1 <- colnames(obj)[obj$groups == "g1"]
  expect_identical(rownames(SeuratObject::Embeddings(one, "integrated.rvi")), g1)
  # the contamination column: the integrated cells' values, by name; NA for the others
  contamination <- one$regularizedvi_contamination
  expect_identical(names(contamination), colnames(obj))
  expect_true(all(is.na(contamination[!colnames(obj) %in% g1])))
  direct <- getContaminationFraction(one, name = "integrated.rvi")
  expect_identical(unname(contamination[g1]), unname(direct[g1]))
  expect_true(all(direct >= 0 & direct <= 1))
  # groups (as in ?writing-integration) replace the layers
  groups <- data.frame(group = obj$letters, row.names = colnames(obj))
  grouped <- do.call(RegularizedVIIntegration, c(list(obj[["RNA"]], assay = "RNA", groups = groups,
                                                      verbose = FALSE), tiny_integration))
  expect_identical(names(grouped), c("integrated.rvi", "regularizedvi_contamination"))
  expect_identical(rownames(grouped$regularizedvi_contamination), colnames(obj))
  model <- SeuratObject::Misc(grouped[[1]], slot = "model")
  expect_identical(names(getAmbientProfile(model)), sort(levels(obj$letters)))
})

test_that("the integration method refuses what it cannot integrate, naming the fix", {
  skip_if_not_seurat5()
  obj <- pbmc5()
  expect_error(RegularizedVIIntegration(obj), "receives an assay from IntegrateLayers\\(\\): call obj <- IntegrateLayers")
  expect_error(RegularizedVIIntegration(obj[["RNA"]], assay = "RNA"),
               "Assay 'RNA' is not split into layers, so there is nothing to integrate: split it first")
  split <- split_rna(obj, "groups")
  expect_error(RegularizedVIIntegration(split[["RNA"]], metadata = split[[]][1:10, ]),
               "`metadata` lacks 70 of the assay's 80 cells")
  expect_error(RegularizedVIIntegration(split[["RNA"]], reduction.key = "bad.key"),
               "`reduction.key` must be letters and digits ending in '_'")
  expect_error(RegularizedVIIntegration(split[["RNA"]], max.epochs = 0), "`max.epochs` must be >= 1, not 0.",
               fixed = TRUE)
  expect_error(RegularizedVIIntegration(split[["RNA"]], layers = "data.nope"),
               "has no layer 'counts.nope'")
  skip_if_not_seurat5_full()
  sct <- suppressMessages(suppressWarnings(Seurat::SCTransform(pbmc(), verbose = FALSE)))
  expect_error(RegularizedVIIntegration(sct[["SCT"]], assay = "SCT"), "is an SCTransform assay")
})

test_that("on the Seurat 4 stack the integration method says it needs Seurat 5", {
  skip_if_not_installed("SeuratObject")
  if (is_seurat5()) skip("Seurat 4 only (SeuratObject < 5); this is the Seurat 5 stack")
  expect_error(RegularizedVIIntegration(pbmc()[["RNA"]]), "needs Seurat >= 5 and SeuratObject >= 5")
})
