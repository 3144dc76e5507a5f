"""The pictures of docs/multimodal.md: the SNARE-seq worked example, run end to end.

Trains, on all 10,309 SNARE-seq nuclei (RNA 1677 genes + the 10,000 most detected peaks,
batch_key = library, seed 0, one torch thread), the RNA-only AmbientRegularizedSCVI and
RegularizedMultimodalVI in the configuration of the worked example (core API only), then
writes

  docs/multimodal_snare_umap.png         UMAP of the RNA-only and the joint latent (cell types),
                                         and of the joint latent coloured by library
  docs/multimodal_snare_attribution.png  get_modality_attribution() heatmap (concatenation
                                         model: RNA slice z0-z9, ATAC slice z10-z19)

and prints the scores quoted in the docs (15-NN purity, library mixing) and the timings.

Usage: .venv/bin/python bench/multimodal_snare_docs.py [--epochs 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, quiet, set_threads  # noqa: E402
from multimodal_snare import BATCH, LABEL, load_snare, make_mudata  # noqa: E402

DOCS = REPO_ROOT / "docs"


def umap_of(z, seed: int = 0):
    import umap

    return umap.UMAP(n_neighbors=15, min_dist=0.3, random_state=seed, n_jobs=1).fit_transform(z)


def colours_for(labels):
    import matplotlib.pyplot as plt

    cats = list(labels.cat.categories)
    palette = [plt.get_cmap("tab20")(i) for i in range(20)] + [plt.get_cmap("Dark2")(i) for i in range(8)]
    return cats, [palette[i % len(palette)] for i in range(len(cats))]


def scatter(ax, xy, labels, title):
    cats, colours = colours_for(labels)
    codes = labels.cat.codes.to_numpy()
    order = np.random.default_rng(0).permutation(len(codes))  # no category drawn on top of all others
    ax.scatter(xy[order, 0], xy[order, 1], c=[colours[c] for c in codes[order]], s=0.8, linewidths=0,
               rasterized=True)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_umaps(xy_rna, xy, labels, libs, latent_mode: str, path) -> None:
    """Three UMAP panels and one legend of the cell types, to the right of the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.9))
    scatter(axes[0], xy_rna, labels, "RNA-only (AmbientRegularizedSCVI), cell types")
    scatter(axes[1], xy, labels, f"joint RNA + ATAC ({latent_mode}), cell types")
    scatter(axes[2], xy, libs, "joint RNA + ATAC, coloured by library")
    cats, colours = colours_for(labels)
    handles = [plt.Line2D([], [], marker="o", linestyle="", markersize=4, color=c) for c in colours]
    fig.legend(handles, cats, fontsize=6.5, frameon=False, loc="center left", bbox_to_anchor=(0.865, 0.5),
               ncol=1, handletextpad=0.1, labelspacing=0.25)
    fig.subplots_adjust(left=0.01, right=0.86, bottom=0.02, top=0.92, wspace=0.04)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--latent-mode", default="concatenation")
    parser.add_argument("--kl-warmup", type=int, default=-1,
                        help="n_epochs_kl_warmup; -1: none (KL weight 1 throughout, the package default)")
    parser.add_argument("--save-arrays", default="",
                        help="also write the latents, UMAP coordinates and attribution to this .npz")
    args = parser.parse_args()
    quiet()
    set_threads(1)
    import matplotlib

    matplotlib.use("Agg")

    import regularizedvi as rv
    from regularizedvi.metrics import batch_mixing_entropy, knn_label_purity

    rna, atac = load_snare(0, 10000)
    plan = {"n_epochs_kl_warmup": None if args.kl_warmup < 0 else args.kl_warmup}

    rv.set_seed(0)
    single = rna.copy()
    rv.AmbientRegularizedSCVI.setup_anndata(single, batch_key=BATCH)
    rna_model = rv.AmbientRegularizedSCVI(single)
    t0 = time.perf_counter()
    rna_model.train(max_epochs=args.epochs, plan_kwargs=plan, enable_progress_bar=False)
    t_rna = time.perf_counter() - t0
    z_rna = rna_model.get_latent_representation()

    rv.set_seed(0)
    mdata = make_mudata(rna, atac)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key=BATCH)
    model = rv.RegularizedMultimodalVI(mdata, latent_mode=args.latent_mode)
    t0 = time.perf_counter()
    model.train(max_epochs=args.epochs, plan_kwargs=plan, enable_progress_bar=False)
    t_joint = time.perf_counter() - t0
    z = model.get_latent_representation()
    t0 = time.perf_counter()
    attribution = model.get_modality_attribution()
    t_attr = time.perf_counter() - t0

    labels, libs = rna.obs[LABEL], rna.obs[BATCH]
    for name, emb in (("RNA-only", z_rna), ("joint", z)):
        print(f"{name}: 15-NN purity {knn_label_purity(emb, labels.to_numpy(), 15):.3f}, "
              f"library mixing {batch_mixing_entropy(emb, libs.to_numpy(), 30):.3f}")
    if args.latent_mode == "concatenation":
        for m in ("rna", "atac"):
            zm = model.get_latent_representation(modality=m)
            print(f"  {m} slice: 15-NN purity {knn_label_purity(zm, labels.to_numpy(), 15):.3f}")
    print(f"training: RNA-only {t_rna:.0f} s, joint {t_joint:.0f} s; attribution (all cells) {t_attr:.0f} s")
    norm = attribution.to_numpy() / attribution.to_numpy().max(1, keepdims=True)
    print("attribution / row max:\n" + "\n".join(
        f"  {m}: " + " ".join(f"{v:.2f}" for v in row) for m, row in zip(attribution.index, norm)))
    d_rna = model.module.n_latent_per_modality["rna"]
    if args.latent_mode == "concatenation":
        for m, row in zip(attribution.index, attribution.to_numpy()):
            print(f"  {m} decoder: {row[:d_rna].sum() / row.sum():.0%} of its attribution on the RNA slice")

    xy_rna, xy = umap_of(z_rna), umap_of(z)
    draw_umaps(xy_rna, xy, labels, libs, args.latent_mode, DOCS / "multimodal_snare_umap.png")
    if args.save_arrays:
        np.savez(args.save_arrays, z_rna=z_rna, z=z, xy_rna=xy_rna, xy=xy, attribution=attribution.to_numpy(),
                 labels=labels.to_numpy().astype(str), libraries=libs.to_numpy().astype(str))

    ax = rv.plot_modality_attribution(attribution)
    ax.set_title("SNARE-seq: decoder attribution (row / row max)", fontsize=9)
    if args.latent_mode == "concatenation":
        n = attribution.shape[1]
        ax.axvline(d_rna - 0.5, color="white", linewidth=2)
        ax.set_xlabel(f"latent dimension (z0-z{d_rna - 1}: RNA encoder's slice, z{d_rna}-z{n - 1}: ATAC encoder's slice)")
    ax.figure.tight_layout()
    ax.figure.savefig(DOCS / "multimodal_snare_attribution.png", dpi=90)
    for name in ("multimodal_snare_umap.png", "multimodal_snare_attribution.png"):
        print(f"{name}: {(DOCS / name).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
