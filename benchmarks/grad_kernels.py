"""Input-gradient kernels made once (``qcamo_jax.models.conv.with_grad_kernels``) against made per call.

    python benchmarks/grad_kernels.py [--batch 1] [--rounds 7] [--json PATH]

The input gradient of a convolution reads its kernel flipped, with the feature axes swapped. Without
the ``grad_kernels`` collection XLA makes that copy in every call, and in every step of an attack's
loop (it does not hoist copies that size out of a ``while`` body); with it, the copies are made once
when the model is loaded. This compiles, for one full MediaEval KonCept512 (random weights with
calibrated batch norms, ``attack_pgd.build_models``, 384x512, float32), the forward + input gradient
at ``--batch`` and the paper's plain search (``--tries`` x ``--steps``, early stop off, batch 1: what
``run.py --quick`` times) with both variable trees, checks that the outputs agree, counts the
``reverse`` copies left in each compiled attack, and times the two trees alternately in one process
(``--rounds`` rounds, the first one dropped as warm-up).

JSON: per program ``median_s`` / ``runs_s`` of both trees and ``gain`` (1 - once / per call), the
largest absolute difference of gradients and adversarial images, the ``reverse`` counts, the device
(XLA flags and malloc settings in force) and this command.
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

import qcamo_jax  # noqa: E402,F401  (first: the package's XLA flags and malloc settings, before JAX starts)
from report_json import emit  # noqa: E402  (benchmarks/ is on sys.path: run as a script)
from sections.measure import device_info  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--tries", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be at least 2 (the first round is dropped)")

    import jax
    import jax.numpy as jnp

    from attack_pgd import build_models, photos
    from qcamo_jax import attacks
    from qcamo_jax.models import conv

    _, model = build_models(photos((384, 512), 4), seed=0)
    trees = {"once": model.variables, "per_call": {k: v for k, v in model.variables.items() if k != conv.GRAD_KERNELS}}
    if conv.GRAD_KERNELS not in trees["once"]:
        p.error(f"the model has no {conv.GRAD_KERNELS} collection (not a CPU backend?)")
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (args.batch, 384, 512, 3)), jnp.float32)
    x1 = jnp.asarray(photos((384, 512), 1), jnp.float32)
    targets = jax.jit(model.apply)(trees["once"], x1) - 10.0
    grad = jax.jit(jax.value_and_grad(lambda v, p: model.apply(v, p).sum(), argnums=1))
    cfg = attacks.SearchConfig.paper(pgd=attacks.PGDConfig(steps=args.steps, early_stop=False, schedule="constant"),
                                     eps_max=2000.0, bisection_steps=args.tries)
    attack = jax.jit(attacks.attack_fn(model.score_one, "search", cfg))

    compiled, reverses, outputs = {}, {}, {}
    for name, v in trees.items():
        compiled[("grad", name)] = grad.lower(v, x).compile()
        compiled[("attack", name)] = attack.lower(v, x1, targets, None).compile()
        reverses[name] = compiled[("attack", name)].as_text().count(" reverse(")
        outputs[("grad", name)] = compiled[("grad", name)](v, x)[1]
        outputs[("attack", name)] = compiled[("attack", name)](v, x1, targets, None)[0]
    args_of = {"grad": lambda v: (v, x), "attack": lambda v: (v, x1, targets, None)}

    runs = {(what, name): [] for what in ("grad", "attack") for name in trees}
    for _ in range(args.rounds):
        for (what, name), times in runs.items():
            call_args = args_of[what](trees[name])
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[(what, name)](*call_args))
            times.append(time.perf_counter() - t0)
    report = {
        "command": "python benchmarks/grad_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_info(), "size": [384, 512], "batch_grad": args.batch, "batch_attack": 1,
        "attack": f"plain search {args.tries} tries x {args.steps} steps, no early stop",
        "reverse_copies_in_attack": reverses,
        "grad_kernels_mib": sum(a.nbytes for a in jax.tree.leaves(trees["once"][conv.GRAD_KERNELS])) / 2**20,
    }
    for what in ("grad", "attack"):
        med = {name: float(np.median(runs[(what, name)][1:])) for name in trees}
        report[what] = {"median_s": med, "runs_s": {name: runs[(what, name)] for name in trees},
                        "gain": 1.0 - med["once"] / med["per_call"],
                        "max_abs_diff": float(jnp.max(jnp.abs(outputs[(what, "once")] - outputs[(what, "per_call")]))),
                        "max_abs": float(jnp.max(jnp.abs(outputs[(what, "per_call")])))}
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
