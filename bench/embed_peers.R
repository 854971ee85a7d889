# embed_peers.R - the R peers of bench/embed_peers.sh: Rtsne and uwot on one feature table.
#
#   Rscript embed_peers.R FEATS.csv OUTDIR THREADS
#
# Writes OUTDIR/<peer>.csv (the embedding, no header) and prints "peer <name> <seconds>".
args <- commandArgs(trailingOnly = TRUE)
x <- as.matrix(read.csv(args[1], header = FALSE))
outdir <- args[2]
threads <- as.integer(args[3])
suppressPackageStartupMessages({ library(Rtsne); library(uwot) })

t <- proc.time()[["elapsed"]]
y <- Rtsne(x, dims = 2, perplexity = 30, theta = 0.5, check_duplicates = FALSE,
           num_threads = threads)$Y
cat(sprintf("peer Rtsne %.3f\n", proc.time()[["elapsed"]] - t))
write.table(y, file.path(outdir, "Rtsne.csv"), sep = ",", row.names = FALSE, col.names = FALSE)

t <- proc.time()[["elapsed"]]
y <- umap(x, n_neighbors = 15, min_dist = 0.1, n_threads = threads, n_sgd_threads = threads)
cat(sprintf("peer uwot %.3f\n", proc.time()[["elapsed"]] - t))
write.table(y, file.path(outdir, "uwot.csv"), sep = ",", row.names = FALSE, col.names = FALSE)
