"""Random streams of a module's modalities.

A module draws one seed from torch's global generator when it is built. From it each
modality gets two seeds of its own (``stream_seed``): one for the starting weights of its
parts (built under that seed, the global generator's state restored afterwards), one for
:class:`RandomStream`, the CPU generator its training draws come from (dropout masks, its
latent slice's and library's noise, the dispersion draw; in evaluation mode, e.g. the
posterior samples of the outputs, draws come from torch's global generator as in scvi-tools,
so ``torch.manual_seed`` governs them). The modality in slot 0 (the
single model's only modality; the multimodal model's primary modality, else its first)
therefore starts from the same weights and sees the same draws in both model classes, and
building or training the other modalities does not move the global generator (whose draws
then seed the minibatch order and split alike in both).

Tensors on another device (CUDA) draw from that device's global generator as before: on a
GPU the runs repeat for a seed but the streams are not separate.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

# what a stream seed is for (the last entry of its seed sequence)
INIT, TRAINING = 0, 1
# the slot of parts that belong to no modality (the single-encoder mode's joint encoder)
SHARED_SLOT = 1 << 16
# the slot of the ambient adversary's classifier (built only when it is on)
ADVERSARY_SLOT = SHARED_SLOT + 1


def module_seed() -> int:
    """One draw from torch's global CPU generator: the seed of a module's streams."""
    return int(torch.randint(0, 2**62, (1,)))


def stream_seed(base: int, slot: int, purpose: int) -> int:
    """A 63-bit seed for ``(slot, purpose)`` derived from ``base`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([base, slot, purpose]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def seeded_init(seed: int):
    """Build parts from ``seed``: torch's global CPU generator is seeded with it inside the
    block and restored to its state before the block afterwards (CUDA generators untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class RandomStream:
    """A CPU ``torch.Generator`` that a modality's parts draw their training noise from.

    Copies (``copy.deepcopy``, pickling) carry the generator's state.
    """

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(int(seed))

    def normal_like(self, t: torch.Tensor) -> torch.Tensor:
        """Standard normal draws of ``t``'s shape, dtype and device (CPU: from this stream)."""
        if t.device.type != "cpu":
            return torch.randn_like(t)
        return torch.randn(t.shape, generator=self.generator, dtype=t.dtype)

    def seed(self) -> int:
        """A 62-bit integer from this stream (seeds a dropout mask)."""
        return int(torch.randint(0, 2**62, (1,), generator=self.generator))

    def __getstate__(self):
        return {"state": self.generator.get_state()}

    def __setstate__(self, state):
        self.generator = torch.Generator()
        self.generator.set_state(state["state"])

    def __deepcopy__(self, memo):
        new = RandomStream.__new__(RandomStream)
        new.__setstate__(self.__getstate__())
        return new


def normal_like(t: torch.Tensor, stream: RandomStream | None) -> torch.Tensor:
    """Standard normal draws of ``t``'s shape from ``stream`` (None: torch's global generator)."""
    return torch.randn_like(t) if stream is None else stream.normal_like(t)


def reparameterise(q, eps: torch.Tensor) -> torch.Tensor:
    """``loc + eps * scale`` of the Normal ``q``, as torch's ``Normal.rsample`` forms it."""
    return q.loc + eps * q.scale


def rsample(q, stream: RandomStream | None) -> torch.Tensor:
    """A reparameterised draw of the Normal ``q`` with ``eps`` from ``stream`` (None:
    torch's global generator)."""
    return reparameterise(q, normal_like(q.loc, stream))


def bind(part: torch.nn.Module, stream: RandomStream) -> None:
    """Point every submodule of ``part`` that draws training noise (it has a ``stream``
    attribute) at ``stream``."""
    for sub in part.modules():
        if hasattr(sub, "stream"):
            sub.stream = stream
