"""Data larger than memory: an AnnData opened with ``anndata.read_h5ad(path, backed="r")``.

anndata leaves a backed AnnData's ``X`` in the .h5ad file (a sparse CSR / CSC dataset, or a
dense HDF5 dataset) and loads ``obs``, ``var`` and ``layers`` into memory. Slicing
consecutive rows, ``X[start:stop]``, reads just those rows from the file (a scipy CSR
matrix for sparse storage, a numpy array for dense storage). Everything here reads the
on-disk matrix that way, a block of at most ``C.BACKED_BLOCK_ROWS`` consecutive rows at a
time, and never the whole matrix:

- :func:`row_blocks`: the row blocks of a matrix (an in-memory matrix is one block), used
  by the set-up checks and by the model's initial statistics;
- :func:`read_rows`: given rows of an on-disk matrix, one slice per block;
- :class:`BackedDataModule`: the ``train(data_loader="backed")`` path;
- :class:`BackedInferenceLoader`: minibatches for the model's outputs (latent
  representation, normalized expression, ...) on a backed AnnData.

CSC storage is refused with an error: a CSC file keeps each column's values together, so
any block of rows needs a pass over every column, i.e. the whole matrix.

The user's file and AnnData are only read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import h5py
import numpy as np
import scipy.sparse as sp
import torch
from anndata.abc import CSCDataset, CSRDataset

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.data._fast_loader import (SplitDataModule, _registry_fields, in_memory_field, stored_positions_of,
                                             unsupported_reason)


def is_backed_matrix(matrix) -> bool:
    """Whether ``matrix`` is an on-disk matrix of a backed AnnData (sparse or dense)."""
    return isinstance(matrix, (CSRDataset, CSCDataset, h5py.Dataset))


def backed_layout_problem(matrix, where: str) -> str | None:
    """Why the rows of an on-disk ``matrix`` cannot be read in blocks (None when they can)."""
    if isinstance(matrix, CSCDataset):
        return (
            f"{where} is stored on disk as a CSC (column-compressed) sparse matrix, from which a "
            "block of cells (rows) cannot be read without reading the whole matrix. Rewrite the "
            "file with the matrix as CSR, e.g. once on a machine with enough memory: "
            "`a = anndata.read_h5ad(path); a.X = a.X.tocsr(); a.write_h5ad(csr_path)`, then "
            "open csr_path with backed='r'"
        )
    return None


def check_backed_layout(matrix, where: str) -> None:
    """Raise ``ValueError`` when an on-disk ``matrix`` cannot be read in row blocks (CSC)."""
    problem = backed_layout_problem(matrix, where)
    if problem is not None:
        raise ValueError(problem + ".")


def n_stored_values(matrix) -> int:
    """Values a matrix stores: non-zeros of a sparse matrix (in memory or on disk), all
    entries of a dense one. Reads at most one number from disk."""
    if isinstance(matrix, (CSRDataset, CSCDataset)):
        return int(matrix.group["indptr"][-1])
    if sp.issparse(matrix):
        return int(matrix.nnz)
    return int(np.prod(matrix.shape))


def row_blocks(matrix, block_rows: int | None = None) -> Iterator[tuple[int, int, object]]:
    """Yield ``(start, stop, rows start:stop)`` covering every row of ``matrix`` in order.

    An on-disk matrix is read in blocks of ``block_rows`` consecutive rows (default
    ``C.BACKED_BLOCK_ROWS``, 1024), one block in memory at a time; each block is a scipy
    CSR matrix (sparse storage) or a numpy array (dense storage). An in-memory matrix is
    yielded whole as one block, without a copy. An on-disk CSC matrix raises ``ValueError``.
    """
    if not is_backed_matrix(matrix):
        yield 0, matrix.shape[0], matrix
        return
    check_backed_layout(matrix, "the matrix")
    step = _positive(block_rows or C.BACKED_BLOCK_ROWS, "block_rows")
    n_rows = matrix.shape[0]
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        yield start, stop, matrix[start:stop]


def read_rows(matrix, cells: np.ndarray, block_rows: int) -> tuple[object, np.ndarray]:
    """Read rows ``cells`` (any order, repeats allowed) of an on-disk matrix.

    Returns ``(rows, positions)``: ``rows`` holds each distinct requested row once, in file
    order (scipy CSR, or a numpy array for dense storage), and ``rows[positions]`` is the
    requested order. One read per block of ``block_rows`` rows that holds any requested row:
    the consecutive slice from its first to its last requested row.
    """
    cells = np.asarray(cells, dtype=np.int64)
    wanted = np.unique(cells)
    if wanted.size == 0:
        empty = sp.csr_matrix((0, matrix.shape[1]), dtype=np.float32)
        return empty, np.zeros(0, dtype=np.int64)
    cuts = np.flatnonzero(np.diff(wanted // block_rows)) + 1
    parts = []
    for chunk in np.split(wanted, cuts):
        first, last = int(chunk[0]), int(chunk[-1])
        block = matrix[first:last + 1]
        parts.append(block if chunk.size == last + 1 - first else block[chunk - first])
    if len(parts) == 1:
        rows = parts[0]
    elif sp.issparse(parts[0]):
        rows = sp.vstack(parts, format="csr")
    else:
        rows = np.concatenate(parts)
    return rows, np.searchsorted(wanted, cells)


def _positive(value, name: str) -> int:
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive number of rows/blocks, not {value}.")
    return value


def _take(rows, positions: np.ndarray):
    return rows[positions]


def _stack(pieces: list):
    if len(pieces) == 1:
        return pieces[0]
    return sp.vstack(pieces, format="csr") if sp.issparse(pieces[0]) else np.concatenate(pieces)


def _dense_float32(rows) -> torch.Tensor:
    dense = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
    return torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))


class BackedFields:
    """The registered fields of a backed AnnData served by rows: on-disk fields (the
    counts) read with :func:`read_rows`, the others (covariate codes: small) held in memory.

    Batches are dicts with every registered key, float32 tensors shaped like the in-memory
    path's and scvi-tools' minibatches; on the CPU, as in the in-memory path, also the
    stored positions of each sparse on-disk field (``K.stored_positions(key)``).
    """

    def __init__(self, adata_manager, block_rows: int | None = None):
        self.adata_manager = adata_manager
        self.block_rows = _positive(block_rows or C.BACKED_BLOCK_ROWS, "block_rows")
        fields = _registry_fields(adata_manager)
        self.keys = [key for key, data in fields.items() if not isinstance(data, str)]
        self.disk_keys = [key for key in self.keys if is_backed_matrix(fields[key])]
        self._memory = None

    def disk_field(self, key: str):
        """The on-disk matrix of field ``key`` (a handle to the file, not read)."""
        return self.adata_manager.get_from_registry(key)

    def load(self) -> None:
        if self._memory is None:
            self._memory = {key: in_memory_field(data)
                            for key, data in _registry_fields(self.adata_manager).items()
                            if key in self.keys and key not in self.disk_keys}

    def release(self) -> None:
        self._memory = None

    def read(self, cells: np.ndarray) -> dict:
        """``{on-disk key: (rows, positions)}`` for ``cells``, as :func:`read_rows` returns."""
        return {key: read_rows(self.disk_field(key), cells, self.block_rows) for key in self.disk_keys}

    def batch(self, cells: np.ndarray, disk_rows: dict, device=None, keys=None) -> dict[str, torch.Tensor]:
        """The minibatch of ``cells`` given their on-disk fields' rows (``{key: rows}``)."""
        self.load()
        idx = torch.from_numpy(np.asarray(cells, dtype=np.int64))
        out = {}
        on_cpu = device is None or torch.device(device).type == "cpu"
        for key in keys or self.keys:
            rows = disk_rows.get(key)
            value = _dense_float32(rows) if key in disk_rows else self._memory[key].dense(idx)
            out[key] = value if device is None else value.to(device)
            positions = stored_positions_of(rows) if on_cpu and sp.issparse(rows) else None
            if positions is not None:  # as the in-memory CPU path passes them
                out[K.stored_positions(key)] = positions
        return out

    def gather(self, cells, device=None, keys=None) -> dict[str, torch.Tensor]:
        """The minibatch of ``cells`` (any rows, in that order), read from disk."""
        cells = np.asarray(cells, dtype=np.int64)
        rows = {key: _take(block, pos) for key, (block, pos) in self.read(cells).items()
                if keys is None or key in keys}
        return self.batch(cells, rows, device, keys)


class _BlockStream:
    """One pass over a set of cells in block order; yields minibatch dicts.

    The cells' row blocks (``block_rows`` consecutive rows each; only blocks holding a
    served cell count) are visited in a seeded random order (``shuffle``) or in file order,
    ``shuffle_blocks`` at a time: such a group is read (each block in file order, one
    slice each) and its cells are shuffled among themselves. Minibatches are consecutive
    runs of ``batch_size`` cells of that order (a batch may straddle two groups; the last
    one may be short), as in the in-memory path. Under DDP each rank takes an equal,
    contiguous share of the order (padded with its first cells, like the in-memory path
    pads), so ranks read different parts of the file.
    """

    def __init__(self, module: "BackedDataModule", indices: np.ndarray, shuffle: bool):
        self.module = module
        self.cells = np.sort(np.asarray(indices, dtype=np.int64))
        self.shuffle = shuffle
        self.epoch = 0

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """All served cells in the visiting order of pass ``epoch``, and each one's group."""
        module = self.module
        if self.cells.size == 0:
            return self.cells, np.zeros(0, dtype=np.int64)
        blocks, starts = np.unique(self.cells // module.fields.block_rows, return_index=True)
        ends = np.append(starts[1:], self.cells.size)
        visit = np.arange(blocks.size)
        rng = None
        if self.shuffle:
            rng = np.random.default_rng([module.shuffle_seed, epoch])
            visit = rng.permutation(blocks.size)
        order, groups = [], []
        for group, first in enumerate(range(0, visit.size, module.shuffle_blocks)):
            members = np.sort(visit[first:first + module.shuffle_blocks])
            cells = np.concatenate([self.cells[starts[b]:ends[b]] for b in members])
            if rng is not None:
                cells = rng.permutation(cells)
            order.append(cells)
            groups.append(np.full(cells.size, group, dtype=np.int64))
        return np.concatenate(order), np.concatenate(groups)

    def rank_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's share of :meth:`epoch_order` (all of it without DDP)."""
        order, groups = self.epoch_order(epoch)
        world, rank = self.module.world_size, self.module.global_rank
        if world > 1 and order.size:
            per_rank = math.ceil(order.size / world)
            pad = per_rank * world - order.size
            if pad:
                order = np.concatenate([order, order[:pad]])
                groups = np.concatenate([groups, groups[:pad]])
            share = slice(rank * per_rank, (rank + 1) * per_rank)
            order, groups = order[share], groups[share]
        return order, groups

    def __len__(self) -> int:
        n = math.ceil(self.cells.size / max(self.module.world_size, 1))
        return math.ceil(n / self.module.batch_size)

    def __iter__(self):
        order, groups = self.rank_order(self.epoch)
        self.epoch += 1
        fields, device, bs = self.module.fields, self.module.device, self.module.batch_size
        pending_cells, pending_rows, n_pending = [], {key: [] for key in fields.disk_keys}, 0
        for segment in np.split(np.arange(order.size), np.flatnonzero(np.diff(groups)) + 1):
            if segment.size == 0:
                continue
            cells = order[segment]
            read = fields.read(cells)  # this group's rows: the only ones in memory
            i = 0
            if n_pending:  # complete the batch left over from the previous group
                i = min(bs - n_pending, cells.size)
                pending_cells.append(cells[:i])
                for key, (rows, pos) in read.items():
                    pending_rows[key].append(_take(rows, pos[:i]))
                n_pending += i
                if n_pending < bs:
                    continue
                yield fields.batch(np.concatenate(pending_cells),
                                   {key: _stack(parts) for key, parts in pending_rows.items()}, device)
                pending_cells, pending_rows, n_pending = [], {key: [] for key in fields.disk_keys}, 0
            while i + bs <= cells.size:
                yield fields.batch(cells[i:i + bs], {key: _take(rows, pos[i:i + bs])
                                                     for key, (rows, pos) in read.items()}, device)
                i += bs
            if i < cells.size:
                pending_cells.append(cells[i:])
                for key, (rows, pos) in read.items():
                    pending_rows[key].append(_take(rows, pos[i:]))
                n_pending = cells.size - i
            del read
        if n_pending:
            yield fields.batch(np.concatenate(pending_cells),
                               {key: _stack(parts) for key, parts in pending_rows.items()}, device)


class BackedDataModule(SplitDataModule):
    """Lightning data module for a backed AnnData: counts streamed from disk in row blocks.

    The train / validation / test split is :class:`~regularizedvi.data._fast_loader.FastDataModule`'s
    (that of scvi-tools' :class:`~scvi.dataloaders.DataSplitter`: same sizes, same seeded
    permutation). Each epoch reads the training cells' rows once, block by block (blocks
    of ``block_rows`` consecutive rows, each read as one slice), visiting the blocks in a
    seeded random order and shuffling cells within groups of ``shuffle_blocks`` blocks;
    only one group's rows (plus at most one minibatch) are in memory at a time. Shuffling
    is therefore by blocks, not over the whole dataset: a minibatch holds cells from up to
    ``shuffle_blocks`` places in the file. Validation reads the blocks holding validation
    cells in file order. Covariate codes (small) are held in memory.

    Batches are dicts with the keys, dtypes (float32) and shapes of the in-memory path's
    (and of scvi-tools'), moved to the training device.

    Parameters: those of :class:`~regularizedvi.data._fast_loader.SplitDataModule` (for a
    backed AnnData), and:

    block_rows
        Rows per read (default ``None``: ``C.BACKED_BLOCK_ROWS``, 1024, read when the
        module is built).
    shuffle_blocks
        Blocks shuffled together (default ``None``: ``C.BACKED_SHUFFLE_BLOCKS``, 16).
    """

    _iterable = _BlockStream

    def __init__(self, adata_manager, train_size: float | None = None,
                 validation_size: float | None = None, batch_size: int = C.BATCH_SIZE,
                 shuffle_set_split: bool = True, device: str | torch.device = "cpu",
                 block_rows: int | None = None, shuffle_blocks: int | None = None):
        if not getattr(adata_manager.adata, "isbacked", False):
            raise ValueError(
                "data_loader='backed' streams an AnnData opened from disk with "
                "anndata.read_h5ad(path, backed='r'); this AnnData is in memory: use "
                "data_loader='auto' or 'fast'."
            )
        reason = unsupported_reason(adata_manager, allow_backed=True)
        if reason is not None:
            raise ValueError(f"data_loader='backed' cannot serve this data: {reason}.")
        super().__init__(adata_manager, train_size=train_size, validation_size=validation_size,
                         batch_size=batch_size, shuffle_set_split=shuffle_set_split, device=device)
        self.fields = BackedFields(adata_manager, block_rows)
        self.shuffle_blocks = _positive(shuffle_blocks or C.BACKED_SHUFFLE_BLOCKS, "shuffle_blocks")

    def setup(self, stage: str | None = None) -> None:
        self.fields.load()

    def gather(self, idx) -> dict[str, torch.Tensor]:
        """The minibatch of cells ``idx`` (any rows, in that order) on the device; for checks."""
        return self.fields.gather(idx, self.device)

    def teardown(self, stage: str | None = None) -> None:
        self.fields.release()


class BackedInferenceLoader:
    """Minibatches of given cells of a backed AnnData, in the order asked for (inference).

    Stands in for scvi-tools' ``AnnDataLoader`` on a backed AnnData: that loader sorts each
    minibatch's cell indices before reading the file and returns the rows sorted, so
    outputs for unsorted ``indices`` came back in the wrong order. Here the requested cells
    are read about ``block_rows`` at a time with :func:`read_rows` (one slice per block
    they touch) and minibatches are returned in the requested order, as CPU float32
    tensors like scvi-tools' batches.
    """

    def __init__(self, adata_manager, indices=None, batch_size: int | None = None, shuffle: bool = False,
                 data_and_attributes=None):
        from scvi import settings

        n_obs = adata_manager.adata.n_obs
        if indices is None:
            indices = np.arange(n_obs)
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        self.indices = indices.astype(np.int64)
        self.batch_size = int(batch_size or settings.batch_size)
        self.shuffle = shuffle
        self.fields = BackedFields(adata_manager)
        # which registered keys to serve (dtypes given in a dict are not used: float32 throughout)
        self.keys = list(data_and_attributes) if data_and_attributes is not None else None

    def __len__(self) -> int:
        return math.ceil(self.indices.size / self.batch_size)

    def __iter__(self):
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(order.size).numpy()]
        bs = self.batch_size
        # read the cells of several minibatches at once (about one block's worth of rows)
        chunk = bs * max(1, self.fields.block_rows // bs)
        for first in range(0, order.size, chunk):
            cells = order[first:first + chunk]
            read = self.fields.read(cells)
            for start in range(0, cells.size, bs):
                rows = {key: _take(block, pos[start:start + bs]) for key, (block, pos) in read.items()
                        if self.keys is None or key in self.keys}
                yield self.fields.batch(cells[start:start + bs], rows, keys=self.keys)
