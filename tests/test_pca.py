#!/usr/bin/python3
"""test_pca.py - `cnnscope embed --method pca` against NumPy and scikit-learn.

1. Exact method (few features): on data with well-separated variances, the printed explained
   variance and ratio match NumPy's eigen-decomposition of the covariance (ddof 1) and
   scikit-learn's PCA(svd_solver='full') to 1e-4 (relative), and the projections in the CSV
   match scikit-learn's transform column by column up to sign (so the components do).
2. Randomised method (wide features, D = 600 > 256): the same checks against the exact answer,
   with the tolerances of a converged randomised SVD (1e-4 on the ratios, projections to 1e-3).
3. Determinism: two runs with 1 and 2 threads give byte-identical CSVs.
"""
import csv
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vis_test_data import CNNSCOPE, WORK, Checker, run  # noqa: E402

from sklearn.decomposition import PCA  # noqa: E402


def make_data(rng, n, d, spectrum):
    """n x d data whose covariance has the given leading variances along random directions."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = np.full(d, 0.05)
    scales[:len(spectrum)] = np.sqrt(spectrum)
    z = rng.normal(size=(n, d)) * scales
    return (z @ q.T + rng.normal(size=d) * 3).astype(np.float32)


def parse_pca(out):
    method = re.search(r"^pca \((\w+)\)", out, re.M)
    rows = re.findall(r"^\s+(\d+)\s+([0-9.eE+-]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", out, re.M)
    return (method.group(1) if method else None,
            np.array([float(r[1]) for r in rows]), np.array([float(r[2]) for r in rows]))


def read_xy(path, dims):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader]
    cols = ["x", "y", "z"][:dims] if dims <= 3 else ["c%d" % i for i in range(dims)]
    return header, np.array([[float(r[1 + c]) for c in range(dims)] for r in rows])


def compare(c, name, x, dims, out, csv_path, expect_method, rtol_var, tol_proj):
    method, var, ratio = parse_pca(out)
    c.check(method == expect_method, "%s: method %s (expected %s)" % (name, method, expect_method))
    x64 = x.astype(np.float64)
    cov = np.cov(x64, rowvar=False, ddof=1)
    w = np.sort(np.linalg.eigvalsh(cov))[::-1][:dims]
    total = np.trace(cov)
    sk = PCA(n_components=dims, svd_solver="full").fit(x64)
    c.check(len(var) == dims, "%s: %d explained-variance lines printed, expected %d" % (name, len(var), dims))
    if len(var) != dims:
        return
    rel_np = np.max(np.abs(var - w) / w)
    rel_sk = np.max(np.abs(var - sk.explained_variance_) / sk.explained_variance_)
    c.check(rel_np <= rtol_var, "%s: explained variance vs NumPy eigh, max relative error %.2g <= %g"
            % (name, rel_np, rtol_var))
    c.check(rel_sk <= rtol_var, "%s: explained variance vs scikit-learn, max relative error %.2g <= %g"
            % (name, rel_sk, rtol_var))
    ratio_err = np.max(np.abs(ratio - sk.explained_variance_ratio_))
    c.check(ratio_err <= 1e-4, "%s: explained variance ratio vs scikit-learn, max error %.2g <= 1e-4"
            % (name, ratio_err))
    c.check(abs(ratio.sum() - w.sum() / total) <= 1e-4, "%s: cumulative ratio %.6f vs NumPy %.6f"
            % (name, ratio.sum(), w.sum() / total))
    header, y = read_xy(csv_path, dims)
    c.check(header[0] == "index" and header[-3:] == ["label", "class", "path"],
            "%s: CSV header %s" % (name, header))
    ref = sk.transform(x64)
    worst = 0.0
    for k in range(dims):
        sign = 1.0 if np.dot(y[:, k], ref[:, k]) >= 0 else -1.0
        err = np.max(np.abs(sign * y[:, k] - ref[:, k])) / np.max(np.abs(ref[:, k]))
        worst = max(worst, err)
    c.check(worst <= tol_proj, "%s: projections vs scikit-learn up to sign, max relative error %.2g <= %g"
            % (name, worst, tol_proj))


def main():
    c = Checker("test_pca")
    os.makedirs(WORK, exist_ok=True)
    rng = np.random.default_rng(5)

    # 1. exact
    x = make_data(rng, 3000, 64, [40, 25, 16, 9, 5])
    f = os.path.join(WORK, "pca-small.npy")
    np.save(f, x)
    out_csv = os.path.join(WORK, "pca-small.csv")
    out, dt = run([CNNSCOPE, "embed", f, "--method", "pca", "--dims", "5", "-o", out_csv, "--threads", "2"])
    print("exact PCA, 3000 x 64 -> 5 (%.2f s)" % dt)
    compare(c, "exact", x, 5, out, out_csv, "exact", 1e-4, 1e-4)
    out1, _ = run([CNNSCOPE, "embed", f, "--method", "pca", "--dims", "5", "-o", out_csv + ".t1", "--threads", "1"])
    c.check(open(out_csv, "rb").read() == open(out_csv + ".t1", "rb").read(),
            "exact: the CSV is identical with 1 and 2 threads")

    # 2. randomised (wide)
    x = make_data(rng, 1500, 600, [60, 30, 12])
    f = os.path.join(WORK, "pca-wide.npy")
    np.save(f, x)
    out_csv = os.path.join(WORK, "pca-wide.csv")
    out, dt = run([CNNSCOPE, "embed", f, "--method", "pca", "--dims", "3", "-o", out_csv, "--threads", "2"])
    print("randomised PCA, 1500 x 600 -> 3 (%.2f s)" % dt)
    compare(c, "randomised", x, 3, out, out_csv, "randomised", 1e-4, 1e-3)
    c.done()


if __name__ == "__main__":
    main()
