"""glibc ``malloc`` settings for XLA:CPU's large per-call buffers, set when ``qcamo_jax`` is imported.

Why: on the CPU, XLA allocates each call's temporaries and outputs with the C library's ``malloc``
(hundreds of MiB: a KonCept512 forward + input gradient at batch 2 needs a 657 MiB temporary buffer)
and frees them when the call ends. glibc serves blocks above its ``mmap`` threshold (at most 32 MiB)
with a fresh ``mmap`` and gives them back with ``munmap``, so every call pays a page fault and a page
of zeroes from the kernel for each 4 KiB it touches: about 169,000 minor faults and 1.5 s of kernel
CPU time per call in that example on a 2-core EPYC (``benchmarks/results-cpu-host-malloc-epyc-b2.json``).
Worse, XLA's threads allocate from glibc's per-thread arenas, whose heaps cannot grow past 64 MiB, so
raising the threshold alone changes nothing.
Measured with ``python benchmarks/host_malloc.py`` (benchmarks/RESULTS.md, "Host memory").

What (:data:`SETTINGS`, through ``mallopt(3)``): one arena for every thread (``M_ARENA_MAX`` 1), no
``mmap`` for large blocks (``M_MMAP_MAX`` 0: they come from the main heap; glibc still falls back to
``mmap`` if the heap cannot grow), and up to 2 GiB - 1 of free memory at the top of the heap kept for
the next call instead of returned to the system (``M_TRIM_THRESHOLD``). The costs: memory freed stays
in the process's resident size, up to its peak heap use (freed blocks below live ones are never
returned; ``malloc_trim(0)`` returns what it can), until the process ends; and every thread of the
process shares one arena lock (measured on 2 cores only). The settings are glibc's, documented in
``mallopt(3)``; the parameter numbers are ``<malloc.h>``'s.

Rules (the same spirit as :mod:`qcamo_jax.xla_flags`):
  * only with glibc (Linux), and only when the run may use the CPU backend
    (:func:`qcamo_jax.xla_flags.cpu_may_run`): on a GPU, XLA's large buffers live on the device;
  * only before a JAX backend has started: a thread that already allocated keeps its arena. For the
    same reason import ``qcamo_jax`` before starting threads of your own that allocate: an arena
    made for them before the import is handed on to later threads, XLA's included, and its blocks
    over 64 MiB still come from ``mmap``;
  * the user's own malloc tuning wins: nothing is set if ``GLIBC_TUNABLES`` names a ``glibc.malloc``
    tunable, if one of glibc's ``MALLOC_*`` variables (:data:`USER_MALLOC_VARIABLES`) is set, or if
    ``LD_PRELOAD`` brings another allocator;
  * ``QCAMO_MALLOC_DEFAULTS=0`` turns all of it off.

Data contract: :func:`skip_reason` and :func:`malloc_defaults` are pure (environment in, reason or
settings out); :func:`apply` calls ``mallopt`` and returns the settings glibc accepted, also kept in
:data:`APPLIED` for reports, with the reason for setting nothing in :data:`SKIPPED`.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Callable, MutableMapping

from qcamo_jax.xla_flags import backend_started, cpu_may_run, switched_off

#: Env var that disables the settings when set to ``0`` (or ``false``/``no``/``off``).
ENV_SWITCH = "QCAMO_MALLOC_DEFAULTS"

#: ``(name, mallopt parameter, value)``; the parameter numbers are glibc's ``<malloc.h>`` constants.
SETTINGS: tuple[tuple[str, int, int], ...] = (
    ("M_ARENA_MAX", -8, 1),
    ("M_MMAP_MAX", -4, 0),
    ("M_TRIM_THRESHOLD", -1, 2**31 - 1),
)

#: glibc's environment variables for the same knobs (``mallopt(3)``, "ENVIRONMENT"); any one set means
#: the user tunes malloc themselves.
USER_MALLOC_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
                         "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_")

#: Allocators that replace glibc's when preloaded.
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc", "hoard", "snmalloc", "tbbmalloc", "scudo")

#: The settings :func:`apply` set at import, ``{name: value}`` (empty if none).
APPLIED: dict[str, int] = {}

#: Why :func:`apply` set nothing (e.g. ``"MALLOC_ARENA_MAX is set"``); None if it set the settings.
SKIPPED: str | None = None


def skip_reason(environ: MutableMapping[str, str] | None = None, libc: str | None = None) -> str | None:
    """Why the settings do not apply under ``environ`` (default ``os.environ``), or None if they do.

    Args:
      environ: environment to read (``JAX_PLATFORMS``, ``GLIBC_TUNABLES``, ``MALLOC_*``, ``LD_PRELOAD``,
        :data:`ENV_SWITCH`).
      libc: the C library's name as :func:`platform.libc_ver` gives it; default: this process's.

    Returns:
      A short reason such as ``"MALLOC_ARENA_MAX is set"``, or None.
    """
    env = os.environ if environ is None else environ
    libc = libc if libc is not None else platform.libc_ver()[0]
    if libc != "glibc":
        return f"not glibc ({libc or 'unknown C library'})"
    if switched_off(env, ENV_SWITCH):
        return f"{ENV_SWITCH}={env[ENV_SWITCH]}"
    if not cpu_may_run(env):
        return f"JAX_PLATFORMS={env.get('JAX_PLATFORMS')} has no cpu"
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc tunables"
    user = [v for v in USER_MALLOC_VARIABLES if v in env]
    if user:
        return f"{user[0]} is set"
    preloaded = [name for name in OTHER_ALLOCATORS if name in env.get("LD_PRELOAD", "")]
    if preloaded:
        return f"LD_PRELOAD brings {preloaded[0]}"
    return None


def malloc_defaults(environ: MutableMapping[str, str] | None = None, libc: str | None = None) -> list[tuple[str, int, int]]:
    """The settings that apply under ``environ`` (see :func:`skip_reason` and the module rules).

    Returns:
      The :data:`SETTINGS` entries to set, or an empty list.
    """
    return [] if skip_reason(environ, libc) else list(SETTINGS)


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        fn = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return fn


def apply(environ: MutableMapping[str, str] | None = None) -> dict[str, int]:
    """Set :func:`malloc_defaults` with ``mallopt`` unless a JAX backend already runs.

    Returns:
      ``{name: value}`` of the settings glibc accepted (``mallopt`` returned 1); empty if none applied,
      with the reason in :data:`SKIPPED` (which also names any setting ``mallopt`` refused).
    """
    global SKIPPED
    SKIPPED = "a JAX backend had already started" if backend_started() else skip_reason(environ)
    mallopt = None if SKIPPED else _mallopt()
    if SKIPPED is None and mallopt is None:
        SKIPPED = "no mallopt in this process's C library"
    if SKIPPED:
        return {}
    applied = {name: value for name, param, value in SETTINGS if mallopt(param, value) == 1}
    if len(applied) < len(SETTINGS):
        SKIPPED = "mallopt refused " + ", ".join(name for name, _, _ in SETTINGS if name not in applied)
    APPLIED.update(applied)
    return applied
