library(testthat)
library(regularizedvi)

test_check("regularizedvi")
