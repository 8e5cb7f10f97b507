"""Probe: per-call time, minor page faults and resident size of repeated KonCept512 gradient calls.

    python benchmarks/probe_heap_growth.py [--batch 1] [--calls 30] [--pause 0.3] [--json PATH]

With ``qcamo_jax.host_malloc``'s settings a call reuses the heap memory the previous call freed, so
most calls fault in no page. This probe shows when that fails: it times ``--calls`` forward + input
gradient calls of one full MediaEval KonCept512 (random weights, 384x512, float32) in one process,
``--pause`` seconds apart (every fifth pause 2 s), and records for each call its wall time, its minor
page faults (``getrusage``) and the process's resident size after it (``/proc/self/statm``). A call
that faults many pages *and* grows the resident size got new memory from the kernel (the heap grew:
the freed block was not where the call's largest temporary needed it); one that faults without
growth had memory taken back. Linux only.

JSON: ``calls``: ``[{"s", "minflt", "rss_mib"}]``, the malloc settings and XLA flags in force, the
device, this command.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import qcamo_jax  # noqa: E402,F401  (first: the package's XLA flags and malloc settings, before JAX starts)
from report_json import emit  # noqa: E402  (benchmarks/ is on sys.path: run as a script)
from sections.measure import device_info  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--pause", type=float, default=0.3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from qcamo_jax.models import hub

    model = hub.init_random("koncept512", {"variant": "mediaeval", "size": "full"})
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (args.batch, 384, 512, 3)), jnp.float32)
    compiled = jax.jit(jax.value_and_grad(lambda v, p: model.apply(v, p).sum(), argnums=1)).lower(model.variables, x).compile()
    calls = []
    for i in range(args.calls):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(model.variables, x))
        seconds = time.perf_counter() - t0
        calls.append({"s": round(seconds, 4), "minflt": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                      "rss_mib": round(rss_mib(), 1)})
        time.sleep(2.0 if i % 5 == 4 else args.pause)
    later = calls[1:]
    report = {
        "command": "python benchmarks/probe_heap_growth.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_info(), "batch": args.batch, "size": [384, 512],
        "temporary_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
        "calls": calls,
        "after_the_first": {"calls": len(later), "faulting_over_1000": sum(c["minflt"] > 1000 for c in later),
                            "median_s": float(np.median([c["s"] for c in later])),
                            "median_s_without_faults": float(np.median([c["s"] for c in later if c["minflt"] <= 1000] or [np.nan])),
                            "rss_growth_mib": calls[-1]["rss_mib"] - calls[0]["rss_mib"]},
    }
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
