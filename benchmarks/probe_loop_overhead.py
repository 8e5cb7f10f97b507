"""Probe: the cost of one KonCept512 input gradient alone vs inside a lax.fori_loop (XLA:CPU).

Run: python benchmarks/probe_loop_overhead.py  (full MediaEval KonCept512, random weights, 2 x 299x299).
"""
import time, jax, jax.numpy as jnp, numpy as np
from qcamo_jax.models.hub import init_random
m = init_random("koncept512", {"variant": "mediaeval", "size": "full"})
v = m.variables
x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, 299, 299, 3)).astype(np.float32))
def t(f, *a, n=1):
    c = jax.jit(f).lower(*a).compile(); jax.block_until_ready(c(*a)); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); jax.block_until_ready(c(*a)); ts.append(time.perf_counter()-t0)
    return min(ts)
batched = lambda v, x: jax.grad(lambda x: m.apply(v, x).sum())(x)
def loop(v, x):
    return jax.lax.fori_loop(0, 4, lambda i, y: y - 1e-3 * batched(v, y), x)
def loop_closed(x):  # params as compile-time constants
    return jax.lax.fori_loop(0, 4, lambda i, y: y - 1e-3 * batched(v, y), x)
print("grad", t(batched, v, x, n=2))
print("fori 4x", t(loop, v, x) / 4)
print("fori 4x params closed", t(loop_closed, x) / 4)
