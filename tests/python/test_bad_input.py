"""Arguments and files that used to give wrong results or tracebacks get one clear error."""

import json
import pickle

import numpy as np
import pytest
import torch
from scipy import sparse

import regularizedvi as rv
from regularizedvi.model._save_load import MODEL_FILE, WEIGHTS_FILE


@pytest.fixture(scope="module")
def small():
    adata = rv.simulate_counts(n_cells=120, n_genes=60, n_batches=2, n_cell_types=2, markers_per_type=5, seed=3)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    return adata


def _model(adata, **kwargs):
    return rv.AmbientRegularizedSCVI(adata, n_hidden=8, n_latent=2, **kwargs)


@pytest.mark.parametrize("epochs, error, message", [
    (0, ValueError, "max_epochs must be >= 1, got 0"),
    (-1, ValueError, "max_epochs must be >= 1, got -1"),
    ("ten", TypeError, "max_epochs must be a whole number >= 1, got 'ten'"),
    (2.7, TypeError, "max_epochs must be a whole number >= 1, got 2.7"),
])
def test_bad_epochs_are_refused_and_the_model_stays_untrained(small, epochs, error, message):
    model = _model(small)
    with pytest.raises(error, match=message):
        model.train(max_epochs=epochs, enable_progress_bar=False)
    assert not model.is_trained_


def test_whole_float_epochs_and_bad_batch_size(small):
    model = _model(small)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        model.train(max_epochs=1, batch_size=0)
    model.train(max_epochs=1.0, batch_size=64.0, enable_progress_bar=False)  # R passes doubles
    assert model.is_trained_


@pytest.mark.parametrize("kwargs, message", [
    ({"n_latent": 0}, "n_latent must be >= 1, got 0"),
    ({"n_hidden": -4}, "n_hidden must be >= 1, got -4"),
    ({"n_layers": 0}, "n_layers must be >= 1, got 0"),
    ({"dropout_rate": 1.0}, r"dropout_rate must be a number in \[0, 1\), got 1.0"),
])
def test_bad_architecture_is_refused(small, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        rv.AmbientRegularizedSCVI(small, **{"n_hidden": 8, "n_latent": 2, **kwargs})


def test_unknown_keywords_raise(small):
    model = _model(small)
    model.train(max_epochs=1, enable_progress_bar=False)
    with pytest.raises(TypeError, match="transform_bath"):
        model.get_normalized_expression(transform_bath="batch_0")
    with pytest.raises(TypeError, match="give_men"):
        model.get_latent_representation(give_men=True)
    with pytest.raises(TypeError, match="not_an_option"):
        model.train(max_epochs=1, not_an_option=3, enable_progress_bar=False)


@pytest.mark.parametrize("multimodal", [False, True])
def test_misspelt_setup_argument_is_a_type_error_naming_the_fix(multimodal):
    if multimodal:
        data = rv.simulate_multiome(n_cells=60, n_genes=40, n_peaks=50, n_batches=2, seed=4)
        setup, method = (lambda **kw: rv.RegularizedMultimodalVI.setup_mudata(
            data, modalities=["rna", "atac"], **kw)), "setup_mudata"
    else:
        data = rv.simulate_counts(n_cells=60, n_genes=60, n_batches=2, n_cell_types=2, markers_per_type=5, seed=3)
        setup, method = (lambda **kw: rv.AmbientRegularizedSCVI.setup_anndata(data, **kw)), "setup_anndata"
    with pytest.raises(TypeError, match=rf"^{method}\(\) got unexpected keyword argument\(s\) 'batchkey' "
                                        r"\(did you mean 'batch_key'\?\)\. Valid arguments: .*batch_key"):
        setup(batchkey="batch")
    with pytest.raises(TypeError, match=r"'zzz'\. Valid"):
        setup(zzz=1)
    assert "_scvi_manager_uuid" not in data.uns  # refused before anything was registered
    setup(batch_key="batch")
    assert "_scvi_manager_uuid" in data.uns


def test_continuous_column_is_refused_as_a_batch():
    adata = rv.simulate_counts(n_cells=120, n_genes=60, n_batches=2, n_cell_types=2, markers_per_type=5, seed=3)
    adata.obs["total"] = np.asarray(adata.X.sum(1)).ravel()
    with pytest.raises(ValueError, match=r"'total' is numeric with \d+ distinct values in 120 cells.*"
                                         r"astype\('category'\).*factor\(object\$total\)"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="total")
    adata.obs["fraction"] = np.linspace(0, 1, adata.n_obs)
    with pytest.raises(ValueError, match="'fraction' is numeric with non-integer values"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, nn_conditioning_covariate_keys=["fraction"])
    adata.obs["half"] = np.repeat(np.arange(40), 3)  # whole numbers, but 40 groups of 3 cells: accepted
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="half")
    small = adata[:60].copy()  # fewer than 2 cells per group: more groups than half of the cells
    small.obs["over_half"] = np.concatenate([np.arange(31), np.zeros(29)])
    with pytest.raises(ValueError, match="'over_half' is numeric with 31 distinct values in 60 cells"):
        rv.AmbientRegularizedSCVI.setup_anndata(small, batch_key="over_half")
    adata.obs["sample_number"] = np.repeat([1, 2, 3, 4], 30)  # a numeric code with few values: a category
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="sample_number")
    adata.obs["total"] = adata.obs["total"].astype("category")  # explicitly categorical: accepted
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="total")


def test_column_names_with_dots_are_refused_with_the_rename():
    adata = rv.simulate_counts(n_cells=120, n_genes=60, n_batches=2, n_cell_types=2, markers_per_type=5, seed=3)
    adata.obs["letter.idents"] = adata.obs["batch"]
    with pytest.raises(ValueError, match=r"column name 'letter.idents' contains '.'.*adata.obs\['letter_idents'\] = "
                                         r"adata.obs\['letter.idents'\]"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="letter.idents")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_gpu_request_without_gpu_names_the_fix(small):
    model = _model(small)
    with pytest.raises(ValueError, match="accelerator='gpu' was requested.*sees no CUDA GPU.*accelerator='cpu'"):
        model.train(max_epochs=1, accelerator="gpu")


def test_no_cells_is_said_plainly():
    adata = rv.simulate_counts(n_cells=120, n_genes=60, n_batches=2, n_cell_types=2, markers_per_type=5, seed=3)
    with pytest.raises(ValueError, match=r"adata.X has no cells \(shape \(0, 60\)\)"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata[adata.obs["batch"] == "none"].copy(), batch_key="batch")


# ---------------------------------------------------------------- damaged model folders
@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    model = _model(small)
    model.train(max_epochs=1, enable_progress_bar=False)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(path)
    return path


def _copy(saved, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        (target / name).write_bytes((saved / name).read_bytes())
    return target


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("damage, message", [
    ("truncated json", r"model.json' is damaged or not a regularizedvi model description \(it is not valid JSON"),
    ("not a description", r"model.json' is not a regularizedvi model description: it lacks"),
    ("truncated weights", r"weights.pt' is damaged or not written by regularizedvi: it cannot be read"),
    ("poisoned weights", r"weights.pt' is damaged or not written by regularizedvi: it holds objects other than "
                         r"tensors"),
    ("other model's weights", r"The weights in '.*weights.pt' do not fit the model"),
])
def test_damaged_files_get_one_clear_error(small, saved, tmp_path, damage, message, capsys):
    path = _copy(saved, tmp_path)
    if damage == "truncated json":
        (path / MODEL_FILE).write_text((saved / MODEL_FILE).read_text()[:200])
    elif damage == "not a description":
        (path / MODEL_FILE).write_text(json.dumps({"hello": 1}))
    elif damage == "truncated weights":
        (path / WEIGHTS_FILE).write_bytes((saved / WEIGHTS_FILE).read_bytes()[:300])
    elif damage == "poisoned weights":
        with open(path / WEIGHTS_FILE, "wb") as f:
            pickle.dump({"x": _Payload()}, f)
    else:
        state = torch.load(saved / WEIGHTS_FILE, weights_only=True)
        state["decoder.out.weight"] = torch.zeros(3, 3)
        torch.save(state, path / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=message) as err:
        rv.AmbientRegularizedSCVI.load(path, small)
    assert "weights_only=False" not in str(err.value)
    assert "this must never run" not in capsys.readouterr().out


def test_load_model_reads_the_class(small, saved):
    model = rv.load_model(saved, small)
    assert isinstance(model, rv.AmbientRegularizedSCVI) and model.is_trained_
    assert rv.read_model_description(saved)["class"] == "AmbientRegularizedSCVI"


# ---------------------------------------------------------------- zero-count genes
def test_zero_count_genes_train_with_a_warning_and_finite_outputs():
    adata = rv.simulate_counts(n_cells=120, n_genes=60, n_batches=2, n_cell_types=2, markers_per_type=5, seed=3)
    x = adata.X.toarray()
    x[:, [4, 7]] = 0
    adata.X = sparse.csr_matrix(x)
    with pytest.warns(UserWarning, match=r"2 of 60 feature\(s\) have zero total counts in adata.X"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    model = _model(adata)
    model.train(max_epochs=3, enable_progress_bar=False)
    expression = model.get_normalized_expression(return_numpy=True)
    assert np.isfinite(expression).all() and np.isfinite(model.get_latent_representation()).all()
    assert expression[:, [4, 7]].max() < expression.mean()
    np.testing.assert_allclose(expression.sum(1), 1.0, rtol=1e-4)


def test_cell_positions_out_of_range_or_of_the_wrong_kind_are_refused():
    adata = rv.simulate_counts(n_cells=60, n_genes=40, n_batches=2, n_cell_types=2, markers_per_type=5, seed=3)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=8, n_latent=2)
    with pytest.raises(IndexError, match=r"indices has 1 position\(s\) outside the data's 60 cells \(e.g. \[60\]\)"):
        model.get_normalized_expression(indices=[0, 60])
    with pytest.raises(TypeError, match="not a boolean mask: use np.flatnonzero"):
        model.get_latent_representation(indices=np.ones(60, dtype=bool))
    with pytest.raises(TypeError, match="cell positions"):
        model.get_contamination_fraction(indices=["cell_0"])
    assert model.get_latent_representation(indices=[3, 5]).shape == (2, 2)
