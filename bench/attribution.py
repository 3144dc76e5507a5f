"""Time and memory of RegularizedMultimodalVI.get_modality_attribution vs cells and latent size.

Each configuration runs in its own subprocess: simulate a multiome MuData (RNA 2000 genes +
ATAC 5000 peaks), build the model (n_latent per modality = L, so 2L joint dimensions),
train 1 epoch (attribution cost does not depend on training), then time
get_modality_attribution(method="jvp") and report the growth of peak RSS during the call
(VmHWM, reset just before the call through /proc/self/clear_refs, minus RSS before). One
torch thread.

Usage: .venv/bin/python bench/attribution.py [--cells 1000 4000 16000] [--latent 5 16 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, measure_call, quiet, set_threads, write_json  # noqa: E402


def worker(n_cells: int, n_latent: int, n_genes: int, n_peaks: int) -> dict:
    import regularizedvi as rv

    quiet()
    set_threads(1)
    mdata = rv.simulate_multiome(n_cells=n_cells, n_genes=n_genes, n_peaks=n_peaks, seed=0)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"},
                                            batch_key="batch")
    model = rv.RegularizedMultimodalVI(mdata, n_latent={"rna": n_latent, "atac": n_latent})
    model.train(max_epochs=1, enable_progress_bar=False)
    attribution, seconds, mib = measure_call(lambda: model.get_modality_attribution(method="jvp"))
    return {"cells": n_cells, "latent_dims": 2 * n_latent,
            "features": int(mdata["rna"].n_vars + mdata["atac"].n_vars),
            "seconds": seconds, "peak_rss_growth_mib": mib,
            "shape": list(attribution.shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--latent", type=int, nargs="+", default=[5, 16, 64], help="per modality")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--peaks", type=int, default=5000)
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.genes, args.peaks)))
        return
    rows = []
    for n_cells in args.cells:
        for n_latent in args.latent:
            cmd = [sys.executable, __file__, "--worker", str(n_cells), str(n_latent),
                   "--genes", str(args.genes), "--peaks", str(args.peaks)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                sys.exit(f"worker failed: {proc.stderr[-2000:]}")
            row = json.loads(lines[-1])
            rows.append(row)
            print(f"{row['cells']:6d} cells  {row['latent_dims']:4d} latent dims  {row['features']} features: "
                  f"{row['seconds']:7.2f} s  ({row['seconds'] / row['cells'] / row['latent_dims'] * 1e6:6.1f} "
                  f"us per cell x dim)  peak RSS growth {row['peak_rss_growth_mib']:6.1f} MiB", flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json("attribution.json", {"rows": rows, "settings": vars(args)})


if __name__ == "__main__":
    main()
