"""``AmbientRegularizedSCVI``: the single-modality model."""

from __future__ import annotations

import logging

from anndata import AnnData
from scvi.data.fields import LayerField

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.model._base import (
    RegularizedModelBase,
    adversary_label_count,
    ambient_options,
    ambient_row_names,
    continuous_columns,
    covariate_design,
    given_ambient_profile,
    modality_statistics,
    register_data,
)
from regularizedvi.model._utils import check_rate, check_sizes, n_cats_per_key, positive_int
from regularizedvi.module import RegularizedVAE

logger = logging.getLogger(__name__)


class AmbientRegularizedSCVI(RegularizedModelBase):
    """Regularized scVI with ambient background, dispersion prior and batch-free decoder.

    Model: ``x_ng ~ GammaPoisson(theta_{g,d}, theta_{g,d} / mu_ng)`` with
    ``mu_ng = l_n (rho_ng + s_{e,g}) y_{t,g}``, ``rho = softplus(decoder(z, c))``.

    Units: ``l_n`` is on the scale of the cell's total count (its posterior is centred on
    the observed total), so ``rho_n + s_e`` is a per-feature fraction of that total.

    Background (``ambient_background="profile"``, the default): ``s_e = c_n a_e q_e``, a
    fixed profile ``q_e`` per ambient category (its cells' mean observed profile, or the
    ``ambient_profile`` you measured from empty droplets), a learned amount ``a_e`` (starting
    at ``BACKGROUND_INIT_FRACTION`` = 1% of a cell's counts) and a per-cell scale ``c_n``
    with a LogNormal(0, 0.5) prior. A flexible decoder could explain any share of the soup
    as expression; a native-share penalty ``0.024 N_n^0.75 sum_g rho_ng`` per cell
    (``native_share_penalty``, ``native_share_power``) leaves to the background what all
    cells of a group share.
    ``"free"`` is the spec's per-feature background ``exp(beta_{e,g})`` (started at 1% of
    each category's mean profile). The decoder starts at the dataset's mean expression
    profile. How well the amount is recovered, measured against known contamination:
    ``bench/README.md`` (ambient section).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden
        Width of hidden layers (default 128).
    n_latent
        Latent dimensions (default 10). High capacity (512 hidden / 128 latent) is
        supported without tuning.
    n_layers
        Hidden layers in encoder and decoder (default 1).
    dropout_rate
        Dropout on each encoder layer's input (default 0.1).
    regularise_background
        Add the Gamma(1, 100) prior on the background to the loss (default False).
    ambient_background
        ``"profile"`` (default) or ``"free"``, see above.
    ambient_profile
        Optional DataFrame, features x ambient categories (or one column for all): the
        measured soup, e.g. ``regularizedvi.estimate_ambient_profile(raw_adata,
        groupby=...)`` from the raw (unfiltered) matrix; the background's shape, so that
        only the amount is learned. Features are matched by name. For protein (ADT) counts
        give it (``estimate_ambient_profile(raw, empty=...)``, empties from hashing): on
        CITE-seq with confirmed empties it removes half of the isotype controls' counts,
        the cells' mean profile (the default) 4% (tests/python/test_protein_background.py).
    ambient_cell_scale
        Learn the per-cell scale ``c_n`` of the background (default True).
    native_share_penalty
        Strength of the native-share penalty (default 0.024; 0 switches it off).
    native_share_power
        Power of the cell's total count in the penalty (default 0.75; files of model
        format 3 were trained with 0.17 sqrt(N_n) and load with it).
    ambient_adversary
        Weight of the ambient adversary (default 0: off). A classifier on the latent mean
        learns to predict each cell's ambient group (``batch_key`` / the ambient keys)
        while the encoder, through a gradient reversal, learns to hide it; the loss gains
        this weight x the classifier's cross-entropy. It lets the background, not the
        decoder, explain each group's soup: on the semi-synthetic designs of
        ``bench/ambient_bench.py`` with 2-4 samples a weight of 20 halves the error of
        the contamination fraction (0.011-0.064 against 0.060-0.115) and mixes the
        samples more, at a cost in cell-type purity of the latent (0.035-0.049) where
        cell-type composition differs between groups: it removes what tells the groups
        apart, biology included. With ``labels_key`` in :meth:`setup_anndata` (cell types,
        or clusters; x condition where one differs between groups) the classifier also
        reads each cell's label, that cost goes, and a weight of 100 gives a fraction error
        of 0.024-0.034 and corrected counts within 1.05x of an oracle subtraction's
        (README, ambient section), but not reliably where a condition differs between
        the groups in every cell type. No gain with 16 samples or with the group also in
        ``nn_conditioning_covariate_keys``. Meant for estimating and removing
        contamination. Needs two or more ambient groups.

    Examples
    --------
    >>> AmbientRegularizedSCVI.setup_anndata(adata, layer="counts", batch_key="sample")
    >>> model = AmbientRegularizedSCVI(adata)
    >>> model.train()
    >>> adata.obsm["X_regularizedvi"] = model.get_latent_representation()
    """

    _module_cls = RegularizedVAE
    supports_query_input_correction = True  # keeps query-mapping state: see SafeSaveLoadMixin

    def __init__(
        self,
        adata: AnnData | None = None,
        n_hidden: int = C.N_HIDDEN,
        n_latent: int = C.N_LATENT,
        n_layers: int = C.N_LAYERS,
        dropout_rate: float = C.DROPOUT_RATE,
        regularise_background: bool = C.REGULARISE_BACKGROUND,
        ambient_background: str = C.AMBIENT_BACKGROUND,
        ambient_profile=None,
        ambient_cell_scale: bool = C.AMBIENT_CELL_SCALE,
        native_share_penalty: float = C.NATIVE_SHARE_PENALTY,
        native_share_power: float = C.NATIVE_SHARE_POWER,
        ambient_adversary: float = C.AMBIENT_ADVERSARY,
    ):
        n_hidden, n_latent = check_sizes(n_hidden, "n_hidden"), check_sizes(n_latent, "n_latent")
        n_layers, dropout_rate = positive_int(n_layers, "n_layers"), check_rate(dropout_rate, "dropout_rate")
        super().__init__(adata)
        ambient = ambient_options(ambient_background, ambient_cell_scale, native_share_penalty, native_share_power,
                                  ambient_adversary)
        # the profile itself is saved with the weights (the background's buffer)
        self._init_kwargs = {
            "n_hidden": n_hidden, "n_latent": n_latent, "n_layers": n_layers,
            "dropout_rate": dropout_rate, "regularise_background": regularise_background, **ambient,
        }
        manager = self.adata_manager
        stats = modality_statistics(manager, K.X)
        profiles = stats.ambient_profiles if ambient_profile is None else given_ambient_profile(
            ambient_profile, adata.var_names, ambient_row_names(manager), "ambient_profile")
        continuous = continuous_columns(manager)
        n_dispersion_groups = len(manager.get_state_registry(K.DISPERSION).categorical_mapping)
        self.module = self._module_cls(
            n_input=stats.n_features,
            library_log_means=stats.library_log_means,
            library_log_vars=stats.library_log_vars,
            mean_profile=stats.mean_profile,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            n_continuous=len(continuous),
            n_encoder_cats_per_key=n_cats_per_key(manager, K.ENCODER),
            n_nn_cats_per_key=n_cats_per_key(manager, K.NN_CONDITIONING),
            n_ambient_cats_per_key=n_cats_per_key(manager, K.AMBIENT),
            n_scaling_cats_per_key=n_cats_per_key(manager, K.FEATURE_SCALING),
            n_dispersion_groups=n_dispersion_groups,
            regularise_background=regularise_background,
            n_adversary_labels=adversary_label_count(manager, ambient["ambient_adversary"]),
            **ambient,
        )
        self.module.observation.init_background(profiles)
        self._model_summary_string = (
            f"AmbientRegularizedSCVI: n_hidden {n_hidden}, n_latent {n_latent}, n_layers {n_layers}, "
            f"ambient groups {n_cats_per_key(manager, K.AMBIENT) or [1]}, "
            f"dispersion groups {n_dispersion_groups}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _feature_names_of(self, adata, modality: str):
        return adata.var_names

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        ambient_covariate_keys: list[str] | None = None,
        nn_conditioning_covariate_keys: list[str] | None = None,
        feature_scaling_covariate_keys: list[str] | None = None,
        dispersion_key: str | None = None,
        library_size_key: str | None = None,
        encoder_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        labels_key: str | None = None,
        **kwargs,
    ):
        """Register an AnnData: which counts, and which obs columns drive which component.

        Parameters
        ----------
        adata
            Cells x features AnnData with raw counts (sparse or dense; never densified).
        layer
            Layer with raw counts; ``None`` uses ``adata.X``.
        batch_key
            Shorthand for one column that sets the ambient groups, dispersion groups and
            library-prior groups at once (typical 10x design: one sample = one channel).
            Cannot be combined with the three purpose-specific keys below.
        ambient_covariate_keys
            Columns whose categories each get an additive background profile (ambient RNA
            source, e.g. channel / lysis batch).
        nn_conditioning_covariate_keys
            Columns given to the decoder, for multiplicative technical effects such as
            chemistry or protocol. Put technology batches here; leave sample-only
            (ambient) effects to ``batch_key`` / ``ambient_covariate_keys``.
        feature_scaling_covariate_keys
            Columns whose categories get a per-feature multiplicative factor
            ``softplus(gamma) / 0.7`` with a Gamma(200, 200) prior. ``None`` (default):
            the ``nn_conditioning_covariate_keys`` (spec ``t = k``: a category that
            changes the decoder also gets its own factor per feature). ``[]`` or no
            conditioning keys: one global factor per feature under the same prior.
        dispersion_key
            One column: groups with their own per-feature dispersion.
        library_size_key
            One column: groups with their own library-size prior.
        encoder_covariate_keys
            Columns also given to the encoder (off by default: a batch-free encoder).
        continuous_covariate_keys
            Numeric columns given to encoder and decoder (e.g. percent mitochondrial).
        labels_key
            One column of cell labels (cell types, or clusters of a first model or of PCA)
            for the ambient adversary alone (``ambient_adversary`` > 0), which then reads
            each cell's label beside the latent: it can predict the ambient group from the
            label where groups differ in composition, so the encoder hides only what tells
            the groups apart within a label and keeps the biology. Where a condition
            (treatment, disease, genotype) differs between the groups, the labels need it
            too, e.g. ``obs["cell_type"].astype(str) + "|" + obs["condition"].astype(str)``:
            with cell type alone the adversary takes the condition's response out of the
            latent and the background absorbs it (kang ctrl / stim: every sample's fraction
            0.03-0.05 too high). Even then the adversary was unstable on a design with a
            planted condition (README, ambient section), so there the default model is the
            safer choice. Nothing else uses the labels (a warning says so when the adversary
            is off). Data given to a model set up with it later (``load``,
            ``load_query_data``, outputs) need the column too; a query without labels can
            take one placeholder value, e.g. ``"unknown"``.

        Without ``batch_key`` or purpose-specific keys, every component has one group.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        design = covariate_design(setup_method_args)
        if layer is not None and layer not in adata.layers:
            raise KeyError(
                f"layer '{layer}' is not in adata.layers (available: {list(adata.layers.keys())}). "
                "Pass the name of the layer with raw counts, or layer=None for adata.X."
            )
        matrix = adata.X if layer is None else adata.layers[layer]
        where = "adata.X" if layer is None else f"adata.layers['{layer}']"
        if not (design.ambient_covariate_keys or design.dispersion_key or design.library_size_key):
            logger.info("No batch_key or ambient/dispersion/library keys: one group for each component.")
        register_data(cls, adata, [LayerField(K.X, layer, is_count_data=True)], {where: matrix}, design,
                      setup_method_args, mudata=False, **kwargs)
