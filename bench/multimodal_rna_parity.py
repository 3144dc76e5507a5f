"""Where the multimodal model's RNA path differs from the RNA-only model (issue 16).

Builds AmbientRegularizedSCVI on the SNARE-seq RNA and RegularizedMultimodalVI (defaults,
``batch_key = library``) on RNA + ATAC of the same nuclei with the same seed, then
compares, part by part:

1. the RNA parameters and buffers (names mapped ``encoder.`` -> ``encoders.rna.`` ...):
   present in one model only, shape, value at init;
2. with the single model's RNA parameters copied into the multimodal model, dropout off and
   every draw at its mean (z, library, dispersion): the RNA terms of the loss of one fixed
   minibatch, and the gradient of every RNA parameter (ATAC reconstruction weighted 0, as
   ``joint:recw0``; the ATAC slice's own terms do not reach the RNA parameters);
3. the training plan: optimizer group (lr), weight decay, eps, KL weight;
4. the data split and the per-epoch shuffle seed (torch RNG consumed before it);
5. ``get_latent_representation``: the joint latent's RNA slice vs the single model's latent.

Usage: .venv/bin/python bench/multimodal_rna_parity.py [--cells 600] [--peaks 500]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, set_threads  # noqa: E402
from multimodal_snare import BATCH, load_snare, make_mudata  # noqa: E402

PREFIXES = {"encoder.": "encoders.rna.", "library_encoder.": "library_encoders.rna.",
            "decoder.": "decoders.rna.", "observation.": "observations.rna.",
            "ambient_scale_encoder.": "ambient_scale_encoders.rna."}


def to_joint(name: str) -> str:
    for a, b in PREFIXES.items():
        if name.startswith(a):
            return b + name[len(a):]
    return name


def build(rna, atac, seed: int):
    import regularizedvi as rv

    a = rna.copy()
    rv.set_seed(seed)
    rv.AmbientRegularizedSCVI.setup_anndata(a, batch_key=BATCH)
    single = rv.AmbientRegularizedSCVI(a)
    m = make_mudata(rna, atac)
    rv.set_seed(seed)
    rv.RegularizedMultimodalVI.setup_mudata(m, modalities={"rna": "rna", "atac": "atac"}, batch_key=BATCH)
    joint = rv.RegularizedMultimodalVI(m)
    return single, joint


def compare_state(single, joint) -> None:
    s = dict(single.module.state_dict())
    j = dict(joint.module.state_dict())
    rna_j = {k for k in j if k.split(".")[1:2] == ["rna"]}
    print("== 1. RNA parameters / buffers")
    for name, value in s.items():
        jn = to_joint(name)
        if jn not in j:
            print(f"  only in single: {name} {tuple(value.shape)}")
            continue
        rna_j.discard(jn)
        if j[jn].shape != value.shape:
            print(f"  shape differs: {name} {tuple(value.shape)} vs {tuple(j[jn].shape)}")
            continue
        same = bool((j[jn] == value).all())
        print(f"  {'same' if same else 'DIFF'} at init: {name} {tuple(value.shape)}"
              + ("" if same else f" (max |d| {float((j[jn].float() - value.float()).abs().max()):.3g})"))
    for name in sorted(rna_j):
        print(f"  only in joint: {name} {tuple(j[name].shape)}")


def copy_rna(single, joint) -> None:
    import torch

    j = joint.module.state_dict()
    with torch.no_grad():
        for name, value in single.module.state_dict().items():
            jn = to_joint(name)
            if jn in j and j[jn].shape == value.shape:
                j[jn].copy_(value)


def deterministic(module) -> None:
    from regularizedvi.nn._layers import FeatureDropout

    for sub in module.modules():
        if isinstance(sub, FeatureDropout):
            sub.p = 0.0


def one_batch(model, idx):
    loader = model._make_data_loader(adata=model.adata, indices=idx, batch_size=len(idx), shuffle=False)
    return next(iter(loader))


def loss_and_grads(model, tensors, recw0: bool):
    import torch
    from torch.distributions import Normal

    module = model.module
    module.train()
    deterministic(module)
    if recw0:
        module._reconstruction_weight = lambda name: 0.0 if name == "atac" else 1.0
    orig_rsample = Normal.rsample
    Normal.rsample = lambda self, sample_shape=torch.Size(): self.loc.expand(sample_shape + self.loc.shape)
    obs = [module.observation_of(m) for m in module.modality_names]
    origs = [o.dispersion for o in obs]
    for o, f in zip(obs, origs):
        o.dispersion = (lambda f: lambda codes, sample: f(codes, False))(f)
    try:
        module.zero_grad()
        _, _, out = module(tensors, loss_kwargs={"kl_weight": 1.0, "n_obs": float(model.adata.n_obs)})
        out.loss.backward()
    finally:
        Normal.rsample = orig_rsample
        for o in obs:
            del o.dispersion
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in module.named_parameters()}
    return out, grads


def compare_loss(single, joint, n_cells: int) -> None:
    import torch

    print("== 2. one minibatch, single's RNA parameters copied, dropout off, draws at their means")
    copy_rna(single, joint)
    idx = np.arange(min(128, n_cells))
    out_s, g_s = loss_and_grads(single, one_batch(single, idx), recw0=False)
    out_j, g_j = loss_and_grads(joint, one_batch(joint, idx), recw0=True)
    rec_s = out_s.reconstruction_loss
    rec_s = rec_s if isinstance(rec_s, torch.Tensor) else next(iter(rec_s.values()))
    pairs = [("reconstruction", rec_s, out_j.reconstruction_loss["reconstruction_rna"])]
    for k, v in out_s.kl_local.items():
        jk = "kl_divergence_z_rna" if k == "kl_divergence_z" else f"{k}_rna"
        pairs.append((k, v, out_j.kl_local.get(jk)))
    for k, a, b in pairs:
        d = float((a - b).abs().max()) if b is not None else float("nan")
        print(f"  {k:28s} single {float(a.mean()):10.4f}  joint {float(b.mean()) if b is not None else float('nan'):10.4f}"
              f"  max |d| {d:.3g}")
    glob_s = float(single.module.observation.global_penalty())
    glob_j = float(joint.module.observations["rna"].global_penalty())
    print(f"  global penalty (RNA obs)     single {glob_s:.4f}  joint {glob_j:.4f}")
    worst = []
    for n, g in g_s.items():
        jn = to_joint(n)
        if jn not in g_j or g is None or g_j[jn] is None or g_j[jn].shape != g.shape:
            print(f"  grad not comparable: {n}")
            continue
        rel = float((g - g_j[jn]).abs().max() / g.abs().max().clamp_min(1e-30))
        worst.append((rel, n))
    worst.sort(reverse=True)
    print("  largest relative gradient differences: " + ", ".join(f"{n} {r:.2g}" for r, n in worst[:6]))


def compare_plan(single, joint) -> None:
    from regularizedvi.model._training import RegularizedTrainingPlan

    print("== 3. training plan")
    for label, model in (("single", single), ("joint", joint)):
        plan = RegularizedTrainingPlan(model.module, lr=1e-3, weight_decay=1e-6, n_epochs_kl_warmup=None)
        opt = plan.configure_optimizers()["optimizer"]
        lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
        rna = {to_joint(n) if label == "single" else n: lrs[id(p)]
               for n, p in model.module.named_parameters()
               if label == "single" or n.split(".")[1:2] == ["rna"]}
        print(f"  {label}: groups {[len(g['params']) for g in opt.param_groups]}, lr x10 on "
              f"{sorted(n for n, lr in rna.items() if lr > 1e-3)}; eps {opt.defaults['eps']}, "
              f"wd {opt.defaults['weight_decay']}, kl_weight {plan.loss_kwargs.get('kl_weight')}")


def compare_loader(single, joint, seed: int) -> None:
    import regularizedvi as rv
    from regularizedvi.data._fast_loader import FastDataModule

    print("== 4. data split")
    out = {}
    for label, model in (("single", single), ("joint", joint)):
        rv.set_seed(seed)
        out[label] = FastDataModule(model.adata_manager, batch_size=128)
    a, b = out["single"], out["joint"]
    print(f"  same split: val {np.array_equal(a.val_idx, b.val_idx)}, train {np.array_equal(a.train_idx, b.train_idx)}"
          f"  (n_val {a.n_val} / {b.n_val})")


def build_each(rna, atac, seed: int):
    import regularizedvi as rv
    import torch

    a = rna.copy()
    rv.set_seed(seed)
    rv.AmbientRegularizedSCVI.setup_anndata(a, batch_key=BATCH)
    rv.AmbientRegularizedSCVI(a)
    s = int(torch.randint(0, 2**31 - 1, (1,)).item())
    m = make_mudata(rna, atac)
    rv.set_seed(seed)
    rv.RegularizedMultimodalVI.setup_mudata(m, modalities={"rna": "rna", "atac": "atac"}, batch_key=BATCH)
    rv.RegularizedMultimodalVI(m)
    j = int(torch.randint(0, 2**31 - 1, (1,)).item())
    return s, j


def compare_latent(single, joint) -> None:
    print("== 5. get_latent_representation (single's RNA parameters in both)")
    zs = single.get_latent_representation()
    zj = joint.get_latent_representation()
    zr = joint.get_latent_representation(modality="rna")
    a, b = joint.module.latent_slices["rna"]
    print(f"  joint shape {zj.shape}, RNA slice {a}:{b}; max |single - joint RNA slice| "
          f"{np.abs(zs - zj[:, a:b]).max():.3g}; modality='rna' == slice: {np.array_equal(zr, zj[:, a:b])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=600)
    parser.add_argument("--peaks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet()
    set_threads(1)
    rna, atac = load_snare(args.cells, args.peaks)
    single, joint = build(rna, atac, args.seed)
    print(single._model_summary_string)
    print(joint._model_summary_string)
    compare_state(single, joint)
    compare_plan(single, joint)
    compare_loader(single, joint, args.seed)
    s, j = build_each(rna, atac, args.seed)
    print(f"  per-epoch shuffle seed drawn after construction: single {s}, joint {j}")
    compare_loss(single, joint, rna.n_obs)
    compare_latent(single, joint)


if __name__ == "__main__":
    main()
