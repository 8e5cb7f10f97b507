"""Default XLA:CPU flags for this package's models, set before JAX starts its backends.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so this runs at ``import qcamo_jax`` (first
thing, see ``qcamo_jax/__init__.py``) and does nothing if a JAX backend is already running. What it adds
(:data:`CPU_FLAGS`, by CPU vendor) and why is measured in ``benchmarks/xla_flags.py`` (docs/scaling.md, "CPU flags").

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

#: XLA:CPU flags added by default, by CPU vendor (``vendor_id`` of ``/proc/cpuinfo``). The flag names the
#: operations XLA:CPU hands to YNNPACK; the rest run on XLA's own (Eigen) kernels. Which kernels win
#: depends on the processor, measured with ``benchmarks/xla_flags.py`` (benchmarks/RESULTS.md):
#:
#: * Intel (a 2-core AVX-512 Xeon): YNNPACK for each convolution and for the products with their
#:   elementwise neighbours (``individual_convolution,dot``). KonCept512's forward + input gradient
#:   1.42 s at batch 2 against 1.53 s with jaxlib 0.10's own list and 1.55 s with convolutions alone;
#:   Eigen convolutions were not measured there.
#: * AMD (a 2-core AVX-512 EPYC): YNNPACK for the products only (``dot``), Eigen for the convolutions:
#:   KonCept512's gradient 1.76 s against 1.90 s at batch 2, the attack 8.27 s against 9.08 s; alone
#:   (``benchmarks/conv_layers.py``), Eigen ran the forward pass of 20 of KonCept512's 21 distinct
#:   spatial convolutions faster, 153 ms against 196 over the network (input gradients 169 against 187).
#:
#: Any other vendor gets :data:`FALLBACK_VENDOR`'s list. Gradients agree to float tolerance whichever
#: list runs (tests/test_xla_flags.py).
CPU_FLAGS: dict[str, tuple[str, ...]] = {
    "GenuineIntel": ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution,dot",),
    "AuthenticAMD": ("--xla_cpu_experimental_ynn_fusion_type=dot",),
}

#: The vendor whose list applies when the vendor is unknown (not Linux, another vendor).
FALLBACK_VENDOR = "GenuineIntel"

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


def backend_started() -> bool:
    """Whether a JAX backend already runs in this process (then XLA's flags and threads are set up)."""
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(xb, "_backends", None))


def switched_off(environ: MutableMapping[str, str], switch: str) -> bool:
    """Whether the environment variable ``switch`` turns a default off (``0``, ``false``, ``no``, ``off``)."""
    return environ.get(switch, "1").strip().lower() in ("0", "false", "no", "off")


def cpu_may_run(environ: MutableMapping[str, str]) -> bool:
    """Whether JAX may use its CPU backend under ``environ``: ``JAX_PLATFORMS`` unset or naming ``cpu``."""
    platforms = [p.strip().lower() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    return not platforms or "cpu" in platforms


def cpuinfo_field(key: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The first ``key`` line's value in ``cpuinfo`` (Linux's ``/proc/cpuinfo``); None if absent or unreadable.

    E.g. ``cpuinfo_field("vendor_id")`` -> ``"AuthenticAMD"``, ``cpuinfo_field("model name")`` -> ``"AMD EPYC"``.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip() or None
    except OSError:
        return None
    return None


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's ``vendor_id`` (``"GenuineIntel"``, ``"AuthenticAMD"``, ...) from ``cpuinfo``; None if unreadable."""
    return cpuinfo_field("vendor_id", cpuinfo)


def vendor_flags(vendor: str | None = None) -> tuple[str, ...]:
    """The :data:`CPU_FLAGS` list for ``vendor`` (default: :func:`cpu_vendor`); :data:`FALLBACK_VENDOR`'s if unknown."""
    return CPU_FLAGS.get(vendor or cpu_vendor() or FALLBACK_VENDOR, CPU_FLAGS[FALLBACK_VENDOR])


def cpu_defaults(environ: MutableMapping[str, str] | None = None, jaxlib_version: str | None = None,
                 vendor: str | None = None) -> list[str]:
    """The default flags that apply under ``environ`` (default ``os.environ``), in order; see the module rules.

    Args:
      environ: environment to read (``JAX_PLATFORMS``, ``XLA_FLAGS``, :data:`ENV_SWITCH`).
      jaxlib_version: ``"major.minor"``; default: the installed jaxlib's.
      vendor: CPU vendor id picking the list (:func:`vendor_flags`); default: this machine's.

    Returns:
      The flags to add (possibly empty).
    """
    env = os.environ if environ is None else environ
    if switched_off(env, ENV_SWITCH) or not cpu_may_run(env):
        return []
    if (jaxlib_version or _jaxlib_version()) not in TESTED_JAXLIB:
        return []
    user = {_flag_name(f) for f in env.get("XLA_FLAGS", "").split()}
    return [f for f in vendor_flags(vendor) if _flag_name(f) not in user]


def apply(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Add :func:`cpu_defaults` to ``XLA_FLAGS`` (before the user's flags) unless a backend already runs.

    Returns:
      The flags added (empty if none, or if it was too late to add any).
    """
    env = os.environ if environ is None else environ
    if environ is None and backend_started():
        return []
    flags = cpu_defaults(env)
    if flags:
        env["XLA_FLAGS"] = " ".join(flags + env.get("XLA_FLAGS", "").split())
    return flags
