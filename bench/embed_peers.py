#!/usr/bin/python3
"""embed_peers.py - the Python peers of bench/embed_peers.sh: scikit-learn PCA and TSNE and
umap-learn on one feature table, with wall-clock times.

    embed_peers.py FEATS.npy OUTDIR THREADS

Writes OUTDIR/<peer>.npy (the embedding, float32 [N, 2]) and prints one line per peer:
"peer <name> <seconds>". umap-learn is timed twice in one process: cold (the first call pays
numba's compilation) and warm.
"""
import os
import sys
import time

import numpy as np


def main():
    feats, outdir, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    x = np.load(feats).astype(np.float32)
    x = x.reshape(len(x), -1)
    os.makedirs(outdir, exist_ok=True)

    def save(name, y, seconds):
        np.save(os.path.join(outdir, name + ".npy"), np.asarray(y, np.float32))
        print("peer %s %.3f" % (name, seconds), flush=True)

    from sklearn.decomposition import PCA
    t = time.time()
    y = PCA(n_components=2).fit_transform(x)
    save("sklearn-pca", y, time.time() - t)

    from sklearn.manifold import TSNE
    t = time.time()
    y = TSNE(n_components=2, perplexity=30, init="pca", learning_rate="auto", n_jobs=threads,
             random_state=42).fit_transform(x)
    save("sklearn-tsne", y, time.time() - t)

    import umap
    t = time.time()
    y = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=None, n_jobs=threads).fit_transform(x)
    save("umap-learn-cold", y, time.time() - t)
    t = time.time()
    y = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=None, n_jobs=threads).fit_transform(x)
    save("umap-learn-warm", y, time.time() - t)


if __name__ == "__main__":
    main()
