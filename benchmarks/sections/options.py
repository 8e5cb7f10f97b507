"""The speed options of :mod:`qcamo_jax.precision` (fp32, tf32, bf16, remat, donate): speed and quality.

Data contract: images ``float32 [N, H, W, 3]`` pixels (0-255), targets ``float32 [N]``. Each row of
:func:`bench_options` holds the gradient pass time (s) at ``batch``, the attack time (s), XLA memory
(bytes), and the success rate and mean L2 (pixel units) of the attack, success judged by the float32
model at full precision. Options the deadline does not allow are listed as skipped.
"""

from __future__ import annotations

import numpy as np

from sections.measure import Budget, compile_timed, gpu_peak, median_time, peak_arithmetic, xla_memory

def bench_options(jmodel, images, targets, specs, batch, steps, tries, repeats, log, budget: Budget,
                  margin: float = 0.0) -> dict:
    """Speed options: gradient pass speed at ``batch``; the attack's success (below ``targets`` as judged by
    the float32 model at full precision) and L2, attacking with a safety ``margin`` (score units)."""
    import jax
    import jax.numpy as jnp

    from qcamo_jax import attacks, precision

    cfg = attacks.SearchConfig(pgd=attacks.PGDConfig(steps=steps, margin=margin), eps_max=2000.0, bisection_steps=tries)
    # The judge is the float32 model at full precision: a plain jit would use the backend's default,
    # which is TF32 for float32 convolutions on recent NVIDIA GPUs.
    ref_score = jax.jit(precision.wrap(jmodel.apply, precision.SpeedOptions()))
    # The gradient timing batch may exceed the attacked images: tile them.
    xb = jnp.asarray(np.resize(images, (batch,) + images.shape[1:]), jnp.float32)
    # Attack timing: one warm-up, then timed runs (fewer on an accelerator, where they vary little).
    attack_runs = max(1, repeats - 1) if jax.default_backend() == "cpu" else 2
    rows, skipped = [], []
    peak = gpu_peak(jax.devices()[0].device_kind) if jax.default_backend() == "gpu" else None
    n = int(images.shape[0])
    for spec in specs:
        opts = precision.SpeedOptions.parse(spec)
        # Two compilations (gradient, attack); gradient timing, then about tries * steps gradients per image.
        if not budget.allows(budget.estimate(images=batch * (repeats + 1) + n * tries * steps * attack_runs, runs=1,
                                             compiles=2, batch=batch)):
            skipped.append(opts.describe())
            log(f"  option {opts.describe()}: skipped ({budget.left():.0f}s left of the deadline)")
            continue
        variables = precision.prepare_variables(jmodel.variables, opts)
        score_b = precision.wrap(jmodel.apply, opts)
        grad_fn = jax.jit(jax.value_and_grad(lambda v, x: score_b(v, x).sum(), argnums=1))
        gc, gcomp = compile_timed(grad_fn, variables, xb)
        g_s, _ = median_time(lambda: jax.block_until_ready(gc(variables, xb)), repeats)
        run = jax.jit(attacks.attack_fn(precision.wrap(jmodel.score_one, opts), "search", cfg),
                      donate_argnums=precision.donate_argnums(opts, (1,)))
        xa = jnp.asarray(images, jnp.float32)
        ac, acomp = compile_timed(run, variables, xa, jnp.asarray(targets), None)

        def attack_once():
            x = jnp.array(images, jnp.float32)  # a fresh buffer: donation may consume it
            return jax.block_until_ready(ac(variables, x, jnp.asarray(targets), None))

        a_s, _ = median_time(attack_once, attack_runs)
        adv, res = attack_once()
        true = np.asarray(ref_score(jmodel.variables, adv))  # judged by the float32 model
        success = true < targets
        l2 = np.sqrt(np.sum((np.asarray(adv) - images) ** 2, axis=(1, 2, 3)))
        flops = gc.hlo_flops
        row = {"option": opts.describe(), "grad_s": g_s, "grad_compile_s": gcomp, "grad_batch": batch,
               "grad_memory": xla_memory(gc), "attack_s": a_s, "attack_compile_s": acomp, "attack_memory": xla_memory(ac),
               "success_rate": float(success.mean()), "success_as_seen_by_attack": float(np.asarray(res.success).mean()),
               "mean_l2_success": float(l2[success].mean()) if success.any() else None, "mean_l2": float(l2.mean()),
               "flops": flops}
        if peak and flops:
            key = peak_arithmetic(opts)
            row["fraction_of_peak"] = flops / g_s / 1e12 / peak[key]
            row["peak_used"] = key
        budget.observe(max(gcomp, acomp), images=batch, run_s=g_s)
        log(f"  option {row['option']}: grad {g_s:.3f}s, attack {a_s:.2f}s, success {row['success_rate']:.2f}, L2 {row['mean_l2']:.1f}")
        rows.append(row)
    if not rows:
        return {"unavailable": f"deadline: no option fitted in the time left ({budget.left():.0f}s)", "skipped": skipped}
    base = rows[0]
    for r in rows:
        r["grad_speedup_vs_first"] = base["grad_s"] / r["grad_s"]
        r["success_points_vs_first"] = 100.0 * (r["success_rate"] - base["success_rate"])
    return {"what": "speed options (qcamo_jax.precision): gradient pass speed; attack success judged by the float32 model",
            "images": n, "size": list(images.shape[1:3]), "steps": steps, "tries": tries, "margin": margin, "rows": rows,
            "skipped_deadline": skipped}
