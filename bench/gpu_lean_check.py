"""GPU check of the lean loop and its CUDA-graph step (regularizedvi/model/_lean_loop.py).

Same simulated data, seed and model, trained on the GPU three ways: Lightning loop with the
fast loader, lean loop eager, lean loop with the step replayed as a CUDA graph. Prints wall
time per epoch, final train / validation ELBO, and cell-type purity / batch mixing of the
latent (the graphed run draws its random numbers in another order, so it is compared on
quality, not bitwise). Then a breakdown of one graphed step: minibatch gather vs replay.

    python3 bench/gpu_lean_check.py [--cells 20000 --genes 2000 --epochs 8 --batch 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet  # noqa: E402


def train(adata, how: str, args):
    import scvi

    import regularizedvi as rv
    from regularizedvi import _constants as C
    from regularizedvi import metrics

    scvi.settings.seed = 0
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=128, n_latent=10)
    C.CUDA_GRAPH_TRAINING = how == "lean-graph"
    loop = "lightning" if how == "lightning" else "lean"
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.train(max_epochs=args.epochs, batch_size=args.batch, accelerator="gpu", data_loader="fast",
                loop=loop, enable_progress_bar=False, check_val_every_n_epoch=1)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    z = model.get_latent_representation()
    h = model.history_
    return model, {
        "how": how, "loop": model.training_loop_used, "cuda_graph": getattr(model, "cuda_graph_used", False),
        "s_per_epoch": wall / args.epochs,
        "elbo_train": float(h["elbo_train"].values[-1, 0]),
        "elbo_validation": float(h["elbo_validation"].values[-1, 0]),
        "purity": metrics.knn_label_purity(z[:5000], adata.obs["cell_type"].to_numpy()[:5000]),
        "mixing": metrics.batch_mixing_entropy(z[:5000], adata.obs["batch"].to_numpy()[:5000]),
    }


def breakdown(model, args) -> dict:
    """Per step: the fast loader's gather alone, and a graph replay alone (synchronised)."""
    from regularizedvi.data._fast_loader import FastDataModule
    from regularizedvi.model._lean_loop import _GraphedStep

    dm = FastDataModule(model.adata_manager, batch_size=args.batch, device="cuda")
    dm.setup()
    loader = dm.train_dataloader()
    batches = []
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in loader:
        if next(iter(batch.values())).shape[0] == args.batch:  # full minibatches only
            batches.append(batch)
        if len(batches) == 100:
            break
    torch.cuda.synchronize()
    gather_ms = (time.perf_counter() - t0) / len(batches) * 1e3
    module = model.module.to("cuda").train()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches:  # eager step (no optimizer), for comparison
        module(batch, loss_kwargs={"kl_weight": 1.0, "n_obs": dm.n_train})[2].loss.backward()
    torch.cuda.synchronize()
    eager_fwd_bwd_ms = (time.perf_counter() - t0) / len(batches) * 1e3
    opt = torch.optim.Adam(module.parameters(), lr=1e-4, fused=True, capturable=True)
    for _ in range(3):  # state initialised before capture
        opt.zero_grad(set_to_none=True)
        module(batches[0], loss_kwargs={"kl_weight": 1.0, "n_obs": dm.n_train})[2].loss.backward()
        opt.step()
    step = _GraphedStep(module, opt, batches[0], {"kl_weight": 1.0, "n_obs": dm.n_train})
    sums = type("S", (), {"cells": 0, "batches": 0})()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches:
        step(batch, 1.0, sums)
    torch.cuda.synchronize()
    replay_ms = (time.perf_counter() - t0) / len(batches) * 1e3
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in batches:
        step.graph.replay()
    torch.cuda.synchronize()
    replay_only_ms = (time.perf_counter() - t0) / len(batches) * 1e3
    if args.batch == 1024:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for batch in batches[:20]:
                module(batch, loss_kwargs={"kl_weight": 1.0, "n_obs": dm.n_train})[2].loss.backward()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
    return {"gather_ms": gather_ms, "eager_forward_backward_ms": eager_fwd_bwd_ms, "copy_and_replay_ms": replay_ms, "replay_only_ms": replay_only_ms,
            "batch": args.batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hows", nargs="*", default=["lean-graph", "lean-eager", "lightning"])
    parser.add_argument("--breakdown-genes", type=int, default=4000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    quiet()
    import regularizedvi as rv

    base = rv.simulate_counts(args.cells, args.genes, seed=0)
    print(torch.cuda.get_device_name(), flush=True)
    rows = []
    model = None
    for how in args.hows:
        model, row = train(base.copy(), how, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"rows": rows, "device": torch.cuda.get_device_name()}
    import scvi

    wide = rv.simulate_counts(args.cells, args.breakdown_genes, seed=0)  # untrained model: timing only
    rv.AmbientRegularizedSCVI.setup_anndata(wide, batch_key="batch")
    scvi.settings.seed = 0
    model = rv.AmbientRegularizedSCVI(wide, n_hidden=128, n_latent=10)
    model.to_device("cuda")
    for batch in (args.batch, 1024):
        args.batch = batch
        out[f"breakdown_b{batch}"] = breakdown(model, args)
        print(json.dumps(out[f"breakdown_b{batch}"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
