"""Data larger than memory: a backed AnnData (anndata.read_h5ad(path, backed="r")) is set up,
checked, trained on, embedded and saved / loaded without its matrix ever being read whole."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata._core.sparse_dataset import BaseCompressedSparseDataset

import regularizedvi as rv
from regularizedvi import _constants as C
from regularizedvi.data import check_counts, check_modalities
from regularizedvi.data._backed import BackedDataModule, read_rows
from regularizedvi.data._fast_loader import FastDataModule
from regularizedvi.metrics import knn_label_purity
from regularizedvi.model._utils import count_statistics, n_cats_per_key

from conftest import seed_everything

QUIET = {"enable_progress_bar": False, "accelerator": "cpu"}
BLOCK_ROWS, SHUFFLE_BLOCKS = 64, 2  # 600 cells: 10 blocks, so every path crosses block borders
EPOCHS = 20


@pytest.fixture(scope="module", autouse=True)
def small_blocks():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(C, "BACKED_BLOCK_ROWS", BLOCK_ROWS)
        patch.setattr(C, "BACKED_SHUFFLE_BLOCKS", SHUFFLE_BLOCKS)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    adata = rv.simulate_counts(n_cells=600, n_genes=200, markers_per_type=10, seed=0)
    adata.obs["site"] = np.where(np.arange(adata.n_obs) % 3, "s1", "s2")
    path = tmp_path_factory.mktemp("backed") / "sim.h5ad"
    adata.write_h5ad(path)
    return adata, path


def _backed(path):
    return ad.read_h5ad(path, backed="r")


def _rows_of(index, n_rows: int) -> int:
    index = index[0] if isinstance(index, tuple) else index
    return np.arange(n_rows)[index].size


class ReadLog:
    """Rows asked of on-disk sparse matrices per read; loading a whole matrix fails."""

    def __init__(self, patch):
        self.rows = []
        original = BaseCompressedSparseDataset.__getitem__

        def getitem(matrix, index):
            self.rows.append(_rows_of(index, matrix.shape[0]))
            return original(matrix, index)

        def refuse(*args, **kwargs):
            raise AssertionError("the whole on-disk matrix was loaded into memory")

        patch.setattr(BaseCompressedSparseDataset, "__getitem__", getitem)
        patch.setattr(BaseCompressedSparseDataset, "to_memory", refuse)
        patch.setattr(ad.AnnData, "to_memory", refuse)


def _model(adata, **setup):
    rv.AmbientRegularizedSCVI.setup_anndata(adata, **(setup or {"batch_key": "batch"}))
    seed_everything(0)
    return rv.AmbientRegularizedSCVI(adata, n_hidden=32, n_latent=5)


@pytest.fixture(scope="module")
def trained(data):
    """The same model trained on the backed file and on the data in memory, reads logged."""
    adata, path = data
    with pytest.MonkeyPatch.context() as patch:
        log = ReadLog(patch)
        backed = _model(_backed(path))
        n_setup_reads = len(log.rows)
        backed.train(max_epochs=EPOCHS, early_stopping=True, **QUIET)
        training_reads = log.rows[n_setup_reads:]
        z_backed = backed.get_latent_representation()
    memory = _model(adata.copy())
    memory.train(max_epochs=EPOCHS, early_stopping=True, **QUIET)
    return backed, memory, z_backed, log.rows[:n_setup_reads], training_reads


# ---------------------------------------------------------------- set-up and initial statistics
@pytest.mark.parametrize("setup", [{"batch_key": "batch"},
                                   {"ambient_covariate_keys": ["batch", "site"], "library_size_key": "site",
                                    "dispersion_key": "batch"}])
def test_setup_and_initial_statistics_equal_in_memory(data, setup, monkeypatch):
    adata, path = data
    log = ReadLog(monkeypatch)
    backed = _model(_backed(path), **setup)
    memory = _model(adata.copy(), **setup)
    # only block reads (and scvi-tools' own check of the first 100 rows)
    assert log.rows and max(log.rows) <= 100
    for key in memory.adata_manager.data_registry:
        if key != "X":
            np.testing.assert_array_equal(np.asarray(backed.adata_manager.get_from_registry(key)),
                                          np.asarray(memory.adata_manager.get_from_registry(key)))
    stats = []
    for model in (backed, memory):
        manager = model.adata_manager
        cats = n_cats_per_key(manager, "ambient_covs")
        stats.append(count_statistics(manager.get_from_registry("X"),
                                      np.asarray(manager.get_from_registry("library_group")).ravel(),
                                      len(manager.get_state_registry("library_group").categorical_mapping),
                                      np.asarray(manager.get_from_registry("ambient_covs")), cats))
    for from_disk, in_memory in zip(*stats):  # library log means, variances, mean profile, ambient profiles
        np.testing.assert_allclose(from_disk, in_memory, rtol=1e-6, atol=1e-6)
    memory_state = memory.module.state_dict()
    for name, value in backed.module.state_dict().items():
        torch.testing.assert_close(value, memory_state[name], rtol=1e-6, atol=1e-6, msg=name)


def test_dense_backed_matrix(data, tmp_path):
    adata, _ = data
    dense = adata.copy()
    dense.X = dense.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")
    backed = _model(_backed(tmp_path / "dense.h5ad"))
    memory = _model(adata.copy())
    memory_state = memory.module.state_dict()
    for name, value in backed.module.state_dict().items():
        torch.testing.assert_close(value, memory_state[name], rtol=1e-6, atol=1e-6, msg=name)
    backed.train(max_epochs=1, **QUIET)
    assert backed.data_loader_used == "backed"
    assert np.isfinite(backed.get_latent_representation()).all()


# ---------------------------------------------------------------- count checks
def _edited(adata, edit):
    x = adata.X.copy().tolil()
    edit(x)
    out = adata.copy()
    out.X = sp.csr_matrix(x.tocsr(), dtype=np.float32)
    out.X.eliminate_zeros()
    return out


EDITS = {
    "non-integer": lambda x: x.__setitem__((550, 3), 0.5),  # in the last block
    "negative": lambda x: x.__setitem__((70, 4), -2.0),
    "NaN": lambda x: x.__setitem__((10, 9), np.nan),
    "zero-count cell": lambda x: x.__setitem__((300, slice(None)), 0),
    "zero-count feature": lambda x: x.__setitem__((slice(None), 5), 0),
}


@pytest.mark.parametrize("problem", [p for p in EDITS if p != "zero-count feature"])
def test_count_errors_same_on_backed(data, tmp_path, problem):
    bad = _edited(data[0], EDITS[problem])
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(ValueError) as in_memory:
        check_modalities({"adata.X": bad.X})
    with pytest.raises(ValueError) as from_disk:
        check_modalities({"adata.X": _backed(tmp_path / "bad.h5ad").X})
    assert str(from_disk.value) == str(in_memory.value)
    if problem == "zero-count cell":  # and through setup_anndata, naming where
        with pytest.raises(ValueError, match=r"1 cell\(s\) have zero total counts in adata.X"):
            rv.AmbientRegularizedSCVI.setup_anndata(_backed(tmp_path / "bad.h5ad"), batch_key="batch")


def test_zero_count_feature_warns_the_same_on_backed(data, tmp_path):
    bad = _edited(data[0], EDITS["zero-count feature"])
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.warns(UserWarning, match=r"1 of 200 feature\(s\) have zero total counts in adata.X") as in_memory:
        check_modalities({"adata.X": bad.X})
    with pytest.warns(UserWarning) as from_disk:
        check_modalities({"adata.X": _backed(tmp_path / "bad.h5ad").X})
    assert str(from_disk[0].message) == str(in_memory[0].message)


def test_sampled_check_still_sees_nan_in_totals(data, tmp_path, monkeypatch):
    bad = _edited(data[0], EDITS["NaN"])
    bad.write_h5ad(tmp_path / "bad.h5ad")
    monkeypatch.setattr(C, "COUNT_CHECK_MAX_VALUES", 50)  # the sample almost surely misses the NaN
    for matrix in (bad.X, _backed(tmp_path / "bad.h5ad").X):
        with pytest.raises(ValueError, match="NaN or infinite"):
            check_counts(matrix)


def test_csc_file_is_refused_with_the_fix(data, tmp_path):
    csc = data[0].copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(ValueError, match="CSC.*Rewrite the file with the matrix as CSR"):
        rv.AmbientRegularizedSCVI.setup_anndata(_backed(tmp_path / "csc.h5ad"), batch_key="batch")


# ---------------------------------------------------------------- data module
def test_split_and_batches_match_fast_path(data, monkeypatch):
    adata, path = data
    memory, backed = _model(adata.copy()), _model(_backed(path))
    for kwargs in ({}, {"train_size": 0.7, "validation_size": 0.2}):
        seed_everything(0)
        fast = FastDataModule(memory.adata_manager, batch_size=50, **kwargs)
        seed_everything(0)
        stream = BackedDataModule(backed.adata_manager, batch_size=50, **kwargs)
        for name in ("train_idx", "val_idx", "test_idx"):
            np.testing.assert_array_equal(getattr(stream, name), getattr(fast, name))
        assert stream.shuffle_seed == fast.shuffle_seed
    stream.setup()
    idx = np.array([599, 0, 5, 5, 321, 17, 2])
    expected = fast.gather(idx)
    got = stream.gather(idx)
    assert list(got) == list(expected)
    for key, value in got.items():
        assert value.dtype == expected[key].dtype and value.shape == expected[key].shape
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)

    loader = stream.train_dataloader()
    order, groups = loader.epoch_order(0)
    np.testing.assert_array_equal(np.sort(order), np.sort(stream.train_idx))
    for group in np.unique(groups):  # a group: cells of at most SHUFFLE_BLOCKS whole blocks
        blocks = np.unique(order[groups == group] // BLOCK_ROWS)
        assert blocks.size <= SHUFFLE_BLOCKS
        in_blocks = np.isin(stream.train_idx // BLOCK_ROWS, blocks)
        assert in_blocks.sum() == (groups == group).sum()
    batches = list(loader)
    assert len(batches) == len(loader) == int(np.ceil(stream.n_train / 50))
    for start, batch in zip(range(0, order.size, 50), batches):
        reference = fast.gather(order[start:start + 50])
        for key, value in batch.items():
            torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    assert not np.array_equal(loader.epoch_order(1)[0], order)  # a new order each epoch
    assert sum(b["X"].shape[0] for b in stream.val_dataloader()) == stream.n_val

    # DDP: equal, contiguous shares of the padded order
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(BackedDataModule, "world_size", property(lambda self: 3))
        monkeypatch.setattr(BackedDataModule, "global_rank", property(lambda self, r=rank: r))
        shares.append(loader.rank_order(0)[0])
    per_rank = int(np.ceil(order.size / 3))
    np.testing.assert_array_equal(np.concatenate(shares), order[:2 * per_rank])


def test_read_rows_any_order(data):
    adata, path = data
    cells = np.array([599, 3, 3, 64, 63, 200])
    rows, pos = read_rows(_backed(path).X, cells, block_rows=BLOCK_ROWS)
    np.testing.assert_array_equal(rows[pos].toarray(), adata.X[cells].toarray())


# ---------------------------------------------------------------- training and outputs
def test_training_streams_blocks_and_separates_types(trained, data):
    backed, memory, z_backed, setup_reads, training_reads = trained
    assert backed.data_loader_used == "backed" and memory.data_loader_used == "fast"
    assert len(backed.history["elbo_validation"]) == EPOCHS  # validation batches ran each epoch
    # training and the latent representation read block-sized slices only
    assert training_reads and max(training_reads) <= BLOCK_ROWS
    np.testing.assert_array_equal(backed.train_indices, memory.train_indices)
    labels = data[0].obs["cell_type"].to_numpy()
    purity_backed = knn_label_purity(z_backed, labels)
    purity_memory = knn_label_purity(memory.get_latent_representation(), labels)
    print(f"kNN purity after {EPOCHS} epochs: backed {purity_backed:.3f}, in memory {purity_memory:.3f}")
    # 20 epochs of 5 steps: purity 0.90-0.98 over seeds 0-3 in memory (the backed path shuffles by blocks)
    assert purity_backed >= 0.85 and purity_memory >= 0.85
    assert np.isfinite(backed.get_normalized_expression(indices=[4, 1], return_numpy=True)).all()


def test_outputs_keep_the_requested_order(trained):
    backed, _, z, _, _ = trained
    idx = [5, 3, 598, 3, 0]
    picked = backed.get_latent_representation(indices=idx)
    # a minibatch of 5 rows may round differently from one of 128 (the CPU's matmul kernel
    # depends on the row count; seen at 4e-7): equal to float32 precision, and in this order
    np.testing.assert_allclose(picked, z[idx], rtol=0, atol=1e-5)
    assert np.abs(z[5] - z[3]).max() > 1e-2 and np.abs(z[0] - z[598]).max() > 1e-2


def test_save_load_round_trip_is_bitwise(trained, data, tmp_path):
    backed, _, z, _, _ = trained
    backed.save(tmp_path / "m")
    loaded = rv.AmbientRegularizedSCVI.load(tmp_path / "m", adata=_backed(data[1]))
    assert loaded.adata.isbacked
    np.testing.assert_array_equal(loaded.get_latent_representation(), z)
    with pytest.raises(ValueError, match="backed.*save_anndata=False"):
        backed.save(tmp_path / "with_data", save_anndata=True)


def test_loader_choices(data):
    adata, path = data
    backed, memory = _model(_backed(path)), _model(adata.copy())
    with pytest.raises(ValueError, match="AnnData is backed.*data_loader='backed'"):
        backed.train(max_epochs=1, data_loader="fast", **QUIET)
    with pytest.raises(ValueError, match="this AnnData is in memory"):
        memory.train(max_epochs=1, data_loader="backed", **QUIET)


def test_backed_mudata_trains_like_the_in_memory_one(tmp_path):
    mudata = pytest.importorskip("mudata")
    mdata = rv.simulate_multiome(n_cells=300, n_genes=80, n_peaks=100, n_batches=2, seed=0)
    mdata.write(tmp_path / "m.h5mu")
    models = {}
    for name, data in (("memory", mdata), ("backed", mudata.read_h5mu(tmp_path / "m.h5mu", backed=True))):
        torch.manual_seed(0)
        rv.RegularizedMultimodalVI.setup_mudata(data, modalities=["rna", "atac"], batch_key="batch")
        models[name] = rv.RegularizedMultimodalVI(data, n_hidden=16, n_latent=3)
    memory_state = models["memory"].module.state_dict()
    for key, value in models["backed"].module.state_dict().items():  # statistics read in row blocks
        torch.testing.assert_close(value, memory_state[key], rtol=1e-6, atol=1e-6, msg=key)
    backed = models["backed"]
    backed.train(max_epochs=1, **QUIET)
    assert backed.data_loader_used == "backed"
    latent = backed.get_latent_representation()
    np.testing.assert_allclose(backed.get_latent_representation(indices=[5, 3, 1]), latent[[5, 3, 1]], atol=1e-6)
    assert np.isfinite(backed.get_normalized_expression(modality="atac", return_numpy=True)).all()
