"""Candidate changes of the multimodal model, as bench-only variants (never in the core).

A variant is a name made of ``+``-joined parts (``"poe+bern"``); each part sets model
arguments (``latent_mode``, ``n_latent``, ``feature_scaling``...), training-plan arguments
(``n_epochs_kl_warmup``) or a behaviour of :class:`VariantMultimodalVAE`, a subclass of
the core's :class:`RegularizedMultimodalVAE` that the model's module is switched to after
construction (it adds no parameters, so the core's weights and set-up are untouched).

Behaviours (attributes of the module, all off by default = the core model):

* ``latent_combine = "poe"``: product of Gaussian experts. Per-modality encoders over one
  shared latent (built as ``weighted_mean``), combined per cell and dimension by precision,
  with the standard-normal prior as one more expert:
  ``prec = 1 + sum_m mask_m / var_m``, ``mean = sum_m mask_m mu_m / var_m / prec``. An
  encoder that is unsure of a dimension (large variance) contributes little to it.
* ``latent_combine = "mean"``: equal-weight average of the posteriors (MultiVI's
  ``modality_weights="equal"``), not learned weights.
* ``align_weight``: + ``align_weight * symmetric KL(q_rna || q_atac)`` per cell between the
  per-modality posteriors of a shared latent (MultiVI's Jeffreys penalty).
* ``rec_weight[m]``: multiplies modality m's reconstruction term of the loss.
* ``kl_slice_weight[m]``: multiplies the KL of modality m's latent slice (concatenation).
* ``likelihood[m]``: ``"nb"`` (core), ``"poisson"``, or ``"bernoulli"``: the counts
  binarised, ``P(x > 0) = 1 - exp(-mu)`` (the Poisson probability of a nonzero count at
  the same mean ``mu = l (rho + s) y``, a complementary log-log link).
* ``fixed_library``: modalities whose library is the observed total (no library encoder,
  no library KL).
* ``library_prior_scale[m]``: multiplies the library prior's variance.
* ``stop_cross_gradient``: in training (concatenation), each decoder reads the other
  modalities' latent slices detached: a slice is shaped by its own modality's decoder only,
  though every decoder still uses the whole ``z``. ``stop_cross_gradient = "rna"``: only
  the RNA slice is detached, and only in the other modalities' decoders (the RNA slice is
  shaped by the RNA decoder alone; the ATAC slice by both decoders).
* ``decoder_reads[m]``: the latent slices (modality names) modality m's decoder reads in
  concatenation mode; the other slices are zeroed at its input (in training and after).
  ``{"rna": ("rna",)}``: the RNA decoder reads its own slice only.
* ``detach_reads[m]``: slices that modality m's decoder reads detached in training (it uses
  them, but its loss does not shape them). With ``decoder_reads = {"rna": ("rna",)}`` and
  ``detach_reads = {"atac": ("rna",)}`` the RNA slice is trained by the RNA ELBO alone, as
  an RNA-only model, and the ATAC slice holds what ATAC adds given it.
* ``subset_elbo`` (with ``latent_combine = "poe"``): MVAE-style sub-sampled training. The
  loss adds, per modality m, the ELBO of m alone under its own posterior
  ``q(z | x_m) ~ prior x expert_m`` (m's decoder only): each expert is trained to be a
  posterior by itself, so the product combines calibrated experts.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal, kl_divergence

from regularizedvi import RegularizedMultimodalVI
from regularizedvi.data import _keys as K
from regularizedvi.module._base import standard_normal_like
from regularizedvi.module._multimodal import RegularizedMultimodalVAE


class VariantMultimodalVAE(RegularizedMultimodalVAE):
    """The core module plus the switchable behaviours of the module docstring."""

    latent_combine: str | None = None
    align_weight: float = 0.0
    rec_weight: dict = {}
    kl_slice_weight: dict = {}
    likelihood: dict = {}
    fixed_library: tuple = ()
    library_prior_scale: dict = {}
    stop_cross_gradient: bool | str = False
    subset_elbo: bool = False
    decoder_reads: dict = {}
    detach_reads: dict = {}

    def _decode_rho(self, name, z, nn_onehot, continuous_covs):
        reads, detached = self.decoder_reads.get(name), self.detach_reads.get(name, ())
        if (reads is not None or detached) and self.latent_mode == "concatenation":
            parts = []
            for m, (a, b) in self.latent_slices.items():
                part = z[:, a:b]
                if reads is not None and m not in reads:
                    part = torch.zeros_like(part)
                elif m in detached and self.training:
                    part = part.detach()
                parts.append(part)
            z = torch.cat(parts, -1)
        sg = self.stop_cross_gradient
        if sg and self.training and self.latent_mode == "concatenation":
            z = torch.cat([z[:, a:b] if m == name or (sg is not True and m != sg) else z[:, a:b].detach()
                           for m, (a, b) in self.latent_slices.items()], -1)
        return super()._decode_rho(name, z, nn_onehot, continuous_covs)

    def _subset_terms(self, tensors, inference_outputs, kl_weight):
        """Per cell: sum over modalities of -ELBO(x_m | q(z | x_m)) (reconstruction + KL z)."""
        from regularizedvi.nn import one_hot_concat

        gen = K.generative_covariates(tensors)
        nn_onehot = one_hot_concat(self._to(gen["nn_covs"]), self.n_nn_cats_per_key)
        total = 0.0
        for m in self.modality_names:
            expert = inference_outputs["qz_per_modality"][m]
            precision = 1.0 + expert.scale.pow(-2)
            q = Normal(expert.loc * expert.scale.pow(-2) / precision, precision.rsqrt(), validate_args=False)
            z = q.rsample()
            observation = self.observation_of(m)
            rho = self._decode_rho(m, z, nn_onehot, self._to(gen["continuous_covs"]))
            mu = observation.mean(rho, torch.exp(inference_outputs["log_library"][m]),
                                  self._to(gen["ambient_covs"]), self._to(gen["scaling_covs"]))
            dispersion = observation.dispersion(self._to(gen["dispersion_group"]), sample=self.training)
            ll = self._log_likelihood(tensors, m, {"mu": {m: mu}, "dispersion": {m: dispersion}})
            kl = kl_divergence(q, standard_normal_like(q)).sum(-1)
            total = total + (-ll + kl_weight * kl) * inference_outputs["masks"][m]
        return total

    # ------------------------------------------------------------------ inference
    def latent_posterior(self, x_logs, masks, encoder_covs, continuous_covs):
        if self.latent_combine is None:
            return super().latent_posterior(x_logs, masks, encoder_covs, continuous_covs)

        def with_cont(h):
            return h if continuous_covs is None else torch.cat([h, continuous_covs], -1)

        names = self.modality_names
        per = {m: self.encoders[m](with_cont(x_logs[m]), encoder_covs) for m in names}
        mask = torch.stack([masks[m] for m in names]).unsqueeze(-1)  # (M, n, 1)
        locs = torch.stack([per[m].loc for m in names])
        var = torch.stack([per[m].scale ** 2 for m in names])
        if self.latent_combine == "poe":
            precision = 1.0 + (mask / var).sum(0)
            loc = (mask * locs / var).sum(0) / precision
            return Normal(loc, precision.rsqrt(), validate_args=False), per
        if self.latent_combine == "mean":
            w = mask / mask.sum(0, keepdim=True).clamp_min(1e-12)
            return Normal((w * locs).sum(0), (w * var).sum(0).sqrt(), validate_args=False), per
        raise ValueError(f"unknown latent_combine {self.latent_combine!r}")

    def inference(self, xs, encoder_covs=None, continuous_covs=None):
        out = super().inference(xs, encoder_covs, continuous_covs)
        for m in self.fixed_library:
            log_total = torch.log(self._to(xs[m]).sum(-1, keepdim=True).clamp_min(1.0))
            out["ql"][m] = Normal(log_total, torch.full_like(log_total, 1e-4), validate_args=False)
            out["log_library"][m] = log_total
        return out

    # ------------------------------------------------------------------ likelihood
    def _log_likelihood(self, tensors, name, generative_outputs):
        kind = self.likelihood.get(name, "nb")
        if kind == "nb":
            return super()._log_likelihood(tensors, name, generative_outputs)
        x = self._to(tensors[self.counts_key(name)])
        mu = generative_outputs["mu"][name]
        if kind == "poisson":
            return (x * torch.log(mu + 1e-8) - mu - torch.lgamma(x + 1)).sum(-1)
        if kind == "bernoulli":
            hit = (x > 0).to(mu.dtype)
            log_p1 = torch.log(-torch.expm1(-mu.clamp_min(1e-8)))
            return (hit * log_p1 - (1 - hit) * mu).sum(-1)
        raise ValueError(f"unknown likelihood {kind!r}")

    # ------------------------------------------------------------------ loss
    # The core loss (ModalityVAE.loss) with its hooks set from the attributes above.
    def _reconstruction_weight(self, name):
        return self.rec_weight.get(name, 1.0)

    def _library_prior(self, name, library_codes):
        if name in self.fixed_library:
            return None  # the observed total: no library KL
        prior = super()._library_prior(name, library_codes)
        scale = self.library_prior_scale.get(name, 1.0)
        if scale != 1.0:
            prior = Normal(prior.loc, prior.scale * math.sqrt(scale), validate_args=False)
        return prior

    def _latent_kl(self, kl_z_dims, z_terms):
        if self.latent_mode == "concatenation" and self.kl_slice_weight:
            return sum(self.kl_slice_weight.get(m, 1.0) * kl_z_dims[..., a:b].sum(-1)
                       for m, (a, b) in self.latent_slices.items())
        return super()._latent_kl(kl_z_dims, z_terms)

    def _extra_penalties(self, tensors, inference_outputs, generative_outputs, kl_weight, kl_local):
        penalty = None
        if self.align_weight:
            masks, per = inference_outputs["masks"], inference_outputs["qz_per_modality"]
            a, b = (per[m] for m in self.modality_names[:2])
            both = masks[self.modality_names[0]] * masks[self.modality_names[1]]
            sym = (kl_divergence(a, b) + kl_divergence(b, a)).sum(-1) * both
            kl_local["alignment"] = sym
            penalty = self.align_weight * sym
        if self.subset_elbo:
            subset = self._subset_terms(tensors, inference_outputs, kl_weight)
            kl_local["subset_elbo"] = subset
            penalty = subset if penalty is None else penalty + subset
        return penalty


# ---------------------------------------------------------------------- variant parts
# name -> (model kwargs, plan kwargs, module attributes)
def _part(name: str, n_genes: int, n_peaks: int):
    model, plan, attrs = {}, {}, {}
    if name in ("base", "default"):
        pass
    elif name in ("concatenation", "weighted_mean", "single_encoder"):
        model["latent_mode"] = name
    elif name == "poe":
        model["latent_mode"], attrs["latent_combine"] = "weighted_mean", "poe"
    elif name == "mean":
        model["latent_mode"], attrs["latent_combine"] = "weighted_mean", "mean"
    elif name.startswith("align"):  # align1 = weight 1
        attrs["align_weight"] = float(name[5:] or 1)
    elif name.startswith("lat"):  # lat10x5: n_latent rna 10, atac 5; lat20: one int
        sizes = name[3:].split("x")
        model["n_latent"] = int(sizes[0]) if len(sizes) == 1 else {"rna": int(sizes[0]), "atac": int(sizes[1])}
    elif name.startswith("hid"):
        model["n_hidden"] = int(name[3:])
    elif name.startswith("wu"):  # wu0 = no warm-up (KL weight 1 throughout), wu20 = 20 epochs
        plan["n_epochs_kl_warmup"] = None if name == "wu0" else int(name[2:])
    elif name == "nofs":
        model["feature_scaling"] = {"atac": False}
    elif name == "fsrna":  # RNA feature scaling on (one global factor per gene, as the single model's)
        model["feature_scaling"] = {"rna": True}
    elif name == "bgatac":
        model["additive_background"] = {"atac": True}
    elif name == "bern":
        attrs.setdefault("likelihood", {})["atac"] = "bernoulli"
    elif name == "pois":
        attrs.setdefault("likelihood", {})["atac"] = "poisson"
    elif name.startswith("recw"):  # recw0.2 = ATAC reconstruction x 0.2; recwf = n_genes / n_peaks
        attrs["rec_weight"] = {"atac": n_genes / n_peaks if name == "recwf" else float(name[4:])}
    elif name.startswith("rnaw"):  # RNA reconstruction x w
        attrs["rec_weight"] = {"rna": float(name[4:])}
    elif name.startswith("klatac"):  # KL of the ATAC slice x w
        attrs["kl_slice_weight"] = {"atac": float(name[6:])}
    elif name == "fixlib":
        attrs["fixed_library"] = ("atac",)
    elif name == "fixliball":
        attrs["fixed_library"] = ("rna", "atac")
    elif name == "sg":
        attrs["stop_cross_gradient"] = True
    elif name == "sgrna":
        attrs["stop_cross_gradient"] = "rna"
    elif name == "mvae":
        model["latent_mode"], attrs["latent_combine"], attrs["subset_elbo"] = "weighted_mean", "poe", True
    elif name == "rnaown":  # the RNA decoder reads the RNA slice only
        attrs["decoder_reads"] = {"rna": ("rna",)}
    elif name == "atacown":  # the ATAC decoder reads the ATAC slice only
        attrs["decoder_reads"] = {"atac": ("atac",)}
    elif name == "detrna":  # the ATAC decoder reads the RNA slice detached
        attrs["detach_reads"] = {"atac": ("rna",)}
    elif name.startswith("libvar"):  # library prior variance x w (ATAC)
        attrs["library_prior_scale"] = {"atac": float(name[6:])}
    else:
        raise SystemExit(f"unknown variant part {name!r}")
    return model, plan, attrs


def resolve(variant: str, n_genes: int, n_peaks: int):
    """(model kwargs, plan kwargs, module attributes) of a ``+``-joined variant name."""
    model, plan, attrs = {}, {}, {}
    for part in variant.split("+"):
        m, p, a = _part(part, n_genes, n_peaks)
        for key, value in m.items():
            if isinstance(value, dict) and isinstance(model.get(key), dict):
                model[key].update(value)
            else:
                model[key] = value
        plan.update(p)
        for key, value in a.items():
            if isinstance(value, dict):
                attrs.setdefault(key, {}).update(value)
            else:
                attrs[key] = value
    return model, plan, attrs


def build(mdata, variant: str, n_genes: int, n_peaks: int):
    """A :class:`RegularizedMultimodalVI` on a registered MuData, switched to the variant.

    Returns ``(model, plan_kwargs)``."""
    model_kwargs, plan_kwargs, attrs = resolve(variant, n_genes, n_peaks)
    model = RegularizedMultimodalVI(mdata, **model_kwargs)
    if attrs:
        model.module.__class__ = VariantMultimodalVAE
        for key, value in attrs.items():
            setattr(model.module, key, value)
    return model, plan_kwargs
