"""Profile one regularizedvi training step on CPU (1 thread): torch.profiler top ops.

Run: .venv/bin/python bench/profile_step.py   (needs bench/results/sim_20000x2000.h5ad from speed.py)
"""
import warnings; warnings.filterwarnings("ignore")
import logging; logging.disable(logging.WARNING)
import torch, numpy as np, anndata as ad, scvi, time, sys
torch.set_num_threads(1)
import regularizedvi as rv
from regularizedvi.data._fast_loader import FastDataModule
a = ad.read_h5ad("bench/results/sim_20000x2000.h5ad")
print("density", a.X.nnz / np.prod(a.shape))
rv.AmbientRegularizedSCVI.setup_anndata(a, batch_key="batch")
scvi.settings.seed = 0
m = rv.AmbientRegularizedSCVI(a)
dm = FastDataModule(m.adata_manager, batch_size=128); dm.setup()
mod = m.module; mod.train()
opt = torch.optim.Adam(mod.parameters(), 1e-3)
batches = [dm.gather(torch.randint(0, 20000, (128,))) for _ in range(30)]
def step(b):
    inf, gen, lo = mod(b, loss_kwargs={"kl_weight": 0.5})
    opt.zero_grad(); lo.loss.backward(); opt.step()
for b in batches[:5]: step(b)
t = time.perf_counter()
for b in batches: step(b)
print("step ms", (time.perf_counter() - t) / 30 * 1000)
t = time.perf_counter()
for _ in range(30): dm.gather(torch.randint(0, 20000, (128,)))
print("gather ms", (time.perf_counter() - t) / 30 * 1000)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as p:
    for b in batches[:15]: step(b)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=22))
