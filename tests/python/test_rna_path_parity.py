"""The multimodal model's primary (RNA) path is the single model's RNA path (issue 16).

From the same seed, RegularizedMultimodalVI's first modality starts from the weights that
AmbientRegularizedSCVI draws for that modality alone, and with the primary slice detached
(the default) and the same RNA options (feature scaling on, as the single model has it),
one minibatch gives the same RNA loss terms and the same gradient of every RNA parameter:
the ATAC likelihood does not reach them. The RNA part draws its training noise from a random
stream of its own (``regularizedvi.module._streams``), seeded as the single model's, so
training both from the same seed gives the single model's latent as the joint latent's RNA
slice. What still differs by default is RNA feature scaling (docs/multimodal.md).
"""

import numpy as np
import pytest
import torch
from torch.distributions import Normal

import regularizedvi as rv
from regularizedvi.model._parity import joint_name, modality_state, seeded_pair
from regularizedvi.nn._layers import FeatureDropout

QUIET = {"enable_progress_bar": False, "accelerator": "cpu"}


def _joint_name(name):
    joint = joint_name(name, "rna")
    assert joint is not None, f"unmapped single-model parameter {name}"
    return joint


def _pair(seed=0, train_kwargs=None, **joint_kwargs):
    """The single model on the RNA and the multimodal one on RNA + ATAC, each built (and
    trained, given ``train_kwargs``) right after seeding with ``seed``."""
    mdata = rv.simulate_multiome(n_cells=200, n_genes=60, n_peaks=80, n_batches=2, seed=3)
    rna = mdata.mod["rna"].copy()
    rna.obs["batch"] = mdata.obs["batch"].to_numpy()
    return seeded_pair(rna, mdata, seed, {"batch_key": "batch"},
                       {"modalities": ["rna", "atac"], "batch_key": "batch"},
                       model_kwargs={"n_hidden": 32, "n_latent": 4}, joint_kwargs=joint_kwargs,
                       train_kwargs=train_kwargs)


@pytest.mark.parametrize("feature_scaling", [None, {"rna": True}])
def test_primary_modality_starts_from_the_single_models_weights(feature_scaling):
    single, joint = _pair(feature_scaling=feature_scaling)
    joint_rna = modality_state(joint, "rna")
    only_single = []
    for name, value in single.module.state_dict().items():
        jn = _joint_name(name)
        if jn not in joint_rna:
            only_single.append(name)
            continue
        assert torch.equal(joint_rna.pop(jn), value), name
    assert joint_rna == {}
    # by default the multimodal model's RNA has no feature scaling (spec table); the single model has
    # one factor per gene
    assert only_single == ([] if feature_scaling else ["observation.feature_scaling_raw"])


def _deterministic_step(model, idx):
    """Loss and gradients of one minibatch in training mode, without dropout and with every
    draw (z, library, dispersion) at its mean / median."""
    module = model.module
    module.train()
    for sub in module.modules():
        if isinstance(sub, FeatureDropout):
            sub.p = 0.0
    observations = [module.observation_of(m) for m in module.modality_names]
    for obs in observations:
        obs.dispersion = (lambda f: lambda codes, sample: f(codes, False))(obs.dispersion)
    rsample = Normal.rsample
    Normal.rsample = lambda self, sample_shape=torch.Size(): self.loc.expand(sample_shape + self.loc.shape)
    try:
        tensors = next(iter(model._make_data_loader(adata=model.adata, indices=idx, batch_size=len(idx))))
        module.zero_grad()
        _, _, out = module(tensors, loss_kwargs={"kl_weight": 1.0, "n_obs": float(model.adata.n_obs)})
        out.loss.backward()
    finally:
        Normal.rsample = rsample
        for obs in observations:
            del obs.dispersion
    return out, {n: p.grad for n, p in module.named_parameters()}


def test_rna_loss_and_gradients_equal_the_single_models():
    single, joint = _pair(feature_scaling={"rna": True})
    idx = np.arange(64)
    out_s, grad_s = _deterministic_step(single, idx)
    out_j, grad_j = _deterministic_step(joint, idx)
    (rec_single,) = out_s.reconstruction_loss.values()
    torch.testing.assert_close(out_j.reconstruction_loss["reconstruction_rna"], rec_single)
    for key, value in out_s.kl_local.items():
        jk = "kl_divergence_z_rna" if key == "kl_divergence_z" else f"{key}_rna"
        torch.testing.assert_close(out_j.kl_local[jk], value, msg=key)
    torch.testing.assert_close(joint.module.observations["rna"].global_penalty(),
                               single.module.observation.global_penalty())
    assert sum(int(g.abs().sum() > 0) for g in grad_s.values()) > len(grad_s) // 2  # a real gradient
    for name, grad in grad_s.items():
        torch.testing.assert_close(grad_j[_joint_name(name)], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_rna_slice_of_the_joint_latent_is_the_single_models_latent():
    single, joint = _pair(feature_scaling={"rna": True})
    z_single = single.get_latent_representation()
    z_joint = joint.get_latent_representation()
    a, b = joint.module.latent_slices["rna"]
    np.testing.assert_array_equal(joint.get_latent_representation(modality="rna"), z_single)
    np.testing.assert_array_equal(z_joint[:, a:b], z_single)


def test_training_gives_the_single_models_latent_as_the_rna_slice():
    """Same seed, same RNA options: after training (dropout, z / library / dispersion draws,
    minibatch order), the joint latent's RNA slice is the single model's latent to rounding;
    another seed gives another latent."""
    single, joint = _pair(0, dict(max_epochs=3, batch_size=64, **QUIET), feature_scaling={"rna": True})
    z_single = single.get_latent_representation()
    z_rna = joint.get_latent_representation(modality="rna")
    np.testing.assert_allclose(z_rna, z_single, rtol=0, atol=1e-5)
    other, _ = _pair(1, dict(max_epochs=3, batch_size=64, **QUIET), feature_scaling={"rna": True})
    assert np.abs(other.get_latent_representation() - z_single).max() > 1e-2


def test_other_modalities_do_not_move_the_global_generator():
    """Building the multimodal module draws from torch's global generator what the single
    module draws (one seed): the minibatch order and split that follow are the same."""
    from regularizedvi.module import RegularizedVAE
    from regularizedvi.module._multimodal import RegularizedMultimodalVAE

    states = []
    for build in (lambda: RegularizedVAE(20, torch.zeros(1), torch.ones(1)),
                  lambda: RegularizedMultimodalVAE(["rna", "atac"], {"rna": 20, "atac": 30},
                                                   {"rna": torch.zeros(1), "atac": torch.zeros(1)},
                                                   {"rna": torch.ones(1), "atac": torch.ones(1)})):
        torch.manual_seed(5)
        build()
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])
