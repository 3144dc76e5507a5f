"""The per-modality observation model: everything between the decoder and the counts.

One :class:`CountObservationModel` holds a modality's global parameters and priors:
additive background, feature scaling, hierarchical dispersion prior and the library
prior. The single-modality module owns one; the multimodal module owns one per modality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from regularizedvi import _constants as C
from regularizedvi.module import _streams
from regularizedvi.nn._decoders import inverse_softplus
from regularizedvi.nn._layers import one_hot_concat


def gamma_log_prob(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``log Gamma(x; alpha, rate=beta)`` with constant parameters (no tensors made per call)."""
    const = alpha * math.log(beta) - math.lgamma(alpha)
    return const + (alpha - 1.0) * torch.log(x) - beta * x


def negative_binomial_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor,
                               eps: float = 1e-8, log_theta: torch.Tensor | None = None,
                               lgamma_theta: torch.Tensor | None = None) -> torch.Tensor:
    """log GammaPoisson(x | concentration=theta, rate=theta/mu), elementwise.

    ``log_theta`` and ``lgamma_theta`` may be passed precomputed (they depend on the
    feature and dispersion group only, not on the cell).
    """
    log_theta_mu = torch.log(theta + mu + eps)
    if log_theta is None:
        log_theta = torch.log(theta + eps)
    if lgamma_theta is None:
        lgamma_theta = torch.lgamma(theta)
    return (
        theta * (log_theta - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - lgamma_theta
        - torch.lgamma(x + 1)
    )


def negative_binomial_cell_sums(x: torch.Tensor, mu: torch.Tensor, dispersion: "CellDispersion",
                                eps: float = 1e-8, positions: torch.Tensor | None = None) -> torch.Tensor:
    """``negative_binomial_log_prob(...).sum(-1)``, with the lgamma terms on nonzeros only.

    ``log NB = theta (log theta - log(theta + mu)) + x (log mu - log(theta + mu))`` (cheap,
    every entry) ``+ [lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)]`` (zero where
    ``x = 0``; evaluated at the stored counts, see :func:`_nonzero_terms`). ``x`` must be a
    CPU tensor. ``positions``: the flat positions of its stored values, each once and in
    ascending order (a superset of the nonzeros: stored zeros add exactly 0), as the CPU
    fast loader passes them from a canonical CSR structure; when absent, numpy finds the
    nonzeros. The nonzero terms are summed per cell as the contiguous segments of each
    cell's positions (``segment_reduce``, whose backward is a gather: no cell x feature
    block, no accumulating scatter); the dense terms are summed per cell by
    :class:`_DenseTerms` (hand-written backward).
    """
    dense = _DenseTerms.apply(x, mu, dispersion.theta, dispersion.log_theta, eps)
    if positions is None:  # numpy finds the nonzeros of a boolean array ~3x faster than of floats
        positions = torch.from_numpy(np.flatnonzero(x.detach().numpy() != 0))
    rows = positions.numpy() // x.shape[-1]  # numpy: torch's int64 division is far slower on the CPU
    if rows.size > 1 and not (rows[1:] >= rows[:-1]).all():
        raise ValueError("positions must be in ascending order (row-major, as a canonical CSR stores them).")
    terms = _nonzero_terms(x, positions, rows, dispersion)
    per_cell = torch.from_numpy(np.bincount(rows, minlength=x.shape[0]))
    return dense + torch.segment_reduce(terms, "sum", lengths=per_cell)


class _DenseTerms(torch.autograd.Function):
    """Per-cell ``sum_f theta (log theta - log(theta + mu)) + x (log mu - log(theta + mu))``
    (``eps`` inside both logs, as in :func:`negative_binomial_log_prob`), with a hand-written
    backward: ``d/dmu = x / mu - (theta + x) / (theta + mu)``, ``d/dtheta = log theta -
    log(theta + mu) - (theta + x) / (theta + mu)``, ``d/dlog theta = theta``.

    The same values and gradients as autograd's graph of that expression (``test_model_maths``
    checks both to 1e-10 in float64 and runs gradcheck), in about half the passes over the
    cell x feature block and one graph node instead of about a dozen: on the CPU this part
    of the step is memory- and dispatch-bound. ``x`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, x, mu, theta, log_theta, eps):
        shifted = torch.add(theta, mu).add_(eps)  # theta + mu + eps
        log_shifted = torch.log(shifted)
        theta_part = log_theta - log_shifted
        mu_eps = mu + eps
        x_part = torch.log(mu_eps).sub_(log_shifted).mul_(x)
        ctx.save_for_backward(x, theta, theta_part, shifted, mu_eps)
        return (theta * theta_part).add_(x_part).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        x, theta, theta_part, shifted, mu_eps = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        ratio = torch.add(theta, x).div_(shifted)  # (theta + x) / (theta + mu + eps)
        grad_mu = torch.div(x, mu_eps).sub_(ratio).mul_(grad) if ctx.needs_input_grad[1] else None
        grad_theta = torch.sub(theta_part, ratio).mul_(grad) if ctx.needs_input_grad[2] else None
        grad_log_theta = theta * grad if ctx.needs_input_grad[3] else None
        return None, grad_mu, grad_theta, grad_log_theta, None


def _nonzero_terms(x: torch.Tensor, flat: torch.Tensor, rows: np.ndarray,
                   dispersion: "CellDispersion") -> torch.Tensor:
    """``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` at the flat positions ``flat``
    (int64; zero counts among them give exactly 0; ``rows``: their cells, numpy).

    Index_select, not advanced indexing, throughout: its backward is an ``index_add``,
    where indexing's is an accumulating ``index_put`` that runs serially and slower with
    more threads. With the dispersion's per-group tables, ``theta`` is read from the small
    ``(groups, features)`` table (the backward accumulates into it, not into a cell x
    feature block), and integer counts up to ``NB_COUNT_TABLE_SIZE`` (most of the nonzeros
    of UMI data) are read from a table of ``sum_{j<k} log((theta + j) / (j + 1))``, the
    same value as the lgamma difference for an integer ``k`` (to rounding), so that lgamma
    and its backward (digamma) run on the other counts only. The table is skipped when it
    has more entries than there are nonzeros (many features and dispersion groups, few
    counts; always for per-cell values without the group tables).
    """
    n_features = x.shape[-1]
    xv = x.reshape(-1).index_select(0, flat)
    if dispersion.groups is None:  # per-cell values: read at the positions themselves
        thetas, lgammas, at = dispersion.theta, dispersion.lgamma_theta, flat
    else:
        thetas, lgammas = dispersion.theta_table, dispersion.lgamma_table
        at = (dispersion.groups.index_select(0, torch.from_numpy(rows)) * n_features
              + torch.from_numpy(flat.numpy() - rows * n_features))
    thetas_flat, lgammas_flat = thetas.reshape(-1), lgammas.reshape(-1)

    def lgamma_terms_at(counts, where):
        return _lgamma_terms(counts, thetas_flat.index_select(0, where), lgammas_flat.index_select(0, where))

    size = C.NB_COUNT_TABLE_SIZE
    if size * thetas.numel() > flat.numel():  # the table would cost more than it saves
        return lgamma_terms_at(xv, at)
    steps = torch.arange(size, dtype=thetas.dtype).view(size, 1, 1)
    small = torch.log((thetas.unsqueeze(0) + steps) / (steps + 1)).cumsum(0).reshape(-1)
    # a count of k reads row k - 1; larger and non-integer counts are replaced below
    capped = xv.clamp(min=1, max=size)
    level = capped.long()
    terms = small.index_select(0, (level - 1) * thetas.numel() + at)
    # the others: counts above the table, non-integer counts, stored zeros
    large = torch.nonzero((level.to(xv.dtype) != xv) | (xv > size)).squeeze(1)
    if large.numel() == 0:
        return terms
    return terms.index_copy(0, large, lgamma_terms_at(xv.index_select(0, large), at.index_select(0, large)))


def _lgamma_terms(counts: torch.Tensor, theta: torch.Tensor, lgamma_theta: torch.Tensor) -> torch.Tensor:
    """``lgamma(counts + theta) - lgamma(theta) - lgamma(counts + 1)``, elementwise."""
    return torch.lgamma(counts + theta) - lgamma_theta - _log_factorial(counts)


def _log_factorial(counts: torch.Tensor) -> torch.Tensor:
    """``lgamma(counts + 1)``: from a table of ``log k!`` when the counts are integers (one
    gather instead of an lgamma per value; counts are checked integers at set-up, and are
    checked again here), else computed."""
    if counts.numel() == 0:
        return counts
    top = float(counts.max())
    if top > 1e6 or not torch.equal(counts, torch.round(counts)):
        return torch.lgamma(counts + 1)
    table = torch.lgamma(torch.arange(1, int(top) + 2, dtype=counts.dtype))
    return table[counts.long()]


def _group_rows(idx: torch.Tensor, n_groups: int):
    """``f(values)``: per-cell rows ``values.T[idx]`` of a ``(features, groups)`` tensor
    (``idx``: each cell's group, int64).

    One group: a broadcast view. Several: a one-hot product (exact: one nonzero term per
    entry). Both have a dense backward, where indexing would scatter every cell's
    gradient into the same few rows (atomic adds on a GPU contend on them).
    """
    if n_groups == 1:
        return lambda values: values.T.expand(idx.shape[0], -1)
    onehot = nn.functional.one_hot(idx, n_groups).to(torch.get_default_dtype())
    return lambda values: onehot @ values.T


class CellDispersion:
    """Per-cell inverse dispersion and its cell-independent terms, gathered from groups.

    ``theta``, ``log_theta``, ``lgamma_theta``: ``(cells, features)``. ``groups`` /
    ``theta_table`` / ``lgamma_table`` (optional): each cell's dispersion group and the
    ``(groups, features)`` tables the per-cell values come from. ``lgamma_theta`` may be
    left out when the tables and ``rows`` (``values -> per-cell rows``, as
    :func:`_group_rows` gives) are passed: it is then gathered on first use only (the CPU
    likelihood reads the table instead, at the nonzero counts).
    """

    __slots__ = ("theta", "log_theta", "_lgamma_theta", "groups", "theta_table", "lgamma_table", "_rows")

    def __init__(self, theta, log_theta, lgamma_theta=None, groups=None, theta_table=None,
                 lgamma_table=None, rows=None):
        if lgamma_theta is None and (lgamma_table is None or rows is None):
            raise ValueError("CellDispersion needs lgamma_theta, or lgamma_table and rows to gather it.")
        self.theta, self.log_theta, self._lgamma_theta = theta, log_theta, lgamma_theta
        self.groups, self.theta_table, self.lgamma_table, self._rows = groups, theta_table, lgamma_table, rows

    @property
    def lgamma_theta(self) -> torch.Tensor:
        if self._lgamma_theta is None:
            self._lgamma_theta = self._rows(self.lgamma_table.T)
        return self._lgamma_theta


class CountObservationModel(nn.Module):
    """Mean, dispersion, likelihood and global priors of one count modality.

    ``mu_nf = l_n * (rho_nf + s_{e_n,f}) * y_{t_n,f}``;
    ``x_nf ~ GammaPoisson(theta_{f,d_n}, theta_{f,d_n} / mu_nf)``.

    Parameters
    ----------
    n_features
        Number of features (genes, peaks, proteins).
    n_ambient_cats_per_key
        Categories of each ambient covariate; ``[]`` gives one background shared by all
        cells; ``None`` switches the background off.
    n_scaling_cats_per_key
        Categories of each feature-scaling covariate; ``[]`` gives one per-feature factor;
        ``None`` switches feature scaling off.
    n_dispersion_groups
        Groups of the dispersion key (1 when none is given).
    library_log_means, library_log_vars
        Per library group: mean and variance of log total counts (the prior's
        variance is these times ``LIBRARY_PRIOR_VARIANCE_SCALE``).
    regularise_background
        Add the Gamma(1, 100) prior on the background to the loss.
    background_init_fraction
        Starting amount of the background, as a fraction of a cell's counts.
    ambient_background
        ``"profile"``: ``s_e = a_e q_e``, a fixed profile per ambient row (buffer
        ``background_profile``, set by :meth:`init_background`) times a learned amount
        ``a_e = exp(background_log)``; ``"free"``: ``s_{e,f} = exp(background_log_{e,f})``.
    """

    def __init__(
        self,
        n_features: int,
        n_ambient_cats_per_key: Sequence[int] | None,
        n_scaling_cats_per_key: Sequence[int] | None,
        n_dispersion_groups: int,
        library_log_means: torch.Tensor,
        library_log_vars: torch.Tensor,
        regularise_background: bool = C.REGULARISE_BACKGROUND,
        background_init_fraction: float = C.BACKGROUND_INIT_FRACTION,
        ambient_background: str = C.AMBIENT_BACKGROUND,
    ):
        super().__init__()
        if ambient_background not in ("profile", "free"):
            raise ValueError(f"ambient_background must be 'profile' or 'free', not {ambient_background!r}.")
        self.ambient_background = ambient_background
        self.background_init_fraction = background_init_fraction
        self.n_features = n_features
        self.regularise_background = regularise_background
        self.use_background = n_ambient_cats_per_key is not None
        self.use_feature_scaling = n_scaling_cats_per_key is not None
        self.n_ambient_cats_per_key = list(n_ambient_cats_per_key or [])
        self.n_scaling_cats_per_key = list(n_scaling_cats_per_key or [])

        if self.use_background:
            n_rows = max(sum(self.n_ambient_cats_per_key), 1)
            if ambient_background == "profile":
                self.register_buffer("background_profile", torch.full((n_rows, n_features), 1.0 / n_features))
                self.background_log = nn.Parameter(torch.full((n_rows, 1), math.log(background_init_fraction)))
            else:
                init = math.log(background_init_fraction / n_features)
                self.background_log = nn.Parameter(torch.full((n_rows, n_features), init))
        if self.use_feature_scaling:
            n_rows = max(sum(self.n_scaling_cats_per_key), 1)
            init = inverse_softplus(torch.tensor(C.FEATURE_SCALING_DIVISOR)).item()
            self.feature_scaling_raw = nn.Parameter(torch.full((n_rows, n_features), init))
            # Rows of categories new in a query (load_query_data): saved in model.json, not the weights.
            self.register_buffer("query_scaling_rows", torch.zeros(n_rows, dtype=torch.bool), persistent=False)
        self.has_query_scaling_rows = False

        # Variational LogNormal posterior on theta, one per feature and dispersion group.
        self.log_theta_mu = nn.Parameter(torch.full((n_features, n_dispersion_groups), C.LOG_THETA_INIT))
        self.log_theta_log_sigma = nn.Parameter(
            torch.full((n_features, n_dispersion_groups), math.log(C.DISPERSION_POSTERIOR_SIGMA_INIT))
        )
        rate_raw = inverse_softplus(torch.tensor(C.DISPERSION_RATE_INIT)).item()
        self.dispersion_rate_raw = nn.Parameter(torch.full((n_dispersion_groups,), rate_raw))

        self.register_buffer("library_log_means", library_log_means.reshape(-1).float())
        self.register_buffer("library_log_vars", library_log_vars.reshape(-1).float())
        self.stream = None  # the modality's RandomStream (the dispersion draw), bound by the module

    def init_background(self, profiles: torch.Tensor) -> None:
        """Set each ambient row's profile (``profile`` mode: the fixed shape ``q_e``; ``free``
        mode: the start, ``BACKGROUND_INIT_FRACTION`` x the profile).

        ``profiles`` is ``(n_ambient_rows, n_features)``, rows summing to 1: the mean
        expression profile of each category's cells (what lysed cells release) or a
        measured empty-droplet profile.
        """
        if not self.use_background:
            return
        floor = 1e-3 / self.n_features / 1e3
        with torch.no_grad():
            if self.ambient_background == "profile":
                shape = profiles.clamp_min(floor)
                self.background_profile.copy_(shape / shape.sum(-1, keepdim=True))
            else:
                frac = self.background_init_fraction
                self.background_log.copy_(torch.log(frac * profiles.clamp_min(floor)))

    # ------------------------------------------------------------------ generative parts
    def background_table(self) -> torch.Tensor:
        """``s``: ``(ambient rows, features)``, each row a fraction of a cell's counts."""
        s = torch.exp(self.background_log)
        return s * self.background_profile if self.ambient_background == "profile" else s

    def background(self, ambient_codes: torch.Tensor | None, cell_scale: torch.Tensor | None = None):
        """Per-cell background ``c_n s_{e_n}`` (summed over ambient keys; ``cell_scale``
        ``c_n``, ``(n, 1)``, optional), or None when off."""
        if not self.use_background:
            return None
        s = self.background_table()
        if not self.n_ambient_cats_per_key:
            return s if cell_scale is None else cell_scale * s  # (1, F) broadcasts without keys
        onehot = one_hot_concat(ambient_codes, self.n_ambient_cats_per_key)
        # the scale enters the small one-hot factor: one product for the cell x feature block
        return (onehot if cell_scale is None else onehot * cell_scale) @ s

    def feature_scaling(self, scaling_codes: torch.Tensor | None) -> torch.Tensor | None:
        """Per-cell multiplicative factor ``y_{t_n}`` (product over keys), or None when off."""
        if not self.use_feature_scaling:
            return None
        log_y = torch.log(self.feature_scaling_values())
        if not self.n_scaling_cats_per_key:
            return torch.exp(log_y)
        return torch.exp(one_hot_concat(scaling_codes, self.n_scaling_cats_per_key) @ log_y)

    def feature_scaling_values(self) -> torch.Tensor:
        return nn.functional.softplus(self.feature_scaling_raw) / C.FEATURE_SCALING_DIVISOR

    def mark_query_scaling_rows(self, rows: Sequence[int]) -> None:
        """Mark feature-scaling rows as categories new in a query (see :meth:`input_log_ratio`)."""
        if not self.use_feature_scaling:
            if len(rows):
                raise ValueError("This observation model has no feature scaling: no query rows to mark.")
            return
        with torch.no_grad():
            self.query_scaling_rows.zero_()
            self.query_scaling_rows[torch.as_tensor(list(rows), dtype=torch.long)] = True
        self.has_query_scaling_rows = bool(len(rows)) and bool(self.n_scaling_cats_per_key)

    def input_log_ratio(self) -> torch.Tensor:
        """``(scaling rows, features)`` table of the query encoder-input correction ``log r``.

        Exactly 0 on a reference row; on a query row ``log y_t - mean_{t' ref} log y_{t'}``
        (per scaling key, the reference mean detached), centred over features. Not detached
        from ``y_t``: the query row learns through the decoder's mean and the encoder input.
        """
        log_y = torch.log(self.feature_scaling_values())
        blocks, start = [], 0
        for n in self.n_scaling_cats_per_key:
            block, query = log_y[start:start + n], self.query_scaling_rows[start:start + n]
            start += n
            shift = block - block[~query].mean(0, keepdim=True).detach()
            shift = shift - shift.mean(-1, keepdim=True)
            blocks.append(torch.where(query.unsqueeze(-1), shift, torch.zeros_like(shift)))
        return torch.cat(blocks, 0)

    def encoder_input(self, x: torch.Tensor, scaling_codes: torch.Tensor) -> torch.Tensor:
        """``log1p(x / r_n)``, ``log r_n = onehot(t_n) @`` :meth:`input_log_ratio` (``log1p(x)``
        on a reference cell, bit for bit)."""
        log_r = one_hot_concat(scaling_codes, self.n_scaling_cats_per_key) @ self.input_log_ratio()
        return torch.log1p(x * torch.exp(-log_r))

    def _feature_scaling_log_prior(self) -> torch.Tensor:
        """Gamma(200, 200) log prior of the feature scaling; a query's new rows Gamma(2, 2)."""
        y = self.feature_scaling_values()
        log_p = gamma_log_prob(y, C.FEATURE_SCALING_PRIOR_ALPHA, C.FEATURE_SCALING_PRIOR_BETA)
        if not self.has_query_scaling_rows:
            return log_p.sum()
        loose = gamma_log_prob(y, C.QUERY_FEATURE_SCALING_PRIOR, C.QUERY_FEATURE_SCALING_PRIOR)
        return torch.where(self.query_scaling_rows.unsqueeze(-1), loose, log_p).sum()

    def mean(self, rho, library, ambient_codes=None, scaling_codes=None) -> torch.Tensor:
        """Expected counts ``l * (rho + s) * y`` at the group's background level (no per-cell
        scale: the training pass adds it, see ``ModalityVAE.generative``); ``library`` is
        ``(n, 1)`` on count scale."""
        return self.mean_from(rho, library, self.background(ambient_codes), self.feature_scaling(scaling_codes))

    @staticmethod
    def mean_from(rho, library, background=None, scaling=None) -> torch.Tensor:
        """``l * (rho + s) * y`` from the per-cell background and scaling (None: absent)."""
        rate = rho if background is None else rho + background
        if scaling is not None:
            rate = rate * scaling
        return library * rate

    def dispersion(self, dispersion_codes: torch.Tensor, sample: bool) -> CellDispersion:
        """Per-cell ``theta`` (a reparameterised draw, or the posterior median), with
        ``log theta`` and ``lgamma(theta)`` computed once per feature and group."""
        log_theta = self.log_theta_mu
        if sample:
            sigma = torch.exp(self.log_theta_log_sigma)
            log_theta = log_theta + sigma * _streams.normal_like(sigma, self.stream)
        theta = torch.exp(log_theta)
        lgamma_theta = torch.lgamma(theta)
        groups = dispersion_codes.reshape(-1).long()
        per_cell = _group_rows(groups, theta.shape[1])
        return CellDispersion(per_cell(theta), per_cell(log_theta), None, groups, theta.T,
                              lgamma_theta.T, rows=per_cell)

    def theta(self, dispersion_codes: torch.Tensor, sample: bool) -> torch.Tensor:
        """Per-cell inverse dispersion ``(n, F)``."""
        return self.dispersion(dispersion_codes, sample).theta

    def log_likelihood(self, x, mu, theta: torch.Tensor | CellDispersion,
                       positions: torch.Tensor | None = None) -> torch.Tensor:
        """Per-cell log-likelihood (summed over features).

        On the CPU the lgamma terms, which vanish at ``x = 0`` (``lgamma(x + theta) -
        lgamma(theta) - lgamma(x + 1)``), are evaluated on the nonzero counts only
        (:func:`negative_binomial_cell_sums`; ``positions``: the stored positions the CPU
        fast loader passes): the same sum, with lgamma and its backward on the stored values
        instead of every cell x feature. On a GPU the dense form is used (finding the
        nonzeros would read their number back to the host).
        """
        if not isinstance(theta, CellDispersion):
            theta = CellDispersion(theta, torch.log(theta + 1e-8), torch.lgamma(theta))
        if x.device.type == "cpu":
            return negative_binomial_cell_sums(x, mu, theta, positions=positions)
        return negative_binomial_log_prob(x, mu, theta.theta, log_theta=theta.log_theta,
                                          lgamma_theta=theta.lgamma_theta).sum(-1)

    # ------------------------------------------------------------------ priors
    def library_prior(self, library_codes: torch.Tensor) -> Normal:
        idx = library_codes.reshape(-1).long()
        mean = self.library_log_means[idx].unsqueeze(-1)
        var = C.LIBRARY_PRIOR_VARIANCE_SCALE * self.library_log_vars[idx].unsqueeze(-1)
        return Normal(mean, var.clamp_min(1e-6).sqrt(), validate_args=False)

    def dispersion_rate(self) -> torch.Tensor:
        return nn.functional.softplus(self.dispersion_rate_raw)

    def dispersion_kl(self) -> torch.Tensor:
        """KL(q(log theta) || p(log theta | lambda)) summed over features and groups, analytic.

        With ``u = 1/sqrt(theta) ~ Exponential(lambda)``, the prior density of
        ``t = log theta`` is ``lambda exp(-lambda u) |du/dt|`` with ``|du/dt| = u / 2``.
        Under ``q(t) = Normal(m, s)``: ``E[u] = exp(-m/2 + s^2/8)`` and ``E[log u] = -m/2``.
        """
        m = self.log_theta_mu
        log_s = self.log_theta_log_sigma
        lam = self.dispersion_rate()
        entropy = 0.5 * math.log(2 * math.pi * math.e) + log_s
        expected_u = torch.exp(-0.5 * m + 0.125 * torch.exp(2 * log_s))
        expected_log_prior = torch.log(lam) - lam * expected_u + math.log(0.5) - 0.5 * m
        return (-entropy - expected_log_prior).sum()

    def global_penalty(self) -> torch.Tensor:
        """Negative log prior of all global parameters (added once per dataset, not per cell)."""
        penalty = self.dispersion_kl() - gamma_log_prob(
            self.dispersion_rate(), C.DISPERSION_RATE_PRIOR_ALPHA, C.DISPERSION_RATE_PRIOR_BETA).sum()
        if self.use_feature_scaling:
            penalty = penalty - self._feature_scaling_log_prior()
        if self.use_background and self.regularise_background:
            penalty = penalty - gamma_log_prob(
                self.background_table(), C.BACKGROUND_PRIOR_ALPHA, C.BACKGROUND_PRIOR_BETA).sum()
        return penalty


    def covariate_axes(self, prefix: str = "") -> dict[str, tuple[int, str, int]]:
        """Tensors indexed by covariate categories: ``name -> (axis, registry key, offset)``."""
        from regularizedvi.data import _keys as K

        axes = {
            "log_theta_mu": (1, K.DISPERSION, 0),
            "log_theta_log_sigma": (1, K.DISPERSION, 0),
            "dispersion_rate_raw": (0, K.DISPERSION, 0),
            "library_log_means": (0, K.LIBRARY, 0),
            "library_log_vars": (0, K.LIBRARY, 0),
        }
        if self.use_background:
            axes["background_log"] = (0, K.AMBIENT, 0)
            if self.ambient_background == "profile":
                axes["background_profile"] = (0, K.AMBIENT, 0)
        if self.use_feature_scaling:
            axes["feature_scaling_raw"] = (0, K.FEATURE_SCALING, 0)
        return {prefix + name: axis for name, axis in axes.items()}
