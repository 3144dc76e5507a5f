"""High capacity (512 hidden, 128 latent) trains without NaN or collapse, untuned."""

import numpy as np

import regularizedvi as rv
from regularizedvi import metrics

from conftest import seed_everything


def test_wide_model_is_well_behaved(simulated):
    adata = simulated.copy()
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=512, n_latent=128)
    model.train(max_epochs=25, batch_size=256, enable_progress_bar=False)
    history = model.history["elbo_train"].iloc[:, 0].to_numpy(dtype=float)
    assert np.isfinite(history).all()
    assert history[-1] < history[0]
    latent = model.get_latent_representation()
    assert np.isfinite(latent).all()
    assert (latent.std(0) > 0.05).sum() >= 3  # not collapsed to the prior
    assert metrics.knn_label_purity(latent, adata.obs["cell_type"]) > 0.9
