"""Default XLA:CPU flags for this package's models, set before JAX starts its backends.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so this runs at ``import qcamo_jax`` (first
thing, see ``qcamo_jax/__init__.py``) and does nothing if a JAX backend is already running. What it adds
(:data:`CPU_FLAGS`) and why is measured in ``benchmarks/xla_flags.py`` (docs/scaling.md, "CPU flags").

Rules:
  * only when the run may use the CPU: ``JAX_PLATFORMS`` unset or naming ``cpu``. (The flags are
    ``xla_cpu_*``: they would not change a GPU program anyway.)
  * the user's own ``XLA_FLAGS`` win: a default whose flag name already appears there is not added;
    the others are put *before* the user's flags.
  * ``QCAMO_XLA_DEFAULTS=0`` turns all of it off.
  * only for the jaxlib versions in :data:`TESTED_JAXLIB` (an XLA that does not know a flag aborts the
    process, and these flags are experimental: a later jaxlib may rename them).
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

#: Env var that disables the defaults when set to ``0`` (or ``false``/``no``/``off``).
ENV_SWITCH = "QCAMO_XLA_DEFAULTS"

#: XLA:CPU flags added by default. The list of operations XLA:CPU hands to YNNPACK: each convolution
#: (forward and input gradient) and the products with their elementwise neighbours (the ``dot`` type),
#: not the reductions that jaxlib 0.10's own list also gives it. Measured on an idle 2-core Xeon
#: against jaxlib's own list and against convolutions alone (``individual_convolution``, the default
#: before): KonCept512's forward + input gradient 1.42 s against 1.53 and 1.55 s at batch 2, the attack
#: fastest of the three at batch 1, the default model's attack 0.42 s against 0.46 and 0.44 s;
#: gradients equal to float tolerance (benchmarks/RESULTS.md "XLA:CPU's YNNPACK lists",
#: tests/test_xla_flags.py).
CPU_FLAGS: tuple[str, ...] = ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution,dot",)

#: ``major.minor`` jaxlib versions whose XLA was checked to accept :data:`CPU_FLAGS`.
TESTED_JAXLIB: tuple[str, ...] = ("0.10",)


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0].lstrip("-")


def _jaxlib_version() -> str | None:
    try:
        from jaxlib import version  # light: reads a constant, starts no backend
    except ImportError:
        return None
    return ".".join(version.__version__.split(".")[:2])


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(xb, "_backends", None))


def cpu_defaults(environ: MutableMapping[str, str] | None = None, jaxlib_version: str | None = None) -> list[str]:
    """The default flags that apply under ``environ`` (default ``os.environ``), in order; see the module rules.

    Args:
      environ: environment to read (``JAX_PLATFORMS``, ``XLA_FLAGS``, :data:`ENV_SWITCH`).
      jaxlib_version: ``"major.minor"``; default: the installed jaxlib's.

    Returns:
      The flags to add (possibly empty).
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    platforms = [p.strip().lower() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms and "cpu" not in platforms:
        return []
    if (jaxlib_version or _jaxlib_version()) not in TESTED_JAXLIB:
        return []
    user = {_flag_name(f) for f in env.get("XLA_FLAGS", "").split()}
    return [f for f in CPU_FLAGS if _flag_name(f) not in user]


def apply(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Add :func:`cpu_defaults` to ``XLA_FLAGS`` (before the user's flags) unless a backend already runs.

    Returns:
      The flags added (empty if none, or if it was too late to add any).
    """
    env = os.environ if environ is None else environ
    if environ is None and _backend_started():
        return []
    flags = cpu_defaults(env)
    if flags:
        env["XLA_FLAGS"] = " ".join(flags + env.get("XLA_FLAGS", "").split())
    return flags
