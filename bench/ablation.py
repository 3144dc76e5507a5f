"""Ablation of integration on kang: which component keeps the sample effect in the latent.

Usage: .venv/bin/python bench/ablation.py VARIANT
Prints kNN cell-type purity, sample-mixing entropy and label silhouette (150 epochs, seed 0).
Variants (batch_key=sample_id + nn_conditioning unless said): base, scvi (scvi-tools SCVI),
onedisp (one dispersion group), noamb (no ambient key), lr1 (global step x1), enc (+ encoder
covariates), obslib (library fixed at the observed total), nonoise (library posterior sd
fixed at 1e-3), offset0 (library offset fixed at 0), lib1 (library prior variance 1.0x),
normin / normin_lib1 (encoder input log1p(CP10k)), lvinit_<log var>[_w0] (library posterior
start), nodispsample (dispersion posterior not sampled), outcov / outcov_enc (covariates in
the decoder's output layer), kl<w> (final KL weight on z and l, e.g. kl125 = 1.25), lnaff (decoder LayerNorm with affine).
Environment: ABLATION_EPOCHS (default 150). Exploration script: variants monkeypatch the package.
"""
import json
import sys
from pathlib import Path

import anndata
import scvi
import torch
torch.set_num_threads(1)
import regularizedvi as rv
from regularizedvi import metrics
v = sys.argv[1]
if v == "obslib":
    from torch.distributions import Normal
    from regularizedvi.nn._encoders import LibraryEncoder
    def fwd(self, x_log1p, log_total):
        h = self.body(x_log1p)
        return Normal(log_total + 0 * self.offset(h), torch.full_like(log_total, 1e-3))
    LibraryEncoder.forward = fwd
if v in ("normin", "normin_lib1"):
    from regularizedvi.module import _vae
    orig_inf = _vae.RegularizedVAE.inference.__wrapped__ if hasattr(_vae.RegularizedVAE.inference, "__wrapped__") else None
    from regularizedvi.nn import one_hot_concat
    from scvi.module.base import auto_move_data
    @auto_move_data
    def inf(self, x, encoder_covs=None, continuous_covs=None):
        total = x.sum(-1, keepdim=True).clamp_min(1.0)
        x_log = torch.log1p(x)
        x_enc = torch.log1p(x / total * 1e4)
        qz = self.encoder(x_enc, one_hot_concat(encoder_covs, self.n_encoder_cats_per_key))
        ql = self.library_encoder(x_log, torch.log(total))
        return {"z": qz.rsample(), "qz": qz, "ql": ql, "log_library": ql.rsample()}
    _vae.RegularizedVAE.inference = inf
if v in ("offset0", "nonoise"):
    from torch.distributions import Normal
    from regularizedvi.nn._encoders import LibraryEncoder
    def fwd2(self, x_log1p, log_total):
        h = self.body(x_log1p)
        if v == "offset0":
            var = torch.exp(self.log_var(h)) + self.var_eps
            return Normal(log_total + 0 * self.offset(h), var.sqrt())
        return Normal(log_total + self.offset(h), torch.full_like(log_total, 1e-3) + 0 * self.log_var(h))
    LibraryEncoder.forward = fwd2
if v.startswith("lvinit"):
    from regularizedvi.nn._encoders import LibraryEncoder
    orig_init = LibraryEncoder.__init__
    def init2(self, *a, **k):
        orig_init(self, *a, **k)
        torch.nn.init.constant_(self.log_var.bias, float(v.split("_")[1]))
        if v.endswith("w0"):
            torch.nn.init.zeros_(self.log_var.weight)
    LibraryEncoder.__init__ = init2
if v in ("outcov", "outcov_enc"):
    # covariates also feed the decoder's output layer (a per-gene, per-category offset
    # before the softplus), not only its LayerNormed hidden layer
    from regularizedvi.nn import _decoders as D
    orig_dinit = D.SoftplusDecoder.__init__
    def dinit(self, n_input, n_output, n_covariates=0, *a, **k):
        orig_dinit(self, n_input, n_output, n_covariates, *a, **k)
        self.n_cov_out = n_covariates
        if n_covariates:
            self.out_cov = torch.nn.Linear(n_covariates, n_output, bias=False)
            torch.nn.init.zeros_(self.out_cov.weight)
    def dfwd(self, z, covariates=None):
        pre = self.out(self.body(z, covariates))
        if self.n_cov_out:
            pre = pre + self.out_cov(covariates)
        return torch.nn.functional.softplus(pre)
    D.SoftplusDecoder.__init__ = dinit
    D.SoftplusDecoder.forward = dfwd
if v == "lnaff":
    # LayerNorm with a learned scale and shift in the decoder's hidden layer
    from regularizedvi.nn import _decoders as D2
    orig_dinit2 = D2.SoftplusDecoder.__init__
    def dinit2(self, *a, **k):
        orig_dinit2(self, *a, **k)
        for block in self.body.layers:
            block[2] = torch.nn.LayerNorm(block[1].out_features, elementwise_affine=True)
    D2.SoftplusDecoder.__init__ = dinit2
if v == "nodispsample":
    from regularizedvi.module import _observation as O
    orig_disp = O.CountObservationModel.dispersion
    O.CountObservationModel.dispersion = lambda self, codes, sample: orig_disp(self, codes, False)
if v in ("lib1", "normin_lib1"):
    from regularizedvi import _constants as CC
    CC.LIBRARY_PRIOR_VARIANCE_SCALE = 1.0
ad = anndata.read_h5ad(Path(__file__).resolve().parents[2] / "shared" / "data" / "kang_ifnb.h5ad")
torch.manual_seed(0); scvi.settings.seed = 0
if v == "base":
    rv.AmbientRegularizedSCVI.setup_anndata(ad, batch_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
elif v == "onedisp":
    rv.AmbientRegularizedSCVI.setup_anndata(ad, ambient_covariate_keys=["sample_id"], library_size_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
elif v == "scvi":
    scvi.model.SCVI.setup_anndata(ad, batch_key="sample_id")
elif v == "obslib":
    rv.AmbientRegularizedSCVI.setup_anndata(ad, batch_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
elif v == "noamb":
    rv.AmbientRegularizedSCVI.setup_anndata(ad, library_size_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
elif v in ("normin", "lib1", "normin_lib1", "offset0", "nonoise") or v.startswith("lvinit"):
    rv.AmbientRegularizedSCVI.setup_anndata(ad, batch_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
elif v == "nodispsample":
    rv.AmbientRegularizedSCVI.setup_anndata(ad, batch_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
elif v == "outcov":
    rv.AmbientRegularizedSCVI.setup_anndata(ad, batch_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
elif v in ("enc", "outcov_enc"):
    rv.AmbientRegularizedSCVI.setup_anndata(ad, batch_key="sample_id", nn_conditioning_covariate_keys=["sample_id"], encoder_covariate_keys=["sample_id"])
elif v == "lr1" or v.startswith("kl") or v == "lnaff":
    rv.AmbientRegularizedSCVI.setup_anndata(ad, batch_key="sample_id", nn_conditioning_covariate_keys=["sample_id"])
if v == "scvi":
    m = scvi.model.SCVI(ad)
else:
    m = rv.AmbientRegularizedSCVI(ad)
import os
plan = {"global_lr_multiplier": 1.0} if v == "lr1" else {}
if v.startswith("kl"):
    plan["max_kl_weight"] = int(v[2:]) / 100
m.train(max_epochs=int(os.environ.get("ABLATION_EPOCHS", 150)), enable_progress_bar=False,
        **({"plan_kwargs": plan} if plan else {}))
z = m.get_latent_representation()
print(json.dumps({"variant": v, "purity": metrics.knn_label_purity(z, ad.obs.cell_type), "mixing": metrics.batch_mixing_entropy(z, ad.obs.sample_id), "asw": metrics.label_silhouette(z, ad.obs.cell_type)}))
