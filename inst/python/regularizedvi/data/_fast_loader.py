"""An in-memory training data path: counts held once as CSR tensors, minibatches gathered
and densified on the training device.

scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` slices the AnnData (scipy rows,
pandas ``iloc`` for covariates), densifies on the CPU and builds new tensors for every
minibatch, then Lightning copies them to the device. :class:`FastDataModule` does that
work once: every registered field becomes a tensor (sparse counts as the three CSR arrays
``indptr`` / ``indices`` / ``data``, covariate codes as dense float32), moved once to the
training device; a minibatch is an index gather plus one scatter into a dense block on
that device. The user's matrix is never densified or modified (on the CPU, float32 CSR
arrays are shared with scipy without a copy and only read).

Batches are dicts with the same keys, dtypes (float32) and shapes as scvi-tools'. The
train / validation split is the one :class:`~scvi.dataloaders.DataSplitter` draws
(same sizes, same seeded permutation), so ``model.train_indices`` etc. agree.
"""

from __future__ import annotations

import logging
import math
import warnings

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import settings
from scvi.dataloaders._data_splitting import validate_data_split

from regularizedvi import _constants as C
from regularizedvi.data._keys import stored_positions

logger = logging.getLogger(__name__)


def _registry_fields(adata_manager) -> dict:
    """``key -> registered data`` for every field scvi-tools would put in a minibatch."""
    return {key: adata_manager.get_from_registry(key) for key in adata_manager.data_registry}


def unsupported_reason(adata_manager, allow_backed: bool = False) -> str | None:
    """Why the fast path cannot hold this registration in memory (None when it can).

    With ``allow_backed`` (the backed path's check): a backed AnnData and on-disk CSR or
    dense fields are accepted; an on-disk CSC field is not.
    """
    from regularizedvi.data._backed import backed_layout_problem, is_backed_matrix

    adata = adata_manager.adata
    if getattr(adata, "isbacked", False) and not allow_backed:
        return "the AnnData is backed (on disk)"
    for key in adata_manager.data_registry:
        data = adata_manager.get_from_registry(key)
        if isinstance(data, str):
            continue  # minified-data marker: not a tensor (skipped by scvi-tools too)
        if allow_backed and is_backed_matrix(data):
            problem = backed_layout_problem(data, f"field '{key}'")
            if problem is not None:
                return problem
            continue
        if not (isinstance(data, (np.ndarray, pd.DataFrame)) or sp.issparse(data)):
            return f"field '{key}' is a {type(data).__name__}"
        if sp.issparse(data) and data.format not in ("csr", "csc"):
            return f"field '{key}' is a sparse {data.format} matrix"
    return None


def in_memory_bytes(adata_manager) -> int:
    """Bytes the fast path's tensors take (CSR for sparse fields, float32 for dense)."""
    total = 0
    for key in adata_manager.data_registry:
        data = adata_manager.get_from_registry(key)
        if isinstance(data, str):
            continue
        if sp.issparse(data):
            total += data.nnz * (4 + 4) + (data.shape[0] + 1) * 8
        else:
            total += int(np.prod(data.shape)) * 4
    return total


def shared_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory (contiguous: no copy when it already is).

    The user's counts may be read-only (e.g. arrays R hands over through reticulate); they
    are only ever read here, so torch's warning about non-writable arrays does not apply
    and is silenced for this call only.
    """
    array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def stored_positions_of(rows: sp.csr_matrix) -> torch.Tensor | None:
    """Flat positions (row-major in ``rows.toarray()``) of the stored values of a CSR block,
    as int64; ``None`` when it is not canonical (duplicates would repeat a position)."""
    if not rows.has_canonical_format:
        return None
    starts = np.repeat(np.arange(rows.shape[0], dtype=np.int64) * rows.shape[1], np.diff(rows.indptr))
    return torch.from_numpy(starts + rows.indices)


class _CSRRows:
    """Row gather of a CSR matrix held as three tensors; ``dense(idx)`` densifies rows.

    On a GPU the gather is a handful of tensor ops on the device. On the CPU scipy's
    compiled row slice + ``toarray`` is 4-6x faster than the same tensor ops (measured:
    1.25 vs 5.4 ms per 128 x 2000 batch at 42% density), so it is used there, on a
    matrix that shares the user's float32 arrays.
    """

    def __init__(self, matrix: sp.spmatrix):
        csr = matrix.tocsr() if matrix.format != "csr" else matrix  # csc: one converted copy
        # float32 data / int32 or int64 indices are shared with scipy (no copy); we only read.
        data = csr.data if csr.data.dtype == np.float32 else csr.data.astype(np.float32)
        self._scipy = sp.csr_matrix((data, csr.indices, csr.indptr), shape=csr.shape, copy=False)
        self._scipy.has_canonical_format = csr.has_canonical_format
        self.data = shared_tensor(data)
        self.indices = shared_tensor(csr.indices)
        self.indptr = shared_tensor(csr.indptr).long()
        self.n_cols = csr.shape[1]
        self.n_rows = csr.shape[0]
        # duplicates (non-canonical CSR) are summed, as scipy's toarray() does
        self.accumulate = not csr.has_canonical_format

    def to(self, device) -> "_CSRRows":
        for name in ("data", "indices", "indptr"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def dense(self, idx: torch.Tensor, host_idx: np.ndarray | None = None) -> torch.Tensor:
        """Rows ``idx`` as a dense float32 block; ``host_idx`` (the same rows as a host
        array) lets a GPU gather size its output from the host copy of ``indptr`` instead
        of reading the sum of row lengths back from the device (a sync per batch)."""
        if self.data.device.type == "cpu":
            return torch.from_numpy(self._scipy[idx.numpy()].toarray())
        starts = self.indptr[idx]
        lengths = self.indptr[idx + 1] - starts
        n = idx.shape[0]
        out = torch.zeros((n, self.n_cols), dtype=torch.float32, device=self.data.device)
        if host_idx is not None:
            indptr = self._scipy.indptr
            total = int((indptr[host_idx + 1] - indptr[host_idx]).sum())
        else:
            total = int(lengths.sum())  # one sync on GPU
        if total == 0:
            return out
        rows = torch.repeat_interleave(torch.arange(n, device=idx.device), lengths, output_size=total)
        # position of each stored value: start of its row + its rank within the row
        row_first = torch.cumsum(lengths, 0) - lengths
        pos = torch.arange(total, device=idx.device) + (starts - row_first).repeat_interleave(
            lengths, output_size=total)
        cols = self.indices[pos].long()
        out.index_put_((rows, cols), self.data[pos], accumulate=self.accumulate)
        return out


    def dense_with_positions(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CPU: rows ``idx`` dense, and the flat positions (row-major in the dense block) of
        their stored values, read from the CSR structure (batch key ``stored_positions(key)``): the
        CPU likelihood needs them and would otherwise scan the dense block for nonzeros.
        ``None`` for a non-canonical CSR (duplicates would repeat a position). Explicitly
        stored zeros may be among the positions."""
        rows = self._scipy[idx.numpy()]
        return torch.from_numpy(rows.toarray()), stored_positions_of(rows)


class _DenseRows:
    def __init__(self, values: np.ndarray):
        values = np.asarray(values)
        if values.ndim == 1:
            values = values[:, None]
        self.values = shared_tensor(np.ascontiguousarray(values, dtype=np.float32))

    def to(self, device) -> "_DenseRows":
        self.values = self.values.to(device)
        return self

    def dense(self, idx: torch.Tensor, host_idx: np.ndarray | None = None) -> torch.Tensor:
        return self.values[idx]


def in_memory_field(data) -> _CSRRows | _DenseRows:
    """The row-gatherable tensor form of one in-memory registered field (CPU)."""
    if sp.issparse(data):
        return _CSRRows(data)
    if isinstance(data, pd.DataFrame):
        return _DenseRows(data.to_numpy(dtype=np.float32))
    return _DenseRows(data)


class _MinibatchIterable:
    """One pass = a list of index blocks; each yields ``{key: tensor}`` on the data's device."""

    def __init__(self, module: "FastDataModule", indices: np.ndarray, shuffle: bool):
        self.module = module
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shuffle = shuffle
        self.epoch = 0

    def _rank_indices(self) -> np.ndarray:
        """This rank's cells for one pass (DDP: equal-length strided shards, padded), on the host."""
        module = self.module
        order = self.indices
        if self.shuffle:
            gen = torch.Generator().manual_seed(module.shuffle_seed + self.epoch)
            order = order[torch.randperm(len(order), generator=gen).numpy()]
        world, rank = module.world_size, module.global_rank
        if world > 1:
            per_rank = math.ceil(len(order) / world)
            pad = per_rank * world - len(order)
            if pad:
                order = np.concatenate([order, order[:pad]])
            order = order[rank::world]
        return order

    def __len__(self) -> int:
        n = math.ceil(len(self.indices) / max(self.module.world_size, 1))
        return math.ceil(n / self.module.batch_size)

    def __iter__(self):
        host_order = self._rank_indices()
        # one copy of the pass's order to the device; the host copy gives each minibatch's
        # number of stored values without reading anything back from the device
        order = torch.from_numpy(host_order).to(self.module.device)
        self.epoch += 1
        bs = self.module.batch_size
        for start in range(0, len(order), bs):
            yield self.module.gather(order[start:start + bs], host_order[start:start + bs])


class SplitDataModule(pl.LightningDataModule):
    """What the in-memory and the backed data modules share: scvi-tools' split, the seed
    of the per-epoch shuffles, and the training device / DDP rank.

    The split is the one :class:`~scvi.dataloaders.DataSplitter` draws: sizes from
    ``validate_data_split``, cells permuted with ``numpy.random.RandomState(scvi.settings.seed)``
    (when ``shuffle_set_split``), validation cells first, then training, then test.

    Parameters (shared by the subclasses)
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager` (all registered fields are served).
    train_size, validation_size, shuffle_set_split
        As :class:`~scvi.dataloaders.DataSplitter` (default 0.9 / rest, shuffled with
        ``scvi.settings.seed``).
    batch_size
        Cells per minibatch (default 128).
    device
        Where batches go when used outside a Lightning trainer; inside one, the
        trainer's root device (per rank under DDP) is used.
    """

    def __init__(self, adata_manager, train_size: float | None = None,
                 validation_size: float | None = None, batch_size: int = C.BATCH_SIZE,
                 shuffle_set_split: bool = True, device: str | torch.device = "cpu"):
        super().__init__()
        self.adata_manager = adata_manager
        self.n_obs = adata_manager.adata.n_obs
        self.train_size_is_none = not bool(train_size)
        self.train_size = 0.9 if self.train_size_is_none else float(train_size)
        self.validation_size = validation_size
        self.batch_size = int(batch_size)
        self.shuffle_set_split = shuffle_set_split
        self.n_train, self.n_val = validate_data_split(
            self.n_obs, self.train_size, validation_size, self.batch_size, False, self.train_size_is_none
        )
        # Seed of the per-epoch shuffles: drawn from torch's global generator (seeded by
        # scvi.settings.seed), so runs repeat and DDP ranks agree.
        self.shuffle_seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self._default_device = torch.device(device)
        self._split()

    # ------------------------------------------------------------------ loaders
    # Subclasses set ``_iterable``: the class whose ``(module, cells, shuffle)`` instance is
    # one pass of minibatches over ``cells``.
    _iterable = None

    def train_dataloader(self):
        return self._iterable(self, self.train_idx, shuffle=True)

    def val_dataloader(self):
        return self._iterable(self, self.val_idx, shuffle=False) if len(self.val_idx) > 0 else None

    def test_dataloader(self):
        return self._iterable(self, self.test_idx, shuffle=False) if len(self.test_idx) > 0 else None

    # ------------------------------------------------------------------ split
    def _split(self) -> None:
        indices = np.arange(self.n_obs)
        if self.shuffle_set_split:
            indices = np.random.RandomState(seed=settings.seed).permutation(indices)
        self.val_idx = indices[: self.n_val]
        self.train_idx = indices[self.n_val: self.n_val + self.n_train]
        self.test_idx = indices[self.n_val + self.n_train:]

    # ------------------------------------------------------------------ devices / ranks
    @property
    def device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device
        return self._default_device

    @property
    def world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    @property
    def global_rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_rank) if trainer is not None else 0


class _PinnedBuffers:
    """Two page-locked host buffers per field, used in turn for the dense minibatches of the
    ``"host"`` storage: a buffer is refilled only after the copy that last read it has
    finished (its CUDA event), so an asynchronous copy never reads a half-written batch."""

    def __init__(self):
        self._buffers: dict[str, list] = {}

    def get(self, key: str, shape: tuple[int, int]) -> torch.Tensor:
        pair = self._buffers.setdefault(key, [])
        if len(pair) < 2 or pair[0][0].shape[0] < shape[0] or pair[0][0].shape[1] != shape[1]:
            pair[:] = [(torch.empty(shape, dtype=torch.float32).pin_memory(), None) for _ in range(2)]
        buffer, event = pair.pop(0)
        if event is not None:
            event.synchronize()
        pair.append((buffer, None))
        return buffer[: shape[0]]

    def copied(self, key: str, event) -> None:
        buffer, _ = self._buffers[key][-1]
        self._buffers[key][-1] = (buffer, event)


class FastDataModule(SplitDataModule):
    """Lightning data module: the registered fields held once in memory as tensors.

    Parameters: those of :class:`SplitDataModule`, and

    storage
        ``"device"`` (default, ``data_loader="fast"``): the tensors live on the training
        device and minibatches are gathered there. ``"host"`` (``data_loader="host"``):
        the tensors stay in host memory; each minibatch is densified on the host into a
        page-locked buffer and copied to the device asynchronously (on the lean loop's
        prefetch stream, while the previous step runs), so data larger than the GPU's
        memory train at GPU speed. On a CPU device both are the same path.
    """

    _iterable = _MinibatchIterable

    def __init__(self, adata_manager, train_size: float | None = None,
                 validation_size: float | None = None, batch_size: int = C.BATCH_SIZE,
                 shuffle_set_split: bool = True, device: str | torch.device = "cpu", storage: str = "device"):
        if storage not in ("device", "host"):
            raise ValueError(f"storage must be 'device' or 'host', not {storage!r}")
        reason = unsupported_reason(adata_manager)
        if reason is not None:
            other = "'backed' or 'scvi'" if getattr(adata_manager.adata, "isbacked", False) else "'scvi'"
            name = "fast" if storage == "device" else "host"
            raise ValueError(f"data_loader='{name}' cannot serve this data: {reason}. Use data_loader={other}.")
        super().__init__(adata_manager, train_size=train_size, validation_size=validation_size,
                         batch_size=batch_size, shuffle_set_split=shuffle_set_split, device=device)
        self.storage = storage
        self._fields = None

    def _load(self) -> None:
        device = self.device
        if self._fields is not None and self._target_device == device:
            return
        where = device if self.storage == "device" else torch.device("cpu")
        fields = {key: in_memory_field(data).to(where)
                  for key, data in _registry_fields(self.adata_manager).items() if not isinstance(data, str)}
        self._fields, self._fields_device, self._target_device = fields, where, device
        self._pinned = _PinnedBuffers() if where != device and device.type == "cuda" else None

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def gather(self, idx: torch.Tensor | np.ndarray, host_idx: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The minibatch of cells ``idx`` (rows of the registered data), on the device.

        ``host_idx``: the same rows as a host array, when ``idx`` is a device tensor.
        """
        self._load()
        if not isinstance(idx, torch.Tensor):
            host_idx = np.asarray(idx, dtype=np.int64)
            idx = torch.as_tensor(host_idx)
        idx = idx.to(self._fields_device)
        if self._fields_device == self._target_device:
            if self._target_device.type != "cpu":
                return {key: field.dense(idx, host_idx) for key, field in self._fields.items()}
            batch = {}
            for key, field in self._fields.items():
                if not isinstance(field, _CSRRows):
                    batch[key] = field.dense(idx)
                    continue
                batch[key], positions = field.dense_with_positions(idx)
                if positions is not None:
                    batch[stored_positions(key)] = positions
            return batch
        batch = {}
        for key, field in self._fields.items():  # host storage, a GPU: pinned buffer -> async copy
            dense = field.dense(idx, host_idx)
            if self._pinned is None:
                batch[key] = dense.to(self._target_device)
                continue
            staged = self._pinned.get(key, tuple(dense.shape))
            staged.copy_(dense)
            batch[key] = staged.to(self._target_device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pinned.copied(key, event)
        return batch

    def teardown(self, stage: str | None = None) -> None:
        self._fields = self._pinned = None  # release device memory after training
