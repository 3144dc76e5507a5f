test_that("save and load from R keep the latent exactly, by cell name", {
  skip_if_no_regularizedvi()
  obj <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups"), tiny_fit))
  dir <- tempfile("rvi-model-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(obj, dir)
  expect_true(all(c("model.json", "weights.pt") %in% list.files(dir)))
  expect_error(SaveRegularizedVI(obj, dir), "not empty; pass overwrite=True")
  set.seed(11)
  shuffled <- pbmc()[, sample(colnames(pbmc()))]
  loaded <- LoadRegularizedVI(dir, shuffled)
  expect_identical(loaded$cells, colnames(shuffled))
  expect_identical(getLatent(loaded)[colnames(obj), ],
                   getLatent(getRegularizedVIModel(obj)))
  expect_error(LoadRegularizedVI(tempfile(), pbmc()), "no saved regularizedvi model")
  fewer <- pbmc()[1:100, ]
  expect_error(LoadRegularizedVI(dir, fewer), "lacks 130 of the model's 230 genes")
})

test_that("a Seurat query with new samples maps onto a saved reference", {
  skip_if_no_regularizedvi()
  ref <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups"), tiny_fit))
  dir <- tempfile("rvi-ref-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(ref, dir)
  query <- pbmc()
  query$groups <- paste0("query_", query$groups)
  mapped <- MapRegularizedVIQuery(query, dir, max.epochs = 2, progress = FALSE, accelerator = "cpu")
  emb <- SeuratObject::Embeddings(mapped, "regularizedvi")
  expect_identical(dim(emb), c(80L, 4L))
  expect_identical(rownames(emb), colnames(query))
  expect_true("MapRegularizedVIQuery.RNA" %in% command_names(mapped))
  expect_identical(names(getAmbientProfile(mapped)), c("g1", "g2", "query_g1", "query_g2"))
  # No new category: frozen reference used as it is, equal to the reference latent.
  expect_message(same <- MapRegularizedVIQuery(pbmc(), dir, max.epochs = 2, progress = FALSE,
                                               accelerator = "cpu"), "no new category")
  expect_equal(SeuratObject::Embeddings(same, "regularizedvi"),
               SeuratObject::Embeddings(ref, "regularizedvi"), tolerance = 1e-6)
  missing_col <- pbmc()
  missing_col$groups <- NULL
  expect_error(MapRegularizedVIQuery(missing_col, dir), "'groups' \\(categorical covariate\\) not found")
})

test_that("a reference with labels maps a query that has none through a placeholder label", {
  skip_if_no_regularizedvi()
  obj <- pbmc()
  obj$lab <- as.character(obj$letter.idents)
  ref <- do.call(RunRegularizedVI, c(list(obj, batch = "groups", labels = "lab", ambient.adversary = 2),
                                     tiny_fit))
  dir <- tempfile("rvi-ref-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(ref, dir)
  query <- pbmc()
  query$groups <- paste0("query_", query$groups)
  expect_error(MapRegularizedVIQuery(query, dir),
               "set up with labels = \"lab\".*no metadata column 'lab'.*obj\\$lab <- \"unknown\"")
  query$lab <- "unknown"
  mapped <- MapRegularizedVIQuery(query, dir, max.epochs = 2, progress = FALSE, accelerator = "cpu")
  expect_identical(rownames(SeuratObject::Embeddings(mapped, "regularizedvi")), colnames(query))
  py <- getRegularizedVIModel(mapped, "regularizedvi")$py
  expect_identical(reticulate::py_to_r(py$module$n_adversary_labels), 3L)  # A, B and the placeholder
})

test_that("an SCE query maps onto a reference trained on part of kang", {
  skip_if_no_regularizedvi()
  sce <- read_kang()
  ref_cells <- sce$sample_id %in% c("ctrl101", "stim101")
  reference <- sce[, ref_cells]
  # Drop the query's samples from the levels: otherwise the reference keeps them as
  # (unused) categories and the query brings nothing new.
  reference$sample_id <- droplevels(reference$sample_id)
  ref <- do.call(runRegularizedVI, c(list(reference, batch = "sample_id"), tiny_fit))
  dir <- tempfile("rvi-kang-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(ref, dir)
  query <- sce[, !ref_cells]
  mapped <- mapRegularizedVIQuery(query, dir, max.epochs = 2, progress = FALSE, accelerator = "cpu")
  latent <- SingleCellExperiment::reducedDim(mapped, "regularizedvi")
  expect_identical(rownames(latent), colnames(query))
  expect_true(all(is.finite(latent)))
  expect_identical(names(getAmbientProfile(mapped)), c("ctrl101", "stim101", "ctrl107", "stim107"))
  expect_error(mapRegularizedVIQuery(pbmc(), dir), "needs a SingleCellExperiment")
})

test_that("a damaged or foreign model.json is one R error naming the file", {
  skip_if_no_regularizedvi()
  obj <- do.call(RunRegularizedVI, c(list(pbmc(), batch = "groups"), tiny_fit))
  dir <- tempfile("rvi-damaged-")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  SaveRegularizedVI(obj, dir)
  file <- file.path(dir, "model.json")
  good <- readChar(file, file.size(file), useBytes = TRUE)
  cases <- list(
    truncated = list(substr(good, 1, nchar(good) %/% 2), "not valid JSON"),
    empty = list("", "not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    text = list("this is not json", "not valid JSON: Expecting value"),
    array = list("[1, 2, 3]", "no model registry or gene names in it"),
    foreign = list('{"name": "another tool", "var_names": ["a"]}', "no model registry or gene names in it"),
    binary = list(as.raw(c(0xff, 0xfe, 0x00, 0x81, 0x7b)), "not valid JSON")
  )
  for (name in names(cases)) {
    content <- cases[[name]][[1]]
    if (is.raw(content)) writeBin(content, file) else writeLines(content, file, sep = "")
    for (call in list(function() LoadRegularizedVI(dir, pbmc()),
                      function() MapRegularizedVIQuery(pbmc(), dir, max.epochs = 2, progress = FALSE))) {
      err <- tryCatch(call(), error = identity)
      msg <- conditionMessage(err)
      expect_match(msg, paste0("^'", file, "' is damaged or not a regularizedvi model \\("), info = name)
      expect_match(msg, cases[[name]][[2]], fixed = TRUE, info = name)
      expect_match(msg, "Save the model again with SaveRegularizedVI()", fixed = TRUE, info = name)
      expect_false(grepl("Traceback|File \"|JSONDecodeError|py_last_error", msg), info = name)
    }
  }
  # A damaged weights file: the Python error arrives as one short R error.
  writeLines(good, file, sep = "")
  writeBin(as.raw(1:64), file.path(dir, "weights.pt"))
  err <- tryCatch(LoadRegularizedVI(dir, pbmc()), error = identity)
  expect_match(conditionMessage(err), "^Loading the model failed: ")
  expect_false(grepl("Traceback|py_last_error", conditionMessage(err)))
})
