#!/usr/bin/env bash
# Every GPU figure of issue 15 in one run (a lent device has 15 minutes in all): the lean
# step check, 1M x 4000 throughput at 128/10 and 512/128 against scvi-tools SCVI, and the
# host-memory path (data_loader="host") at 1M x 4000 beside the in-GPU path, all in the same
# run; logs and JSON go to $OUT (or bench/results). Needs a CUDA torch and the wheels of
# scvi-tools & co. in .whl/ (see bench/gpu_speed.sh). Usage: bash bench/gpu_round.sh
source "$(dirname "$0")/gpu_env.sh"
timeout 120 python3 bench/gpu_lean_check.py --epochs 3 --hows lean-graph lightning \
  --out "$OUTDIR/gpu_lean_check.json" 2>&1 | grep -v "Warning\|warn\|Tip\|LOCAL_RANK\|Trainer" \
  | tee "$OUTDIR/gpu_lean_check.log"
timeout 240 python3 bench/speed.py --accelerator gpu --cells 20000 --genes 4000 --tile 50 --configs 128/10/b1024 \
  --repeats 1 --max-steps 400 --warmup-steps 30 --models regularizedvi-lean regularizedvi-lean-host scVI --threads 4 \
  --tag _gpu_round_128 2>&1 | tee "$OUTDIR/gpu_round_128.log"
[ -n "$SKIP512" ] || timeout 150 python3 bench/speed.py --accelerator gpu --cells 20000 --genes 4000 --tile 50 \
  --configs 512/128/b1024 --repeats 1 --max-steps 300 --warmup-steps 30 --models regularizedvi-lean scVI --threads 4 \
  --tag _gpu_round_512 2>&1 | tee "$OUTDIR/gpu_round_512.log"
cp bench/results/speed_gpu_round_* "$OUTDIR/" 2>/dev/null || true
