"""Shared helpers of the benchmarks in bench/ (never run by CI)."""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = REPO_ROOT.parent / "shared" / "data"

# A frozen copy of the Python core (e.g. ``git archive HEAD inst/python/regularizedvi | tar -x
# -C /tmp/rvsnap`` and REGULARIZEDVI_SRC=/tmp/rvsnap/inst/python) keeps long benchmark runs on
# one version of the code while the working tree changes.
if os.environ.get("REGULARIZEDVI_SRC"):
    sys.path.insert(0, os.environ["REGULARIZEDVI_SRC"])


def data_path(name: str) -> Path:
    path = DATA_DIR / name
    if not path.exists():
        sys.exit(f"benchmark data {path} not found (expected ../shared/data/{name} next to the repo)")
    return path


def quiet() -> None:
    """Silence Lightning / scvi-tools chatter so that the printed numbers stand out."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi", "jax", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM; falls back to ru_maxrss).

    VmHWM is used first because Linux keeps ru_maxrss across execve: a subprocess started
    from a big parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident set size of this process now (VmRSS), MiB (NaN where /proc has none)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_call(fn):
    """``(fn(), seconds, peak RSS growth in MiB)`` of one call: VmHWM is reset just before it
    (``/proc/self/clear_refs``), so the peak is the call's alone, minus the RSS before."""
    Path("/proc/self/clear_refs").write_text("5")
    before = current_rss_mib()
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, peak_rss_mib() - before


def pca_embedding(adata, n_comps: int = 50):
    """The usual pre-integration embedding: PCA (arpack, random_state 0; at most
    ``n_vars - 1`` components) of log1p counts normalised to 1e4 per cell, on a copy."""
    import scanpy as sc

    a = adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.tl.pca(a, n_comps=min(n_comps, a.n_vars - 1), svd_solver="arpack", random_state=0)
    return a.obsm["X_pca"]


def environment() -> dict:
    import numpy
    import scvi
    import torch

    import regularizedvi

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "scvi-tools": scvi.__version__,
        "numpy": numpy.__version__,
        "regularizedvi": regularizedvi.__version__,
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
