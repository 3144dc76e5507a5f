"""Which path serves the training minibatches (``train(data_loader=...)``).

- ``"fast"``: the registered fields held once as CSR / dense tensors in the training
  device's memory, minibatches gathered there (:class:`FastDataModule`, ``storage="device"``);
- ``"host"``: the same tensors kept in host memory (pinned when the device is a GPU),
  minibatches densified on the host and copied to the device while the previous step runs
  (``storage="host"``): for data larger than the GPU's memory. On a CPU it is ``"fast"``.
- ``"backed"``: an AnnData opened with ``backed="r"``, streamed from its file in row blocks;
- ``"scvi"``: scvi-tools' AnnData loader.

``"auto"`` takes backed for a backed AnnData; otherwise fast when the tensors fit in
``FAST_LOADER_DEVICE_MEMORY_FRACTION`` of the GPU's free memory (of the host's available
memory on a CPU), else host when they fit in ``FAST_LOADER_HOST_MEMORY_FRACTION`` of the
host's available memory, else scvi-tools' loader; scvi-tools' loader also whenever one of its
own options is given.
"""

from __future__ import annotations

import logging
import os

import torch

from regularizedvi import _constants as C

logger = logging.getLogger(__name__)
DATA_LOADERS = ("auto", "fast", "host", "backed", "scvi")
# options that only scvi-tools' loader understands
SCVI_LOADER_OPTIONS = ("datasplitter_kwargs", "load_sparse_tensor")


def available_host_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def in_memory_storage(n_bytes: int, device_type: str, free_device_bytes: int | None,
                      host_bytes: int | None) -> tuple[str | None, str]:
    """``("fast" | "host" | None, reason)`` for tensors of ``n_bytes`` on a device of
    ``device_type`` with that much free memory (GPU) and that much available host memory
    (``None``: unknown, taken as enough)."""
    mib = 2**20
    host_limit = None if host_bytes is None else C.FAST_LOADER_HOST_MEMORY_FRACTION * host_bytes
    if device_type == "cuda":
        device_limit = C.FAST_LOADER_DEVICE_MEMORY_FRACTION * (free_device_bytes or 0)
        if n_bytes <= device_limit:
            return "fast", f"{n_bytes / mib:.1f} MiB of tensors in GPU memory"
        if host_limit is None or n_bytes <= host_limit:
            return "host", (f"{n_bytes / mib:.0f} MiB of tensors exceed the budget of {device_limit / mib:.0f} MiB "
                            "of free GPU memory: kept in host memory, minibatches copied to the GPU")
        return None, (f"{n_bytes / mib:.0f} MiB of tensors exceed both free GPU memory and the budget of "
                      f"{host_limit / mib:.0f} MiB of free host memory")
    if host_limit is None or n_bytes <= host_limit:
        return "fast", f"{n_bytes / mib:.1f} MiB of tensors in memory"
    return None, f"{n_bytes / mib:.0f} MiB of tensors exceed the budget of {host_limit / mib:.0f} MiB of free host memory"


def _resolve_device(accelerator, devices):
    from scvi.model._utils import parse_device_args

    _, _, device = parse_device_args(accelerator=accelerator, devices=devices, return_device="torch")
    return device


def choose_data_loader(adata_manager, data_loader: str, accelerator, devices, kwargs: dict) -> str:
    """``"fast"``, ``"host"``, ``"backed"``, ``"scvi"`` or ``"custom"`` (a user datamodule); logs
    the choice and raises for an explicit choice that cannot serve the data."""
    from regularizedvi.data._fast_loader import in_memory_bytes, unsupported_reason

    if data_loader not in DATA_LOADERS:
        raise ValueError(f"data_loader must be one of {DATA_LOADERS}, not {data_loader!r}")
    if kwargs.get("datamodule") is not None:
        if data_loader in ("fast", "host", "backed"):
            raise ValueError(f"data_loader={data_loader!r} and datamodule= cannot be combined.")
        logger.info("Training data loader: the datamodule passed in.")
        return "custom"
    if data_loader == "scvi":
        logger.info("Training data loader: scvi-tools' AnnDataLoader (data_loader='scvi').")
        return "scvi"
    loader_options = [k for k in SCVI_LOADER_OPTIONS if kwargs.get(k)]
    if getattr(adata_manager.adata, "isbacked", False) or data_loader == "backed":
        return _choose_backed(adata_manager, data_loader, loader_options)
    reason = unsupported_reason(adata_manager)
    if reason is None and loader_options:
        reason = f"{', '.join(loader_options)} given (options of scvi-tools' loader)"
    if reason is not None:
        if data_loader in ("fast", "host"):
            raise ValueError(f"data_loader={data_loader!r} cannot be used: {reason}. Use data_loader='scvi'.")
        logger.info("Training data loader: scvi-tools' AnnDataLoader (%s).", reason)
        return "scvi"
    if data_loader in ("fast", "host"):
        logger.info("Training data loader: %s (data_loader=%r).", "in-memory fast path" if data_loader == "fast"
                    else "tensors in host memory", data_loader)
        return data_loader
    n_bytes = in_memory_bytes(adata_manager)
    try:
        device = _resolve_device(accelerator, devices)
    except Exception as err:  # unusual device arguments: let scvi-tools' path handle them
        logger.info("Training data loader: scvi-tools' AnnDataLoader (device not resolved: %s).", err)
        return "scvi"
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    choice, why = in_memory_storage(n_bytes, device.type, free, available_host_bytes())
    if choice is None:
        logger.info("Training data loader: scvi-tools' AnnDataLoader (%s).", why)
        return "scvi"
    logger.info("Training data loader: %s (%s).", choice, why)
    return choice


def _choose_backed(adata_manager, data_loader: str, loader_options: list[str]) -> str:
    """The choice for a backed AnnData (or an explicit ``data_loader="backed"``)."""
    from regularizedvi.data._fast_loader import unsupported_reason

    if not getattr(adata_manager.adata, "isbacked", False):
        raise ValueError(
            "data_loader='backed' streams an AnnData opened from disk with "
            "anndata.read_h5ad(path, backed='r'); this AnnData is in memory: use "
            "data_loader='auto', 'fast' or 'host'."
        )
    if data_loader in ("fast", "host"):
        raise ValueError(f"data_loader={data_loader!r} cannot be used: the AnnData is backed (on disk). "
                         "Use data_loader='backed' (or 'auto') or 'scvi'.")
    reason = unsupported_reason(adata_manager, allow_backed=True)
    if reason is None and loader_options:
        reason = f"{', '.join(loader_options)} given (options of scvi-tools' loader)"
    if reason is not None:
        if data_loader == "backed":
            raise ValueError(f"data_loader='backed' cannot be used: {reason}.")
        logger.info("Training data loader: scvi-tools' AnnDataLoader (%s).", reason)
        return "scvi"
    logger.info("Training data loader: backed AnnData streamed from disk in row blocks.")
    return "backed"
