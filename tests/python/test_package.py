"""Package hygiene: no import side effects, one place for defaults, docs that tell the truth."""

import inspect
import subprocess
import sys

import regularizedvi as rv
from regularizedvi import _constants as C


def test_import_changes_no_global_torch_setting():
    code = (
        "import torch; before = (torch.get_default_dtype(), torch.get_float32_matmul_precision(), "
        "torch.are_deterministic_algorithms_enabled(), torch.get_num_threads());"
        "import regularizedvi;"
        "after = (torch.get_default_dtype(), torch.get_float32_matmul_precision(), "
        "torch.are_deterministic_algorithms_enabled(), torch.get_num_threads());"
        "assert before == after, (before, after); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_signature_defaults_come_from_constants():
    init = inspect.signature(rv.AmbientRegularizedSCVI.__init__).parameters
    assert init["n_hidden"].default == C.N_HIDDEN
    assert init["n_latent"].default == C.N_LATENT
    assert init["dropout_rate"].default == C.DROPOUT_RATE
    assert init["regularise_background"].default is C.REGULARISE_BACKGROUND
    train = inspect.signature(rv.AmbientRegularizedSCVI.train).parameters
    assert train["early_stopping_min_delta_per_feature"].default == C.EARLY_STOPPING_MIN_DELTA_PER_FEATURE
    assert train["batch_size"].default == C.BATCH_SIZE
    from regularizedvi.nn._layers import MLP

    assert inspect.signature(MLP.__init__).parameters["covariate_gain"].default == C.COVARIATE_WEIGHT_GAIN
    assert f"``COVARIATE_WEIGHT_GAIN`` = {C.COVARIATE_WEIGHT_GAIN:g})" in MLP.__doc__


def test_docstrings_state_the_same_defaults():
    doc = rv.AmbientRegularizedSCVI.__doc__
    assert f"(default {C.N_HIDDEN})" in doc and f"(default {C.N_LATENT})" in doc
    assert f"(default {C.DROPOUT_RATE})" in doc
    train_doc = rv.AmbientRegularizedSCVI.train.__doc__
    assert f"(default {C.EARLY_STOPPING_MIN_DELTA_PER_FEATURE})" in train_doc
    assert f"(default {C.BATCH_SIZE})" in train_doc


def test_early_stopping_threshold_scales_with_features(simulated, monkeypatch):
    captured = {}

    def fake_train(self, **kwargs):
        captured.update(kwargs)

    from scvi.model.base import UnsupervisedTrainingMixin

    monkeypatch.setattr(UnsupervisedTrainingMixin, "train", fake_train)
    adata = simulated[:100].copy()
    rv.AmbientRegularizedSCVI.setup_anndata(adata)
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=8, n_latent=2)
    model.train(max_epochs=1, early_stopping=True, loop="lightning")
    assert captured["early_stopping_min_delta"] == adata.n_vars * C.EARLY_STOPPING_MIN_DELTA_PER_FEATURE
    model.train(max_epochs=1, early_stopping=True, early_stopping_min_delta=0, loop="lightning")
    assert captured["early_stopping_min_delta"] == 0
