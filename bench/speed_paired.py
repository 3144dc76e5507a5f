"""Paired throughput in one process: scvi-tools SCVI and regularizedvi alternate short bursts.

On a shared machine the load changes from minute to minute; runs in separate processes
(speed.py) then compare different loads. Here both models live in one process and take
turns: each round trains scVI for --steps steps, then regularizedvi (fast loader) for
--steps steps (order swapped every round), and the cells/s of the two bursts form one
pair. Reported: per-round ratios and their median. Each burst is a normal model.train()
call (Lightning loop, each model's own data loader and logging); the first --skip steps of
a burst (loop start-up) are not timed.

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
    a1, a2 = adata.copy(), adata.copy()
    scvi.model.SCVI.setup_anndata(a1, batch_key="batch")
    rv.AmbientRegularizedSCVI.setup_anndata(a2, batch_key="batch")
    models = {"scVI": (scvi.model.SCVI(a1, n_hidden=n_hidden, n_latent=n_latent), {}),
              "regularizedvi-fast": (rv.AmbientRegularizedSCVI(a2, n_hidden=n_hidden, n_latent=n_latent),
                                     {"data_loader": "fast"})}

    class Clock(pl.Callback):
        def __init__(self):
            self.stamps = []

        def on_train_batch_end(self, trainer, module, outputs, b, i):
            self.stamps.append(time.perf_counter())

    def burst(name):
        model, kw = models[name]
        clock = Clock()
        model.train(max_epochs=1000, max_steps=args.steps, batch_size=batch, train_size=1.0,
                    accelerator="cpu", enable_progress_bar=False, callbacks=[clock], **kw)
        s = clock.stamps
        return (len(s) - 1 - args.skip) * batch / (s[-1] - s[args.skip])

    rows = []
    for r in range(args.rounds):
        order = ["scVI", "regularizedvi-fast"][:: 1 if r % 2 == 0 else -1]
        speeds = {name: burst(name) for name in order}
        rows.append({"round": r, **speeds, "ratio": speeds["regularizedvi-fast"] / speeds["scVI"]})
        print(f"round {r}: scVI {speeds['scVI']:7.0f} cells/s  regularizedvi-fast "
              f"{speeds['regularizedvi-fast']:7.0f} cells/s  ratio {rows[-1]['ratio']:.3f}", flush=True)
    summary = {"config": args.config, "data": f"{args.cells * args.tile}x{args.genes}",
               "median_ratio": statistics.median(r["ratio"] for r in rows),
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
        ax.set_title(f"{summary['data']}, {args.config}: median ratio {summary['median_ratio']:.2f}x")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS_DIR / f"{name}.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot")
    write_json(f"{name}.json",
               {"summary": summary, "rounds": rows, "settings": vars(args), "environment": environment()})


if __name__ == "__main__":
    main()
