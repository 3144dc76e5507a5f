"""Random streams of a module's modalities (regularizedvi.module._streams)."""

import copy
import io

import torch

from regularizedvi.module import RegularizedVAE
from regularizedvi.module._streams import RandomStream, seeded_init, stream_seed


def _module():
    torch.manual_seed(0)
    return RegularizedVAE(20, torch.zeros(1), torch.ones(1))


def test_copies_carry_the_stream_state_and_rebind_their_parts():
    module = _module()
    module.random_streams["X"].seed()  # move it off its start
    for copied in (copy.deepcopy(module), torch.load(_saved(module), weights_only=False)):
        stream = copied.random_streams["X"]
        assert stream is not module.random_streams["X"]
        assert copied.observation.stream is stream and copied.encoder.body.layers[0][0].stream is stream
        assert stream.seed() == copy.deepcopy(module.random_streams["X"]).seed()


def _saved(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return buf


def test_seeded_init_restores_the_global_generator_and_repeats():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with seeded_init(11):
        a = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded_init(11):
        assert torch.equal(torch.rand(4), a)
    assert stream_seed(1, 0, 0) != stream_seed(1, 1, 0) != stream_seed(1, 0, 1)


def test_training_draws_come_from_the_stream_evaluation_draws_from_the_global_generator():
    module = _module()
    q = torch.distributions.Normal(torch.zeros(3, 2), torch.ones(3, 2))
    module.train()
    state = copy.deepcopy(module.random_streams["X"])
    torch.manual_seed(5)
    train_noise = module._latent_noise(q)
    assert torch.equal(train_noise, state.normal_like(q.loc))  # not torch's global draw
    module.eval()
    torch.manual_seed(5)
    eval_noise = module._latent_noise(q)
    torch.manual_seed(5)
    assert torch.equal(eval_noise, torch.randn(3, 2))
    assert isinstance(module.random_streams["X"], RandomStream)
