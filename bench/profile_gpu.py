"""cProfile of regularizedvi training steps (fast loader) on whatever accelerator is present.

Run: python bench/profile_gpu.py [n_cells] [batch]   prints the top functions by own time.
"""
import cProfile, pstats, sys, time, logging, warnings
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import torch
import regularizedvi as rv
n, b = (int(sys.argv[1]) if len(sys.argv) > 1 else 20000), (int(sys.argv[2]) if len(sys.argv) > 2 else 1024)
a = rv.simulate_counts(n, 2000, seed=0)
rv.AmbientRegularizedSCVI.setup_anndata(a, batch_key="batch")
m = rv.AmbientRegularizedSCVI(a)
kw = dict(batch_size=b, train_size=1.0, enable_progress_bar=False, data_loader="fast", accelerator="auto")
m.train(max_epochs=1, max_steps=20, **kw)
steps = 150
pr = cProfile.Profile()
t = time.perf_counter(); pr.enable()
m.train(max_epochs=100, max_steps=steps, **kw)
pr.disable(); dt = time.perf_counter() - t
print(f"{steps} steps in {dt:.2f} s ({dt / steps * 1000:.1f} ms/step incl. setup)")
pstats.Stats(pr).sort_stats("tottime").print_stats(25)
pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
