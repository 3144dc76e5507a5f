"""Model variants for the ambient benchmark (``ambient_bench.py --variants NAME ...``).

Exploration only: nothing here changes the package. A variant is a "+"-joined list of
tokens applied to the documented model (``AmbientRegularizedSCVI``, ``batch_key=sample``):

  default    the package as it is
  wu<N>      KL warm-up over N epochs (package default 400); ``wu0``: none (KL weight 1)
  init<P>    background starts at P% of each group's mean profile (default 1), the decoder
             at the mean profile x (1 - P/100)
  lr<M>      step-size factor of the global parameters (default 10)
  prior      the Gamma(1, 100) background penalty switched on
  l1x<L>     penalty L x sum_g rho_ng per cell (rho on the library's scale: each cell's
             native share of its counts), a sparsity-favouring prior on the decoder's signal.
             Every l1 token (l1x / l1n / l1s / l1p) REPLACES the package's native-share
             penalty (the module's native_share_penalty is set to 0) and, like it, takes
             l_n = N_n, the cell's observed total count
  tied       background s_e = a_e q_e: shape q_e fixed to the group's mean observed profile,
             amount a_e learned (starts at the init fraction)
  empty      the background's shape (and start) is the measured empty-droplet profile of each
             group (designs that have one; with ``tied`` only the amount is learned)
  native     background s_e = a_e q_e with q_e the library-weighted mean NATIVE profile
             (decoder signal rho) of the group's cells, tracked as a running average over
             minibatches (no gradient through it; starts at the group's mean observed
             profile): the soup is what the group's cells release; only a_e is learned
  l1n<K>     penalty K x sum_g l_n rho_ng per cell: K nats per count explained as native
             rather than ambient (scales with depth, unlike l1x)
  l1s<K>     penalty K x sqrt(l_n) x sum_g rho_ng per cell: the native share's penalty grows
             with the square root of depth, as the precision of a cell's floor does
  l1p<A>     penalty A x l_n^0.75 x sum_g rho_ng per cell (between l1s and l1n).
             l1s0.17 is the package default before f3a5cbc (0.17 sqrt(N)), l1p0.024 the
             default from f3a5cbc on (facs4 seed 0: the same result to the last digit)
  dev<T>     with tied / empty: shape q_e exp(delta_eg), delta ~ Normal(0, T^2) (a global
             prior): the shape may depart from the mean / empty profile where the data say so
  cleanenc   the z encoder sees the counts less the current expected background
             (relu(x - N_n s_e), s detached; the library encoder still sees x): when the
             background is right the encoder's input carries no soup, so z has nothing of
             the sample's soup to encode
  adv<W>     the package's ambient adversary, ``ambient_adversary=W``: a classifier of the ambient
             group on the latent mean behind a gradient reversal, so that z carries as little
             of the group as the fit allows and the group-specific soup is left to the
             background (session 10 screened a copy of it patched onto the model here)
  advlab     with adv<W>: the package's ``labels_key`` = each cell's TRUE cell type: the
             adversary's classifier reads the label (one-hot) beside the reversed latent, so
             that the encoder only has to hide what tells the groups apart WITHIN a type and
             composition differences between groups stay in z (session 12 first ran it as a
             patch of the same loss; records say which)
  advlabcond the same with the TRUE cell type x the design's biological condition (kang4:
             ctrl / stim, which differs between its samples; the cell type alone elsewhere)
  advclu<K>  the same with K k-means clusters of the data as the labels (log1p of counts per
             10k, 20 principal components, seeded): what a user without cell types gets
  advzclu<K> the same with K k-means clusters of the latent of a default model trained first
             (same seed and epochs; its training time is counted): the two-stage recipe
  measured   the package's ``ambient_profile=``: the design's empty-droplet profiles (one
             column per sample) given to the model as its soup shapes (designs that have one)
  shrink<R>  the package's profile background with a per-gene shrink: s_eg = a_e q_eg exp(-u_eg),
             u_eg = softplus(raw) >= 0 (starts at 0.018) with an Exponential(R) penalty on u_eg (in
             the global penalty): the shape may only LOWER genes below the mean profile, so a
             gene the soup holds less of than the cells' mean no longer caps the amount, while
             no gene can take more than its mean-profile share (housekeeping genes stay native)
  enc        the sample also given to ``encoder_covariate_keys`` (setup_anndata): the encoder
             may then remove the sample's soup signature, so that the latent need not carry it
  mseed<K>   the model's seed (torch, k-means) is the design's seed + K: tells a bad design
             from a bad training
  truesoup   a diagnostic: ``ambient_profile=`` the design's TRUE soups (one column per sample),
             what the amount's estimate gives when the shape is exactly right
  percell    each cell's background is scaled by c_n = exp(h(x_n)) (a small network on
             log1p counts, starting at 0) with a LogNormal(0, PERCELL_SD) penalty: a
             per-cell contamination amount, so that z need not carry it
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class Spec:
    model_cls: type
    model_kwargs: dict = field(default_factory=dict)
    plan_kwargs: dict = field(default_factory=dict)
    init_fraction: float = 0.01
    tied: bool = False
    empty: bool = False
    l1: float = 0.0
    native: bool = False
    l1n: float = 0.0
    l1s: float = 0.0
    l1p: float = 0.0
    dev: float = 0.0
    cleanenc: bool = False
    percell: bool = False
    measured: bool = False
    truesoup: bool = False
    shrink: float = 0.0
    adv_labels: str = ""  # "lab" (true cell types) or "clu<K>" (k-means clusters)
    model_seed_offset: int = 0  # mseed<K>: the model's seed is the design's + K
    setup_kwargs: dict = field(default_factory=dict)

    def after_init(self, model, design) -> None:
        from _ambient_designs import mean_profiles

        obs = model.module.observation
        if self.shrink:
            _add_shrink(model, self.shrink)
        if not (self.tied or self.native or self.empty or self.init_fraction != 0.01):
            self._add_l1(model)
            return  # the package's own start
        if self.empty and design.empty_profiles is None:
            raise ValueError(f"design {design.name} has no empty-droplet profile")
        shapes = design.empty_profiles if self.empty else mean_profiles(design)
        shapes = torch.as_tensor(np.maximum(shapes, 1e-8), dtype=torch.float32)
        shapes = shapes / shapes.sum(1, keepdim=True)
        frac = self.init_fraction
        dec = model.module.decoder
        mean = torch.as_tensor(np.asarray(design.observed.sum(0)).ravel(), dtype=torch.float32)
        mean = mean / mean.sum()
        with torch.no_grad():
            from regularizedvi.nn._decoders import inverse_softplus

            dec.out.bias.copy_(inverse_softplus((mean * (1 - frac)).clamp_min(1e-12)))
        if self.native:
            _make_native(model, shapes, frac)
        elif self.tied:
            obs.register_buffer("soup_shape", shapes)
            obs.background_log = nn.Parameter(torch.full((shapes.shape[0], 1), float(np.log(frac))))

            if self.dev:
                obs.background_dev = nn.Parameter(torch.zeros_like(shapes))
                _add_dev_prior(model, self.dev)

            def background(self_, ambient_codes):
                from regularizedvi.nn._layers import one_hot_concat

                s = torch.exp(self_.background_log) * self_.soup_shape
                if hasattr(self_, "background_dev"):
                    s = s * torch.exp(self_.background_dev)
                if not self_.n_ambient_cats_per_key:
                    return s
                return one_hot_concat(ambient_codes, self_.n_ambient_cats_per_key) @ s

            obs.background = types.MethodType(background, obs)
        else:
            with torch.no_grad():
                obs.background_log.copy_(torch.log(frac * shapes))
        self._add_l1(model)

    def _add_l1(self, model) -> None:
        if self.cleanenc:
            _make_cleanenc(model)
        if self.percell:
            _make_percell(model)
        if self.l1 or self.l1n or self.l1s or self.l1p:
            module = model.module
            # the bench penalty replaces the package's native-share penalty (not on top of it)
            module.native_share_penalty = 0.0
            weight, per_count, per_root, per_power = self.l1, self.l1n, self.l1s, self.l1p
            orig_loss = module.loss

            def loss(self_, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0,
                     n_obs: float = 1.0):  # named: scvi-tools passes what the signature names
                out = orig_loss(tensors, inference_outputs, generative_outputs, kl_weight=kl_weight, n_obs=n_obs)
                name = self_.modality_names[0]
                rho_total = generative_outputs["rho"][name].sum(-1)
                totals = self_._to(tensors[self_.counts_key(name)]).sum(-1)  # N_n, as the package's
                out.loss = out.loss + ((weight + per_count * totals + per_root * totals.sqrt()
                                        + per_power * totals ** 0.75) * rho_total).mean()
                return out

            module.loss = types.MethodType(loss, module)

    def report(self, model, design) -> dict:
        return {"soups": background_matrix(model).numpy() / background_matrix(model).numpy().sum(1, keepdims=True)}


NATIVE_MOMENTUM = 0.05
PERCELL_SD = 0.5


def _make_native(model, shapes: torch.Tensor, frac: float) -> None:
    """Background = a_e x (running mean native profile of group e); see ``native``."""
    from regularizedvi.nn._layers import one_hot_concat

    obs = model.module.observation
    obs.register_buffer("soup_shape", shapes.clone())
    obs.background_log = nn.Parameter(torch.full((shapes.shape[0], 1), float(np.log(frac))))
    n_cats = obs.n_ambient_cats_per_key

    def background(self_, ambient_codes):
        s = torch.exp(self_.background_log) * self_.soup_shape
        return one_hot_concat(ambient_codes, n_cats) @ s

    def mean(self_, rho, library, ambient_codes=None, scaling_codes=None):
        if self_.training:
            with torch.no_grad():
                onehot = one_hot_concat(ambient_codes, n_cats)
                sums = onehot.T @ (library * rho)
                seen = onehot.sum(0) > 0
                new = sums[seen] / sums[seen].sum(-1, keepdim=True)
                self_.soup_shape[seen] = (1 - NATIVE_MOMENTUM) * self_.soup_shape[seen] + NATIVE_MOMENTUM * new
        rate = rho + self_.background(ambient_codes)
        y = self_.feature_scaling(scaling_codes)
        if y is not None:
            rate = rate * y
        return library * rate

    obs.background = types.MethodType(background, obs)
    obs.mean = types.MethodType(mean, obs)


def _make_percell(model) -> None:
    """Per-cell background scale c_n = exp(h(x_n)), LogNormal(0, PERCELL_SD) penalty."""
    module = model.module
    obs = module.observation
    n_input = module.decoder.out.out_features
    module.bg_scale_net = nn.Sequential(nn.Linear(n_input, 16), nn.ReLU(), nn.Linear(16, 1))
    nn.init.zeros_(module.bg_scale_net[2].weight)
    nn.init.zeros_(module.bg_scale_net[2].bias)
    orig_inference, orig_generative, orig_loss = module.inference, module.generative, module.loss

    def inference(self_, x, **kw):
        out = orig_inference(x, **kw)
        out["log_bg_scale"] = self_.bg_scale_net(torch.log1p(x))
        return out

    def get_gen_input(tensors, inference_outputs):
        d = type(module)._get_generative_input(module, tensors, inference_outputs)
        obs._pending_scale = torch.exp(inference_outputs["log_bg_scale"]) \
            if "log_bg_scale" in inference_outputs else None
        return d

    base_background = obs.background

    def background(ambient_codes):
        s = base_background(ambient_codes)
        scale = getattr(obs, "_pending_scale", None)
        return s * scale if scale is not None and scale.shape[0] == s.shape[0] else s

    def loss(self_, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0,
             n_obs: float = 1.0):
        out = orig_loss(tensors, inference_outputs, generative_outputs, kl_weight=kl_weight, n_obs=n_obs)
        log_c = inference_outputs["log_bg_scale"].squeeze(-1)
        out.loss = out.loss + (0.5 * log_c**2 / PERCELL_SD**2).mean()
        return out

    module.inference = types.MethodType(inference, module)
    module._get_generative_input = get_gen_input
    module.loss = types.MethodType(loss, module)
    obs.background = background


def _make_cleanenc(model) -> None:
    from regularizedvi.data import _keys as K
    from regularizedvi.nn import one_hot_concat

    module = model.module
    obs = module.observation
    base_background = obs.background
    orig_get = module._get_inference_input

    def get_inference_input(tensors):
        return dict(orig_get(tensors), ambient_covs=tensors.get(K.AMBIENT))

    def inference(self_, x, encoder_covs=None, continuous_covs=None, ambient_covs=None):
        x_log = torch.log1p(x)
        total = x.sum(-1, keepdim=True)
        log_total = torch.log(total.clamp_min(1.0))
        with torch.no_grad():
            ambient = total * base_background(ambient_covs)
        enc = torch.log1p(torch.relu(x - ambient))
        if continuous_covs is not None:
            enc = torch.cat([enc, continuous_covs], -1)
        qz = self_.encoder(enc, one_hot_concat(encoder_covs, self_.n_encoder_cats_per_key))
        ql = self_.library_encoder(x_log, log_total)
        return {"z": qz.rsample(), "qz": qz, "ql": ql, "log_library": ql.rsample()}

    module._get_inference_input = get_inference_input
    module.inference = types.MethodType(inference, module)


def _add_dev_prior(model, tau: float) -> None:
    """Normal(0, tau^2) prior on the shape deviation, added to the global penalty."""
    obs = model.module.observation
    orig = obs.global_penalty

    def global_penalty():
        return orig() + 0.5 * (obs.background_dev**2).sum() / tau**2

    obs.global_penalty = global_penalty


def _add_shrink(model, rate: float) -> None:
    """``shrink<R>``: ``s_eg = a_e q_eg exp(-u_eg)``, Exponential(R) penalty on ``u_eg``."""
    obs = model.module.observation
    obs.background_shrink_raw = nn.Parameter(torch.full_like(obs.background_profile, -4.0))
    table, penalty = obs.background_table, obs.global_penalty

    def background_table(self_):
        return table() * torch.exp(-nn.functional.softplus(self_.background_shrink_raw))

    def global_penalty():
        return penalty() + rate * nn.functional.softplus(obs.background_shrink_raw).sum()

    obs.background_table = types.MethodType(background_table, obs)
    obs.global_penalty = global_penalty


ADV_LABEL = "adv_label"  # obs column of the adversary's labels


def adversary_labels(design, kind: str, seed: int, latent: np.ndarray | None = None) -> np.ndarray:
    """Integer label per cell: the true cell types ("lab"), cell type x condition ("labcond"),
    K k-means clusters of the data's principal components ("clu<K>") or of ``latent`` ("zclu<K>")."""
    if kind == "lab":
        return np.unique(design.cell_type, return_inverse=True)[1]
    if kind == "labcond":
        cond = design.condition if design.condition is not None else np.full(design.cell_type.size, "")
        return np.unique(np.char.add(np.char.add(design.cell_type.astype(str), "|"), cond.astype(str)),
                         return_inverse=True)[1]
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    if kind.startswith("zclu"):
        return KMeans(int(kind[4:]), n_init=10, random_state=seed).fit_predict(latent)

    X = design.observed.tocsr().astype(np.float64)
    X = X.multiply(1e4 / np.asarray(X.sum(1)).ravel()[:, None]).tocsr()
    X.data = np.log1p(X.data)
    pcs = TruncatedSVD(20, random_state=seed).fit_transform(X)
    return KMeans(int(kind[3:]), n_init=10, random_state=seed).fit_predict(pcs)


def background_matrix(model) -> torch.Tensor:
    obs = model.module.observation
    if not hasattr(obs, "soup_shape") and hasattr(obs, "background_table"):
        with torch.no_grad():  # the package's own background (profile or free form)
            return obs.background_table().detach().cpu()
    with torch.no_grad():
        s = torch.exp(obs.background_log)
        if hasattr(obs, "soup_shape"):
            s = s * obs.soup_shape
        if hasattr(obs, "background_dev"):
            s = s * torch.exp(obs.background_dev)
    return s.detach().cpu()


def build(variant: str) -> Spec:
    import regularizedvi as rv

    spec = Spec(model_cls=rv.AmbientRegularizedSCVI)
    for token in variant.split("+"):
        if token == "default":
            continue
        elif m := re.fullmatch(r"wu(\d+)", token):
            n = int(m.group(1))
            spec.plan_kwargs["n_epochs_kl_warmup"] = n if n > 0 else None
        elif m := re.fullmatch(r"init(\d+(?:\.\d+)?)", token):
            spec.init_fraction = float(m.group(1)) / 100
        elif m := re.fullmatch(r"lr(\d+(?:\.\d+)?)", token):
            spec.plan_kwargs["global_lr_multiplier"] = float(m.group(1))
        elif token == "prior":
            spec.model_kwargs["regularise_background"] = True
        elif m := re.fullmatch(r"l1x(\d+(?:\.\d+)?)", token):
            spec.l1 = float(m.group(1))
        elif m := re.fullmatch(r"l1n(\d+(?:\.\d+)?)", token):
            spec.l1n = float(m.group(1))
        elif m := re.fullmatch(r"l1s(\d+(?:\.\d+)?)", token):
            spec.l1s = float(m.group(1))
        elif m := re.fullmatch(r"l1p(\d+(?:\.\d+)?)", token):
            spec.l1p = float(m.group(1))
        elif m := re.fullmatch(r"dev(\d+(?:\.\d+)?)", token):
            spec.dev = float(m.group(1))
        elif token == "tied":
            spec.tied = True
        elif token == "cleanenc":
            spec.cleanenc = True
        elif token == "native":
            spec.native = True
        elif token == "percell":
            spec.percell = True
        elif token == "empty":
            spec.empty = True
        elif token == "measured":
            spec.measured = True
        elif token == "truesoup":
            spec.truesoup = True
        elif token == "enc":
            spec.setup_kwargs["encoder_covariate_keys"] = ["sample"]
        elif m := re.fullmatch(r"adv(\d+(?:\.\d+)?)", token):
            spec.model_kwargs["ambient_adversary"] = float(m.group(1))
        elif token == "advlab":
            spec.adv_labels = "lab"
        elif token == "advlabcond":
            spec.adv_labels = "labcond"
        elif m := re.fullmatch(r"advclu(\d+)", token):
            spec.adv_labels = f"clu{m.group(1)}"
        elif m := re.fullmatch(r"advzclu(\d+)", token):
            spec.adv_labels = f"zclu{m.group(1)}"
        elif m := re.fullmatch(r"mseed(\d+)", token):
            spec.model_seed_offset = int(m.group(1))
        elif m := re.fullmatch(r"shrink(\d+(?:\.\d+)?)", token):
            spec.shrink = float(m.group(1))
        else:
            raise ValueError(f"unknown variant token {token!r} in {variant!r}")
    if spec.adv_labels and not spec.model_kwargs.get("ambient_adversary"):
        raise ValueError(f"{variant!r}: advlab / advclu<K> condition the adversary: add adv<W>")
    if spec.shrink and (spec.tied or spec.native or spec.empty):
        raise ValueError(f"{variant!r}: shrink<R> acts on the package's own background and cannot be "
                         "combined with tied, native or empty (they replace that background)")
    return spec
