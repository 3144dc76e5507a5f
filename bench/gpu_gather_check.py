"""GPU check of the fast path's minibatch gather (regularizedvi/data/_fast_loader.py).

Runs where scvi-tools is not installed (the device image has torch, scipy, lightning):
the loader module is loaded from its file with the two scvi-tools names it imports
stubbed. Checks that rows gathered and densified on the GPU equal scipy's rows exactly,
and times per minibatch: (a) GPU gather from CSR tensors held on the GPU; (b) what
scvi-tools' loader does per batch at best: scipy row slice + toarray on the CPU, then a
host->device copy (pandas / AnnData overhead not included, so (b) flatters scvi-tools).

    python3 bench/gpu_gather_check.py [--out results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1] / "inst" / "python" / "regularizedvi"


def load_fast_loader():
    try:
        import scvi  # noqa: F401
    except ImportError:
        scvi = types.ModuleType("scvi")
        scvi.settings = types.SimpleNamespace(seed=0)
        dl = types.ModuleType("scvi.dataloaders")
        ds = types.ModuleType("scvi.dataloaders._data_splitting")
        ds.validate_data_split = lambda *a, **k: (0, 0)
        sys.modules.update({"scvi": scvi, "scvi.dataloaders": dl, "scvi.dataloaders._data_splitting": ds})
    pkg = types.ModuleType("regularizedvi")
    pkg.__path__ = [str(ROOT)]
    sys.modules.setdefault("regularizedvi", pkg)
    for name, path in (("regularizedvi._constants", ROOT / "_constants.py"),
                       ("regularizedvi.data._fast_loader", ROOT / "data" / "_fast_loader.py")):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        if name.endswith("_constants"):
            pkg._constants = mod
    return sys.modules["regularizedvi.data._fast_loader"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    fl = load_fast_loader()
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    dev = torch.device(args.device)
    rng = np.random.default_rng(0)
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__, "runs": []}
    for n_cells, n_genes, density in ((20000, 2000, 0.42), (200000, 2000, 0.1), (100000, 20000, 0.05)):
        x = sp.random(n_cells, n_genes, density=density, format="csr", dtype=np.float32, random_state=rng)
        x.data = np.floor(x.data * 20 + 1).astype(np.float32)
        rows = fl._CSRRows(x).to(dev)
        idx = torch.randint(0, n_cells, (1024,), device=dev)
        ok = bool(np.array_equal(rows.dense(idx).cpu().numpy(), x[idx.cpu().numpy()].toarray()))
        for bs in (128, 1024):
            perm = torch.randperm(n_cells, device=dev)
            n_batches = min(200, n_cells // bs)
            for _ in range(5):
                rows.dense(perm[:bs])
            sync()
            t = time.perf_counter()
            for i in range(n_batches):
                out = rows.dense(perm[i * bs:(i + 1) * bs])
            sync()
            gpu = (time.perf_counter() - t) / n_batches
            perm_np = perm.cpu().numpy()
            t = time.perf_counter()
            for i in range(n_batches):
                out = torch.from_numpy(x[perm_np[i * bs:(i + 1) * bs]].toarray()).to(dev)
            sync()
            cpu = (time.perf_counter() - t) / n_batches
            run = {"shape": [n_cells, n_genes], "density": density, "batch": bs, "exact": ok,
                   "gpu_gather_ms": gpu * 1e3, "cpu_scipy_plus_copy_ms": cpu * 1e3,
                   "gpu_cells_per_s": bs / gpu, "cpu_cells_per_s": bs / cpu, "speedup": cpu / gpu,
                   "csr_mib": (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20}
            res["runs"].append(run)
            print(json.dumps(run), flush=True)
        del out
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
