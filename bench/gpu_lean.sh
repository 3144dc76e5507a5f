#!/usr/bin/env bash
# GPU check of the lean loop + CUDA-graph step, then 1M x 4000 throughput against scvi-tools
# SCVI in the same run (see bench/README.md, "GPU"). Needs a CUDA torch and the wheels of
# scvi-tools & co. in .whl/ (bench/gpu_speed.sh).
source "$(dirname "$0")/gpu_env.sh"
timeout 150 python3 bench/gpu_lean_check.py --epochs 4 --hows ${HOWS:-lean-graph lean-eager lightning} \
  --out "$OUTDIR/gpu_lean_check.json" 2>&1 | grep -v "Warning\|warn\|Tip\|LOCAL_RANK\|Trainer\|Tensor Cores" \
  | tee "$OUTDIR/gpu_lean_check.log"
timeout 220 python3 bench/speed.py --accelerator gpu --cells 20000 --genes 4000 --tile 50 --configs 128/10/b1024 \
  --repeats 1 --max-steps 400 --warmup-steps 30 --models regularizedvi-lean scVI ${FAST-regularizedvi-fast} --threads 4 \
  --tag _gpu_1M_lean 2>&1 | tee "$OUTDIR/gpu_1M_lean.log"
[ -n "$SKIP512" ] || timeout 150 python3 bench/speed.py --accelerator gpu --cells 20000 --genes 4000 --tile 50 --configs 512/128/b1024 \
  --repeats 1 --max-steps 300 --warmup-steps 30 --models regularizedvi-lean scVI --threads 4 \
  --tag _gpu_1M_lean512 2>&1 | tee "$OUTDIR/gpu_1M_lean512.log"
cp bench/results/speed_gpu_1M_lean* "$OUTDIR/" 2>/dev/null || true
