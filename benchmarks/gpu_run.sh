#!/usr/bin/env bash
# The GPU run of benchmarks/run.py in ONE call, sized for a short device lease (or any CUDA host).
#
# Prepare once, here (CPU side): bash benchmarks/gpu_run.sh --prepare
#   copies Cadene's `pretrainedmodels` (pure Python, needed by the PyTorch reference and missing from
#   the device image) into .gpu_site/ and keeps that folder out of git.
# Then on the device:
#   run(command="bash benchmarks/gpu_run.sh 450", carry=[".gpu_site"], timeout_s=560)
#   run(command="bash benchmarks/gpu_run.sh 400 --only options,grad,compile --batches 64 32", ...)
# The argument is run.py's --deadline in seconds: every unit of work (a batch size, a speed option, a
# section) that would end later is skipped and reported as skipped, and the JSON is rewritten after
# every section, so a lease that ends early still returns what was measured. Writes
# $OUT/results-gpu.json, $OUT/run-gpu.log and $OUT/env-gpu.log; merge them into benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  py=${PYTHON:-.venv/bin/python}
  src=$("$py" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('pretrainedmodels').origin))")
  mkdir -p .gpu_site && rm -rf .gpu_site/pretrainedmodels && cp -r "$src" .gpu_site/pretrainedmodels
  find .gpu_site -name __pycache__ -prune -exec rm -rf {} +
  grep -qx '/.gpu_site/' .git/info/exclude 2>/dev/null || echo '/.gpu_site/' >> .git/info/exclude
  du -sh .gpu_site
  exit 0
fi
deadline=${1:-450}
shift || true  # further arguments go to run.py after the defaults below, and override them
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.gpu_site:$PWD:${PYTHONPATH:-}"
# JAX and PyTorch share the GPU in one process: JAX preallocates this fraction, PyTorch gets the rest.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}
out=${OUT:-/tmp}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv || true
  python3 - <<'PY'
import importlib.metadata as md
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "chex", "numpy", "torch", "scikit-image", "pillow", "safetensors"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        pass
import jax, torch
print("jax devices", jax.devices(), "| torch cuda", torch.cuda.is_available(), torch.version.cuda)
PY
} 2>&1 | tee "$out/env-gpu.log"
python3 benchmarks/run.py --json "$out/results-gpu.json" --deadline "$deadline" \
  --only grad,attack,options,attack-tf32,compile --batches 8 32 64 1 \
  --attack-batch 8 --steps 10 --tries 7 --repeats 5 \
  --options fp32,tf32,bf16,remat --options-images 32 --option-batch 32 --compile-batch 32 "$@" \
  2>&1 | tee "$out/run-gpu.log"
