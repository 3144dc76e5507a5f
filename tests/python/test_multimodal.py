"""RegularizedMultimodalVI: joint latent, decoder attribution, latent modes, save/load,
query mapping, input errors, and an end-to-end run on real RNA + protein data (ECCITE).

Small and seeded. Torch runs on one thread inside this module (restored afterwards):
on a shared 2-core machine, two-thread kernels for these tiny matrices are many times
slower than one.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

import regularizedvi as rv
from regularizedvi.metrics import knn_label_purity

from conftest import seed_everything, shared_data

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}
MODES = ["concatenation", "weighted_mean", "single_encoder"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fresh_copy(mdata):
    """A copy of the MuData without scvi-tools' registration columns or unused categories."""
    copy = mdata.copy()
    obs = copy.obs[[c for c in copy.obs.columns if not c.startswith("_")]].copy()
    for column in obs.columns:
        if isinstance(obs[column].dtype, pd.CategoricalDtype):
            obs[column] = obs[column].cat.remove_unused_categories()
    copy.obs = obs
    return copy


@pytest.fixture(scope="module")
def multiome():
    return rv.simulate_multiome(n_cells=600, n_genes=300, n_peaks=400, n_types_a=4, n_types_b=3,
                                n_batches=2, missing_b_fraction=0.03, seed=0)


@pytest.fixture(scope="module")
def joint_model(multiome):
    mdata = fresh_copy(multiome)
    seed_everything(0)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"},
                                            batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    model = rv.RegularizedMultimodalVI(mdata, n_hidden=64, n_latent=5)
    start = time.time()
    model.train(max_epochs=50, plan_kwargs={"n_epochs_kl_warmup": 20}, **QUIET)
    print(f"\njoint model: 50 epochs in {time.time() - start:.1f}s")
    return model


def test_simulator_partitions_are_independent(multiome):
    obs = multiome.obs
    assert set(multiome.mod) == {"rna", "atac"}
    assert obs["p1"].nunique() == 4 and obs["p2"].nunique() == 3
    # P1 and P2 nearly independent: no P1 type is dominated by one P2 type
    table = pd.crosstab(obs["p1"], obs["p2"], normalize="index")
    assert table.to_numpy().max() < 0.6
    missing = ~obs["has_b"].to_numpy()
    assert missing.any() and np.asarray(multiome["atac"].X[missing].sum(1)).ravel().max() == 0


def test_joint_latent_separates_both_partitions(joint_model, multiome):
    obs = multiome.obs
    z = joint_model.get_latent_representation()
    assert z.shape == (multiome.n_obs, 10) and np.isfinite(z).all()
    has_b = obs["has_b"].to_numpy()
    joint = {k: knn_label_purity(z[has_b], obs[k].to_numpy()[has_b]) for k in ("p1", "p2")}

    rna = multiome["rna"].copy()
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(rna, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    single = rv.AmbientRegularizedSCVI(rna, n_hidden=64, n_latent=5)
    single.train(max_epochs=50, plan_kwargs={"n_epochs_kl_warmup": 20}, **QUIET)
    zs = single.get_latent_representation()
    alone = {k: knn_label_purity(zs[has_b], obs[k].to_numpy()[has_b]) for k in ("p1", "p2")}
    print(f"\nkNN purity (k=15) joint: {joint}; RNA-only single-modality model: {alone}")
    assert joint["p1"] > 0.9 and joint["p2"] > 0.9
    assert alone["p1"] > 0.9
    assert alone["p2"] < 0.55  # 3 roughly balanced types: chance is about 0.35
    # per-modality latents: each slice carries its own partition
    z_rna = joint_model.get_latent_representation(modality="rna")
    z_atac = joint_model.get_latent_representation(modality="atac")
    assert np.array_equal(np.hstack([z_rna, z_atac]), z)
    assert knn_label_purity(z_rna, obs["p1"].to_numpy()) > 0.9
    assert knn_label_purity(z_atac[has_b], obs["p2"].to_numpy()[has_b]) > 0.9


def test_attribution_concentrates_on_own_slice(joint_model):
    attribution = joint_model.get_modality_attribution()
    print("\nattribution (modalities x latent dims):\n", attribution.round(4).to_string())
    assert attribution.shape == (2, 10) and np.isfinite(attribution.to_numpy()).all()
    own = {"rna": slice(0, 5), "atac": slice(5, 10)}
    other = {"rna": slice(5, 10), "atac": slice(0, 5)}
    for m in ("rna", "atac"):
        row = attribution.loc[m].to_numpy()
        share = row[own[m]].sum() / row.sum()
        ratio = row[own[m]].mean() / row[other[m]].mean()
        print(f"{m}: share of attribution on own slice {share:.3f}, own/other mean ratio {ratio:.2f}")
        # chance is 0.5; atac (3 types) needs few dims, so its share sits near 0.6 and moves
        # by +-0.02 with the random streams: assert the share above chance by a margin and
        # the most used dimension in the modality's own slice
        assert share > 0.55, (m, share)
        assert int(np.argmax(row)) in range(10)[own[m]], (m, row)
    weighted = joint_model.get_weighted_latent("rna", attribution=attribution)
    z = joint_model.get_latent_representation()
    assert np.allclose(weighted, z * attribution.loc["rna"].to_numpy())


def test_jvp_matches_finite_difference(joint_model):
    indices = np.arange(200)
    jvp = joint_model.get_modality_attribution(indices=indices, method="jvp")
    fd = joint_model.get_modality_attribution(indices=indices, method="finite_difference", eps=1e-2)
    rel = np.abs(jvp.to_numpy() - fd.to_numpy()).max() / jvp.to_numpy().max()
    print(f"\nJVP vs central finite differences (eps=1e-2): max relative error {rel:.2e}")
    assert rel < 1e-2


def test_outputs_and_differential_expression(joint_model, multiome):
    expr = joint_model.get_normalized_expression(modality="atac")
    assert expr.shape == (multiome.n_obs, multiome["atac"].n_vars)
    assert np.allclose(expr.sum(1), 1.0, atol=1e-4)
    rna = joint_model.get_normalized_expression(modality="rna", indices=np.arange(10), return_numpy=True)
    assert rna.shape == (10, multiome["rna"].n_vars)
    with pytest.raises(ValueError, match=r"1 name\(s\) .*\('nope'\): names must be among the var_names of "
                                         r"modality 'atac' \(mdata.mod\['atac'\].var_names\)"):
        joint_model.get_normalized_expression(modality="atac", gene_list=[multiome["atac"].var_names[0], "nope"])
    de = joint_model.differential_expression(groupby="p1", group1="P1_0", modality="rna")
    assert len(de) == multiome["rna"].n_vars and "bayes_factor" in de.columns
    markers = set(multiome["rna"].uns["marker_genes"]["type_0"])
    top = de.sort_values("bayes_factor", ascending=False).index[:20]
    assert len(markers & set(top)) >= 10
    elbo = joint_model.get_elbo()
    assert np.isfinite(elbo)


def test_plot_attribution(joint_model):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    attribution = joint_model.get_modality_attribution(indices=np.arange(50))
    ax = rv.plot_modality_attribution(attribution)
    assert ax.get_ylabel() == "decoder"


@pytest.mark.parametrize("latent_mode", MODES)
def test_modes_train_save_load_and_query(latent_mode, multiome, tmp_path):
    obs = multiome.obs
    reference_cells = np.flatnonzero(obs["batch"].to_numpy() == "batch_0")[:200]
    query_cells = np.flatnonzero(obs["batch"].to_numpy() == "batch_1")[:100]
    reference = fresh_copy(multiome[reference_cells])
    seed_everything(0)
    rv.RegularizedMultimodalVI.setup_mudata(reference, modalities=["rna", "atac"], batch_key="batch",
                                            nn_conditioning_covariate_keys=["batch"])
    model = rv.RegularizedMultimodalVI(reference, n_hidden=32, n_latent=4, latent_mode=latent_mode)
    model.train(max_epochs=3, **QUIET)
    z = model.get_latent_representation()
    expected = 4 if latent_mode == "weighted_mean" else 8
    assert z.shape == (200, expected) and np.isfinite(z).all()
    if latent_mode == "single_encoder":
        with pytest.raises(ValueError, match="single_encoder"):
            model.get_latent_representation(modality="rna")
    else:
        assert model.get_latent_representation(modality="atac").shape[1] == 4
    attribution = model.get_modality_attribution()
    assert attribution.shape == (2, expected)

    model.save(tmp_path / "model")
    loaded = rv.RegularizedMultimodalVI.load(tmp_path / "model", fresh_copy(reference))
    assert np.array_equal(loaded.get_latent_representation(), z)
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k]), k

    query = fresh_copy(multiome[query_cells])  # batch_1: a category the reference never saw
    mapped = rv.RegularizedMultimodalVI.load_query_data(query, tmp_path / "model")
    mapped.train(max_epochs=2, **QUIET)
    zq = mapped.get_latent_representation()
    assert zq.shape == (100, expected) and np.isfinite(zq).all()
    # reference weights untouched by query training (frozen)
    for name in ("decoders.rna.out.weight", "observations.atac.log_theta_mu"):
        ref_value = model.module.state_dict()[name]
        query_value = mapped.module.state_dict()[name]
        same = ref_value if ref_value.shape == query_value.shape else query_value[..., : ref_value.shape[-1]]
        assert torch.equal(same, ref_value), name


def test_per_modality_switches_and_feature_scaling_default(multiome):
    mdata = fresh_copy(multiome[:100])
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"],
                                            nn_conditioning_covariate_keys=["batch"])
    assert mdata.obs.columns.str.contains("batch").any()
    registry = rv.RegularizedMultimodalVI._get_most_recent_anndata_manager(mdata).registry
    assert registry["field_registries"]["feature_scaling_covs"]["state_registry"]["field_keys"] == ["batch"]
    model = rv.RegularizedMultimodalVI(mdata, additive_background={"atac": True}, feature_scaling=False,
                                       n_latent={"rna": 3, "atac": 2}, n_hidden={"rna": 16, "atac": 8})
    obs_models = model.module.observations
    assert obs_models["rna"].use_background and obs_models["atac"].use_background
    assert not obs_models["rna"].use_feature_scaling and not obs_models["atac"].use_feature_scaling
    assert model.module.n_latent == 5
    default = rv.RegularizedMultimodalVI(mdata)
    assert default.module.observations["rna"].use_background
    assert not default.module.observations["atac"].use_background
    assert default.module.observations["atac"].use_feature_scaling
    assert default.module.observations["atac"].feature_scaling_raw.shape[0] == 2  # one row per batch


# ---------------------------------------------------------------------- input errors
def test_error_mismatched_cells(multiome):
    from mudata import MuData

    rna = multiome["rna"][:50].copy()
    atac = multiome["atac"][10:60].copy()
    mdata = MuData({"rna": rna, "atac": atac})
    with pytest.raises(ValueError, match="same cells in the same order"):
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"])


def test_error_non_counts(multiome):
    mdata = fresh_copy(multiome[:50])
    mdata.mod["atac"].X = mdata["atac"].X * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"])


def test_error_missing_covariate_and_modality(multiome):
    mdata = fresh_copy(multiome[:50])
    with pytest.raises(KeyError, match="not in adata.obs"):
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="donor")
    with pytest.raises(KeyError, match="not a modality"):
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "adt"])
    with pytest.raises(ValueError, match="at least 2"):
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna"])


def test_error_unequal_latent_sizes_weighted_mean(multiome):
    mdata = fresh_copy(multiome[:50])
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"])
    with pytest.raises(ValueError, match="same latent size"):
        rv.RegularizedMultimodalVI(mdata, latent_mode="weighted_mean", n_latent={"rna": 6, "atac": 3})
    with pytest.raises(ValueError, match="latent_mode"):
        rv.RegularizedMultimodalVI(mdata, latent_mode="sum")


def test_error_modality_without_features(multiome):
    from mudata import MuData

    mdata = MuData({"rna": multiome["rna"][:50].copy(), "atac": multiome["atac"][:50, []].copy()})
    with pytest.raises(ValueError, match="no features"):
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"])


# ---------------------------------------------------------------------- real data
def test_eccite_rna_protein_end_to_end():
    import anndata
    from mudata import MuData

    rna = anndata.read_h5ad(shared_data("eccite_rna.h5ad"))
    adt = anndata.read_h5ad(shared_data("eccite_adt.h5ad"))
    # keep the 2000 genes with most counts (speed); drop proteins without counts
    totals = np.asarray(rna.X.sum(0)).ravel()
    rna = rna[:, np.argsort(-totals)[:2000]].copy()
    adt = adt[:, np.asarray(adt.X.sum(0)).ravel() > 0].copy()
    mdata = MuData({"rna": rna, "protein": adt})
    seed_everything(0)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"})
    model = rv.RegularizedMultimodalVI(mdata, n_hidden=64, n_latent={"rna": 8, "protein": 4})
    start = time.time()
    model.train(max_epochs=15, **QUIET)
    attribution = model.get_modality_attribution()
    print(f"\nECCITE ({mdata.n_obs} cells, {rna.n_vars} genes, {adt.n_vars} proteins): trained + "
          f"attribution in {time.time() - start:.1f}s")
    print(attribution.round(4).to_string())
    share = {m: attribution.loc[m].to_numpy()[sl].sum() / attribution.loc[m].sum()
             for m, sl in (("rna", slice(0, 8)), ("protein", slice(8, 12)))}
    print(f"share of each decoder's attribution on its own slice: {share}")
    assert attribution.shape == (2, 12)
    values = attribution.to_numpy()
    assert np.isfinite(values).all()
    # RNA is the primary modality: its decoder reads its own slice only, the protein decoder all
    assert (values[0, :8] > 0).all() and (values[0, 8:] == 0).all() and (values[1] > 0).all()
    assert np.isfinite(model.get_latent_representation()).all()
    foreground = model.get_foreground_probability(modality="protein")
    assert foreground.shape == (mdata.n_obs, adt.n_vars) and ((foreground > 0) & (foreground <= 1)).all().all()

    # the background's form per modality; a misspelt form or modality is refused
    free = rv.RegularizedMultimodalVI(mdata, n_hidden=16, ambient_background={"protein": "free"})
    assert {m: free.module.observation_of(m).ambient_background for m in ("rna", "protein")} == {
        "rna": "profile", "protein": "free"}
    with pytest.raises(ValueError, match="'profile' or 'free', not 'fre'"):
        rv.RegularizedMultimodalVI(mdata, ambient_background={"protein": "fre"})
    with pytest.raises(KeyError, match="not modalities"):
        rv.RegularizedMultimodalVI(mdata, ambient_background={"adt": "free"})
