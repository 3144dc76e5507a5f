"""Reference mapping, scArches-style, with label transfer (issue 14).

A reference model is trained on the reference cells; the query is mapped with the
model's ``load_query_data`` (reference weights frozen; only parameters of the query's new
categories train) and trained on the query alone. Scored:

* label transfer: 15-NN classifier on the reference latent (reference labels) applied to
  the query latent: accuracy and macro F1 (over the query's true labels);
* mixing: for each query cell, the fraction of its 15 neighbours in the joint latent
  (reference + query) that are reference cells, divided by the fraction expected if
  mixed (n_ref / (n_ref + n_query - 1)); mean over query cells (1 = mixed, 0 = apart);
  also per query batch.

Set-ups:
  cellbench   reference = CEL-seq2 5-cell-line plates p1, p2, p3; query = Drop-seq + the
              CEL-seq2 3-line plate ("celseq2"); 2000 HVGs of all cells; labels cell_line
  snare       reference = libraries 09A-09H (8), query = 09I-09L (4); the seeded 4000-nuclei
              subsample of ``_datasets.snare``; labels cell_type
Models (``--models``):
  scVI         SCVI(batch_key) defaults; SCVI.load_query_data defaults
  scVI-arches  SCVI(batch_key, encode_covariates=True, use_layer_norm="both",
               use_batch_norm="none") (scvi-tools' scArches tutorial set-up)
  rv+nn        regularizedvi batch_key + nn_conditioning_covariate_keys (the README recipe)
  rv+nn+enc    ... + encoder_covariate_keys = batch (the encoder gets new query columns)
  rv           batch_key alone;  rv+enc  batch_key + encoder_covariate_keys
``--pin-decoder``: the query's new decoder covariate columns start at the mean of the
reference categories' columns and stay frozen (``pin_query_decoder``; the core's
``load_query_data(input_correction=True)`` already pins them when it applies).
``--input-correction on|off|both`` (regularizedvi): ``load_query_data``'s query-only
encoder-input correction (default on, the package default); ``both`` maps the query twice
from the same reference (records ``...+qin`` / ``...+noqin``).
Query training: ``--query-epochs`` (default = reference epochs), weight decay 0
(scvi-tools' guidance; regularizedvi's default for a frozen reference).

Usage: .venv/bin/python bench/mapping.py --dataset cellbench --models scVI scVI-arches rv+nn rv+nn+enc --seeds 0
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

SPLITS = {
    "cellbench": ("batch", ["celseq2_5cl_p1", "celseq2_5cl_p2", "celseq2_5cl_p3"]),
    "snare": ("library", ["09A", "09B", "09C", "09D", "09E", "09F", "09G", "09H"]),
}
SCVI_KW = {"scVI": {}, "scVI-arches": {"encode_covariates": True, "use_layer_norm": "both",
                                       "use_batch_norm": "none"}}
QUERY_PLAN: dict = {}  # --query-kl-warmup: extra plan_kwargs of the regularizedvi query training
RV_KW = {"rv+nn": ("nn",), "rv+nn+enc": ("nn", "enc"), "rv": (), "rv+enc": ("enc",)}


def label_transfer(ref_z, ref_labels, query_z, k: int = 15):
    """15-NN vote on the reference latent: predicted label and the winning vote share."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k).fit(ref_z)
    _, idx = nn.kneighbors(query_z)
    votes = ref_labels[idx]
    classes = np.unique(ref_labels)
    counts = np.stack([(votes == c).sum(1) for c in classes], 1)
    return classes[counts.argmax(1)], counts.max(1) / k


def query_mixing(ref_z, query_z, k: int = 15) -> np.ndarray:
    """Per query cell: share of reference cells among its k joint-latent neighbours / expected."""
    from sklearn.neighbors import NearestNeighbors

    joint = np.vstack([ref_z, query_z])
    is_ref = np.r_[np.ones(len(ref_z), bool), np.zeros(len(query_z), bool)]
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(joint).kneighbors(query_z)
    share = is_ref[idx[:, 1:]].mean(1)  # the first neighbour is the cell itself
    return share / (len(ref_z) / (len(joint) - 1))


def build(model: str, ref, batch_key: str, seed: int, epochs: int, n_hidden: int, n_latent: int, variant_setup):
    import scvi

    import regularizedvi as rv

    scvi.settings.seed = seed
    a = ref.copy()
    if model in SCVI_KW:
        scvi.model.SCVI.setup_anndata(a, batch_key=batch_key)
        m = scvi.model.SCVI(a, n_hidden=n_hidden, n_latent=n_latent, **SCVI_KW[model])
        plan = None
    else:
        import _variants

        parts = RV_KW[model]
        setup = {"batch_key": batch_key}
        if variant_setup is not None and "nn" in parts:
            setup = {k: _variants.for_key(v, batch_key) for k, v in variant_setup.items()}
        elif "nn" in parts:
            setup["nn_conditioning_covariate_keys"] = [batch_key]
        if "enc" in parts:
            setup["encoder_covariate_keys"] = [batch_key]
        rv.AmbientRegularizedSCVI.setup_anndata(a, **setup)
        m = rv.AmbientRegularizedSCVI(a, n_hidden=n_hidden, n_latent=n_latent, **_variants.MODEL_KWARGS)
        plan = dict(_variants.PLAN_KWARGS) or None
    m.train(max_epochs=epochs, train_size=1.0, batch_size=128, accelerator="cpu", enable_progress_bar=False,
            plan_kwargs=plan)
    return m, a


def pin_query_decoder(qm, n_ref_cats: int) -> None:
    """Decoder covariate columns of the query's new categories set to the mean of the
    reference categories' columns and frozen: the query is decoded as an average
    reference batch, so its own technology shift must be taken by what stays free (the
    encoder's new covariate columns, feature scaling, background, dispersion, library)
    instead of the decoder. One covariate key (the batch) assumed."""
    import torch

    body = qm.module.decoder.body
    if not body.n_covariates:
        return
    for block in body.layers:
        linear = block[1]
        start = linear.in_features - body.n_covariates
        ref_cols = slice(start, start + n_ref_cats)
        new_cols = slice(start + n_ref_cats, linear.in_features)
        with torch.no_grad():
            linear.weight[:, new_cols] = linear.weight[:, ref_cols].mean(1, keepdim=True)
        keep = torch.ones_like(linear.weight)
        keep[:, new_cols] = 0.0
        linear.weight.register_hook(lambda grad, keep=keep: grad * keep)


def map_query(model: str, ref_model, query, seed: int, epochs: int, pin_decoder: bool = False,
              query_fs_prior: float | None = None, input_correction: bool = True):
    import scvi

    import regularizedvi as rv

    scvi.settings.seed = seed
    q = query.copy()
    if model in SCVI_KW:
        scvi.model.SCVI.prepare_query_anndata(q, ref_model)
        qm = scvi.model.SCVI.load_query_data(q, ref_model)
        qm.train(max_epochs=epochs, plan_kwargs={"weight_decay": 0.0}, train_size=1.0, batch_size=128,
                 accelerator="cpu", enable_progress_bar=False)
    else:
        import _variants

        qm = rv.AmbientRegularizedSCVI.load_query_data(q, ref_model, input_correction=input_correction)
        if query_fs_prior:
            from regularizedvi import _constants as C

            C.FEATURE_SCALING_PRIOR_ALPHA = C.FEATURE_SCALING_PRIOR_BETA = query_fs_prior
        if pin_decoder:
            n_ref = len(ref_model.adata_manager.get_state_registry("nn_conditioning_covs").n_cats_per_key) and \
                int(ref_model.adata_manager.get_state_registry("nn_conditioning_covs").n_cats_per_key[0])
            pin_query_decoder(qm, n_ref)
        plan = {"weight_decay": 0.0, **_variants.PLAN_KWARGS, **QUERY_PLAN}
        if any(p.requires_grad for p in qm.module.parameters()):
            qm.train(max_epochs=epochs, plan_kwargs=plan, train_size=1.0, batch_size=128, accelerator="cpu",
                     enable_progress_bar=False)
    return qm, q


def run(args) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    import _datasets

    ds = _datasets.load(args.dataset, snare_cells=args.snare_cells)
    batch_key, ref_batches = SPLITS[args.dataset]
    adata = ds.adata
    in_ref = adata.obs[batch_key].isin(ref_batches).to_numpy()
    # regularizedvi refuses genes without counts (issue 14): drop those absent from the reference
    expressed = np.asarray(adata[in_ref].X.sum(0)).ravel() > 0
    if not expressed.all():
        print(f"  {int((~expressed).sum())} genes without counts in the reference dropped", flush=True)
        adata = adata[:, expressed].copy()
    ref, query = adata[in_ref].copy(), adata[~in_ref].copy()
    for a in (ref, query):
        a.obs[batch_key] = a.obs[batch_key].astype(str).astype("category")
    epochs = args.epochs or int(min(round(20000 / ref.n_obs * 400), 400))
    q_epochs = args.query_epochs or epochs
    variant_setup = None
    if args.variant != "base":
        import _variants

        variant_setup = _variants.apply(args.variant)
    print(f"[{ds.name}] reference {ref.n_obs} cells ({ref_batches}), query {query.n_obs}; {epochs} / "
          f"{q_epochs} epochs; variant {args.variant}", flush=True)
    ref_labels = ref.obs[ds.label_key].astype(str).to_numpy()
    q_labels = query.obs[ds.label_key].astype(str).to_numpy()
    q_batches = query.obs[batch_key].astype(str).to_numpy()
    out_dir = RESULTS_DIR / "mapping"
    out_dir.mkdir(parents=True, exist_ok=True)
    from regularizedvi import _constants as C

    fs_prior = (C.FEATURE_SCALING_PRIOR_ALPHA, C.FEATURE_SCALING_PRIOR_BETA)
    corrections = {"on": [True], "off": [False], "both": [True, False]}[args.input_correction]
    ref_cache: dict = {}
    for seed, model, correct in [(s, m, c) for s in args.seeds for m in args.models for c in corrections]:
        if model in SCVI_KW and not correct:
            continue
        variant = "base" if model in SCVI_KW else args.variant + ("+pin" if args.pin_decoder else "") \
            + (f"+qfs{args.query_fs_prior:g}" if args.query_fs_prior else "") \
            + (f"+qkl{args.query_kl_warmup}" if args.query_kl_warmup is not None else "") \
            + (f"+qlr{args.query_lr:g}" if args.query_lr is not None else "") \
            + ("+qin" if correct else "+noqin")
        path = out_dir / f"{ds.name}__{model.replace('+', 'p')}__{variant}__e{epochs}q{q_epochs}__s{seed}.json"
        if path.exists() and not args.overwrite:
            print(f"  {path.name} exists; skipped")
            continue
        t0 = time.perf_counter()
        if args.de_novo:  # one model on reference + query together: the integration ceiling
            both = adata.copy()
            both.obs[batch_key] = both.obs[batch_key].astype(str).astype("category")
            m_all, a_all = build(model, both, batch_key, seed, epochs, args.n_hidden, args.n_latent, variant_setup)
            z_all = m_all.get_latent_representation(a_all)
            t1 = t2 = time.perf_counter()
            ref_z, q_z = z_all[in_ref], z_all[~in_ref]
            pred, conf = label_transfer(ref_z, ref_labels, q_z)
            mix = query_mixing(ref_z, q_z)
            path = path.with_name(path.name.replace("__e", "__denovo_e"))
            qm = None
        else:
            if (seed, model) not in ref_cache:  # one reference for both corrections
                ref_cache.clear()
                ref_cache[(seed, model)] = (*build(model, ref, batch_key, seed, epochs, args.n_hidden,
                                                   args.n_latent, variant_setup), time.perf_counter() - t0)
            ref_model, ref_a, ref_seconds = ref_cache[(seed, model)]
            t0 = time.perf_counter() - ref_seconds
            t1 = time.perf_counter()
            qm, q_a = map_query(model, ref_model, query, seed, q_epochs, args.pin_decoder,
                                args.query_fs_prior, correct)
        if args.query_fs_prior:
            from regularizedvi import _constants as C

            C.FEATURE_SCALING_PRIOR_ALPHA, C.FEATURE_SCALING_PRIOR_BETA = fs_prior
        if qm is not None:
            t2 = time.perf_counter()
            ref_z = ref_model.get_latent_representation(ref_a)
            q_z = qm.get_latent_representation(q_a)
            pred, conf = label_transfer(ref_z, ref_labels, q_z)
            mix = query_mixing(ref_z, q_z)
        rec = {
            "dataset": ds.name, "model": model + (" de novo" if args.de_novo else ""), "variant": variant,
            "seed": seed, "input_correction": bool(correct) and model not in SCVI_KW,
            "epochs": epochs, "query_epochs": q_epochs, "n_ref": int(ref.n_obs), "n_query": int(query.n_obs),
            "accuracy": float(accuracy_score(q_labels, pred)),
            "macro_f1": float(f1_score(q_labels, pred, average="macro", labels=np.unique(q_labels))),
            "mixing": float(mix.mean()),
            "per_batch": {b: {"accuracy": float(accuracy_score(q_labels[q_batches == b], pred[q_batches == b])),
                              "mixing": float(mix[q_batches == b].mean())} for b in np.unique(q_batches)},
            "mean_confidence": float(conf.mean()),
            "ref_seconds": t1 - t0, "query_seconds": t2 - t1, "environment": environment(),
        }
        path.write_text(json.dumps(rec, indent=1))
        print(f"  seed {seed} {model}: accuracy {rec['accuracy']:.3f}, macro F1 {rec['macro_f1']:.3f}, "
              f"mixing {rec['mixing']:.3f} "
              f"{ {b: (round(v['accuracy'], 3), round(v['mixing'], 3)) for b, v in rec['per_batch'].items()} } "
              f"({t1 - t0:.0f} + {t2 - t1:.0f} s)", flush=True)


def table() -> None:
    import pandas as pd

    rows = [json.loads(p.read_text()) for p in sorted((RESULTS_DIR / "mapping").glob("*.json"))]
    df = pd.DataFrame([{"dataset": r["dataset"], "model": r["model"] + ("" if r["variant"] == "base" else f"[{r['variant']}]")
                        + f" e{r['epochs']}/{r['query_epochs']}", "seed": r["seed"], "accuracy": r["accuracy"],
                        "macro F1": r["macro_f1"], "mixing": r["mixing"]} for r in rows])
    lines = []
    for dataset, d in df.groupby("dataset", sort=False):
        g = d.groupby("model", sort=False)
        mean, sd = g[["accuracy", "macro F1", "mixing"]].mean(), g[["accuracy", "macro F1", "mixing"]].std(ddof=1)
        lines += [f"### mapping: {dataset}", "", "| model | seeds | accuracy | macro F1 | query->ref mixing | per-seed acc / mixing |",
                  "|---|---|---|---|---|---|"]
        for model in mean.index:
            dd = d[d.model == model].sort_values("seed")
            cells = [f"{mean.loc[model, c]:.3f}" + (f" ({sd.loc[model, c]:.3f})" if np.isfinite(sd.loc[model, c]) else "")
                     for c in ("accuracy", "macro F1", "mixing")]
            per = ", ".join(f"{a:.3f}/{m:.3f}" for a, m in zip(dd.accuracy, dd.mixing))
            lines.append(f"| {model} | {','.join(map(str, dd.seed))} | " + " | ".join(cells) + f" | {per} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    (RESULTS_DIR / "mapping_tables.md").write_text(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cellbench", choices=list(SPLITS))
    p.add_argument("--models", nargs="+", default=["scVI", "scVI-arches", "rv+nn", "rv+nn+enc"],
                   choices=[*SCVI_KW, *RV_KW])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--query-epochs", type=int, default=None)
    p.add_argument("--n-hidden", type=int, default=128)
    p.add_argument("--n-latent", type=int, default=10)
    p.add_argument("--variant", default="base")
    p.add_argument("--snare-cells", type=int, default=4000)
    p.add_argument("--de-novo", action="store_true",
                   help="train one model on reference + query together (no mapping): the ceiling")
    p.add_argument("--query-lr", type=float, default=None, help="regularizedvi: learning rate of the query training")
    p.add_argument("--query-kl-warmup", type=int, default=None,
                   help="regularizedvi: n_epochs_kl_warmup of the query training (0: full KL weight at once)")
    p.add_argument("--query-fs-prior", type=float, default=None,
                   help="regularizedvi: feature-scaling prior Gamma(A, A) during query training only")
    p.add_argument("--pin-decoder", action="store_true",
                   help="regularizedvi: query decoder covariate columns = mean of the reference's, frozen")
    p.add_argument("--input-correction", default="on", choices=["on", "off", "both"],
                   help="regularizedvi: load_query_data(input_correction=); both: two mappings per reference")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--table", action="store_true")
    args = p.parse_args(argv)
    quiet()
    set_threads(args.threads)
    if args.query_kl_warmup is not None:
        QUERY_PLAN["n_epochs_kl_warmup"] = args.query_kl_warmup
    if args.query_lr is not None:
        QUERY_PLAN["lr"] = args.query_lr
    table() if args.table else run(args)


if __name__ == "__main__":
    main()
