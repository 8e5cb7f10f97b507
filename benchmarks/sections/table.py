"""The human-readable table of a speed-suite report (the JSON stays the record; this is its summary).

Data contract: :func:`table` takes the report ``dict`` that ``run.py`` writes as JSON (sections under
``grad``, ``attack``, ``attack-tf32``, ``options``, ``compile``) and returns lines of text; missing
values print as ``-``.
"""

from __future__ import annotations

import json

def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def table(report: dict) -> str:
    lines = [f"device: {report['device']['name']} (jax backend {report['device']['backend']})"]
    if report.get("reductions"):
        lines.append(f"--quick reductions: {json.dumps(report['reductions'])}")
    g = report.get("grad")
    if isinstance(g, dict) and "by_batch" in g:
        lines += ["", f"(a) forward + input gradient, {g['size'][0]}x{g['size'][1]}",
                  "batch  jax_s    torch_s  ratio  jax_img/s  jax_compile_s  MiB/img  TFLOP/s"]
        for r in g["by_batch"]:
            lines.append(f"{r['batch']:>5}  {_fmt(r['jax_s'])}  {_fmt(r.get('torch_s'))}  {_fmt(r.get('ratio'), '.2f'):>5}  "
                         f"{r['jax_images_per_s']:9.2f}  {r['jax_compile_s']:13.1f}  "
                         f"{_fmt(r.get('jax_memory_per_image_mib'), '.0f'):>7}  {_fmt(r.get('jax_tflops_per_s'), '.3f')}")
        if g.get("best_fraction_of_peak_fp32") is not None:
            lines.append(f"best fraction of fp32 peak: {g['best_fraction_of_peak_fp32']:.1%}")
    for key in ("attack", "attack-tf32"):
        a = report.get(key)
        if not (isinstance(a, dict) and "jax_s" in a and a["jax_s"] is not None):
            continue
        lines += ["", f"(b) attack ({a.get('precision', 'fp32')}): batch {a['batch']}, {a['size'][0]}x{a['size'][1]}, "
                      f"{a['tries']} tries x {a['steps']} steps",
                  f"  PGD+bisection  jax {a['jax_s']:.2f}s  torch {_fmt(a.get('torch_s'), '.2f')}s  ratio {_fmt(a.get('ratio'), '.2f')}",
                  f"  + DCT quantizer (jax) {a['jax_quantize_s']:.2f}s -> {a['jax_images_per_s']:.3f} images/s "
                  f"(torch PGD+bisection only: {_fmt(a.get('torch_images_per_s'), '.3f')} images/s)",
                  f"  compile (apart): attack {a['jax_compile_s']:.1f}s, quantizer {a['jax_quantize_compile_s']:.1f}s; "
                  f"memory {_fmt(a.get('jax_memory_per_image_mib'), '.0f')} MiB/image"]
        if a.get("torch_error"):
            lines.append(f"  torch: {a['torch_error']}")
    c = report.get("compile")
    if isinstance(c, dict) and "torch_compiled_s" in c:
        lines += ["", f"torch.compile, batch {c['batch']}: {c['torch_compiled_s']:.3f}s (eager {c['torch_eager_s']:.3f}s, "
                      f"first call {c['torch_compile_first_call_s']:.1f}s)"]
    o = report.get("options")
    if isinstance(o, dict) and "rows" in o:
        lines += ["", f"speed options ({o['images']} images {o['size'][0]}x{o['size'][1]}, model {report['settings']['options_model']})",
                  "option             grad_s  speedup  attack_s  success  d_points  mean_L2  grad_MiB"]
        for r in o["rows"]:
            mem = r["grad_memory"]["total"] / 2**20 if r.get("grad_memory") else None
            lines.append(f"{r['option']:<17}  {r['grad_s']:6.3f}  {r['grad_speedup_vs_first']:7.2f}  {r['attack_s']:8.2f}  "
                         f"{r['success_rate']:7.2f}  {r['success_points_vs_first']:+8.1f}  {r['mean_l2']:7.1f}  {_fmt(mem, '.0f'):>8}")
    for key in ("grad", "attack", "attack-tf32", "options", "compile"):
        if isinstance(report.get(key), dict) and "unavailable" in report[key]:
            lines.append(f"{key}: unavailable - {report[key]['unavailable']}")
    return "\n".join(lines)
