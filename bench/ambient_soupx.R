# SoupX 1.6.2 on one design, channel by channel (called by bench/_ambient_methods.py).
# Usage: Rscript bench/ambient_soupx.R DIR
# DIR holds counts.mtx (genes x cells), genes.txt, cells.csv (cell, sample, cluster) and
# soup_<sample>.csv (one column: the soup profile to use, in gene order). Writes
# corrected.mtx (genes x cells, same order) and rho.csv (sample, rho).
suppressPackageStartupMessages({
  library(Matrix)
  library(SoupX)
})
args <- commandArgs(trailingOnly = TRUE)
dir <- args[[1]]
counts <- as(readMM(file.path(dir, "counts.mtx")), "CsparseMatrix")
genes <- readLines(file.path(dir, "genes.txt"))
cells <- read.csv(file.path(dir, "cells.csv"), stringsAsFactors = FALSE)
rownames(counts) <- genes
colnames(counts) <- cells$cell
corrected <- counts
rhos <- NULL
for (s in unique(cells$sample)) {
  keep <- cells$sample == s
  toc <- counts[, keep, drop = FALSE]
  soup <- read.csv(file.path(dir, paste0("soup_", s, ".csv")))[[1]]
  sc <- SoupChannel(toc, toc, calcSoupProfile = FALSE)
  sc <- setSoupProfile(sc, data.frame(row.names = genes, est = soup / sum(soup),
                                      counts = round(soup / sum(soup) * 1e6)))
  clusters <- setNames(as.character(cells$cluster[keep]), cells$cell[keep])
  sc <- setClusters(sc, clusters)
  # autoEstCont with its defaults; where it finds no markers, what its error message
  # advises (lower tfidfMin / soupQuantile), then rho = 0 (no correction)
  est <- NULL
  for (setting in list(c(1.0, 0.90), c(0.5, 0.5), c(0.3, 0.25))) {
    est <- tryCatch(
      suppressWarnings(autoEstCont(sc, tfidfMin = setting[1], soupQuantile = setting[2],
                                   doPlot = FALSE, forceAccept = TRUE, verbose = FALSE)),
      error = function(e) NULL)
    if (!is.null(est)) break
  }
  if (is.null(est)) {
    message("autoEstCont failed for ", s, " with every setting; rho = 0")
    sc$metaData$rho <- 0
    setting <- c(NA, NA)
  } else {
    sc <- est
  }
  rho <- mean(sc$metaData$rho)
  out <- if (rho > 0) suppressWarnings(adjustCounts(sc, verbose = 0)) else toc
  corrected[, keep] <- out[genes, colnames(toc)]
  rhos <- rbind(rhos, data.frame(sample = s, rho = rho, tfidfMin = setting[1], soupQuantile = setting[2]))
}
writeMM(as(corrected, "CsparseMatrix"), file.path(dir, "corrected.mtx"))
write.csv(rhos, file.path(dir, "rho.csv"), row.names = FALSE)
