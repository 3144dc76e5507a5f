"""The maths of the observation model, checked against closed forms and Monte Carlo."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from regularizedvi import _constants as C
from regularizedvi.module import CountObservationModel, negative_binomial_log_prob


def _observation(**kwargs):
    defaults = dict(n_features=4, n_ambient_cats_per_key=[2], n_scaling_cats_per_key=[],
                    n_dispersion_groups=1, library_log_means=torch.zeros(1), library_log_vars=torch.ones(1))
    defaults.update(kwargs)
    return CountObservationModel(**defaults)


def test_negative_binomial_matches_scipy():
    x = torch.tensor([0.0, 3.0, 17.0])
    mu = torch.tensor([2.0, 5.0, 10.0])
    theta = torch.tensor([0.5, 9.0, 30.0])
    ours = negative_binomial_log_prob(x, mu, theta).numpy()
    p = (theta / (theta + mu)).numpy()
    ref = stats.nbinom.logpmf(x.numpy(), theta.numpy(), p)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_parameters_start_at_prior_means():
    obs = _observation()
    assert obs.dispersion_rate().item() == pytest.approx(C.DISPERSION_RATE_INIT, rel=1e-5)
    assert torch.exp(obs.log_theta_mu).mean().item() == pytest.approx(C.THETA_INIT, rel=1e-5)
    assert obs.feature_scaling_values().mean().item() == pytest.approx(1.0, rel=1e-5)


def test_dispersion_kl_matches_monte_carlo():
    torch.manual_seed(0)
    obs = _observation()
    with torch.no_grad():
        obs.log_theta_mu.copy_(torch.tensor([[1.0], [2.0], [3.0], [0.5]]))
        obs.log_theta_log_sigma.fill_(math.log(0.3))
    analytic = obs.dispersion_kl().item()
    m, s = obs.log_theta_mu.detach(), torch.exp(obs.log_theta_log_sigma.detach())
    t = m + s * torch.randn(200_000, *m.shape)
    log_q = torch.distributions.Normal(m, s).log_prob(t)
    u = torch.exp(-0.5 * t)
    lam = obs.dispersion_rate().detach()
    log_p = torch.log(lam) - lam * u + torch.log(0.5 * u)  # Exponential on u, Jacobian |du/dt|
    mc = (log_q - log_p).mean(0).sum().item()
    assert analytic == pytest.approx(mc, abs=0.02)


@pytest.mark.parametrize("mode", ["profile", "free"])
def test_mean_combines_signal_background_and_scaling(mode):
    obs = _observation(ambient_background=mode)
    profiles = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    obs.init_background(profiles)
    rho = torch.full((2, 4), 0.1)
    library = torch.tensor([[100.0], [10.0]])
    codes = torch.tensor([[1], [0]])
    scale = torch.tensor([[2.0], [0.5]])
    # as the training pass composes it (ModalityVAE.generative)
    mu = obs.mean_from(rho, library, obs.background(codes, scale), obs.feature_scaling(None))
    # profile: s_e = a_e q_e with a_e at the initial fraction; free: the start is the same table
    s = 0.01 * profiles
    torch.testing.assert_close(obs.background_table(), s)
    expected = library * (rho + scale * s[codes[:, 0]]) * obs.feature_scaling_values()
    torch.testing.assert_close(mu, expected)
    assert obs.background_log.shape == ((2, 1) if mode == "profile" else (2, 4))


def test_theta_is_sampled_in_training_and_fixed_at_inference():
    obs = _observation()
    codes = torch.zeros(3, 1, dtype=torch.long)
    a, b = obs.theta(codes, sample=False), obs.theta(codes, sample=False)
    assert torch.equal(a, b)
    torch.manual_seed(0)
    assert not torch.equal(obs.theta(codes, sample=True), a)


@pytest.mark.parametrize("table_size, halves", [(4, False), (1, False), (4, True), (10**6, False)])
def test_sparse_likelihood_sum_equals_dense_sum_and_gradients(monkeypatch, table_size, halves):
    """The CPU likelihood evaluates x-dependent terms on nonzeros only: same sum, same grads.

    Parametrised over the small-count table: counts up to 4 read from it and the rest by
    lgamma; a table of one count; non-integer counts (never read from the table); and a
    table larger than the number of nonzeros (skipped)."""
    from regularizedvi import _constants as C
    from regularizedvi.module._observation import (
        CellDispersion, negative_binomial_cell_sums, negative_binomial_log_prob)

    monkeypatch.setattr(C, "NB_COUNT_TABLE_SIZE", table_size)
    g = torch.Generator().manual_seed(0)
    n, f = 64, 300
    # float64 so that the two summation orders agree to rounding
    mu = (torch.rand(n, f, generator=g, dtype=torch.float64) * 5 + 1e-3).requires_grad_()
    log_theta = (torch.randn(2, f, generator=g, dtype=torch.float64) + 2).requires_grad_()
    groups = torch.randint(0, 2, (n,), generator=g)
    x = torch.poisson(mu.detach(), generator=g) * (torch.rand(n, f, generator=g) < 0.3)
    x[0] = x[-1] = 0.0  # cells whose every count is zero (first, last) still get their dense terms
    x[1, :3] = torch.tensor([40.0, 300.0, 5.0])  # above the table
    assert (x > 4).sum() > 50 and ((x >= 1) & (x <= 4)).sum() > 1000
    if halves:
        x = x * 0.5

    def cell_sums(fn, tables: bool):
        theta = torch.exp(log_theta)
        lgamma_theta = torch.lgamma(theta)
        extra = (groups, theta, lgamma_theta) if tables else ()
        d = CellDispersion(theta[groups], log_theta[groups], lgamma_theta[groups], *extra)
        out = fn(d)
        return out.detach(), torch.autograd.grad(out.sum(), [mu, log_theta])

    dense, g_dense = cell_sums(lambda d: negative_binomial_log_prob(
        x, mu, d.theta, log_theta=d.log_theta, lgamma_theta=d.lgamma_theta).sum(-1), False)
    for tables in (False, True):  # per-cell values, or read from the (groups, features) tables
        sparse, g_sparse = cell_sums(lambda d: negative_binomial_cell_sums(x, mu, d), tables)
        torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-8)
        for a, b in zip(g_sparse, g_dense):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-8)


def test_sparse_likelihood_refuses_unordered_positions():
    from regularizedvi.module._observation import CellDispersion, negative_binomial_cell_sums

    x = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    theta = torch.ones(2, 3)
    d = CellDispersion(theta, torch.zeros(2, 3), torch.zeros(2, 3))
    ordered = negative_binomial_cell_sums(x, torch.ones(2, 3), d, positions=torch.tensor([1, 2, 3]))
    torch.testing.assert_close(ordered, negative_binomial_cell_sums(x, torch.ones(2, 3), d))
    with pytest.raises(ValueError, match="positions must be in ascending order"):
        negative_binomial_cell_sums(x, torch.ones(2, 3), d, positions=torch.tensor([3, 1, 2]))


def test_dense_terms_backward_is_the_derivative():
    """The hand-written backward of the dense likelihood terms against finite differences
    (theta and log theta as independent inputs, so each gradient is checked on its own)."""
    from regularizedvi.module._observation import _DenseTerms

    g = torch.Generator().manual_seed(1)
    mu = (torch.rand(6, 5, generator=g, dtype=torch.float64) * 4 + 0.05).requires_grad_()
    theta = (torch.rand(6, 5, generator=g, dtype=torch.float64) * 3 + 0.2).requires_grad_()
    log_theta = torch.log(theta.detach()).requires_grad_()
    x = torch.poisson(mu.detach(), generator=g)
    assert torch.autograd.gradcheck(lambda m, t, lt: _DenseTerms.apply(x, m, t, lt, 1e-8),
                                    (mu, theta, log_theta))


def test_feature_dropout_rate_scaling_and_repeatability():
    from regularizedvi.nn._layers import FeatureDropout

    drop = FeatureDropout(0.1)
    x = torch.full((400, 2000), 2.0, requires_grad=True)
    torch.manual_seed(3)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.003  # 800k draws: sd of the rate ~3e-4
    keep_rate = 58982 / 65536  # 0.9 to the 16-bit resolution of the mask
    torch.testing.assert_close(y[kept], torch.full((int(kept.sum()),), 2.0 / keep_rate))
    y.sum().backward()  # gradient flows through kept entries only, with the same scale
    torch.testing.assert_close(x.grad, kept.float() / keep_rate)
    assert abs(y.mean().item() - 2.0) < 0.01  # unbiased
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)  # torch.manual_seed makes the mask repeat
    assert not torch.equal(drop(x), y)  # and it changes from call to call
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\), not 1.0"):
        FeatureDropout(1.0)


def test_covariates_shift_normalised_hidden_units_alike_in_every_cell():
    from regularizedvi.nn._layers import MLP, one_hot_concat

    torch.manual_seed(0)
    mlp = MLP(6, 16, n_covariates=3, n_layers=1, n_hidden=16, dropout_rate=0.0,
              activation=torch.nn.Identity)
    x = torch.randn(50, 6) * torch.linspace(0.1, 5, 50)[:, None]  # cells of very different scale
    a = one_hot_concat(torch.zeros(50, 1), [3])
    b = one_hot_concat(torch.full((50, 1), 2.0), [3])
    shift = mlp(x, b) - mlp(x, a)
    weight = mlp.layers[0][1].weight
    gain = C.COVARIATE_WEIGHT_GAIN
    # the category's shift is its own weight column (times the gain), the same in every cell ...
    torch.testing.assert_close(shift, gain * (weight[:, 8] - weight[:, 6]).expand(50, 16))
    # ... and the cell's own part is LayerNormed: zero mean, unit variance over units
    own = mlp(x, a) - gain * weight[:, 6]
    torch.testing.assert_close(own.mean(-1), torch.zeros(50), atol=1e-5, rtol=0)
    torch.testing.assert_close(own.var(-1, unbiased=False), torch.ones(50), atol=1e-3, rtol=0)


def test_covariate_columns_start_like_ordinary_columns_and_learn_faster():
    from regularizedvi.nn._layers import MLP

    torch.manual_seed(0)
    mlp = MLP(60, 32, n_covariates=4, n_hidden=32, dropout_rate=0.0)
    weight = mlp.layers[0][1].weight.detach().clone()
    bound = 1 / math.sqrt(64)  # torch's Linear init over all 64 inputs
    assert weight[:, :60].abs().max() <= bound and weight[:, :60].abs().max() > 0.9 * bound
    effect = C.COVARIATE_WEIGHT_GAIN * weight[:, 60:]
    assert effect.abs().max() <= bound and effect.abs().max() > 0.8 * bound
    # one Adam step moves a stored weight by ~lr whatever its role: the effect moves gain x lr
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    x, c = torch.randn(20, 60), torch.nn.functional.one_hot(torch.arange(20) % 4, 4).float()
    mlp(x, c).pow(2).sum().backward()
    opt.step()
    moved = (mlp.layers[0][1].weight.detach() - weight).abs()
    torch.testing.assert_close(moved[:, 60:].max(), torch.tensor(1e-3), rtol=1e-3, atol=0)
    assert C.COVARIATE_WEIGHT_GAIN == 3.0


@pytest.mark.parametrize("multimodal", [False, True])
def test_loss_is_its_terms_and_the_native_share_penalty_reads_each_cells_total(multimodal):
    """One training-mode forward pass: the native-share penalty is ``K N_n^0.75 sum_f rho_nf``
    with ``N_n`` the cell's total count recomputed from the minibatch's counts (bit for bit),
    and the loss is the mean of reconstruction + KL-weighted KLs + penalties plus the global
    prior / n_obs (multimodal: the non-primary slices' KL times ``secondary_kl_weight``)."""
    import regularizedvi as rv
    from torch.distributions import kl_divergence

    from regularizedvi.data import _keys as K
    from regularizedvi.module._base import standard_normal_like

    torch.manual_seed(0)
    if multimodal:
        mdata = rv.simulate_multiome(n_cells=80, n_genes=30, n_peaks=40, n_batches=2, seed=0)
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"},
                                                batch_key="batch")
        model = rv.RegularizedMultimodalVI(mdata, n_hidden=8, n_latent=2)
    else:
        adata = rv.simulate_counts(n_cells=80, n_genes=30, n_batches=2, markers_per_type=3, seed=0)
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
        model = rv.AmbientRegularizedSCVI(adata, n_hidden=8, n_latent=2)
    module = model.module
    assert module.native_share_penalty == C.NATIVE_SHARE_PENALTY > 0
    assert module.native_share_power == C.NATIVE_SHARE_POWER == 0.75
    tensors = next(iter(model._make_data_loader(model.adata, batch_size=40, shuffle=False)))
    module.train()
    kl_weight, n_obs = 0.3, 80.0
    inference, generative, out = module(tensors, loss_kwargs={"kl_weight": kl_weight, "n_obs": n_obs})
    names = module.modality_names
    library_codes = tensors[K.LIBRARY]
    per_cell = 0.0
    for m in names:
        x = tensors[module.counts_key(m)]
        totals = x.sum(-1)
        assert torch.equal(inference["total_counts"][m], totals)
        assert torch.equal(inference["masks"][m], (totals > 0).to(x.dtype))
        observation = module.observation_of(m)
        rec = -observation.log_likelihood(x, generative["mu"][m], generative["dispersion"][m])
        kl_l = kl_divergence(inference["ql"][m], observation.library_prior(library_codes)).sum(-1)
        penalties = 0.0
        key, scale = (module._term_name(k, m) for k in ("native_share_penalty", "ambient_scale_penalty"))
        if observation.use_background:
            penalty = C.NATIVE_SHARE_PENALTY * totals.pow(0.75) * generative["rho"][m].sum(-1)
            assert torch.equal(out.kl_local[key], penalty * inference["masks"][m])
            log_c = inference["log_ambient_scale"][m].squeeze(-1)
            torch.testing.assert_close(out.kl_local[scale],
                                       0.5 * (log_c / C.AMBIENT_SCALE_SD) ** 2 * inference["masks"][m])
            penalties = out.kl_local[key] + out.kl_local[scale]
        else:  # no background, no penalty
            assert key not in out.kl_local and scale not in out.kl_local
        per_cell = per_cell + (rec + kl_weight * kl_l + penalties) * inference["masks"][m]
    assert any(module.observation_of(m).use_background for m in names)
    qz = inference["qz"]
    kl_dims = kl_divergence(qz, standard_normal_like(qz))
    if multimodal:  # the primary (RNA) slice's KL weighs 1, the other slices' SECONDARY_KL_WEIGHT
        assert module.primary_modality == "rna" and module.secondary_kl_weight == C.SECONDARY_KL_WEIGHT == 2.0
        weights = torch.full((kl_dims.shape[-1],), C.SECONDARY_KL_WEIGHT)
        weights[slice(*module.latent_slices["rna"])] = 1.0
        kl_dims = kl_dims * weights
    kl_z = kl_dims.sum(-1)
    kl_global = sum(module.observation_of(m).global_penalty() for m in names)
    expected = torch.mean(per_cell + kl_weight * kl_z) + kl_global / n_obs
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.kl_global_sum, kl_global)
