"""Where the multimodal model's RNA path differs from the RNA-only model (issue 16).

Builds AmbientRegularizedSCVI on the SNARE-seq RNA and RegularizedMultimodalVI (defaults,
``batch_key = library``) on RNA + ATAC of the same nuclei with the same seed, then
compares, part by part:

1. the RNA parameters and buffers (names mapped ``encoder.`` -> ``encoders.rna.`` ...):
   present in one model only, shape, value at init;
2. the training plan: optimizer group (lr), weight decay, eps, KL weight;
3. the data split and the per-epoch shuffle seed (torch RNG consumed before it);
4. trained from the same seed with the same RNA options: the joint latent's RNA slice vs
   the single model's latent (identical since each modality draws from a random stream
   of its own, ``regularizedvi/module/_streams.py``; tests/python/test_rna_path_parity.py
   checks one minibatch's loss and gradients and a short training run on simulated data).

Usage: .venv/bin/python bench/multimodal_rna_parity.py [--cells 600] [--peaks 500] [--epochs 5]
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

SETUP = {"batch_key": BATCH}
JOINT_SETUP = {"modalities": {"rna": "rna", "atac": "atac"}, "batch_key": BATCH}


def to_joint(name: str) -> str:
    from regularizedvi.model._parity import joint_name

    return joint_name(name, "rna") or name


def build(rna, atac, seed: int, joint_kwargs: dict | None = None, train_kwargs: dict | None = None):
    from regularizedvi.model._parity import seeded_pair

    return seeded_pair(rna.copy(), make_mudata(rna, atac), seed, SETUP, JOINT_SETUP,
                       joint_kwargs=joint_kwargs, train_kwargs=train_kwargs)


def compare_state(single, joint) -> None:
    from regularizedvi.model._parity import modality_state

    s = dict(single.module.state_dict())
    j = dict(joint.module.state_dict())
    rna_j = set(modality_state(joint, "rna"))
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


def compare_plan(single, joint) -> None:
    from regularizedvi.model._training import RegularizedTrainingPlan

    print("== 2. training plan")
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

    print("== 3. data split")
    out = {}
    for label, model in (("single", single), ("joint", joint)):
        rv.set_seed(seed)
        out[label] = FastDataModule(model.adata_manager, batch_size=128)
    a, b = out["single"], out["joint"]
    print(f"  same split: val {np.array_equal(a.val_idx, b.val_idx)}, train {np.array_equal(a.train_idx, b.train_idx)}"
          f"  (n_val {a.n_val} / {b.n_val})")


def build_each(rna, atac, seed: int):
    """The next draw of torch's global generator right after each model is built from ``seed``
    (what the per-epoch shuffle takes): equal when building left the generator alike."""
    import torch
    from regularizedvi.model._parity import seeded_pair

    draws = []
    seeded_pair(rna.copy(), make_mudata(rna, atac), seed, SETUP, JOINT_SETUP,
                after=lambda _: draws.append(int(torch.randint(0, 2**31 - 1, (1,)).item())))
    return tuple(draws)


def compare_training(rna, atac, seed: int, epochs: int) -> None:
    """Train both from ``seed`` with the same RNA options (the single model's RNA feature
    scaling turned on in the joint one) and compare the RNA slice with the single latent."""
    print(f"== 4. trained {epochs} epochs from seed {seed}, joint with feature_scaling={{'rna': True}}")
    single, joint = build(rna, atac, seed, joint_kwargs={"feature_scaling": {"rna": True}},
                          train_kwargs={"max_epochs": epochs, "accelerator": "cpu", "enable_progress_bar": False})
    zs = single.get_latent_representation()
    zr = joint.get_latent_representation(modality="rna")
    a, b = joint.module.latent_slices["rna"]
    print(f"  max |single latent - joint RNA slice| {np.abs(zs - zr).max():.3g} (slice {a}:{b} of "
          f"{joint.module.n_latent}); identical: {np.array_equal(zs, zr)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=600)
    parser.add_argument("--peaks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
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
    compare_training(rna, atac, args.seed, args.epochs)


if __name__ == "__main__":
    main()
