"""glibc malloc settings (qcamo_jax/host_malloc.py) on and off, JAX and PyTorch, interleaved.

Four worker processes (``benchmarks/xla_flags.py``'s workers and rounds): JAX and PyTorch, each with
``QCAMO_MALLOC_DEFAULTS`` on (the package's default, set when the worker imports ``qcamo_jax``) and
off. Both JAX workers run the package's default XLA flags. Each call's wall time, minor page faults
and kernel CPU time are recorded; the JAX / PyTorch ratio is given for each setting, since in one
process (``benchmarks/run.py``) both frameworks share the allocator.

Usage:
  python benchmarks/host_malloc.py --batch 2 --repeats 7 --what grad --out benchmarks/results-cpu-host-malloc.json
Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import xla_flags  # noqa: E402  (benchmarks/ is on sys.path: run as a script)
from report_json import emit  # noqa: E402

SIDES = (("jax", "jax", "1"), ("jax_malloc_off", "jax", "0"), ("torch", "torch", "1"), ("torch_malloc_off", "torch", "0"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    xla_flags.add_run_arguments(p, batch=2, repeats=5)
    args = p.parse_args(argv)
    args.model = "koncept512"
    sides = [s for s in SIDES if not (args.no_torch and s[1] == "torch")]
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "koncept512")
        xla_flags.prepare_weights(weights, args.size)
        env = {name: {"JAX_PLATFORMS": "cpu", "QCAMO_MALLOC_DEFAULTS": switch} for name, _, switch in sides}
        info = xla_flags.interleave([(name, side, env[name]) for name, side, _ in sides], args, weights, tmp,
                                    reference="jax", torch_name=None)
    loads = info.pop("loadavg_per_round")
    ratios = {}
    for what in args.what:
        for jax_name, torch_name in (("jax", "torch"), ("jax_malloc_off", "torch_malloc_off")):
            if what in info.get(jax_name, {}) and what in info.get(torch_name, {}):
                ratios[f"{what}_{jax_name}_over_{torch_name}"] = round(
                    info[jax_name][what]["median_s"] / info[torch_name][what]["median_s"], 3)
    report = {"benchmark": "glibc malloc settings on/off, interleaved", **xla_flags.run_description("host_malloc.py", args, argv),
              "model": "koncept512 (MediaEval, random weights)",
              "loadavg_per_round": loads, "sides": {name: {"side": side, "QCAMO_MALLOC_DEFAULTS": switch, **info.get(name, {})}
                                                      for name, side, switch in sides},
              "ratios": ratios}
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
