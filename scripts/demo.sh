#!/usr/bin/env bash
# The main job: set up if needed, then train on simulated data with known ground truth
# and write latent space, UMAP, ambient profile and a report to demo_output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/regularizedvi demo --output demo_output "$@"
