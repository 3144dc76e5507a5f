"""The soup profile from empty droplets of a raw 10x matrix (mbrain_raw_droplets.h5ad)."""

import anndata as ad
import numpy as np
import pytest

import regularizedvi as rv
from conftest import shared_data


@pytest.fixture(scope="module")
def raw():
    return ad.read_h5ad(shared_data("mbrain_raw_droplets.h5ad"))


def _profile(adata, mask):
    sums = np.asarray(adata.X[mask].sum(0)).ravel()
    return sums / sums.sum()


def test_empty_droplets_give_the_soup_not_the_cells_mean(raw):
    totals = np.asarray(raw.X.sum(1)).ravel()
    profile = rv.estimate_ambient_profile(raw, min_counts=10, max_counts=100)
    assert list(profile.index) == list(raw.var_names) and list(profile.columns) == ["all droplets"]
    np.testing.assert_allclose(profile.sum(0).to_numpy(), 1.0)
    assert profile.attrs["n_empty_droplets"]["all droplets"] == int(((totals >= 10) & (totals <= 100)).sum())
    # cells (>= 500 UMIs) and empties are far apart: no barcode between 100 and 500 counts is used
    assert (totals >= 500).sum() == 121 and profile.attrs["n_empty_droplets"]["all droplets"] > 3000
    # held out: the profile of the emptiest droplets (1-9 UMIs) is nearer the estimate than the cells' mean
    emptiest = _profile(raw, (totals >= 1) & (totals < 10))
    cells = _profile(raw, totals >= 500)
    r_estimate = np.corrcoef(profile.iloc[:, 0], emptiest)[0, 1]
    r_cells = np.corrcoef(cells, emptiest)[0, 1]
    print(f"corr with the emptiest droplets: empty-droplet estimate {r_estimate:.3f}, cells' mean {r_cells:.3f}")
    assert r_estimate > 0.93 and r_estimate > r_cells + 0.08


def test_groups_and_a_filtered_matrix(raw):
    totals = np.asarray(raw.X.sum(1)).ravel()
    raw = raw.copy()
    raw.obs["channel"] = np.where(np.arange(raw.n_obs) % 2 == 0, "a", "b")
    profile = rv.estimate_ambient_profile(raw, groupby="channel")
    assert list(profile.columns) == ["a", "b"]
    assert np.corrcoef(profile["a"], profile["b"])[0, 1] > 0.9  # one run split in two: one soup
    filtered = raw[totals >= 500].copy()
    with pytest.raises(ValueError, match=r"Only 0 droplet\(s\) with 1-100 counts in 'all droplets'.*looks like a "
                                         r"filtered matrix.*raw_feature_bc_matrix"):
        rv.estimate_ambient_profile(filtered)
    with pytest.raises(KeyError, match="groupby 'sample'"):
        rv.estimate_ambient_profile(raw, groupby="sample")
