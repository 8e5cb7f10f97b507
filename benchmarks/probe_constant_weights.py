"""Probe: KonCept512's forward + input gradient with the weights as arguments against the weights baked in.

    python benchmarks/probe_constant_weights.py [--batch 2] [--rounds 10] [--form standard] [--json PATH]

Every attack in this package takes the model's variables as a ``jax.jit`` argument, so each call
prepares the kernels again: the transposed and reversed copies the input-gradient convolutions read
(``qcamo_jax.models.conv``), the transposed large 1x1 kernels, the batch-norm scales, and whatever
packing YNNPACK and Eigen do per call. Closing over the variables instead lets XLA fold all of that
at compile time. This probe compiles both programs of one full MediaEval KonCept512 (random
weights, 384x512, float32), checks their gradients agree, and times them alternately in one process
(``--rounds`` rounds, the first two dropped as warm-up), so the difference is what per-call weight
preparation costs on this CPU. It changes nothing in the package; it sizes a possible option.

JSON: ``compile_s``, ``median_s`` and the serialized executable's size (what JAX's persistent
compilation cache would store, ``serialized_executable_mib``) of both, ``gain`` (1 - baked /
argument), the gradients' largest absolute difference, the device (with the XLA flags in force) and
this command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report_json import emit  # noqa: E402  (benchmarks/ is on sys.path: run as a script)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--form", choices=("standard", "inference"), default="standard",
                   help="KonCept512's form (hub.inference_form: batch norms folded; what load_model gives)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (two warm-up rounds are dropped)")

    import jax
    import jax.numpy as jnp

    from qcamo_jax.models import hub
    from sections.measure import device_info

    model = hub.init_random("koncept512", {"variant": "mediaeval", "size": "full"})
    if args.form == "inference":
        model = hub.inference_form(model)
    variables = model.variables
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (args.batch, 384, 512, 3)), jnp.float32)
    as_argument = jax.jit(jax.value_and_grad(lambda v, p: model.apply(v, p).sum(), argnums=1))
    baked_in = jax.jit(jax.value_and_grad(lambda p: model.apply(variables, p).sum()))

    t0 = time.perf_counter()
    run_argument = as_argument.lower(variables, x).compile()
    compile_argument = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_baked = baked_in.lower(x).compile()
    compile_baked = time.perf_counter() - t0
    from jax.experimental import serialize_executable

    serialized_mib = {name: len(serialize_executable.serialize(c)[0]) / 2**20
                      for name, c in (("argument", run_argument), ("baked", run_baked))}
    grad_argument, grad_baked = run_argument(variables, x)[1], run_baked(x)[1]
    max_diff = float(jnp.max(jnp.abs(grad_argument - grad_baked)))

    times = {"argument": [], "baked": []}
    for _ in range(args.rounds):
        for name, call in (("argument", lambda: run_argument(variables, x)), ("baked", lambda: run_baked(x))):
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(runs[2:])) for name, runs in times.items()}
    report = {
        "command": "python benchmarks/probe_constant_weights.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_info(), "batch": args.batch, "form": args.form, "serialized_executable_mib": serialized_mib,
        "size": [384, 512], "compile_s": {"argument": compile_argument, "baked": compile_baked},
        "median_s": med, "runs_s": times, "gain": 1.0 - med["baked"] / med["argument"],
        "max_abs_grad_diff": max_diff, "max_abs_grad": float(jnp.max(jnp.abs(grad_argument))),
    }
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
