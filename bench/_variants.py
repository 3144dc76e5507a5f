"""Model variants for the integration benchmark (``quality.py --variant NAME``).

Exploration only (never used by the package): a variant either changes the covariate
set-up or monkeypatches a building block before the model is built. ``apply(name,
batch_key)`` patches and returns the ``setup_anndata`` keyword arguments for the
"regularizedvi+nn" model.

Variants:
  base      batch_key + nn_conditioning_covariate_keys (the documented set-up, with the
            package's defaults: covariates after the LayerNorm, gain 3, feature scaling
            per nn-conditioning category)
  hdrop     + dropout also on the encoder's hidden layer, i.e. on the input of the
            mean / variance heads (dropout before every linear layer of the encoder)
  nofs      feature scaling off (one factor per feature; the default before 2026-11-26)
  fs        purpose keys: ambient / dispersion / library / nn and feature scaling per sample
  obslib    library fixed at the observed total (library encoder bypassed)
  covpost   decoder: covariates shift the hidden layer after its LayerNorm, not before
            (the package's behaviour since 2026-11-26: a no-op there; kept to name old results)
  covpre    the package before that change: covariates concatenated to each layer's input,
            normalised with it, plain weights (every MLP)
  bn        BatchNorm (with affine) instead of LayerNorm in encoder and decoder
  nolndec   no normalisation layer in the decoder
  covx<K>   covariate columns stored at 1/K of their effect (equalised learning rate,
            package default K = 3; covx1 = plain weights)
  wu<N>     KL warm-up over N epochs (default 400)
  drop<P>   dropout rate P/100 (default 10)
  adv<W>    the package's ambient adversary, ambient_adversary=W (default 0: off)
  rate<A>_<B>  dispersion-rate hyper-prior lambda ~ Gamma(A, B) instead of Gamma(9, 3)
            (decimal point written "p": rate1_0p1 = Gamma(1, 0.1))
  nodisp    no dispersion prior at all (theta a point estimate per feature and group, like
            scVI's; no posterior sampling)
  nosamp    dispersion posterior not sampled in training (the prior kept)
  libvar<K>  library prior variance scale K/10 (default 5 = 0.5)
  rhonorm   decoder output normalised per cell (softplus, then divided by its sum): the
            decoder can no longer carry a cell's scale, the library takes all of it
  encscale  z encoder reads log1p(x / y_t), the feature scaling divided out (y detached;
            encscalend: not detached); see bench/_encoder_variants.py
  encnorm   z encoder reads depth-normalised counts log1p(x / N_n * C) (bench/_encoder_variants.py)
Variants combine with "+", e.g. ``hdrop+fs``.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal


def _hdrop():
    from regularizedvi import _constants as C
    from regularizedvi.nn import _encoders as E
    from regularizedvi.nn._layers import FeatureDropout

    orig_init = E.GaussianEncoder.__init__

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        self.head_dropout = FeatureDropout(k.get("dropout_rate", a[5] if len(a) > 5 else C.DROPOUT_RATE))

    def forward(self, x, covariates=None):
        h = self.head_dropout(self.body(x, covariates))
        var = torch.exp(self.log_var(h)) + self.var_eps
        return Normal(self.mean(h), var.sqrt(), validate_args=False)

    E.GaussianEncoder.__init__ = init
    E.GaussianEncoder.forward = forward


def _obslib():
    from regularizedvi.nn._encoders import LibraryEncoder

    def forward(self, x_log1p, log_total):
        h = self.body(x_log1p)
        return Normal(log_total + 0 * self.offset(h), torch.full_like(log_total, 1e-3))

    LibraryEncoder.forward = forward


def _covpre():
    """Every MLP built from now on runs the package's own format-1 rule."""
    from regularizedvi.nn import _layers as L

    _gain(1.0)
    orig_init = L.MLP.__init__

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        self.use_covariates_before_norm()

    L.MLP.__init__ = init


def _gain(k: float):
    """Every MLP built from now on stores its covariate columns at 1/k of their effect."""
    from regularizedvi.nn import _layers as L

    orig_init = L.MLP.__init__

    def init(self, *a, **kw):
        kw["covariate_gain"] = k
        orig_init(self, *a, **kw)

    L.MLP.__init__ = init


def _norm(kind: str, where: tuple[str, ...]):
    from regularizedvi.nn import _decoders as D
    from regularizedvi.nn import _encoders as E

    def patch(cls):
        orig = cls.__init__

        def init(self, *a, **k):
            orig(self, *a, **k)
            for block in self.body.layers:
                n = block[1].out_features
                block[2] = torch.nn.BatchNorm1d(n, momentum=0.01, eps=1e-3) if kind == "bn" else torch.nn.Identity()

        cls.__init__ = init

    if "decoder" in where:
        patch(D.SoftplusDecoder)
    if "encoder" in where:
        patch(E.GaussianEncoder)


def _rate_prior(alpha: float, beta: float):
    from regularizedvi import _constants as C

    C.DISPERSION_RATE_PRIOR_ALPHA, C.DISPERSION_RATE_PRIOR_BETA = alpha, beta


def _nodisp():
    from regularizedvi.module._observation import CountObservationModel

    orig_disp = CountObservationModel.dispersion

    def dispersion(self, codes, sample):
        return orig_disp(self, codes, False)

    def dispersion_kl(self):
        return 0.0 * self.log_theta_mu.sum() + 0.0 * self.log_theta_log_sigma.sum()

    def rate_prior_off(self):
        return self.dispersion_kl()

    CountObservationModel.dispersion = dispersion
    CountObservationModel.dispersion_kl = dispersion_kl
    _rate_prior(1.0, 1e-6)  # ~flat hyper-prior: lambda no longer matters


def _nosamp():
    from regularizedvi.module._observation import CountObservationModel

    orig_disp = CountObservationModel.dispersion
    CountObservationModel.dispersion = lambda self, codes, sample: orig_disp(self, codes, False)


def _rhonorm():
    from torch import nn

    from regularizedvi import _constants as C
    from regularizedvi.nn._decoders import SoftplusDecoder

    def forward(self, z, covariates=None):
        r = nn.functional.softplus(self.out(self.body(z, covariates)))
        return r / r.sum(-1, keepdim=True) * (1.0 - C.BACKGROUND_INIT_FRACTION)

    SoftplusDecoder.forward = forward


def _num(text: str) -> float:
    return float(text.replace("p", "."))


MODEL_KWARGS: dict = {}  # extra AmbientRegularizedSCVI(...) arguments
PLAN_KWARGS: dict = {}  # extra plan_kwargs of train()


BATCH = "__batch__"  # stands for the dataset's batch column in apply()'s set-up


def for_key(value, batch_key: str):
    """A set-up value of apply() with the dataset's batch column filled in."""
    if isinstance(value, list):
        return [batch_key if v == BATCH else v for v in value]
    return batch_key if value == BATCH else value


def apply(name: str, batch_key: str = BATCH) -> dict:
    setup = {"batch_key": batch_key, "nn_conditioning_covariate_keys": [batch_key]}
    for part in name.split("+"):
        if part == "base":
            pass
        elif part == "hdrop":
            _hdrop()
        elif part == "fs":
            setup = {
                "ambient_covariate_keys": [batch_key], "dispersion_key": batch_key,
                "library_size_key": batch_key, "nn_conditioning_covariate_keys": [batch_key],
                "feature_scaling_covariate_keys": [batch_key],
            }
        elif part == "nofs":
            setup["feature_scaling_covariate_keys"] = []
        elif part == "obslib":
            _obslib()
        elif part == "covpost":
            pass  # the package's behaviour now
        elif part == "covpre":
            _covpre()
        elif part == "bn":
            _norm("bn", ("encoder", "decoder"))
        elif part == "nolndec":
            _norm("none", ("decoder",))
        elif part.startswith("covx"):
            _gain(float(part[4:]))
        elif part.startswith("wu"):
            PLAN_KWARGS["n_epochs_kl_warmup"] = int(part[2:])
        elif part.startswith("rate"):
            a, b = part[4:].split("_")
            _rate_prior(_num(a), _num(b))
        elif part == "nodisp":
            _nodisp()
        elif part == "rhonorm":
            _rhonorm()
        elif part == "nosamp":
            _nosamp()
        elif part in ("encscale", "encscalend"):
            from _encoder_variants import apply_encscale

            apply_encscale(detach=part == "encscale")
        elif part == "encnorm":
            from _encoder_variants import apply_encnorm

            apply_encnorm()
        elif part.startswith("libvar"):
            from regularizedvi import _constants as C

            C.LIBRARY_PRIOR_VARIANCE_SCALE = int(part[6:]) / 10
        elif part.startswith("adv"):
            MODEL_KWARGS["ambient_adversary"] = float(part[3:])
        elif part.startswith("drop"):
            MODEL_KWARGS["dropout_rate"] = int(part[4:]) / 100
        else:
            raise SystemExit(f"unknown variant {part!r}; see bench/_variants.py")
    return setup
