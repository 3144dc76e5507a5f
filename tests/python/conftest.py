"""Shared fixtures: a simulated dataset with ground truth and a model trained on it once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# Small models run fastest on one thread, and stay fast when other jobs share the cores.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """Path of a dataset in ../shared/data, or skip the test where it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{name} not found in ../shared/data (real-data tests need the shared folder)")
    return path


def seed_everything(seed: int = 0) -> None:
    import scvi

    torch.manual_seed(seed)
    np.random.seed(seed)
    scvi.settings.seed = seed


@pytest.fixture(scope="session")
def simulated():
    import regularizedvi as rv

    return rv.simulate_counts(n_cells=1500, n_genes=500, n_batches=3, markers_per_type=25, seed=1)


@pytest.fixture(scope="session")
def trained(simulated):
    """batch_key for ambient/dispersion/library plus the batch in the decoder (documented usage)."""
    import regularizedvi as rv

    adata = simulated.copy()
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    model = rv.AmbientRegularizedSCVI(adata)
    model.train(max_epochs=120, enable_progress_bar=False)
    return model
