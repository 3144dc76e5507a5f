"""Where a CPU training step of regularizedvi spends its time, at 1 and more torch threads.

Times the parts of the lean loop's step on simulated counts (the data of speed_paired.py):
the minibatch gather (CSR rows densified), the forward pass (with its dropout masks and
the likelihood on the nonzero counts), the backward pass and the optimizer, as medians over
steps, and the torch profiler's table of the top operators. The share of each part that
does not get faster with a second thread is what limits the scaling curve.

Usage: .venv/bin/python bench/profile_cpu_step.py --threads 1 2 --steps 60 [--config 128/10/b128]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, quiet, write_json  # noqa: E402
from speed import CONFIGS, simulated_path  # noqa: E402


def parts_of_step(model, datamodule, steps: int) -> dict[str, float]:
    """Median milliseconds of gather / forward / backward / optimizer over ``steps`` steps."""
    import torch

    module = model.module
    plan = model._training_plan_cls(module, lr=1e-3, weight_decay=1e-6, n_epochs_kl_warmup=400)
    optimizer = plan.configure_optimizers()["optimizer"]
    datamodule.setup("fit")
    module.train()
    loader = iter(datamodule.train_dataloader())
    times = {"gather": [], "forward": [], "backward": [], "optimizer": []}
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(loader, None)
        if batch is None:
            loader = iter(datamodule.train_dataloader())
            batch = next(loader)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        _, _, out = module(batch, loss_kwargs={"kl_weight": 0.5, "n_obs": datamodule.n_train})
        t2 = time.perf_counter()
        out.loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[name].append(1e3 * dt)
    skip = min(5, steps // 4)
    return {name: statistics.median(values[skip:]) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128/10/b128", choices=list(CONFIGS))
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    import scvi
    import torch

    import regularizedvi as rv
    from regularizedvi.data._fast_loader import FastDataModule

    quiet()
    n_hidden, n_latent, batch_size = CONFIGS[args.config]
    with open(simulated_path(args.cells, args.genes), "rb") as fh:
        adata = pickle.load(fh)
    scvi.settings.seed = 0
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=n_hidden, n_latent=n_latent)
    rows = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        dm = FastDataModule(model.adata_manager, batch_size=batch_size)
        parts = parts_of_step(model, dm, args.steps)
        parts["total"] = sum(parts.values())
        rows[threads] = parts
        print(f"{threads} thread(s): " + ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items()), flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                parts_of_step(model, FastDataModule(model.adata_manager, batch_size=batch_size), 20)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    if len(rows) > 1:
        base = rows[args.threads[0]]
        for threads, parts in rows.items():
            print(f"speed-up at {threads} threads: " + ", ".join(
                f"{k} {base[k] / v:.2f}x" for k, v in parts.items()))
    write_json(RESULTS_DIR / f"profile_cpu_step{args.tag}.json",
               {"config": args.config, "parts_ms": rows, "environment": environment()})


if __name__ == "__main__":
    main()
