"""Writes tests/python/data/format3_multimodal with regularizedvi at commit 9a90a55 (model
file format 3: every multimodal decoder reads the whole latent):

    git worktree add /tmp/rv9a90 9a90a55
    PYTHONPATH=/tmp/rv9a90/inst/python .venv/bin/python tests/python/data/make_format3_multimodal.py \
        tests/python/data/format3_multimodal
"""
import sys
import warnings

import numpy as np
import scvi
import torch

import regularizedvi as rv

warnings.filterwarnings("ignore")
print(rv.__file__, file=sys.stderr)
out = sys.argv[1]
mdata = rv.simulate_multiome(n_cells=120, n_genes=40, n_peaks=50, n_types_a=3, n_types_b=2, n_batches=2,
                             missing_b_fraction=0.0, seed=2)
rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")
scvi.settings.seed = 0
m = rv.RegularizedMultimodalVI(mdata, n_hidden=8, n_latent=2)
m.train(max_epochs=3, enable_progress_bar=False, accelerator="cpu")
m.save(out, overwrite=True)
np.savetxt(out + "/latent_mean.txt", m.get_latent_representation(), fmt="%.9e")
z = torch.as_tensor(m.get_latent_representation()[:10], dtype=torch.float32)
with torch.no_grad():  # the RNA decoder's signal at the posterior means of 10 cells
    np.savetxt(out + "/rho_rna.txt", m.module.decode_rho("rna", z).numpy(), fmt="%.9e")
