"""How much of the soup's departure from the mean profile can cells reveal at all? (pbmc4k)

Model-free "floor" estimators of the ambient profile from the cells alone, scored like the
model's background in quality.py: corr(log(b/mean), log(soup/mean)) over genes with at
least --min-counts counts. If no estimator built from cells gets clearly above zero, the
one-channel "beyond the mean" figure is limited by the data, not by the model.

Usage: .venv/bin/python bench/ambient_floor.py [--min-counts 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-counts", type=int, default=20)
    args = parser.parse_args()
    import anndata as ad
    from scipy.optimize import brentq
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    a = ad.read_h5ad(data_path("pbmc4k_soupx.h5ad"))
    X = sp.csr_matrix(a.X).astype(np.float64)
    keep = np.asarray(X.sum(0)).ravel() >= args.min_counts
    X, soup = X[:, keep], a.var["soup_fraction"].to_numpy(float)[keep]
    totals = np.asarray(X.sum(1)).ravel()
    mean = np.asarray(X.sum(0)).ravel()
    mean /= mean.sum()

    def score(name: str, b: np.ndarray) -> None:
        ok = (soup > 0) & (b > 0)
        lb, ls, lm = (np.log(v[ok] / v[ok].sum()) for v in (b, soup, mean))
        print(f"{name:28s} genes {ok.sum():5d}  corr(log b, log soup) {np.corrcoef(lb, ls)[0, 1]:.3f}  "
              f"beyond the mean {np.corrcoef(lb - lm, ls - lm)[0, 1]:+.3f}")

    print(f"{X.shape[0]} cells x {X.shape[1]} genes (>= {args.min_counts} counts); "
          f"mean profile vs soup: corr {np.corrcoef(np.log(mean[soup > 0]), np.log(soup[soup > 0]))[0, 1]:.3f}")
    zero_fraction = 1 - np.asarray((X > 0).sum(0)).ravel() / X.shape[0]
    poisson_floor = np.array([brentq(lambda b, f=f: np.mean(np.exp(-b * totals)) - f, 1e-12, 10)
                              if 0 < f < 1 else 0.0 for f in zero_fraction])
    score("Poisson zero-fraction floor", poisson_floor)
    logn = np.log1p((sp.diags(1 / totals) @ X).toarray() * 1e4)
    pcs = PCA(30, random_state=0).fit_transform(logn)
    for k in (5, 10, 20, 40):
        labels = KMeans(k, n_init=3, random_state=0).fit_predict(pcs)
        profiles = np.stack([np.asarray(X[labels == c].sum(0)).ravel() / totals[labels == c].sum()
                             for c in range(k)])
        score(f"min over {k} clusters", profiles.min(0))
        score(f"25% quantile over {k} clusters", np.quantile(profiles, 0.25, axis=0))


if __name__ == "__main__":
    main()
