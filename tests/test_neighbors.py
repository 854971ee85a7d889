#!/usr/bin/python3
"""test_neighbors.py - exact k-NN (blocked GEMM distances), NN-descent, `cnnscope neighbors`,
`cnnscope knn-eval` and the trustworthiness measure, against brute force in NumPy and
scikit-learn.

1. The k-NN graph of 1,500 points (L2 and cosine) equals NumPy's brute force: same indices
   (where distances are not tied to 1e-6), distances to 1e-5 relative.
2. NN-descent on 6,000 clustered points reaches recall >= 0.97 against brute force, and gives
   the same graph with 1 and 2 threads.
3. `cnnscope neighbors F.npy --query I -k 10` prints the brute-force neighbours of row I (never
   I itself), for L2 and cosine; `-o nn.png` writes the figure (query, red line, neighbours).
4. `cnnscope knn-eval` prints the leave-one-out k-NN accuracy that NumPy computes with the same
   rule (majority, ties to the nearest), the number of rows whose neighbours mostly disagree,
   and the most confused pair.
5. Trustworthiness equals sklearn.manifold.trustworthiness to 1e-6.
"""
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vis_test_data import CNNSCOPE, TOOL, WORK, Checker, run  # noqa: E402


def brute_knn(x, k, metric):
    x = x.astype(np.float64)
    if metric == "cosine":
        u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        d = 1.0 - u @ u.T
    else:
        sq = (x * x).sum(1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, 1), d


def write_table(path, x, labels, names):
    np.save(path, x.astype(np.float32))
    base = path[:-4]
    with open(base + ".labels.txt", "w") as f:
        for l in labels:
            f.write("%d %s\n" % (l, names[l]))
    with open(base + ".paths.txt", "w") as f:
        for i in range(len(x)):
            f.write("img/%05d.png\n" % i)


def knn_vote(labels, idx, n_classes):
    pred = np.empty(len(labels), int)
    agree = np.empty(len(labels))
    for i, row in enumerate(idx):
        votes = np.bincount(labels[row], minlength=n_classes)
        best = -1
        for j in row:                      # most votes; ties: the class met first (nearest)
            if best < 0 or votes[labels[j]] > votes[best]:
                best = labels[j]
        pred[i] = best
        agree[i] = votes[labels[i]] / len(row)
    return pred, agree


def main():
    c = Checker("test_neighbors")
    os.makedirs(WORK, exist_ok=True)
    rng = np.random.default_rng(11)

    # 1. exact graph
    n, d, k = 1500, 24, 15
    centers = rng.normal(0, 3, (6, d))
    labels = rng.integers(0, 6, n)
    x = (centers[labels] + rng.normal(size=(n, d))).astype(np.float32)
    f = os.path.join(WORK, "nn.npy")
    names = ["class%d" % i for i in range(6)]
    write_table(f, x, labels, names)
    for metric in ("l2", "cosine"):
        ref_idx, ref_d, full = brute_knn(x, k, metric)
        run([TOOL, "knn", f, k, metric, "exact", f + ".idx.npy", f + ".dist.npy"])
        idx = np.load(f + ".idx.npy").astype(int)
        dist = np.load(f + ".dist.npy").astype(np.float64)
        # an index may differ only where the two candidates are tied in distance
        got_d = np.take_along_axis(full, idx, 1)
        mismatch = (idx != ref_idx) & (np.abs(got_d - ref_d) > 1e-6 * np.maximum(ref_d, 1e-3))
        c.check(not mismatch.any(), "exact %s k-NN graph: %d of %d entries differ from brute force"
                % (metric, int(mismatch.sum()), idx.size))
        rel = np.max(np.abs(dist - ref_d) / np.maximum(ref_d, 1e-3))
        c.check(rel < 1e-5, "exact %s distances: max relative error %.2g < 1e-5" % (metric, rel))
        c.check(not (idx == np.arange(n)[:, None]).any(), "exact %s: no point is its own neighbour" % metric)

    # 2. NN-descent
    n2 = 6000
    lab2 = rng.integers(0, 20, n2)
    x2 = (rng.normal(0, 4, (20, 32))[lab2] + rng.normal(size=(n2, 32))).astype(np.float32)
    f2 = os.path.join(WORK, "nn-descent.npy")
    np.save(f2, x2)
    ref_idx, _, _ = brute_knn(x2, 15, "l2")
    graphs = []
    for threads in ("1", "2"):
        env_out = f2 + ".t" + threads
        os.environ["OMP_NUM_THREADS"] = threads
        run([TOOL, "knn", f2, 15, "l2", "nndescent", env_out + ".idx.npy", env_out + ".dist.npy"])
        graphs.append(np.load(env_out + ".idx.npy").astype(int))
    os.environ.pop("OMP_NUM_THREADS", None)
    hits = sum(len(set(a) & set(b)) for a, b in zip(graphs[0], ref_idx))
    recall = hits / ref_idx.size
    c.check(recall >= 0.97, "NN-descent recall %.4f >= 0.97 (6000 x 32, k = 15)" % recall)
    c.check(np.array_equal(graphs[0], graphs[1]), "NN-descent: same graph with 1 and 2 threads")

    # 3. cnnscope neighbors
    for metric in ("l2", "cosine"):
        ref_idx, ref_d, _ = brute_knn(x, 10, metric)
        for q in (0, 777, n - 1):
            out, _ = run([CNNSCOPE, "neighbors", f, "--query", q, "-k", 10, "--metric", metric])
            rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+([0-9.eE+-]+)\s+(\S+)\s+(\S+)\s*$", out, re.M)
            got = [int(r[1]) for r in rows]
            got_d = np.array([float(r[2]) for r in rows])
            ok = len(rows) == 10 and got == list(ref_idx[q]) and np.allclose(got_d, ref_d[q], rtol=1e-4, atol=1e-5)
            c.check(ok, "neighbors --query %d --metric %s: %s vs brute force %s" % (q, metric, got, list(ref_idx[q])))
            c.check(all(r[4] == "img/%05d.png" % int(r[1]) and r[3] == names[labels[int(r[1])]] for r in rows),
                    "neighbors --query %d: paths and labels printed for each neighbour" % q)
    run([CNNSCOPE, "neighbors", f, "--query", n, "-k", 3], "query out of range", expect=2)
    run([CNNSCOPE, "neighbors", f, "-k", 3], "no query", expect=2)

    # the figure, on real images (the PNG needs image files): a table of 12 rows pointing at
    # images made here
    from PIL import Image
    img_dir = os.path.join(WORK, "nn-images")
    os.makedirs(img_dir, exist_ok=True)
    paths = []
    for i in range(12):
        p = os.path.join(img_dir, "%02d.png" % i)
        Image.fromarray(np.full((32, 32, 3), (20 * i, 0, 255 - 20 * i), np.uint8)).save(p)
        paths.append(p)
    fimg = os.path.join(WORK, "nn-img.npy")
    np.save(fimg, np.arange(12, dtype=np.float32).reshape(12, 1))
    with open(fimg[:-4] + ".paths.txt", "w") as fh:
        fh.write("".join(p + "\n" for p in paths))
    png = os.path.join(WORK, "nn.png")
    if os.path.exists(png):
        os.unlink(png)
    out, _ = run([CNNSCOPE, "neighbors", fimg, "--query", 5, "-k", 4, "-o", png])
    got = [int(m) for m in re.findall(r"^\s*\d+\s+(\d+)\s", out, re.M)]
    c.check(got == [4, 6, 3, 7], "1-D table: neighbours of 5 are %s (expected [4, 6, 3, 7])" % got)
    if c.check(os.path.isfile(png), "neighbors -o wrote %s" % png):
        im = np.asarray(Image.open(png).convert("RGB")).astype(int)
        tile, gap, line = 96, 6, 4
        c.check(im.shape == (tile + 2 * gap, gap + tile + gap + line + gap + 4 * (tile + gap), 3),
                "figure size %s" % (im.shape,))
        red = im[tile // 2, gap + tile + gap + 1]
        c.check(red[0] > 180 and red[1] < 80 and red[2] < 80, "red line between query and neighbours: %s" % red)
        q = im[gap + 10, gap + 10]
        c.check(abs(q[0] - 100) <= 2 and abs(q[2] - 155) <= 2, "query tile shows image 5: %s" % q)
        first = im[gap + 10, gap + tile + gap + line + gap + 10]
        c.check(abs(first[0] - 80) <= 2 and abs(first[2] - 175) <= 2, "first neighbour tile shows image 4: %s" % first)

    # 4. knn-eval
    flip = rng.choice(n, 40, replace=False)
    noisy = labels.copy()
    noisy[flip] = (noisy[flip] + 1) % 6
    write_table(f, x, noisy, names)
    out, _ = run([CNNSCOPE, "knn-eval", f, "-k", 10])
    ref_idx, _, _ = brute_knn(x, 10, "l2")
    pred, agree = knn_vote(noisy, ref_idx, 6)
    acc = 100.0 * np.mean(pred == noisy)
    m = re.search(r"k-NN accuracy: ([0-9.]+) % \((\d+) / (\d+)\)", out)
    c.check(m is not None and int(m.group(2)) == int((pred == noisy).sum()) and int(m.group(3)) == n,
            "knn-eval accuracy %s vs NumPy %.2f %%" % (m.group(0) if m else None, acc))
    m = re.search(r"^(\d+) images whose neighbours mostly disagree", out, re.M)
    n_sus = int((agree < 0.5).sum())
    c.check(m is not None and int(m.group(1)) == n_sus, "knn-eval suspicious count %s vs NumPy %d"
            % (m.group(1) if m else None, n_sus))
    listed = [int(v) for v in re.findall(r"^\s+(\d+)\s+[0-9.]+\s+class\d\s+class\d\s+img/", out, re.M)]
    c.check(len(listed) > 0 and len(set(listed) & set(flip)) >= 0.9 * len(listed),
            "knn-eval lists mostly the flipped labels: %d of %d listed were flipped"
            % (len(set(listed) & set(flip)), len(listed)))
    conf = np.zeros((6, 6), int)
    for t, p in zip(noisy, pred):
        conf[t, p] += 1
    pair = max(((a, b) for a in range(6) for b in range(a + 1, 6)), key=lambda ab: (conf[ab] + conf[ab[::-1]], -ab[0], -ab[1]))
    m = re.search(r"most confused class pairs.*?\n\s+(class\d)\s+<->\s+(class\d)\s+(\d+)", out, re.S)
    c.check(m is not None and (m.group(1), m.group(2)) == (names[pair[0]], names[pair[1]]),
            "most confused pair %s vs NumPy %s" % (m.groups() if m else None, pair))

    # 5. trustworthiness
    from sklearn.manifold import trustworthiness
    y = (x[:, :2] + rng.normal(0, 0.5, (n, 2))).astype(np.float32)
    fy = os.path.join(WORK, "nn-y.npy")
    np.save(fy, y)
    np.save(f, x)
    out, _ = run([TOOL, "trust", f, fy, 10])
    ours = float(out.strip())
    ref = trustworthiness(x.astype(np.float64), y.astype(np.float64), n_neighbors=10)
    c.check(abs(ours - ref) < 1e-6, "trustworthiness %.8f vs scikit-learn %.8f" % (ours, ref))
    c.done()


if __name__ == "__main__":
    main()
