"""Query-only encoder-input correction in reference mapping (issue 14): one reference per
seed, several query variants mapped onto it.

The rv+nn reference of ``mapping.py`` (same split, set-up, epochs, seed) is trained once
per seed with the package unchanged; each variant then maps the query with
``load_query_data`` and trains it for ``--query-epochs`` (weight decay 0, as mapping.py).
Variants (``--variants``, tokens joined by "+"):

  base      no correction (the frozen encoder reads raw query counts: mapping.py's rv+nn)
  qin       query-only input correction r_t = y_t / ybar_ref (bench/_queryonly_variants.py)
  qinshape  the same, log r_t centred over genes (gene-wise shape only)
  qdepth    + the new categories' depth relative to the reference as the level of log r_t
            (alone: r_t is that depth factor only)
  pin       pinned query decoder (mapping.pin_query_decoder)
  qfs<A>    Gamma(A, A) prior on feature scaling during query training (reference rows frozen)
  qlr<L>    learning rate L of the query training (default the package's)

Scored as mapping.py (15-NN label accuracy, macro F1, query->reference mixing), plus mean
|dz| of the query latent between the trained variant and the uncorrected encoding (= the
base mapping's latent: the base query training does not move it), in units of the mean sd
of the reference latent, and the reference latent re-encoded by the query model (must equal
the reference model's: max |dz| printed). Records: bench/results/mapping_queryonly/*.json.

Usage: .venv/bin/python bench/mapping_queryonly.py --dataset cellbench --seeds 0 1 2 \
           --variants base qin+pin+qfs2 qinshape+pin+qfs2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, quiet, set_threads  # noqa: E402


def parse(variant: str) -> dict:
    opts = {"qin": None, "pin": False, "qfs": None, "qlr": None, "qdepth": False}
    for tok in variant.split("+"):
        if tok == "base":
            continue
        if tok in ("qin", "qinshape"):
            opts["qin"] = tok
        elif tok == "qdepth":
            opts["qdepth"] = True
        elif tok == "pin":
            opts["pin"] = True
        elif tok.startswith("qfs"):
            opts["qfs"] = float(tok[3:])
        elif tok.startswith("qlr"):
            opts["qlr"] = float(tok[3:])
        else:
            raise SystemExit(f"unknown token {tok!r} in variant {variant!r}")
    return opts


def map_variant(ref_model, query, seed: int, epochs: int, opts: dict):
    import scvi

    import _queryonly_variants as Q
    import _variants
    import mapping
    import regularizedvi as rv
    from regularizedvi import _constants as C

    scvi.settings.seed = seed
    q = query.copy()
    # the exploration variants patch an uncorrected query model (the core correction is off)
    qm = rv.AmbientRegularizedSCVI.load_query_data(q, ref_model, input_correction=False)
    z_plain = qm.get_latent_representation(q)
    if opts["qin"] or opts["qdepth"]:
        level = Q.depth_level(qm, ref_model, q) if opts["qdepth"] else None
        assert Q.attach(qm, ref_model, shape=opts["qin"] == "qinshape", use_y=bool(opts["qin"]), level=level)
    if opts["pin"]:
        n_ref = int(ref_model.adata_manager.get_state_registry("nn_conditioning_covs").n_cats_per_key[0])
        mapping.pin_query_decoder(qm, n_ref)
    saved = (C.FEATURE_SCALING_PRIOR_ALPHA, C.FEATURE_SCALING_PRIOR_BETA)
    if opts["qfs"]:
        C.FEATURE_SCALING_PRIOR_ALPHA = C.FEATURE_SCALING_PRIOR_BETA = opts["qfs"]
    try:
        plan = {"weight_decay": 0.0, **_variants.PLAN_KWARGS}
        if opts["qlr"]:
            plan["lr"] = opts["qlr"]
        qm.train(max_epochs=epochs, plan_kwargs=plan, train_size=1.0, batch_size=128, accelerator="cpu",
                 enable_progress_bar=False)
    finally:
        C.FEATURE_SCALING_PRIOR_ALPHA, C.FEATURE_SCALING_PRIOR_BETA = saved
    return qm, q, z_plain


def table(out_dir: Path) -> str:
    """Markdown table of the records: per dataset and variant, mean (sd) over seeds."""
    rows = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines += [f"### {dataset}", "", "| variant | seeds | accuracy | macro F1 | mixing | per-seed mixing | "
                  "paired base (uncorrected) | mean abs dz / ref sd |", "|---|---|---|---|---|---|---|---|"]
        for variant in dict.fromkeys(r["variant"] for r in rows if r["dataset"] == dataset):
            rs = sorted((r for r in rows if r["dataset"] == dataset and r["variant"] == variant),
                        key=lambda r: r["seed"])

            def stat(key):
                v = np.array([r[key] for r in rs])
                return f"{v.mean():.3f}" + (f" ({v.std(ddof=1):.3f})" if len(v) > 1 else "")

            per_seed = "/".join(f"{r['mixing']:.3f}" for r in rs)
            lines.append(f"| {variant} | {','.join(str(r['seed']) for r in rs)} | {stat('accuracy')} | "
                         f"{stat('macro_f1')} | {stat('mixing')} | {per_seed} | "
                         f"{stat('mixing_uncorrected')} | {stat('mean_abs_dz_over_ref_sd')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    import _datasets
    import mapping

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cellbench", choices=list(mapping.SPLITS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--variants", nargs="+", default=["base", "qin+pin+qfs2"])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--query-epochs", type=int, default=100)
    p.add_argument("--snare-cells", type=int, default=4000)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--table", action="store_true", help="print the table of the records and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table(RESULTS_DIR / "mapping_queryonly"))
        return
    quiet()
    set_threads(1)
    import regularizedvi as rv

    print(f"regularizedvi from {Path(rv.__file__).parent}", flush=True)
    for v in args.variants:
        parse(v)

    ds = _datasets.load(args.dataset, snare_cells=args.snare_cells)
    batch_key, ref_batches = mapping.SPLITS[args.dataset]
    adata = ds.adata
    in_ref = adata.obs[batch_key].isin(ref_batches).to_numpy()
    expressed = np.asarray(adata[in_ref].X.sum(0)).ravel() > 0
    if not expressed.all():
        adata = adata[:, expressed].copy()
    ref, query = adata[in_ref].copy(), adata[~in_ref].copy()
    for a in (ref, query):
        a.obs[batch_key] = a.obs[batch_key].astype(str).astype("category")
    ref_labels = ref.obs[ds.label_key].astype(str).to_numpy()
    q_labels = query.obs[ds.label_key].astype(str).to_numpy()
    q_batches = query.obs[batch_key].astype(str).to_numpy()
    out_dir = RESULTS_DIR / "mapping_queryonly"
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        todo = [v for v in args.variants if args.overwrite or not (out_dir / f"{ds.name}__{v}__s{seed}.json").exists()]
        if not todo:
            continue
        t0 = time.perf_counter()
        ref_model, ref_a = mapping.build("rv+nn", ref, batch_key, seed, args.epochs, 128, 10, None)
        ref_seconds = time.perf_counter() - t0
        ref_z = ref_model.get_latent_representation(ref_a)
        spread = float(ref_z.std(0).mean())
        for variant in todo:
            t1 = time.perf_counter()
            qm, q_a, z_plain = map_variant(ref_model, query, seed, args.query_epochs, parse(variant))
            q_seconds = time.perf_counter() - t1
            q_z = qm.get_latent_representation(q_a)
            # reference cells through the query model: their input must be unchanged
            ref_in_q = ref.copy()
            rv.AmbientRegularizedSCVI.setup_anndata(ref_in_q, source_registry=qm.adata_manager.registry,
                                                    extend_categories=False,
                                                    **qm.adata_manager.registry["setup_args"])
            ref_dz = float(np.abs(qm.get_latent_representation(ref_in_q) - ref_z).max())
            pred, conf = mapping.label_transfer(ref_z, ref_labels, q_z)
            mix = mapping.query_mixing(ref_z, q_z)
            mix_plain = mapping.query_mixing(ref_z, z_plain)
            rec = {
                "dataset": ds.name, "model": "rv+nn", "variant": variant, "seed": seed,
                "epochs": args.epochs, "query_epochs": args.query_epochs,
                "n_ref": int(ref.n_obs), "n_query": int(query.n_obs),
                "accuracy": float(accuracy_score(q_labels, pred)),
                "macro_f1": float(f1_score(q_labels, pred, average="macro", labels=np.unique(q_labels))),
                "mixing": float(mix.mean()), "mixing_uncorrected": float(mix_plain.mean()),
                "mean_abs_dz_over_ref_sd": float(np.abs(q_z - z_plain).mean() / spread),
                "ref_latent_max_abs_diff": ref_dz,
                "per_batch": {b: {"accuracy": float(accuracy_score(q_labels[q_batches == b], pred[q_batches == b])),
                                  "mixing": float(mix[q_batches == b].mean())} for b in np.unique(q_batches)},
                "mean_confidence": float(conf.mean()),
                "ref_seconds": ref_seconds, "query_seconds": q_seconds, "environment": environment(),
            }
            if getattr(qm.module, "_qin_info", None):
                import _queryonly_variants as Q

                lr = Q.new_row_log_ratio(qm)
                rec["log_r_sd_over_genes"] = [float(s) for s in lr.std(1)]
                rec["log_r_mean_over_genes"] = [float(s) for s in lr.mean(1)]
            (out_dir / f"{ds.name}__{variant}__s{seed}.json").write_text(json.dumps(rec, indent=1))
            print(f"  seed {seed} {variant}: accuracy {rec['accuracy']:.3f}, F1 {rec['macro_f1']:.3f}, mixing "
                  f"{rec['mixing']:.3f} (uncorrected {rec['mixing_uncorrected']:.3f}), |dz|/sd "
                  f"{rec['mean_abs_dz_over_ref_sd']:.3f}, ref max|dz| {ref_dz:.1e} "
                  f"{ {b: round(v['mixing'], 3) for b, v in rec['per_batch'].items()} } "
                  f"log r sd {[round(s, 2) for s in rec.get('log_r_sd_over_genes', [])]} "
                  f"({ref_seconds:.0f} + {q_seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
