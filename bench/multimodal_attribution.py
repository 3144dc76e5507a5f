"""Time and memory of get_modality_attribution on SNARE-seq (real RNA + ATAC), vs cells and peaks.

For each number of peaks (the most detected ones) a RegularizedMultimodalVI is built on all
10,309 nuclei (1677 genes + the peaks, 10 + 10 latent dimensions) and trained 1 epoch (the
cost of the attribution does not depend on training). Then, for each number of cells (the
first N nuclei), two implementations are timed on one torch thread with the peak RSS growth
of the call (VmHWM reset through /proc/self/clear_refs just before it):

  core   model.get_modality_attribution(method="jvp"): one torch.func.jvp per latent
         dimension and minibatch of 256 cells (the decoder's forward pass is redone per
         dimension)
  vmap   attribution_vmap() below: the same exact derivative, all latent dimensions of a
         chunk of cells in one vmapped jvp (one batched pass; chunks sized to hold about
         CHUNK_ENTRIES values of the (dims x cells x features) tangent)

and their agreement (max relative difference of the table) is printed.

Usage: .venv/bin/python bench/multimodal_attribution.py [--peaks 5000 10000 25734]
       [--cells 1000 2500 5000 10309] [--methods core vmap]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, quiet, set_threads, write_json  # noqa: E402

CHUNK_ENTRIES = 2**23  # values of one chunk's tangent tensor (dims x cells x features), ~32 MiB


def attribution_vmap(model, indices=None, chunk_entries: int = CHUNK_ENTRIES):
    """``get_modality_attribution(method="jvp")`` with the latent dimensions vectorised.

    Same quantity (mean over cells and features of ``|d mu / d z_j|`` at the posterior
    means): per chunk of cells, ``torch.func.vmap`` over the ``d`` unit directions of one
    ``torch.func.jvp``, so the decoder runs once per chunk on a ``(d x cells)`` batch of
    tangents instead of ``d`` times; the chunk's cells are chosen so the ``(d, cells,
    features)`` tangent holds about ``chunk_entries`` values.
    """
    import pandas as pd
    import torch

    from regularizedvi.data import _keys as K

    module = model.module
    names = list(module.modality_names)
    d = module.n_latent
    loader = model._make_data_loader(adata=model.adata, indices=indices, batch_size=256, shuffle=False)
    sums = {m: torch.zeros(d, dtype=torch.float64) for m in names}
    n_cells = 0
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for tensors in loader:
                out = module.inference(**module._get_inference_input(tensors))
                z_all = out["qz"].loc
                covs_all = {k: module._to(tensors.get(key)) for k, key in
                            (("nn_covs", K.NN_CONDITIONING), ("continuous_covs", K.CONTINUOUS),
                             ("ambient_covs", K.AMBIENT), ("scaling_covs", K.FEATURE_SCALING))}
                n_cells += z_all.shape[0]
                for m in names:
                    per_chunk = max(1, chunk_entries // (d * module.observation_of(m).n_features))
                    for a in range(0, z_all.shape[0], per_chunk):
                        z = z_all[a:a + per_chunk]
                        library = torch.exp(out["ql"][m].loc[a:a + per_chunk])
                        covs = {k: (None if v is None else v[a:a + per_chunk]) for k, v in covs_all.items()}

                        def mean_of(z_, m=m, library=library, covs=covs):
                            return module.decode_mean(m, z_, library, **covs)

                        basis = torch.eye(d, dtype=z.dtype).unsqueeze(1).expand(d, z.shape[0], d)
                        tangents = torch.func.vmap(lambda v: torch.func.jvp(mean_of, (z,), (v,))[1])(basis)
                        sums[m] += tangents.abs().sum((1, 2)).double()
    finally:
        module.train(was_training)
    values = np.stack([(sums[m] / (n_cells * module.observation_of(m).n_features)).numpy() for m in names])
    return pd.DataFrame(values, index=names, columns=[f"z{j}" for j in range(d)])


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(fn):
    Path("/proc/self/clear_refs").write_text("5")
    before = current_rss_mib()
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, peak_rss_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peaks", type=int, nargs="+", default=[5000, 10000, 25734])
    parser.add_argument("--cells", type=int, nargs="+", default=[1000, 2500, 5000, 10309])
    parser.add_argument("--methods", nargs="+", default=["core", "vmap"])
    args = parser.parse_args()
    quiet()
    set_threads(1)
    import regularizedvi as rv
    from multimodal_snare import BATCH, load_snare, make_mudata

    rows = []
    for n_peaks in args.peaks:
        rna, atac = load_snare(0, n_peaks)
        mdata = make_mudata(rna, atac)
        rv.set_seed(0)
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key=BATCH)
        model = rv.RegularizedMultimodalVI(mdata)
        model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        for n_cells in args.cells:
            idx = np.arange(min(n_cells, mdata.n_obs))
            tables = {}
            for method in args.methods:
                fn = (lambda: model.get_modality_attribution(indices=idx, method="jvp")) if method == "core" \
                    else (lambda: attribution_vmap(model, indices=idx))
                tables[method], secs, mib = measure(fn)
                row = {"peaks": int(atac.n_vars), "features": int(rna.n_vars + atac.n_vars), "cells": len(idx),
                       "latent_dims": int(model.module.n_latent), "method": method, "seconds": secs,
                       "peak_rss_growth_mib": mib}
                if "core" in tables and method != "core":
                    a, b = tables["core"].to_numpy(), tables[method].to_numpy()
                    row["max_rel_diff_vs_core"] = float(np.max(np.abs(a - b) / np.abs(a).max(1, keepdims=True)))
                rows.append(row)
                print(f"{row['peaks']:6d} peaks {row['cells']:6d} cells {method:5s}: {secs:7.1f} s  "
                      f"peak RSS +{mib:7.1f} MiB"
                      + (f"  max rel diff {row['max_rel_diff_vs_core']:.1e}" if "max_rel_diff_vs_core" in row else ""),
                      flush=True)
    write_json("multimodal_attribution.json", {"rows": rows, "settings": vars(args)})


if __name__ == "__main__":
    main()
