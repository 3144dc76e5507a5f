"""Why mapped query cells land apart (issue 14): one reference, one mapping, diagnostics.

Trains the rv+nn reference of ``mapping.py`` (same split, set-up and ``--variant``), maps
the query and prints, for the query's latent:

* ``at load``: mixing of the query encoded by the mapped model before query training
  (the new categories at their initial values: feature scaling y = 1);
* ``trained``: after query training (``mapping.map_query``; ``--pin-decoder``,
  ``--query-fs-prior`` as there), and how far the query latent moved (mean |dz| / mean
  sd of the reference latent);
* the learned feature scaling: sd over genes of log y per category (reference rows,
  query rows), and the correlation of a query row's log y with the oracle gene ratio below;
* ``oracle input``: the frozen reference encoder fed ``log1p(x / r_{t,f})``, with ``r`` the
  per-gene ratio of the query batch's mean normalised expression to the reference's,
  averaged over the cell lines / types both contain (uses the labels: an upper bound of
  what a gene-wise input correction per query batch can do);
* ``depth-matched input``: the query's counts binomially thinned to the reference's median
  total count (tests whether depth, not gene bias, separates the query).

Usage: .venv/bin/python bench/mapping_diag.py --dataset cellbench --variant encscale --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, set_threads  # noqa: E402


def _dense(x):
    return np.asarray(x.todense()) if hasattr(x, "todense") else np.asarray(x)


def oracle_ratio(ref_x, ref_lab, q_x, q_lab, eps: float = 1e-6) -> np.ndarray:
    """Per gene: geometric mean over shared labels of (query mean CP10k / reference mean CP10k)."""
    def cp(x):
        return x / x.sum(1, keepdims=True) * 1e4

    ref_n, q_n = cp(ref_x), cp(q_x)
    logs = []
    for lab in np.intersect1d(np.unique(ref_lab), np.unique(q_lab)):
        r, q = ref_n[ref_lab == lab].mean(0), q_n[q_lab == lab].mean(0)
        logs.append(np.log((q + eps) / (r + eps)))
    ratio = np.exp(np.mean(logs, 0))
    return ratio / np.exp(np.mean(np.log(ratio)))  # geometric mean 1: a gene-wise shape only


def encode(module, x: np.ndarray) -> np.ndarray:
    import torch

    module.eval()
    with torch.no_grad():
        return module.encoder(torch.as_tensor(np.log1p(x), dtype=torch.float32), None).loc.numpy()


def main(argv=None) -> None:
    import torch

    import _datasets
    import _variants
    import mapping

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cellbench", choices=list(mapping.SPLITS))
    p.add_argument("--variant", default="base")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--query-epochs", type=int, default=100)
    p.add_argument("--pin-decoder", action="store_true")
    p.add_argument("--query-fs-prior", type=float, default=None)
    p.add_argument("--snare-cells", type=int, default=4000)
    args = p.parse_args(argv)
    quiet()
    set_threads(1)

    import regularizedvi as rv
    from regularizedvi import _constants as C

    ds = _datasets.load(args.dataset, snare_cells=args.snare_cells)
    batch_key, ref_batches = mapping.SPLITS[args.dataset]
    adata = ds.adata
    in_ref = adata.obs[batch_key].isin(ref_batches).to_numpy()
    adata = adata[:, np.asarray(adata[in_ref].X.sum(0)).ravel() > 0].copy()
    ref, query = adata[in_ref].copy(), adata[~in_ref].copy()
    for a in (ref, query):
        a.obs[batch_key] = a.obs[batch_key].astype(str).astype("category")
    setup = _variants.apply(args.variant) if args.variant != "base" else None
    ref_model, ref_a = mapping.build("rv+nn", ref, batch_key, args.seed, args.epochs, 128, 10, setup)
    ref_z = ref_model.get_latent_representation(ref_a)
    spread = ref_z.std(0).mean()

    q0 = query.copy()
    qm0 = rv.AmbientRegularizedSCVI.load_query_data(q0, ref_model)
    z0 = qm0.get_latent_representation(q0)
    fs_prior = (C.FEATURE_SCALING_PRIOR_ALPHA, C.FEATURE_SCALING_PRIOR_BETA)
    qm, q_a = mapping.map_query("rv+nn", ref_model, query, args.seed, args.query_epochs, args.pin_decoder,
                                args.query_fs_prior)
    C.FEATURE_SCALING_PRIOR_ALPHA, C.FEATURE_SCALING_PRIOR_BETA = fs_prior
    z1 = qm.get_latent_representation(q_a)
    q_b = query.obs[batch_key].astype(str).to_numpy()

    def mix(qz):
        m = mapping.query_mixing(ref_z, qz)
        return f"{m.mean():.3f} " + " ".join(f"{b} {m[q_b == b].mean():.3f}" for b in np.unique(q_b))

    print(f"[{args.dataset} {args.variant}{' pin' if args.pin_decoder else ''}"
          f"{f' qfs{args.query_fs_prior:g}' if args.query_fs_prior else ''} seed {args.seed}]")
    print(f"  mixing at load: {mix(z0)}")
    print(f"  mixing trained: {mix(z1)}; query moved mean|dz| / ref sd = {np.abs(z1 - z0).mean() / spread:.3f}")

    obs = qm.module.observation
    ref_lab = ref.obs[ds.label_key].astype(str).to_numpy()
    q_lab = query.obs[ds.label_key].astype(str).to_numpy()
    ref_x, q_x = _dense(ref.X).astype(np.float64), _dense(query.X).astype(np.float64)
    cats = list(qm.adata_manager.get_state_registry("feature_scaling_covs").mappings.values())[0] \
        if obs.use_feature_scaling and obs.n_scaling_cats_per_key else []
    log_y = torch.log(obs.feature_scaling_values()).detach().numpy() if obs.use_feature_scaling else None
    ratios = {}
    for b in np.unique(q_b):
        ratios[b] = oracle_ratio(ref_x, ref_lab, q_x[q_b == b], q_lab[q_b == b])
    if log_y is not None:
        for i, c in enumerate(cats):
            line = f"  log y[{c}]: sd over genes {log_y[i].std():.3f}"
            if c in ratios:
                line += f", corr with log oracle ratio {np.corrcoef(log_y[i], np.log(ratios[c]))[0, 1]:.3f}"
            print(line)

    # oracle gene-wise input correction on the frozen reference encoder
    zo = np.zeros_like(z0)
    for b in np.unique(q_b):
        zo[q_b == b] = encode(ref_model.module, q_x[q_b == b] / ratios[b])
        print(f"  oracle ratio {b}: sd over genes of log r {np.log(ratios[b]).std():.3f}")
    zb = encode(ref_model.module, q_x)
    print(f"  plain input (check, = at load for base): {mix(zb)}")
    print(f"  oracle input: {mix(zo)}")
    rng = np.random.default_rng(0)
    target = np.median(ref_x.sum(1))
    keep = np.minimum(1.0, target / q_x.sum(1, keepdims=True))
    thinned = rng.binomial(q_x.astype(np.int64), np.broadcast_to(keep, q_x.shape)).astype(np.float64)
    print(f"  depth: reference median {target:.0f}, query median "
          + " ".join(f"{b} {np.median(q_x[q_b == b].sum(1)):.0f}" for b in np.unique(q_b)))
    print(f"  depth-matched input: {mix(encode(ref_model.module, thinned))}")
    zr = encode(ref_model.module, ref_x)
    print(f"  reference re-encoded (check): max |dz| {np.abs(zr - ref_z).max():.2e}")


if __name__ == "__main__":
    main()
