"""Probe: does timing JAX and PyTorch in one process (as ``run.py`` does) move their ratio?

    python benchmarks/probe_process_sharing.py [--batch 2] [--rounds 9] [--json PATH]

``run.py`` alternates JAX and PyTorch calls in one process. There they share glibc's heap (the
package's malloc settings make it one arena), the CPU caches and two thread pools; a user runs one or
the other. This probe starts three worker processes with the same random-weight MediaEval KonCept512
(``attack_pgd.build_models``): one that runs only JAX's forward + input gradient, one only PyTorch's,
and one that runs both, like ``run.py``. Each worker warms its calls up twice; then every round asks
the JAX-only worker, the PyTorch-only worker, and the mixed worker for its JAX then its PyTorch call
(the order reversed every other round), one call at a time, so the machine's drift hits all alike.
The first round is dropped. Every worker imports both frameworks and builds both models, so "alone"
means alone in its calls, not in what is loaded.

JSON: ``median_s`` and ``runs_s`` of ``jax_alone``, ``torch_alone``, ``jax_shared``, ``torch_shared``;
``ratio_alone`` and ``ratio_shared`` (JAX / PyTorch); the device and this command.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import qcamo_jax  # noqa: E402,F401  (the package's XLA:CPU flags and malloc settings; the workers inherit them)

#: (worker, call) pairs of one round, and the name each is reported under.
ROUND = ((("jax", "jax"), "jax_alone"), (("torch", "torch"), "torch_alone"),
         (("mixed", "jax"), "jax_shared"), (("mixed", "torch"), "torch_shared"))


def _worker(kind: str, batch: int, conn) -> None:
    """Build the models, warm up this worker's calls, then time one call per request until ``None``."""
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    import qcamo_jax  # noqa: F401  (the malloc settings are per process: set them here too, as in run.py)
    import numpy as np
    import torch

    from attack_pgd import build_models, photos
    from sections.torch_side import torch_grad_step

    torch.set_num_threads(os.cpu_count())
    tmodel, jmodel = build_models(photos((384, 512), 4), 0)
    x = photos((384, 512), batch).astype(np.float32)
    calls = {}
    if kind in ("jax", "mixed"):
        import jax

        grad = jax.jit(jax.value_and_grad(lambda v, im: jmodel.apply(v, im).sum(), argnums=1))
        xj = jax.numpy.asarray(x)
        calls["jax"] = lambda: jax.block_until_ready(grad(jmodel.variables, xj))
    if kind in ("torch", "mixed"):
        step = torch_grad_step(tmodel.eval(), "cpu")
        calls["torch"] = lambda: step(x)
    for _ in range(2):
        for call in calls.values():
            call()
    conn.send("ready")
    while (name := conn.recv()) is not None:
        t0 = time.perf_counter()
        calls[name]()
        conn.send(time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9, help="timed rounds (odd: the median is then one round's time)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from report_json import emit
    from sections.measure import device_info

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no JAX or PyTorch state inherited
    workers = {}
    try:
        for kind in ("jax", "torch", "mixed"):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(kind, args.batch, there))
            proc.start()
            there.close()  # only the worker holds its end now: if it dies, recv() raises EOFError instead of waiting
            workers[kind] = (proc, here)
        for proc, conn in workers.values():
            if conn.recv() != "ready":
                raise RuntimeError("a worker did not start")
        runs = {name: [] for _, name in ROUND}
        for r in range(args.rounds + 1):
            order = ROUND if r % 2 == 0 else (ROUND[1], ROUND[0], ROUND[3], ROUND[2])
            for (kind, call), name in order:
                workers[kind][1].send(call)
                seconds = workers[kind][1].recv()
                if r > 0:
                    runs[name].append(seconds)
    finally:
        for proc, conn in workers.values():
            try:
                conn.send(None)
            except OSError:  # the worker is gone already
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    med = {name: statistics.median(v) for name, v in runs.items()}
    report = {
        "command": "python benchmarks/probe_process_sharing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_info(), "batch": args.batch, "size": [384, 512], "median_s": med, "runs_s": runs,
        "ratio_alone": med["jax_alone"] / med["torch_alone"], "ratio_shared": med["jax_shared"] / med["torch_shared"],
    }
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
