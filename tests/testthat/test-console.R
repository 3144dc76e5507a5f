# A quiet console: a fit, DE, a query mapping with label transfer and a multimodal fit print
# none of the Python noise (Lightning's seed line, pandas / torch warnings, scvi-tools' INFO
# lines), checked on the whole output of a fresh R process.

test_that("fits, DE and query mapping print no Python noise", {
  skip_if_no_regularizedvi()
  skip_if_not_installed("SeuratObject")
  script <- tempfile(fileext = ".R")
  on.exit(unlink(script), add = TRUE)
  writeLines(c(
    'suppressMessages(library(regularizedvi))',
    'obj <- SeuratObject::pbmc_small',
    'fit <- RunRegularizedVI(obj, batch = "groups", n.hidden = 8, n.latent = 2, max.epochs = 2,',
    '                        progress = FALSE, accelerator = "cpu")',
    'de <- regularizedviDE(fit, fit$groups == "g1")',
    'dir <- tempfile(); SaveRegularizedVI(fit, dir)',
    'query <- obj; query$groups <- paste0("q_", query$groups)',
    'mapped <- MapRegularizedVIQuery(query, dir, max.epochs = 2, progress = FALSE, accelerator = "cpu",',
    '                                transfer = "RNA_snn_res.1", reference.object = fit)',
    'adt <- matrix(rpois(10 * ncol(obj), 5) + 1, 10, dimnames = list(paste0("p", 1:10), colnames(obj)))',
    'obj[["ADT"]] <- SeuratObject::CreateAssayObject(counts = Matrix::Matrix(adt, sparse = TRUE))',
    'multi <- RunRegularizedMultimodalVI(obj, batch = "groups", n.hidden = 8, n.latent = 2,',
    '                                    max.epochs = 2, progress = FALSE, accelerator = "cpu")',
    'att <- getModalityAttribution(multi)',
    'cat("finished\\n")'), script)
  rscript <- file.path(R.home("bin"), "Rscript")
  env <- c(paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep)),
           paste0("RETICULATE_PYTHON=", Sys.getenv("RETICULATE_PYTHON")))
  out <- suppressWarnings(system2(rscript, shQuote(script), stdout = TRUE, stderr = TRUE, env = env))
  text <- paste(out, collapse = "\n")
  expect_match(text, "finished", fixed = TRUE)
  for (noise in c("Seed set to", "FutureWarning", "not writable", "UserWarning", "INFO", "Traceback")) {
    expect_false(grepl(noise, text, fixed = TRUE), label = paste0("'", noise, "' in the output:\n", text))
  }
})
