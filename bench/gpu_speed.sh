#!/usr/bin/env bash
# GPU throughput: scvi-tools SCVI (default loader) vs regularizedvi (fast loader), same run.
# Runs on a machine with a CUDA torch and the wheels of scvi-tools & co. in .whl/ (see
# bench/README.md, "GPU"): 20k x 2000 at the two issue configs, and 1M x 4000 (50 stacked
# copies of a 20k x 4000 simulated block) at batch 1024, a fixed number of steps.
source "$(dirname "$0")/gpu_env.sh"
python3 -c "import scvi, torch, regularizedvi; print('scvi', scvi.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
python3 bench/speed.py --accelerator gpu --cells 20000 --genes 2000 --repeats 1 --max-steps 150 \
  --warmup-steps 20 --models scVI regularizedvi-fast --threads 4 --tag _gpu_20k 2>&1 | tee "$OUTDIR/gpu_20k.log"
python3 bench/speed.py --accelerator gpu --cells 20000 --genes 4000 --tile 50 --configs 128/10/b1024 512/128/b1024 \
  --repeats 1 --max-steps 200 --warmup-steps 20 --models scVI regularizedvi-fast --threads 4 --tag _gpu_1M \
  2>&1 | tee "$OUTDIR/gpu_1M.log"
cp bench/results/speed_gpu_* "$OUTDIR/" 2>/dev/null || true
