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
             native share of its counts), a sparsity-favouring prior on the decoder's signal
  tied       background s_e = a_e q_e: shape q_e fixed to the group's mean observed profile,
             amount a_e learned (starts at the init fraction)
  empty      the background's shape (and start) is the measured empty-droplet profile of each
             group (designs that have one; with ``tied`` only the amount is learned)
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

    def after_init(self, model, design) -> None:
        from _ambient_designs import mean_profiles

        obs = model.module.observation
        if not (self.tied or self.empty or self.init_fraction != 0.01):
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
        if self.tied:
            obs.register_buffer("soup_shape", shapes)
            obs.background_log = nn.Parameter(torch.full((shapes.shape[0], 1), float(np.log(frac))))

            def background(self_, ambient_codes):
                from regularizedvi.nn._layers import one_hot_concat

                s = torch.exp(self_.background_log) * self_.soup_shape
                if not self_.n_ambient_cats_per_key:
                    return s
                return one_hot_concat(ambient_codes, self_.n_ambient_cats_per_key) @ s

            obs.background = types.MethodType(background, obs)
        else:
            with torch.no_grad():
                obs.background_log.copy_(torch.log(frac * shapes))
        self._add_l1(model)

    def _add_l1(self, model) -> None:
        if self.l1:
            module = model.module
            weight = self.l1
            orig_loss = module.loss

            def loss(self_, tensors, inference_outputs, generative_outputs, **kw):
                out = orig_loss(tensors, inference_outputs, generative_outputs, **kw)
                rho_total = generative_outputs["rho"].sum(-1)
                out.loss = out.loss + weight * rho_total.mean()
                return out

            module.loss = types.MethodType(loss, module)

    def report(self, model, design) -> dict:
        return {"soups": background_matrix(model).numpy() / background_matrix(model).numpy().sum(1, keepdims=True)}


def background_matrix(model) -> torch.Tensor:
    obs = model.module.observation
    with torch.no_grad():
        s = torch.exp(obs.background_log)
        if hasattr(obs, "soup_shape"):
            s = s * obs.soup_shape
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
        elif token == "tied":
            spec.tied = True
        elif token == "empty":
            spec.empty = True
        else:
            raise ValueError(f"unknown variant token {token!r} in {variant!r}")
    return spec
