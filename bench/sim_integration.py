"""Integration on simulated counts with known cell types: a check of the defaults off kang.

``regularizedvi.simulate_counts`` (cell types, per-batch ambient profiles and
contamination, per-gene multiplicative batch effects on a fraction of genes) scored with
scib-metrics exactly as ``quality.py``'s kang part: PCA, scVI (batch_key), regularizedvi
(batch_key) and regularizedvi (batch_key + nn_conditioning_covariate_keys), trained on
the same 90% of cells.

Usage: .venv/bin/python bench/sim_integration.py [--cells 3000] [--epochs 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, quiet, set_threads, write_json  # noqa: E402
from quality import MODELS, pca_embedding, scib_table, split_cells, train_model  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data use seed 0)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    quiet()
    set_threads(args.threads)
    import anndata as ad

    import regularizedvi as rv

    adata = rv.simulate_counts(n_cells=args.cells, n_genes=args.genes, seed=0)
    split = split_cells(adata.n_obs, 0)
    scored = ad.AnnData(obs=adata.obs[["batch", "cell_type"]].copy())
    scored.obsm["PCA"] = pca_embedding(adata)
    names = ["scVI", "regularizedvi", "regularizedvi+nn"]
    for name in names:
        kind, use_nn = MODELS[name]
        model, a, secs = train_model(kind, adata, args.seed, args.epochs, split, batch_key="batch",
                                     nn_keys=["batch"] if use_nn else None, threads=args.threads)
        scored.obsm[name] = model.get_latent_representation(a)
        print(f"[sim] {name}: {secs:.0f} s", flush=True)
    start = time.perf_counter()
    table = scib_table(scored, "batch", "cell_type", ["PCA", *names], "PCA")
    print(f"[sim] scib-metrics in {time.perf_counter() - start:.0f} s")
    print(table.round(3).T.to_string())
    write_json(f"sim_integration_s{args.seed}.json", {
        "metrics": table.T.to_dict(), "settings": vars(args), "environment": environment()})


if __name__ == "__main__":
    main()
