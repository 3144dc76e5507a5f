#!/usr/bin/env bash
# Short GPU check: 1M x 4000 (50 x 20k block), batch 1024, 128/10, both models, 100 steps.
set -o pipefail
OUTDIR=${OUT:-bench/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/python PYTHONUNBUFFERED=1
timeout 200 python3 bench/speed.py --accelerator gpu --cells 20000 --genes 4000 --tile 50 --configs 128/10/b1024 \
  --repeats 1 --max-steps 100 --warmup-steps 20 --models regularizedvi-fast scVI --threads 4 --tag _gpu_1M_v2 \
  2>&1 | tee "$OUTDIR/gpu_1M_v2.log"
cp bench/results/speed_gpu_1M_v2.* "$OUTDIR/" 2>/dev/null
timeout 40 python3 bench/profile_gpu.py 20000 1024 2>&1 | cut -c1-200 | head -40 > "$OUTDIR/profile_gpu_v2.txt"
