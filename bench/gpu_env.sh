# Sourced by the GPU bench scripts: output folder, scvi-tools & co. installed from the wheels
# carried in .whl/ (the device machine reaches no package index), and the card's name.
set -o pipefail
OUTDIR=${OUT:-bench/results}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/inst/python
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
