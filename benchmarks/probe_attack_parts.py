"""Where the quick attack's time goes: forward, forward + input gradient and the attack, JAX against PyTorch.

Issue 14 item 1 asks the ``run.py --quick`` attack (2 tries x 2 PGD steps, batch 1, 384x512, early stop
off: 4 gradients and 3 forward passes a side) to run at most as long as PyTorch's. This times its parts
side by side, call by call (``sections.measure.alternating_times``): a jitted forward against PyTorch's
``no_grad`` forward, the jitted forward + input gradient against ``autograd.grad``, and the two attacks.
If ``jax_attack ~= 4 * jax_grad + 3 * jax_forward``, the attack's compiled loops cost nothing of their
own and only faster model passes can move its ratio.

Usage::

    python benchmarks/probe_attack_parts.py --rounds 4 --json benchmarks/results-cpu-attack-parts.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import qcamo_jax  # noqa: E402,F401  (sets the package's XLA:CPU flags before JAX starts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from attack_pgd import build_models, photos, torch_search
    from qcamo_jax import attacks
    from report_json import emit
    from sections.measure import alternating_times, device_info

    torch.set_num_threads(os.cpu_count())
    load = os.getloadavg()
    tmodel, jmodel = build_models(photos((384, 512), 4), 0)
    x = photos((384, 512), 1).astype(np.float32)
    xj, xt = jnp.asarray(x), torch.as_tensor(x)
    score = lambda v, im: jax.vmap(lambda one: jmodel.score_one(v, one))(im)  # noqa: E731
    fwd = jax.jit(score)
    grad = jax.jit(jax.grad(lambda v, im: score(v, im).sum(), argnums=1))
    targets = (np.asarray(fwd(jmodel.variables, xj)) - 10.0).astype(np.float32)
    cfg = attacks.SearchConfig.paper(pgd=attacks.PGDConfig(steps=2, early_stop=False, schedule="constant"),
                                     eps_max=2000.0, bisection_steps=2)
    attack = jax.jit(attacks.attack_fn(jmodel.score_one, "search", cfg))
    tj = jnp.asarray(targets)

    def torch_forward():
        with torch.no_grad():
            return tmodel(xt.permute(0, 3, 1, 2) / 127.5 - 1.0)

    def torch_grad():
        xx = xt.clone().requires_grad_(True)
        return torch.autograd.grad(tmodel(xx.permute(0, 3, 1, 2) / 127.5 - 1.0).sum(), xx)[0]

    calls = {
        "jax_forward": lambda: jax.block_until_ready(fwd(jmodel.variables, xj)),
        "torch_forward": torch_forward,
        "jax_grad": lambda: jax.block_until_ready(grad(jmodel.variables, xj)),
        "torch_grad": torch_grad,
        "jax_attack": lambda: jax.block_until_ready(attack(jmodel.variables, xj, tj, None)),
        "torch_attack": lambda: torch_search(tmodel, x, targets, 2000.0, 2, 2),
    }
    for call in calls.values():  # compile, warm up
        call()
    t0 = time.perf_counter()
    timed = alternating_times(calls, args.rounds, warmup=1)
    med = {k: v.median_s for k, v in timed.items()}
    result = {
        "command": "benchmarks/probe_attack_parts.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "device": device_info(), "loadavg_start": load, "loadavg_end": os.getloadavg(),
        "seconds": {k: {"median": round(v.median_s, 4), "runs": [round(r, 4) for r in v.runs_s]} for k, v in timed.items()},
        "ratios": {part: round(med[f"jax_{part}"] / med[f"torch_{part}"], 3) for part in ("forward", "grad", "attack")},
        "attack_from_parts_s": {side: round(4 * med[f"{side}_grad"] + 3 * med[f"{side}_forward"], 4) for side in ("jax", "torch")},
        "timing_wall_s": round(time.perf_counter() - t0, 1),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
