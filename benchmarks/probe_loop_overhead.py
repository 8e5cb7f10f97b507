"""Probe: what a KonCept512 evaluation costs inside a ``lax`` loop on XLA:CPU, against the same alone.

    python benchmarks/probe_loop_overhead.py [--size 384x512] [--batch 2]

Prints JSON (seconds per evaluation, median of 3 after a warm-up): forward alone / inside a
``fori_loop``; forward + input gradient alone / inside a ``fori_loop``; and the gradient inside the
loop reached through :func:`jax.pure_callback` into a separately jitted program. Full MediaEval
KonCept512 with random weights.

History (2 images 384x512, idle 2-core CPU): with ``lax.conv_general_dilated`` in the model the
gradient cost 2.02 s alone and 4.83 s inside the loop (x2.39; the callback route 3.16 s, because the
waiting loop holds one of the two threads); the forward pass did not slow down. The cause: XLA:CPU
rewrites non-HWIO convolutions into its fast form in the entry computation only, and an input
gradient's convolutions read the kernel as HWOI. With :func:`qcamo_jax.models.conv.conv_general_dilated`
in the model: 1.86 s alone, 1.75 s inside the loop (x0.94). Raw: benchmarks/results-cpu-loop-probe*.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def seconds(fn, *args, repeats: int = 3) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="384x512")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--loop", type=int, default=2, help="iterations of each loop")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))

    from qcamo_jax.models.hub import init_random

    model = init_random("koncept512", {"variant": "mediaeval", "size": "full"})
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (args.batch, h, w, 3)).astype(np.float32))
    n = args.loop

    forward = lambda v, x: model.apply(v, x)  # noqa: E731
    gradient = lambda v, x: jax.grad(lambda y: model.apply(v, y).sum())(x)  # noqa: E731
    forward_loop = lambda v, x: jax.lax.fori_loop(0, n, lambda i, s: s + forward(v, x + i), jnp.zeros(x.shape[0]))  # noqa: E731
    gradient_loop = lambda v, x: jax.lax.fori_loop(0, n, lambda i, y: y - 1e-3 * gradient(v, y), x)  # noqa: E731

    called = jax.jit(gradient)
    host = lambda y: np.asarray(called(model.variables, y))  # noqa: E731
    callback_loop = lambda x: jax.lax.fori_loop(  # noqa: E731
        0, n, lambda i, y: y - 1e-3 * jax.pure_callback(host, jax.ShapeDtypeStruct(y.shape, y.dtype), y), x)

    v = model.variables
    out = {"size": [h, w], "batch": args.batch, "backend": jax.default_backend(), "jax": jax.__version__,
           "forward_alone_s": seconds(forward, v, x), "forward_in_loop_s": seconds(forward_loop, v, x) / n,
           "gradient_alone_s": seconds(gradient, v, x), "gradient_in_loop_s": seconds(gradient_loop, v, x) / n,
           "gradient_in_loop_via_callback_s": seconds(callback_loop, x) / n}
    out["gradient_loop_factor"] = out["gradient_in_loop_s"] / out["gradient_alone_s"]
    out["forward_loop_factor"] = out["forward_in_loop_s"] / out["forward_alone_s"]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
