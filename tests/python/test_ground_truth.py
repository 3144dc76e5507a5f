"""Recovery of simulated ground truth: ambient profiles, dispersion, cell types, batches."""

import numpy as np

from regularizedvi import metrics


def test_background_recovers_true_ambient_profile(trained, simulated):
    learned = trained.get_ambient_profile()
    truth = simulated.varm["true_ambient"]
    mean = np.asarray(simulated.X.sum(0)).ravel()
    mean = mean / mean.sum()
    log_corr = [np.corrcoef(np.log(learned[c]), np.log(truth[:, j]))[0, 1] for j, c in enumerate(learned.columns)]
    beyond = [np.corrcoef(np.log(learned[c] / mean), np.log(truth[:, j] / mean))[0, 1]
              for j, c in enumerate(learned.columns)]
    print("ambient log-Pearson per batch", np.round(log_corr, 3), "beyond the mean", np.round(beyond, 3))
    assert min(log_corr) >= 0.9
    # What the background learns beyond the mean profile points the true way.
    assert np.mean(beyond) > 0.2


def test_dispersion_tracks_truth_for_expressed_genes(trained, simulated):
    theta = trained.get_dispersion().mean(1).to_numpy()
    truth = simulated.var["true_theta"].to_numpy()
    expressed = np.asarray(simulated.X.mean(0)).ravel() > 1.0
    corr = np.corrcoef(np.log(theta[expressed]), np.log(truth[expressed]))[0, 1]
    print("log theta Pearson (expressed genes):", round(corr, 3), "n =", expressed.sum())
    assert corr > 0.6


def test_latent_separates_cell_types_and_mixes_batches_better_than_pca(trained, simulated):
    latent = trained.get_latent_representation()
    pca = metrics.pca_embedding(simulated.X)
    labels, batches = simulated.obs["cell_type"], simulated.obs["batch"]
    scores = {
        name: (metrics.knn_label_purity(emb, labels), metrics.batch_mixing_entropy(emb, batches))
        for name, emb in (("model", latent), ("pca", pca))
    }
    print("(label purity, batch mixing):", scores)
    assert scores["model"][0] >= 0.95
    assert scores["model"][1] > scores["pca"][1] + 0.1
