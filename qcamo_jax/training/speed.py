"""Forward + input-gradient speed of the default model against KonCept512, at 384x512, as JSON.

``python -m qcamo_jax.training.speed [--batch 1] [--repeats 5]`` times
``jax.grad(sum of scores)(pixels)`` (the work of one attack iteration) for ``qcamo-small`` with the
shipped weights and for KonCept512 (Keras variant, full size, random weights: the speed does not depend
on the values). Compilation is timed separately; every result is ``block_until_ready``'d. XLA's own
FLOP count of the forward pass is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def bench(model, batch: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    h, w = model.input_size
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (batch, h, w, 3)), jnp.float32)
    fn = jax.jit(lambda v, x: jax.value_and_grad(lambda x: model.apply(v, x).sum())(x))
    t0 = time.perf_counter()
    compiled = fn.lower(model.variables, x).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(model.variables, x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(model.variables, x))
        times.append(time.perf_counter() - t0)
    fwd = jax.jit(lambda v, x: model.apply(v, x)).lower(model.variables, x[:1]).compile().cost_analysis()
    fwd = fwd[0] if isinstance(fwd, (list, tuple)) else fwd
    return {
        "compile_s": round(compile_s, 2),
        "fwd_grad_s_per_image_median": round(sorted(times)[len(times) // 2] / batch, 4),
        "fwd_gflops_per_image": round(float(fwd.get("flops", float("nan"))) / 1e9, 3),
    }


def main(argv=None) -> int:
    from qcamo_jax.models.hub import init_random, load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="default")
    args = p.parse_args(argv)
    small = bench(load_model(args.model), args.batch, args.repeats)
    koncept = bench(init_random("koncept512", {"variant": "keras", "size": "full"}), args.batch, max(2, args.repeats // 2))
    ratio = koncept["fwd_grad_s_per_image_median"] / small["fwd_grad_s_per_image_median"]
    print(json.dumps({"size": [384, 512], "batch": args.batch, "cpu_count": os.cpu_count(), "qcamo_small": small,
                      "koncept512": koncept, "speedup": round(ratio, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
