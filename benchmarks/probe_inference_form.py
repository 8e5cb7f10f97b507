"""KonCept512's inference form against its standard form: forward + input gradient, JAX and PyTorch.

``hub.load_model`` gives KonCept512 in its inference form (``qcamo_jax.models.inference_form``: batch
norms folded into the convolutions, the parallel 1x1 convolutions of each block merged). This times
one jitted forward + input gradient of both forms of the same random-weight MediaEval KonCept512
(384x512, batch ``--batch``) side by side, call by call (``sections.measure.alternating_times``), with
PyTorch's eager ``eval()`` model and the same model after PyTorch's own conv-BN fusion
(``torch.fx.experimental.optimization.fuse``) alongside, so that the gain is not one PyTorch could
take the same way. It also reports how far the two forms' scores and gradients are apart.

Usage::

    python benchmarks/probe_inference_form.py --batch 2 --rounds 12 --json benchmarks/results-cpu-inference-form-b2.json
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import qcamo_jax  # noqa: E402,F401  (sets the package's XLA:CPU flags before JAX starts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import torch
    from torch.fx.experimental.optimization import fuse

    from attack_pgd import build_models, photos
    from qcamo_jax.models import hub
    from report_json import emit
    from sections.measure import alternating_times, compile_timed, device_info, per_round_ratios
    from sections.torch_side import torch_grad_step

    torch.set_num_threads(os.cpu_count())
    load = os.getloadavg()
    tmodel, standard = build_models(photos((384, 512), 4), 0, inference=False)
    tmodel = tmodel.eval()
    fused = hub.inference_form(standard)
    x = jax.numpy.asarray(photos((384, 512), args.batch).astype(np.float32))

    def grad_fn(model):
        return jax.jit(jax.value_and_grad(lambda v, im: model.apply(v, im).sum(), argnums=1))

    compiled, compile_s = {}, {}
    for name, model in (("jax_standard", standard), ("jax_inference", fused)):
        fn, compile_s[name] = compile_timed(grad_fn(model), model.variables, x)
        compiled[name] = (fn, model.variables)
    (s_std, g_std), (s_inf, g_inf) = (compiled[n][0](compiled[n][1], x) for n in ("jax_standard", "jax_inference"))
    xn = np.asarray(x)
    torch_eager, torch_fused = torch_grad_step(tmodel, "cpu"), torch_grad_step(fuse(tmodel), "cpu")
    calls = {
        "jax_standard": lambda: jax.block_until_ready(compiled["jax_standard"][0](compiled["jax_standard"][1], x)),
        "jax_inference": lambda: jax.block_until_ready(compiled["jax_inference"][0](compiled["jax_inference"][1], x)),
        "torch_eager": lambda: torch_eager(xn),
        "torch_fx_fused": lambda: torch_fused(xn),
    }
    timed = alternating_times(calls, args.rounds, warmup=2)
    med = {name: t.median_s for name, t in timed.items()}
    g_std, g_inf = np.asarray(g_std), np.asarray(g_inf)
    report = {
        "command": "python benchmarks/probe_inference_form.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_info(), "loadavg_at_start": [round(v, 2) for v in load], "batch": args.batch,
        "size": [384, 512], "compile_s": compile_s, "median_s": med,
        "runs_s": {name: t.runs_s for name, t in timed.items()},
        "minflt_per_run": {name: t.minflt for name, t in timed.items()},
        "gain_inference_vs_standard": 1.0 - med["jax_inference"] / med["jax_standard"],
        "ratio_per_round_inference_vs_standard": per_round_ratios(timed["jax_inference"].runs_s, timed["jax_standard"].runs_s),
        "ratio_inference_vs_torch_eager": med["jax_inference"] / med["torch_eager"],
        "ratio_standard_vs_torch_eager": med["jax_standard"] / med["torch_eager"],
        "torch_fx_fused_vs_eager": med["torch_fx_fused"] / med["torch_eager"],
        "score_max_abs_diff": float(np.max(np.abs(np.asarray(s_std) - np.asarray(s_inf)))),
        "grad_relative_l2_diff": float(np.linalg.norm(g_inf - g_std) / np.linalg.norm(g_std)),
    }
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
