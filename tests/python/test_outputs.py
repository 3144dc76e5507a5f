"""Downstream outputs: normalized expression, ELBO, samples, corrected counts, DE."""

import numpy as np
import pytest
import torch
from scipy import sparse


def test_normalized_expression_rows_sum_to_library_size(trained):
    ne = trained.get_normalized_expression(library_size=1e4, n_samples=2)
    assert ne.shape == (trained.adata.n_obs, trained.adata.n_vars)
    np.testing.assert_allclose(ne.sum(1).to_numpy(), 1e4, rtol=1e-4)
    assert list(ne.columns) == list(trained.adata.var_names)


def test_normalized_expression_excludes_background(trained):
    """rho / sum(rho): the ambient term must not leak into the profile."""
    trained.module.eval()
    torch.manual_seed(0)  # before the loader's iterator, which draws its seed from torch
    tensors = next(iter(trained._make_data_loader(trained.adata, indices=np.arange(50), shuffle=False)))
    out = trained._posterior_pass(tensors, give_mean=False)[1]
    rho, mu = out["rho"]["X"], out["mu"]["X"]
    assert rho.shape == (50, trained.adata.n_vars)
    torch.manual_seed(0)
    ne = trained.get_normalized_expression(indices=np.arange(50), return_numpy=True)
    np.testing.assert_allclose(ne, (rho / rho.sum(-1, keepdim=True)).numpy(), rtol=1e-5)
    # the background moves the expected counts' profile away from the signal's
    assert not np.allclose(ne, (mu / mu.sum(-1, keepdim=True)).numpy(), rtol=1e-3)
    subset = trained.get_normalized_expression(indices=np.arange(50), gene_list=list(trained.adata.var_names[:10]))
    assert subset.shape == (50, 10)


def test_gene_list_unknown_names_are_an_error_and_columns_keep_feature_order(trained):
    names = list(trained.adata.var_names)
    asked = [names[7], names[2], names[7], names[5]]  # out of order, with a repeat
    for output in (trained.get_normalized_expression, trained.get_foreground_probability):
        got = output(indices=np.arange(5), gene_list=asked)
        assert list(got.columns) == [names[2], names[5], names[7]]  # the features' order
        assert list(output(indices=np.arange(5), gene_list=names[3]).columns) == [names[3]]  # one name
        with pytest.raises(ValueError, match=r"gene_list has 2 name\(s\) that are not features of the "
                                             r"model's data \('nope', 'CD3E'\): names must be among "
                                             r"adata.var_names\."):
            output(gene_list=[names[0], "nope", "CD3E", "nope"])
        with pytest.raises(ValueError, match="gene_list is empty"):
            output(gene_list=[])


def test_feature_mask_names_at_most_five_unknown():
    from regularizedvi.model._utils import feature_mask

    features = np.array(["a", "b", "c"])
    assert feature_mask(features, None) == slice(None)
    np.testing.assert_array_equal(feature_mask(features, ("c", "a")), [True, False, True])
    with pytest.raises(ValueError, match=r"has 7 name\(s\) .*\('u0', 'u1', 'u2', 'u3', 'u4', \.\.\.\): "
                                         r"names must be among X\.$"):
        feature_mask(features, ["a"] + [f"u{i}" for i in range(7)], "X")


def test_transform_batch_changes_the_decoder_covariate(trained):
    a = trained.get_normalized_expression(indices=np.arange(20), transform_batch="batch_0", return_numpy=True)
    b = trained.get_normalized_expression(indices=np.arange(20), transform_batch="batch_2", return_numpy=True)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="not a category"):
        trained.get_normalized_expression(transform_batch="nope")


def test_elbo_reconstruction_and_marginal_ll(trained):
    idx = np.arange(200)
    elbo = float(trained.get_elbo(indices=idx))
    recon = float(trained.get_reconstruction_error(indices=idx)["reconstruction_loss"])
    marginal = float(trained.get_marginal_ll(indices=idx, n_mc_samples=20))
    assert np.isfinite([elbo, recon, marginal]).all()
    # log p(x) >= ELBO (VAEMixin returns the ELBO itself, negative); the NLL alone is below -ELBO.
    assert marginal >= elbo - 1.0
    assert recon <= -elbo


def test_posterior_predictive_matches_data_scale(trained):
    samples = trained.posterior_predictive_sample(indices=np.arange(300), n_samples=3)
    assert samples.shape == (300, trained.adata.n_vars, 3)
    observed = np.asarray(trained.adata.X[:300].sum(1)).ravel()
    predicted = samples.sum(1).mean(1)
    assert np.corrcoef(np.log(observed), np.log(predicted))[0, 1] > 0.8
    assert np.median(predicted / observed) == pytest.approx(1.0, abs=0.15)


def test_ambient_corrected_counts_keep_sparsity_and_never_exceed_observed(trained):
    corrected = trained.get_ambient_corrected_counts(indices=np.arange(100))
    observed = trained.adata.X[:100]
    assert sparse.issparse(corrected)
    assert corrected.shape == observed.shape
    assert (corrected - observed).max() <= 1e-4
    assert (corrected != 0).sum() <= observed.nnz
    removed = 1 - corrected.sum() / observed.sum()
    assert 0.0 < removed < 0.5


def test_de_finds_planted_markers(trained, simulated):
    de = trained.differential_expression(groupby="cell_type", group1="type_0", group2="type_1",
                                         mode="change", delta=0.5)
    markers0 = set(simulated.uns["marker_genes"]["type_0"]) & set(trained.adata.var_names)
    top_up = de.sort_values("lfc_mean", ascending=False).index[: len(markers0)]
    recall = len(markers0 & set(top_up)) / len(markers0)
    print("DE recall of type_0 markers among the top-ranked genes:", recall)
    assert recall >= 0.8
    assert (de.loc[list(markers0), "proba_de"] > 0.8).mean() >= 0.8


def test_de_rejects_batch_correction(trained):
    with pytest.raises(ValueError, match="batch-free"):
        trained.differential_expression(groupby="cell_type", group1="type_0", batch_correction=True)
