"""Simulated mix of UMI droplet batches and plate-based read-count batches (bench only).

No real read-count (Smart-seq2 / Fluidigm C1) data set is available offline, so this
simulates what sets them apart from UMI data (issue 14):

* UMI batches (``tech = "umi"``): ``n_umi_batches`` x ``umi_cells`` cells, ~3,000 counts per
  cell, inverse dispersion per gene log-uniform in ``umi_theta`` (mild overdispersion),
  2-8 % ambient RNA;
* plate batches (``tech = "plate"``): ``n_plate_batches`` x ``plate_cells`` cells (few), tens
  of thousands of counts per cell (read counts: each molecule amplified), strong
  overdispersion (theta per gene log-normal around ``plate_theta``, ~0.3-1), a per-gene
  multiplicative bias shared by the plate protocol (full-length coverage: gene length,
  GC) and optionally zero inflation (``plate_dropout``: a fraction of entries lost).

Cell types (``obs.cell_type``) are shared by all batches, in batch-specific proportions.
``python bench/sim_plate.py`` prints a summary of the simulated data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from regularizedvi.simulate import log_uniform, marker_profiles


def simulate_plate_mix(
    n_genes: int = 1000,
    n_cell_types: int = 6,
    n_umi_batches: int = 3,
    umi_cells: int = 500,
    n_plate_batches: int = 3,
    plate_cells: int = 80,
    umi_depth: float = 3000.0,
    plate_depth: float = 40000.0,
    umi_theta: tuple[float, float] = (3.0, 30.0),
    plate_theta: float = 0.5,
    plate_bias_sd: float = 0.6,
    plate_dropout: float = 0.0,
    markers_per_type: int = 30,
    marker_fold: float = 6.0,
    seed: int = 0,
):
    import anndata

    rng = np.random.default_rng(seed)
    base = np.exp(rng.normal(0.0, 1.4, n_genes))
    markers = [rng.choice(n_genes, markers_per_type, replace=False) for _ in range(n_cell_types)]
    profiles = marker_profiles(base, markers, marker_fold)  # types x genes
    plate_bias = np.exp(rng.normal(0.0, plate_bias_sd, n_genes))
    theta_umi = log_uniform(rng, umi_theta, n_genes)
    theta_plate = np.exp(rng.normal(np.log(plate_theta), 0.4, n_genes))

    blocks, obs = [], []
    batches = [("umi", f"umi{b}", umi_cells) for b in range(n_umi_batches)]
    batches += [("plate", f"plate{b}", plate_cells) for b in range(n_plate_batches)]
    for b, (tech, name, n) in enumerate(batches):
        props = rng.dirichlet(np.full(n_cell_types, 3.0))
        types = rng.choice(n_cell_types, n, p=props)
        signal = profiles[types]
        if tech == "umi":
            depth = np.exp(rng.normal(np.log(umi_depth) + rng.uniform(-0.3, 0.3), 0.35, n))
            soup = props @ profiles
            c = rng.uniform(0.02, 0.08)
            mean = depth[:, None] * ((1 - c) * signal + c * soup[None, :])
            theta = theta_umi
        else:
            depth = np.exp(rng.normal(np.log(plate_depth) + rng.uniform(-0.3, 0.3), 0.6, n))
            s = signal * plate_bias[None, :]
            mean = depth[:, None] * s / s.sum(1, keepdims=True)
            theta = theta_plate
        x = rng.negative_binomial(theta[None, :], theta[None, :] / (theta[None, :] + mean)).astype(np.float32)
        if tech == "plate" and plate_dropout > 0:
            x[rng.random(x.shape) < plate_dropout] = 0
        blocks.append(x)
        obs.append(pd.DataFrame({"batch": name, "tech": tech, "cell_type": [f"type{t}" for t in types],
                                 "true_library": depth}))
    X = np.vstack(blocks)
    obs = pd.concat(obs, ignore_index=True)
    obs.index = [f"cell{i}" for i in range(len(obs))]
    for col in ("batch", "tech", "cell_type"):
        obs[col] = obs[col].astype("category")
    keep_cells = X.sum(1) > 0
    keep_genes = (X[keep_cells] > 0).sum(0) > 0
    adata = anndata.AnnData(sparse.csr_matrix(X[keep_cells][:, keep_genes]), obs=obs[keep_cells])
    adata.var_names = [f"gene{g}" for g in np.flatnonzero(keep_genes)]
    adata.var["theta_umi"] = theta_umi[keep_genes]
    adata.var["theta_plate"] = theta_plate[keep_genes]
    adata.var["plate_bias"] = plate_bias[keep_genes]
    adata.uns["simulation"] = {"plate_theta": plate_theta, "plate_dropout": plate_dropout,
                               "plate_depth": plate_depth, "umi_depth": umi_depth, "seed": seed}
    return adata


if __name__ == "__main__":
    a = simulate_plate_mix()
    tot = np.asarray(a.X.sum(1)).ravel()
    print(a)
    print(pd.DataFrame({"batch": a.obs["batch"], "total": tot}).groupby("batch", observed=True)["total"]
          .describe()[["count", "50%"]])
    x = a.X.toarray()
    for tech in ("umi", "plate"):
        m = a.obs["tech"].to_numpy() == tech
        print(tech, "zero fraction", round(float((x[m] == 0).mean()), 3))
