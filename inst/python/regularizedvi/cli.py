"""Command line: ``regularizedvi demo`` and ``regularizedvi fit data.h5ad``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _train_and_write(adata, setup_kwargs: dict, output: Path, epochs: int | None, seed: int,
                     labels_key: str | None, batch_label_key: str | None) -> dict:
    import torch

    import regularizedvi as rv
    from regularizedvi import metrics

    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    import scvi

    scvi.settings.seed = seed
    rv.AmbientRegularizedSCVI.setup_anndata(adata, **setup_kwargs)
    model = rv.AmbientRegularizedSCVI(adata)
    print(model, flush=True)
    model.train(max_epochs=epochs)
    latent = model.get_latent_representation()
    np.savetxt(output / "latent.csv", latent, delimiter=",")
    model.get_ambient_profile().to_csv(output / "ambient_profile.csv")
    model.save(output / "model", overwrite=True)

    report = {"n_cells": int(adata.n_obs), "n_features": int(adata.n_vars),
              "epochs": int(model.history["elbo_train"].shape[0]),
              "final_elbo_train": float(model.history["elbo_train"].iloc[-1, 0])}
    if labels_key:
        pca = metrics.pca_embedding(adata.X)
        for name, emb in (("regularizedvi", latent), ("pca", pca)):
            report[f"{name}_label_purity"] = metrics.knn_label_purity(emb, adata.obs[labels_key])
            report[f"{name}_label_silhouette"] = metrics.label_silhouette(emb, adata.obs[labels_key])
            if batch_label_key:
                report[f"{name}_batch_mixing"] = metrics.batch_mixing_entropy(emb, adata.obs[batch_label_key])
    _plot_umap(latent, adata.obs, [k for k in (labels_key, batch_label_key) if k], output / "umap.png")
    return report


def _plot_umap(latent, obs, colour_keys, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import umap
    except ImportError:
        print("UMAP picture skipped: pip install 'regularizedvi[plot]' for matplotlib and umap-learn.")
        return
    xy = umap.UMAP(random_state=0).fit_transform(latent)
    keys = colour_keys or [None]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        if key is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=3)
        else:
            for cat in obs[key].astype("category").cat.categories:
                mask = (obs[key] == cat).to_numpy()
                ax.scatter(xy[mask, 0], xy[mask, 1], s=3, label=str(cat))
            ax.legend(markerscale=4, fontsize=7, frameon=False)
            ax.set_title(key)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _demo(args) -> dict:
    import regularizedvi as rv

    adata = rv.simulate_counts(n_cells=args.cells, n_genes=args.genes, seed=args.seed)
    print(f"Simulated {adata.n_obs} cells x {adata.n_vars} genes, 3 batches with ambient RNA.")
    report = _train_and_write(adata, {"batch_key": "batch", "nn_conditioning_covariate_keys": ["batch"]},
                              Path(args.output), args.epochs,
                              args.seed, "cell_type", "batch")
    learned = rv.AmbientRegularizedSCVI.load(Path(args.output) / "model", adata).get_ambient_profile()
    truth = adata.varm["true_ambient"]
    mean = np.asarray(adata.X.sum(0)).ravel()
    report["ambient_log_pearson"] = [float(np.corrcoef(np.log(learned[c]), np.log(truth[:, j]))[0, 1])
                                     for j, c in enumerate(learned.columns)]
    report["ambient_beyond_mean_pearson"] = [
        float(np.corrcoef(np.log(learned[c] / mean), np.log(truth[:, j] / mean))[0, 1])
        for j, c in enumerate(learned.columns)
    ]
    return report


def _fit(args) -> dict:
    import anndata

    adata = anndata.read_h5ad(args.data)
    setup = {"layer": args.layer, "batch_key": args.batch_key,
             "nn_conditioning_covariate_keys": args.nn_conditioning_key or None}
    return _train_and_write(adata, setup, Path(args.output), args.epochs, args.seed,
                            args.labels_key, args.batch_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regularizedvi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train on simulated data with known ground truth")
    demo.add_argument("--output", default="demo_output")
    demo.add_argument("--cells", type=int, default=3000)
    demo.add_argument("--genes", type=int, default=1000)
    demo.add_argument("--epochs", type=int, default=100)
    demo.add_argument("--seed", type=int, default=0)
    fit = sub.add_parser("fit", help="train on your own .h5ad (raw counts)")
    fit.add_argument("data")
    fit.add_argument("--output", default="regularizedvi_output")
    fit.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    fit.add_argument("--batch-key", default=None)
    fit.add_argument("--nn-conditioning-key", action="append", default=[],
                     help="decoder covariate (technology batch); repeat for several")
    fit.add_argument("--labels-key", default=None, help="cell labels, for the report's scores")
    fit.add_argument("--epochs", type=int, default=None)
    fit.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = _demo(args) if args.command == "demo" else _fit(args)
    out = Path(args.output)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"Wrote latent.csv, umap.png, ambient_profile.csv, model/ and report.json to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
