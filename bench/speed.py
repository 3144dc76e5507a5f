"""Training throughput: regularizedvi AmbientRegularizedSCVI vs scvi-tools SCVI.

Models compared (--models): "scVI" (scvi-tools SCVI, its AnnDataLoader), "regularizedvi"
(data_loader="scvi": the same AnnDataLoader), "regularizedvi-fast" (data_loader="fast":
counts held once as CSR tensors, minibatches gathered and densified by index; see
regularizedvi/data/_fast_loader.py; Lightning loop), "regularizedvi-lean" (fast loader and
the lean loop, loop="lean": on a GPU the step is a replayed CUDA graph) and
"regularizedvi-lean-eager" (the lean loop without CUDA graphs), "regularizedvi-lean-host" (the lean
loop with data_loader="host": counts in pinned host memory, minibatches copied to the GPU
while the previous step runs). The models rotate order every repeat. Peak RSS is
reported next to the CSR size of the counts (data + indices + indptr).

Same simulated data (regularizedvi.simulate_counts, CSR counts, batch_key="batch"), same
architecture (n_layers=1), batch size, threads and loader (scvi-tools' AnnDataLoader), same
run. Each measurement runs in its own subprocess (so peak RSS is per model), and the two
models alternate (A B, B A, A B, ...) so that load from other processes hits both alike.
Per run: a fixed number of optimisation steps (max_steps = step_cells / batch size, plus
warm-up; or --max-steps, or whole epochs with a large --step-cells); the first
--warmup-steps steps are not timed; cells/s = timed steps x batch size / their wall time
(a step includes the loader's gather and densifying of the minibatch); s/epoch =
n_cells / (cells/s). Reported:
medians over repeats and the ratio regularizedvi / scVI of the s/epoch medians, and of
the per-pair ratios (median over repeats).

Usage (from the repo root):
    .venv/bin/python bench/speed.py                                   # 20k x 2000, both configs
    .venv/bin/python bench/speed.py --cells 200000 --repeats 2 --step-cells 8192
Results: bench/results/speed<tag>.csv, .md and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, peak_rss_mib, quiet, set_threads, write_json  # noqa: E402

MODELS = ("scVI", "regularizedvi", "regularizedvi-fast", "regularizedvi-lean", "regularizedvi-lean-eager",
          "regularizedvi-lean-host")
CONFIGS = {"128/10/b128": (128, 10, 128), "512/128/b1024": (512, 128, 1024),
           "128/10/b1024": (128, 10, 1024)}


def simulated_path(n_cells: int, n_genes: int) -> Path:
    """Cache of the simulated counts (a pickle: this bench's own file, read only by itself)."""
    path = RESULTS_DIR / f"sim_{n_cells}x{n_genes}.pkl"
    if not path.exists():
        import pickle

        import regularizedvi as rv

        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            pickle.dump(rv.simulate_counts(n_cells, n_genes, seed=0), fh)
    return path


def tiled(adata, copies: int):
    """``copies`` stacked copies of ``adata`` (CSR counts, obs repeated, new cell names):
    larger data for throughput and memory runs, which do not need unique cells."""
    if copies <= 1:
        return adata
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    out = ad.AnnData(sp.vstack([adata.X] * copies, format="csr"),
                     obs=pd.concat([adata.obs] * copies, ignore_index=True), var=adata.var)
    out.obs_names = [f"c{i}" for i in range(out.n_obs)]
    return out


def worker(args) -> None:
    """One model, one training run; prints one JSON line."""
    import anndata as ad
    import lightning.pytorch as pl
    import scvi

    import regularizedvi as rv

    quiet()
    set_threads(args.threads)
    n_hidden, n_latent, batch_size = CONFIGS[args.config]
    import pickle

    with open(args.data, "rb") as fh:
        adata = pickle.load(fh)
    adata = tiled(adata, args.tile)
    scvi.settings.seed = 0
    train_kwargs = {}
    if args.model == "scVI":
        scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
        model = scvi.model.SCVI(adata, n_hidden=n_hidden, n_latent=n_latent)
    else:
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
        model = rv.AmbientRegularizedSCVI(adata, n_hidden=n_hidden, n_latent=n_latent)
        train_kwargs["data_loader"] = {"regularizedvi": "scvi", "regularizedvi-lean-host": "host"}.get(args.model, "fast")
    csr_mib = (adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes) / 2**20

    class Clock(pl.Callback):
        """Time stamps after the warm-up step and the last step; on a GPU the device is
        synchronised there (work is queued asynchronously), nowhere else."""

        def __init__(self, warmup: int, last: int, cuda: bool):
            self.warmup, self.last, self.cuda = warmup, last, cuda
            self.n = 0
            self.stamps = []

        def step_done(self):
            self.n += 1
            if self.n in (self.warmup, self.last):
                if self.cuda:
                    __import__("torch").cuda.synchronize()
                self.stamps.append(time.perf_counter())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.step_done()

        def patch_lean_loop(self, cuda_graphs: bool):
            """Count the lean loop's steps (graph replays and eager steps)."""
            from regularizedvi.model import _lean_loop as lean

            clock = self
            graphed_call, eager_step, init = lean._GraphedStep.__call__, lean.LeanLoop._eager_step, lean.LeanLoop.__init__

            def counted_graph(self, *a, **k):
                graphed_call(self, *a, **k)
                clock.step_done()

            def counted_eager(self, *a, **k):
                eager_step(self, *a, **k)
                clock.step_done()

            def set_graphs(self, *a, **k):
                k["cuda_graphs"] = cuda_graphs
                init(self, *a, **k)

            lean._GraphedStep.__call__, lean.LeanLoop._eager_step = counted_graph, counted_eager
            lean.LeanLoop.__init__ = set_graphs

    steps_per_epoch = -(-adata.n_obs // batch_size)
    max_steps = args.max_steps or max(args.warmup_steps + 3, -(-args.step_cells // batch_size))
    max_steps = min(max_steps, steps_per_epoch * args.epochs)
    w = max(1, min(args.warmup_steps, max_steps - 2))
    clock = Clock(w, max_steps, args.accelerator == "gpu")
    if args.model.startswith("regularizedvi-lean"):
        train_kwargs["loop"] = "lean"
        clock.patch_lean_loop(cuda_graphs=args.model in ("regularizedvi-lean", "regularizedvi-lean-host"))
    start = time.perf_counter()
    if args.accelerator == "gpu":
        import torch

        torch.cuda.reset_peak_memory_stats()
    model.train(max_epochs=args.epochs, batch_size=batch_size, train_size=1.0, accelerator=args.accelerator,
                enable_progress_bar=False, max_steps=max_steps,
                **({} if "loop" in train_kwargs else {"callbacks": [clock]}), **train_kwargs)
    total = time.perf_counter() - start
    stamps = clock.stamps
    timed_steps = max_steps - w
    cells_per_s = timed_steps * batch_size / (stamps[-1] - stamps[0])
    print(json.dumps({
        "model": args.model, "config": args.config, "cells_per_s": cells_per_s,
        "s_per_epoch": adata.n_obs / cells_per_s, "steps": clock.n, "timed_steps": timed_steps,
        "loop": getattr(model, "training_loop_used", "lightning"),
        "cuda_graph": getattr(model, "cuda_graph_used", False),
        "train_total_s": total, "peak_rss_mib": peak_rss_mib(), "csr_mib": csr_mib,
        "peak_gpu_mib": (__import__("torch").cuda.max_memory_allocated() / 2**20
                         if args.accelerator == "gpu" else None),
        "n_cells": adata.n_obs,
    }))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS)[:2], choices=list(CONFIGS))
    parser.add_argument("--epochs", type=int, default=1, help="at most this many epochs per run")
    parser.add_argument("--step-cells", type=int, default=4096,
                        help="timed cells per run: max_steps = ceil(step_cells / batch) (+ warm-up)")
    parser.add_argument("--max-steps", type=int, default=0, help="explicit steps per run (overrides)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed first steps")
    parser.add_argument("--repeats", type=int, default=3, help="runs per model and config (alternating)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--tag", default="")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--tile", type=int, default=1,
                        help="train on this many stacked copies of the --cells block (1M cells = 50 x 20k)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    # worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    data = simulated_path(args.cells, args.genes)
    env = environment()
    print("environment:", env, flush=True)
    runs = []
    for config in args.configs:
        for rep in range(args.repeats):
            shift = rep % len(args.models)
            order = list(args.models[shift:]) + list(args.models[:shift])
            if rep % 2:
                order.reverse()
            for name in order:
                cmd = [sys.executable, __file__, "--worker", "--model", name, "--config", config,
                       "--data", str(data), "--epochs", str(args.epochs), "--threads", str(args.threads),
                       "--max-steps", str(args.max_steps), "--accelerator", args.accelerator,
                       "--tile", str(args.tile),
                       "--step-cells", str(args.step_cells), "--warmup-steps", str(args.warmup_steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not lines:
                    sys.exit(f"worker failed ({name}, {config}):\n{proc.stderr[-3000:]}")
                res = json.loads(lines[-1])
                res["repeat"] = rep
                runs.append(res)
                print(f"{config} rep {rep} {name:14s} {res['s_per_epoch']:7.2f} s/epoch "
                      f"{res['cells_per_s']:8.0f} cells/s  peak RSS {res['peak_rss_mib']:.0f} MiB  "
                      f"timed steps {res['timed_steps']}", flush=True)

    rows = []
    for config in args.configs:
        per = {m: sorted((r for r in runs if r["config"] == config and r["model"] == m), key=lambda r: r["repeat"])
               for m in args.models}
        med = {m: {k: statistics.median(r[k] for r in rs)
                   for k in ("s_per_epoch", "cells_per_s", "peak_rss_mib", "csr_mib")}
               for m, rs in per.items()}
        ref = "scVI" if "scVI" in per else args.models[0]
        for m in args.models:
            pair_ratios = [b["s_per_epoch"] / a["s_per_epoch"] for a, b in zip(per[ref], per[m])]
            rows.append({
                "data": f"{args.cells * args.tile}x{args.genes}", "config (hidden/latent/batch)": config, "model": m,
                "s/epoch (median)": round(med[m]["s_per_epoch"], 3),
                "cells/s (median)": round(med[m]["cells_per_s"]),
                "peak RSS MiB (median)": round(med[m]["peak_rss_mib"]),
                "CSR MiB": round(med[m]["csr_mib"], 1),
                **({"peak GPU MiB (median)": round(statistics.median(r["peak_gpu_mib"] for r in per[m]))}
                   if args.accelerator == "gpu" else {}),
                "time ratio vs scVI": round(med[m]["s_per_epoch"] / med[ref]["s_per_epoch"], 3),
                "speed-up vs scVI (cells/s ratio, median of pairs)": round(statistics.median(1 / r for r in pair_ratios), 3),
                "repeats": len(per[m]),
            })
    header = list(rows[0])
    csv = "\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n"
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "".join(
        "| " + " | ".join(str(r[h]) for h in header) + " |\n" for r in rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"speed{args.tag}.csv").write_text(csv)
    (RESULTS_DIR / f"speed{args.tag}.md").write_text(md)
    write_json(f"speed{args.tag}.json", {"rows": rows, "runs": runs, "environment": env,
                                          "settings": {k: v for k, v in vars(args).items() if v is not None}})
    print("\n" + md)
    print(f"-> {RESULTS_DIR / f'speed{args.tag}.md'}")


if __name__ == "__main__":
    main()
