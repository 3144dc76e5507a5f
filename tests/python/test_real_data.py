"""Real data from ../shared/data (skipped where absent)."""

import anndata
import numpy as np

import regularizedvi as rv
from regularizedvi import metrics

from conftest import seed_everything, shared_data


def test_pbmc4k_background_tracks_measured_soup():
    adata = anndata.read_h5ad(shared_data("pbmc4k_soupx.h5ad"))
    totals = np.asarray(adata.X.sum(0)).ravel()
    adata = adata[:, np.argsort(-totals)[:2000]].copy()
    adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata)
    model = rv.AmbientRegularizedSCVI(adata)
    model.train(max_epochs=40, enable_progress_bar=False)
    background = model.get_ambient_profile().iloc[:, 0].to_numpy()
    soup = adata.var["soup_fraction"].to_numpy()
    mean = np.asarray(adata.X.sum(0)).ravel() / adata.X.sum()
    keep = soup > 0
    corr = np.corrcoef(np.log10(background[keep]), np.log10(soup[keep]))[0, 1]
    beyond = np.corrcoef(np.log(background[keep] / mean[keep]), np.log(soup[keep] / mean[keep]))[0, 1]
    print(f"pbmc4k: log10 Pearson(background, soup) = {corr:.3f}; beyond the mean profile = {beyond:.3f}")
    assert corr > 0.9
    assert np.isfinite(beyond)


def test_kang_latent_keeps_cell_types():
    adata = anndata.read_h5ad(shared_data("kang_ifnb.h5ad"))
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="sample_id",
                                           nn_conditioning_covariate_keys=["sample_id"])
    model = rv.AmbientRegularizedSCVI(adata)
    model.train(max_epochs=30, enable_progress_bar=False)
    latent = model.get_latent_representation()
    purity = metrics.knn_label_purity(latent, adata.obs["cell_type"])
    mixing = metrics.batch_mixing_entropy(latent, adata.obs["sample_id"])
    print(f"kang: cell-type kNN purity {purity:.3f}, sample mixing {mixing:.3f}")
    assert purity > 0.85
    assert mixing > 0.5
