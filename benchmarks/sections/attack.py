"""(b) the paper's attack: L2 PGD inside a per-image bisection over the budget, then the DCT quantizer.

Data contract: images are ``float32 [B, H, W, 3]`` pixels (0-255), targets ``float32 [B]`` scores.
:func:`bench_attack` returns seconds (``jax_s``, ``torch_s``, ``ratio``, quantizer and compile times
apart), gradient-evaluation counts, XLA memory in bytes, and per-image success and L2 of both sides.
The JAX and PyTorch attacks alternate call by call (:func:`sections.measure.alternating_times`;
``ratio_per_round``: each round's JAX / PyTorch ratio).
"""

from __future__ import annotations

import contextlib

import numpy as np

from sections.measure import (alternating_times, compile_timed, device_peak_bytes, median_time, per_round_ratios,
                              xla_memory)
from sections.torch_side import _host_numpy, _sync, torch_precision

def bench_attack(tmodel, jmodel, images, targets, steps, tries, repeats, torch_device, log, precision_spec: str = "fp32") -> dict:
    """(b): the paper's attack, JAX (one jitted program) against the PyTorch eager mirror.

    Both sides run the same algorithm (``attack_pgd.torch_search``: constant steps, every try from the
    original, no refinement, early stop off) on the same weights, so both make ``batch * tries * steps``
    gradient evaluations. ``precision_spec`` (``fp32`` or ``tf32``) sets the convolution arithmetic of
    both sides alike.
    """
    import jax
    import jax.numpy as jnp

    from attack_pgd import torch_search
    from qcamo_jax import attacks, precision
    from qcamo_jax.quantize.dct import DCTConfig, quantize_dct

    opts = precision.SpeedOptions.parse(precision_spec)
    if opts.dtype != "float32":
        raise ValueError("the attack comparison runs in float32 (fp32 or tf32)")
    b = images.shape[0]
    cfg = attacks.SearchConfig.paper(pgd=attacks.PGDConfig(steps=steps, early_stop=False, schedule="constant"),
                                     eps_max=2000.0, bisection_steps=tries)
    score_one = precision.wrap(jmodel.score_one, opts)
    attack = jax.jit(attacks.attack_fn(score_one, "search", cfg))
    dct_cfg = DCTConfig.for_imagemagick(90)  # the paper's quantizer: ImageMagick q90 (IFAST 4:4:4), one step
    quant = jax.jit(lambda v, o, a, t: quantize_dct(score_one, v, o, a, t, dct_cfg))
    xj, tj = jnp.asarray(images, jnp.float32), jnp.asarray(targets)
    orig = jnp.asarray(images, jnp.uint8)
    attack_c, attack_compile = compile_timed(attack, jmodel.variables, xj, tj, None)
    adv, res = jax.block_until_ready(attack_c(jmodel.variables, xj, tj, None))
    quant_c, quant_compile = compile_timed(quant, jmodel.variables, orig, adv, tj)
    log(f"  attack ({opts.describe()}) compiled: {attack_compile:.1f}s, quantizer {quant_compile:.1f}s")
    jax_attack = lambda: jax.block_until_ready(attack_c(jmodel.variables, xj, tj, None))  # noqa: E731
    torch_out, torch_error = {}, None
    timed = None
    if torch_device is not None:
        import torch

        # torch_search builds its tensors with torch.as_tensor (placed by the device context on a GPU)
        # and returns .numpy(), which needs host tensors: _host_numpy copies them back (and syncs).
        def torch_attack():
            result = torch_search(tmodel, images.astype(np.float32), targets, 2000.0, tries, steps)
            _sync(torch, torch_device)
            return result

        try:
            with torch_precision(torch, opts.matmul), \
                    (torch.device(torch_device) if torch_device != "cpu" else contextlib.nullcontext()), _host_numpy(torch):
                if torch_device != "cpu":  # cuDNN autotuning of these shapes happens here, not in the timed run
                    torch_search(tmodel, images[:b].astype(np.float32), targets, 2000.0, 1, 1)
                    _sync(torch, torch_device)
                # The two sides alternate call by call, after one untimed round of both. (Until 2026-12-07 only
                # JAX had an untimed run, its first call above, and --quick timed one call a side: PyTorch's
                # first full attack counted, and one slow call set either side's figure.)
                timed = alternating_times({"jax": jax_attack, "torch": torch_attack}, repeats, warmup=1)
        except Exception as exc:
            torch_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if timed is None:  # no PyTorch side, or it failed: JAX alone
        jax_s, jax_runs = median_time(jax_attack, repeats, warmup=0)
    else:
        jax_s, jax_runs = timed["jax"].median_s, timed["jax"].runs_s
        torch_s, torch_runs = timed["torch"].median_s, timed["torch"].runs_s
        adv_t, _, success_t, grads_t = timed["torch"].last
        torch_out = {"torch_s": torch_s, "torch_runs_s": torch_runs, "torch_grad_evals": int(grads_t),
                     "jax_minflt_per_run": timed["jax"].minflt, "torch_minflt_per_run": timed["torch"].minflt,
                     "ratio": jax_s / torch_s, "ratio_per_round": per_round_ratios(jax_runs, torch_runs),
                     "torch_images_per_s": b / torch_s, "success_attack_torch": np.asarray(success_t).tolist(),
                     "adv_max_abs_diff_jax_torch": float(np.max(np.abs(np.asarray(adv) - adv_t)))}
    quant_s, _ = median_time(lambda: jax.block_until_ready(quant_c(jmodel.variables, orig, adv, tj)), repeats)
    _, _, qres = quant_c(jmodel.variables, orig, adv, tj)
    out = {"what": "L2 PGD + per-image budget bisection (early stop off), then the DCT quantizer (JAX only)",
           "precision": opts.describe(), "batch": b, "size": list(images.shape[1:3]), "steps": steps, "tries": tries,
           "eps_max": 2000.0, "grad_evals": int(np.asarray(res.iterations).sum()), "jax_s": jax_s, "jax_runs_s": jax_runs,
           "jax_compile_s": attack_compile, "jax_quantize_s": quant_s, "jax_quantize_compile_s": quant_compile,
           "jax_total_s": jax_s + quant_s, "jax_images_per_s": b / (jax_s + quant_s),
           "jax_memory": xla_memory(attack_c), "jax_quantize_memory": xla_memory(quant_c),
           "device_peak_bytes": device_peak_bytes(),
           "success_attack_jax": np.asarray(res.success).tolist(),
           "success_after_dct_quantizer_jax": np.asarray(qres.success).tolist(),
           "l2_attack_jax": np.round(np.asarray(res.l2), 2).tolist(), "l2_quantized_jax": np.round(np.asarray(qres.l2), 2).tolist(),
           **torch_out}
    if out["jax_memory"]:
        out["jax_memory_per_image_mib"] = out["jax_memory"]["total"] / b / 2**20
    if torch_error is not None:
        out["torch_error"] = torch_error
    log(f"  attack: jax {jax_s:.2f}s + quantizer {quant_s:.2f}s, torch {out.get('torch_s', float('nan')):.2f}s")
    return out
