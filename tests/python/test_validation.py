"""Bad input gets a clear error; good input is never modified or densified."""

import numpy as np
import pytest
from scipy import sparse

import regularizedvi as rv


def _small(simulated):
    return simulated[:200].copy()


def test_normalized_data_is_rejected(simulated):
    adata = _small(simulated)
    adata.X = adata.X.multiply(1 / adata.X.sum(1)).tocsr() * 1e4
    adata.X.data = np.log1p(adata.X.data)
    with pytest.raises(ValueError, match="non-integer values.*raw counts"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata)


def test_negative_values_are_rejected(simulated):
    adata = _small(simulated)
    adata.X = adata.X.toarray() - 1.0
    with pytest.raises(ValueError, match="negative values"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_rejected(simulated, bad):
    adata = _small(simulated)
    adata.X = adata.X.tocsr(copy=True)
    adata.X.data[0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata)


def test_empty_cells_are_rejected(simulated):
    """(Zero-count genes only warn: test_bad_input.py.)"""
    adata = _small(simulated)
    x = adata.X.toarray()
    x[3] = 0
    adata.X = sparse.csr_matrix(x)
    with pytest.raises(ValueError, match=r"1 cell\(s\) have zero total counts.*filter_cells"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata)


def test_missing_layer_and_obs_key(simulated):
    adata = _small(simulated)
    with pytest.raises(KeyError, match="layer 'counts' is not in adata.layers"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, layer="counts")
    with pytest.raises(KeyError, match="column 'sample' is not in adata.obs"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="sample")


def test_nan_in_covariate_is_rejected(simulated):
    adata = _small(simulated)
    adata.obs["batch"] = adata.obs["batch"].astype(object)
    adata.obs.iloc[0, adata.obs.columns.get_loc("batch")] = np.nan
    with pytest.raises(ValueError, match="'batch' has 1 missing value"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")


def test_user_data_is_not_modified_or_densified(simulated):
    adata = _small(simulated)
    adata.layers["counts"] = adata.X.copy()
    before = adata.layers["counts"].copy()
    x_object = adata.layers["counts"]
    rv.AmbientRegularizedSCVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4)
    model.train(max_epochs=1, enable_progress_bar=False)
    assert adata.layers["counts"] is x_object
    assert sparse.issparse(adata.layers["counts"])
    assert (adata.layers["counts"] != before).nnz == 0
    assert set(adata.obs.columns) - set(simulated.obs.columns) <= {
        c for c in adata.obs.columns if c.startswith("_scvi")
    }
