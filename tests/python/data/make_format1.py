"""Writes tests/python/data/format1_model with regularizedvi at commit cd60389:

    git worktree add /tmp/oldrv cd60389
    PYTHONPATH=/tmp/oldrv/python .venv/bin/python tests/python/data/make_format1.py tests/python/data/format1_model
"""
import sys, warnings; warnings.filterwarnings("ignore")
import numpy as np, torch, scvi
import regularizedvi as rv
print(rv.__file__, file=sys.stderr)
out = sys.argv[1]
adata = rv.simulate_counts(n_cells=300, n_genes=60, n_cell_types=3, n_batches=2, markers_per_type=5, seed=1)
rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
scvi.settings.seed = 0
m = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=3)
m.train(max_epochs=5, enable_progress_bar=False)
m.save(out, overwrite=True)
np.savetxt(out + "/latent_mean.txt", m.get_latent_representation(), fmt="%.9e")
