"""Paired throughput in one process: scvi-tools SCVI and regularizedvi alternate short bursts.

On a shared machine the load changes from minute to minute; runs in separate processes
(speed.py) then compare different loads. Here both models live in one process and take
turns: each round trains scVI for --steps steps, then each regularizedvi variant for
--steps steps (order reversed every other round), and the cells/s of the bursts form one
set. Reported: per-round ratios to scVI and their medians. Each burst is a normal
model.train() call with each model's own data loader and logging: "regularizedvi-fast" is
the fast loader under Lightning's loop, "regularizedvi-lean" the fast loader in the lean
loop (loop="lean"); the first --skip steps of a burst (loop start-up) are not timed.

Usage: .venv/bin/python bench/speed_paired.py --config 128/10/b128 --rounds 8 --steps 24
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, quiet, set_threads, write_json  # noqa: E402
from speed import CONFIGS, simulated_path, tiled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128/10/b128", choices=list(CONFIGS))
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--tile", type=int, default=1, help="stack this many copies of the block")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24, help="steps per burst")
    parser.add_argument("--skip", type=int, default=2, help="untimed first steps of a burst")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--models", nargs="+", default=["regularizedvi-fast", "regularizedvi-lean"],
                        choices=["regularizedvi-fast", "regularizedvi-lean"], help="compared with scVI")
    args = parser.parse_args()
    import lightning.pytorch as pl
    import scvi

    import regularizedvi as rv

    quiet()
    set_threads(args.threads)
    n_hidden, n_latent, batch = CONFIGS[args.config]
    with open(simulated_path(args.cells, args.genes), "rb") as fh:
        adata = pickle.load(fh)
    adata = tiled(adata, args.tile)
    scvi.settings.seed = 0
    a1 = adata.copy()
    scvi.model.SCVI.setup_anndata(a1, batch_key="batch")
    models = {"scVI": (scvi.model.SCVI(a1, n_hidden=n_hidden, n_latent=n_latent), {})}
    for name in args.models:
        a2 = adata.copy()
        rv.AmbientRegularizedSCVI.setup_anndata(a2, batch_key="batch")
        models[name] = (rv.AmbientRegularizedSCVI(a2, n_hidden=n_hidden, n_latent=n_latent),
                        {"data_loader": "fast", "loop": "lean" if name.endswith("lean") else "lightning"})
    stamps = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, b, i):
            stamps.append(time.perf_counter())

    from regularizedvi.model import _lean_loop

    eager_step = _lean_loop.LeanLoop._eager_step

    def stamped_step(self, *a, **k):  # the lean loop's steps, stamped like Clock's
        eager_step(self, *a, **k)
        stamps.append(time.perf_counter())

    _lean_loop.LeanLoop._eager_step = stamped_step

    def burst(name):
        model, kw = models[name]
        stamps.clear()
        # scvi-tools leaves a trained module in eval mode and Lightning keeps that mode: without
        # this, every burst after the first would train scVI without dropout
        model.module.train()
        model.train(max_epochs=1000, max_steps=args.steps, batch_size=batch, train_size=1.0,
                    accelerator="cpu", enable_progress_bar=False,
                    **({} if kw.get("loop") == "lean" else {"callbacks": [Clock()]}), **kw)
        return (len(stamps) - 1 - args.skip) * batch / (stamps[-1] - stamps[args.skip])

    rows = []
    for r in range(args.rounds):
        order = list(models)[:: 1 if r % 2 == 0 else -1]
        speeds = {name: burst(name) for name in order}
        rows.append({"round": r, **speeds, **{f"ratio {m}": speeds[m] / speeds["scVI"] for m in args.models}})
        print(f"round {r}: " + "  ".join(f"{m} {speeds[m]:7.0f}" for m in models) + " cells/s  ratios "
              + "  ".join(f"{rows[-1][f'ratio {m}']:.3f}" for m in args.models), flush=True)
    summary = {"config": args.config, "data": f"{args.cells * args.tile}x{args.genes}",
               "median_ratio": {m: statistics.median(r[f"ratio {m}"] for r in rows) for m in args.models},
               "median_cells_per_s": {m: statistics.median(r[m] for r in rows) for m in models}}
    print(json.dumps(summary))
    name = f"speed_paired_{args.config.replace('/', '-')}{args.tag}"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        for model in models:
            ax.plot([r["round"] for r in rows], [r[model] for r in rows], "o-", label=model)
        ax.set_xlabel("round (bursts alternate within a round)")
        ax.set_ylabel("cells / s")
        ax.set_ylim(bottom=0)
        ratios = ", ".join(f"{m.split('-')[-1]} {v:.2f}x" for m, v in summary["median_ratio"].items())
        ax.set_title(f"{summary['data']}, {args.config}: {ratios}", fontsize=9)
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS_DIR / f"{name}.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot")
    write_json(f"{name}.json",
               {"summary": summary, "rounds": rows, "settings": vars(args), "environment": environment()})


if __name__ == "__main__":
    main()
