#!/usr/bin/env bash
# The GPU run of benchmarks/run.py, for the project's device machine (or any CUDA host).
#
# Prepare once, here (CPU side): bash benchmarks/gpu_run.sh --prepare
#   copies Cadene's `pretrainedmodels` (pure Python, needed by the PyTorch reference and missing from
#   the device image) into .gpu_site/ and keeps that folder out of git.
# Then on the device (two calls, each well under the 10-minute limit per command):
#   run(command="bash benchmarks/gpu_run.sh --only grad,attack", carry=[".gpu_site"], timeout_s=600)
#   run(command="bash benchmarks/gpu_run.sh --only options --options fp32,tf32,bf16,remat", carry=[".gpu_site"], timeout_s=600)
# Each writes $OUT/results-gpu-<sections>.json and $OUT/run-gpu-<sections>.log; merge them into
# benchmarks/RESULTS.md.
set -euo pipefail
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
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.gpu_site:$PWD:${PYTHONPATH:-}"
out=${OUT:-/tmp}
tag=$(printf '%s' "$*" | sed -n 's/.*--only \([a-z,]*\).*/\1/p' | tr ',' '-')
tag=${tag:-all}
python3 - <<'PY'
import jax, torch
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, "cuda", torch.cuda.is_available())
PY
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
python3 benchmarks/run.py --json "$out/results-gpu-$tag.json" "$@" 2>&1 | tee "$out/run-gpu-$tag.log"
