"""The in-memory fast data path (data_loader="fast"): exact batches, scvi-tools' split,
same training result as scvi-tools' loader, the user's data untouched, DDP on CPU."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import regularizedvi as rv
from regularizedvi.data import _keys as K
from regularizedvi.data._fast_loader import FastDataModule
from regularizedvi.data._loader_choice import in_memory_storage

from conftest import seed_everything

QUIET = {"enable_progress_bar": False, "accelerator": "cpu"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small():
    return rv.simulate_counts(n_cells=700, n_genes=200, n_batches=3, markers_per_type=20, seed=3)


def _setup(adata, **kwargs):
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"],
                                            **kwargs)
    seed_everything(0)
    return rv.AmbientRegularizedSCVI(adata, n_hidden=32, n_latent=4)


def _registry_rows(manager, key, idx):
    data = manager.get_from_registry(key)
    if sp.issparse(data):
        return data[idx].toarray().astype(np.float32)
    return np.asarray(data, dtype=np.float32)[idx]


def test_batches_equal_registered_rows(small):
    adata = small.copy()
    adata.obs["pct"] = np.random.default_rng(0).random(adata.n_obs)
    model = _setup(adata, continuous_covariate_keys=["pct"])
    manager = model.adata_manager
    dm = FastDataModule(manager, batch_size=50)
    dm.setup()
    idx = np.array([699, 0, 5, 5, 321, 17, 2])
    batch = dm.gather(idx)
    positions = batch.pop(K.stored_positions("X"))  # CPU: the stored values' flat positions
    np.testing.assert_array_equal(positions.numpy(), np.flatnonzero(batch["X"].numpy()))
    assert set(batch) == set(manager.data_registry)
    for key, value in batch.items():
        assert value.dtype == torch.float32
        np.testing.assert_array_equal(value.numpy(), _registry_rows(manager, key, idx))
    # a whole epoch of the train loader covers the train cells once, rows still exact
    seen = []
    for b in dm.train_dataloader():
        assert b["X"].shape[0] <= 50
        seen.append(b)
    x = torch.cat([b["X"] for b in seen]).numpy()
    assert x.shape[0] == dm.n_train
    # identify each row by its content: the multiset of train rows is the registered one
    ref = manager.get_from_registry("X")[np.sort(dm.train_idx)].toarray()
    np.testing.assert_array_equal(np.sort(x.sum(1)), np.sort(ref.sum(1)))


def test_duplicates_and_dtypes_like_scipy():
    # non-canonical CSR with a duplicate entry and int counts: summed and cast like scipy's toarray
    data = np.array([1, 2, 3, 4], dtype=np.int64)
    indices = np.array([0, 0, 2, 1], dtype=np.int32)
    indptr = np.array([0, 3, 3, 4])
    m = sp.csr_matrix((data, indices, indptr), shape=(3, 3))
    m.has_canonical_format = False
    from regularizedvi.data._fast_loader import _CSRRows

    rows = _CSRRows(m)
    idx = torch.tensor([2, 1, 0, 0])
    np.testing.assert_array_equal(rows.dense(idx).numpy(), m.toarray()[[2, 1, 0, 0]].astype(np.float32))


def test_stored_positions_include_stored_zeros_and_leave_the_likelihood_unchanged():
    """The CPU loader passes the CSR's stored positions; an explicitly stored zero among them
    adds exactly 0 to the likelihood (table and lgamma paths alike); a non-canonical CSR
    (duplicates) passes none, so the likelihood finds the nonzeros itself."""
    from regularizedvi.data._fast_loader import _CSRRows
    from regularizedvi.module._observation import CellDispersion, negative_binomial_cell_sums

    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((40, 30), 1.5), generator=g) * (torch.rand(40, 30, generator=g) < 0.6)
    m = sp.csr_matrix(counts.numpy())
    m.data[::7] = 0.0  # stored zeros, still canonical (sorted, no duplicates)
    assert m.has_canonical_format and (m.data == 0).sum() > 5
    idx = torch.tensor([5, 0, 39, 12, 12, 7])
    dense, positions = _CSRRows(m).dense_with_positions(idx)
    np.testing.assert_array_equal(dense.numpy(), m.toarray()[idx.numpy()])
    expected = np.flatnonzero(_stored_mask(m, idx.numpy()))
    np.testing.assert_array_equal(positions.numpy(), expected)
    assert (dense.reshape(-1)[positions] == 0).any()

    log_theta = torch.randn(2, 30, generator=g) + 2
    groups = torch.tensor([0, 1, 1, 0, 1, 0])
    theta, lg = torch.exp(log_theta), torch.lgamma(torch.exp(log_theta))
    d = CellDispersion(theta[groups], log_theta[groups], lg[groups], groups, theta, lg)
    mu = torch.rand(6, 30, generator=g) * 3 + 0.1
    for size in (4, 10**6):  # the count table used, or skipped
        with pytest.MonkeyPatch.context() as mp:
            from regularizedvi import _constants as C

            mp.setattr(C, "NB_COUNT_TABLE_SIZE", size)
            assert torch.equal(negative_binomial_cell_sums(dense, mu, d, positions=positions),
                               negative_binomial_cell_sums(dense, mu, d))
    # duplicates (non-canonical): no positions
    dup = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([0, 0, 2]), np.array([0, 3, 3])), shape=(2, 3))
    dup.has_canonical_format = False
    dense, positions = _CSRRows(dup).dense_with_positions(torch.tensor([1, 0]))
    assert positions is None
    np.testing.assert_array_equal(dense.numpy(), [[0, 0, 0], [3, 0, 3]])


def _stored_mask(m, rows):
    mask = np.zeros((len(rows), m.shape[1]), dtype=bool)
    for i, r in enumerate(rows):
        mask[i, m.indices[m.indptr[r]:m.indptr[r + 1]]] = True
    return mask


@pytest.mark.parametrize("kwargs", [{}, {"train_size": 0.8}, {"train_size": 0.7, "validation_size": 0.2},
                                    {"train_size": 1.0}])
def test_split_matches_scvi(small, kwargs):
    from scvi.dataloaders import DataSplitter

    model = _setup(small.copy())
    dm = FastDataModule(model.adata_manager, batch_size=128, **kwargs)
    ds = DataSplitter(model.adata_manager, batch_size=128, **kwargs)
    ds.setup()
    assert (dm.n_train, dm.n_val) == (ds.n_train, ds.n_val)
    np.testing.assert_array_equal(dm.train_idx, ds.train_idx)
    np.testing.assert_array_equal(dm.val_idx, ds.val_idx)
    np.testing.assert_array_equal(dm.test_idx, ds.test_idx)


def test_fast_training_matches_scvi_loader(small):
    adata = small.copy()
    before = adata.X.copy()
    results = {}
    for loader in ("scvi", "fast"):
        model = _setup(adata)
        model.train(max_epochs=25, data_loader=loader, early_stopping=True, **QUIET)
        assert model.data_loader_used == loader
        hist = model.history
        assert len(hist["elbo_validation"]) == 25 and len(hist["elbo_train"]) == 25
        assert len(model.train_indices) == 630 and len(model.validation_indices) == 70
        results[loader] = (float(hist["elbo_train"].iloc[-1, 0]), float(hist["elbo_validation"].iloc[-1, 0]),
                           hist["kl_weight"].iloc[:, 0].tolist())
    (tr_s, va_s, kl_s), (tr_f, va_f, kl_f) = results["scvi"], results["fast"]
    assert kl_s == kl_f  # same warm-up schedule
    assert abs(tr_f - tr_s) / abs(tr_s) < 0.02 and abs(va_f - va_s) / abs(va_s) < 0.02, results
    # the user's matrix stays sparse and unmodified
    assert sp.issparse(adata.X) and adata.X.format == "csr"
    assert (adata.X != before).nnz == 0 and adata.X.dtype == before.dtype


def test_auto_and_fallbacks(small):
    model = _setup(small.copy())
    model.train(max_epochs=1, **QUIET)
    assert model.data_loader_used == "fast"
    model.train(max_epochs=1, datasplitter_kwargs={"drop_last": True}, **QUIET)
    assert model.data_loader_used == "scvi"
    with pytest.raises(ValueError, match="cannot be used"):
        model.train(max_epochs=1, data_loader="fast", load_sparse_tensor=True, **QUIET)
    with pytest.raises(ValueError, match="data_loader must be one of"):
        model.train(max_epochs=1, data_loader="gpu", **QUIET)
    with pytest.raises(ValueError, match="no validation set"):
        model.train(max_epochs=1, train_size=1.0, early_stopping=True, data_loader="fast", **QUIET)


def test_host_storage_trains_the_same_model(small):
    """data_loader="host" (tensors in host memory, copied to the device per minibatch) gives
    the same minibatches and, on the CPU, the same model bit for bit as the device path."""
    states = {}
    for loader in ("fast", "host"):
        model = _setup(small.copy())
        model.train(max_epochs=3, data_loader=loader, **QUIET)
        assert model.data_loader_used == loader and model.training_loop_used == "lean"
        states[loader] = model.module.state_dict()
    for name, value in states["fast"].items():
        assert torch.equal(value, states["host"][name]), name
    manager = _setup(small.copy()).adata_manager
    modules = []
    for storage in ("device", "host"):
        torch.manual_seed(0)  # each module draws its shuffle seed from torch
        modules.append(FastDataModule(manager, batch_size=64, storage=storage))
    for a, b in zip(modules[0].train_dataloader(), modules[1].train_dataloader()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_auto_choice_follows_free_memory():
    gib = 2**30
    # on a GPU: in its memory when the tensors fit in half of the free memory, else in host memory
    assert in_memory_storage(4 * gib, "cuda", 10 * gib, 64 * gib)[0] == "fast"
    choice, why = in_memory_storage(9 * gib, "cuda", 10 * gib, 64 * gib)
    assert choice == "host" and "kept in host memory" in why
    assert in_memory_storage(40 * gib, "cuda", 10 * gib, 64 * gib)[0] is None
    assert in_memory_storage(4 * gib, "cpu", None, 64 * gib)[0] == "fast"
    assert in_memory_storage(40 * gib, "cpu", None, 64 * gib)[0] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_storage_on_a_gpu_matches_the_device_path(small):
    manager = _setup(small.copy()).adata_manager
    modules = []
    for storage in ("device", "host"):
        torch.manual_seed(0)
        modules.append(FastDataModule(manager, batch_size=64, device="cuda", storage=storage))
    for a, b in zip(modules[0].train_dataloader(), modules[1].train_dataloader()):
        assert all(b[k].is_cuda and torch.equal(a[k], b[k]) for k in a)


def test_multimodal_fast_path():
    mdata = rv.simulate_multiome(n_cells=200, n_genes=120, n_peaks=150, n_types_a=3, n_types_b=2,
                                 n_batches=2, missing_b_fraction=0.03, seed=0)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")
    seed_everything(0)
    model = rv.RegularizedMultimodalVI(mdata, n_hidden=16, n_latent=3)
    dm = FastDataModule(model.adata_manager, batch_size=64)
    idx = np.array([3, 199, 0])
    batch = dm.gather(idx)
    for name in ("rna", "atac"):  # each modality's stored positions, next to its counts
        key = model.module.counts_key(name)
        positions = batch.pop(K.stored_positions(key))
        np.testing.assert_array_equal(positions.numpy(), np.flatnonzero(batch[key].numpy()))
    for key, value in batch.items():
        np.testing.assert_array_equal(value.numpy(), _registry_rows(model.adata_manager, key, idx))
    model.train(max_epochs=2, data_loader="fast", **QUIET)
    assert model.data_loader_used == "fast"
    assert np.isfinite(model.history["elbo_train"].values.astype(float)).all()
    assert model.get_latent_representation().shape == (200, 6)


DDP_SCRIPT = textwrap.dedent("""
    import sys, warnings
    warnings.filterwarnings("ignore")
    import numpy as np, scvi, torch
    torch.set_num_threads(1)
    import regularizedvi as rv
    out = sys.argv[1]
    scvi.settings.seed = 0
    adata = rv.simulate_counts(n_cells=300, n_genes=120, n_batches=2, markers_per_type=10, seed=0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", data_loader="fast",
                enable_progress_bar=False, batch_size=64)
    if model.trainer.global_rank == 0:
        assert model.data_loader_used == "fast", model.data_loader_used
        model.save(out, overwrite=True, save_anndata=False)
        loaded = rv.AmbientRegularizedSCVI.load(out, adata=adata)
        z = loaded.get_latent_representation()
        assert z.shape == (300, 3) and np.isfinite(z).all()
        print("DDP-OK", model.trainer.world_size, len(model.history["elbo_train"]))
""")


def test_ddp_cpu_two_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(29500 + np.random.randint(1000)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "python"), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "model")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "DDP-OK 2 3" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
