"""XLA's persistent compilation cache for the ``qcamo`` commands: compile a program once per machine, not per run.

Compiling the attack for one image size takes minutes on a CPU (the README run: 134 s of 5.5 min) and
the same again in every new process. JAX can keep compiled executables on disk, keyed by the program,
the jaxlib version, the device and the XLA flags (``jax/_src/cache_key.py``), and load them in the next
process. This module turns that on for the command line; the library itself never changes JAX's
global configuration (a library user calls :func:`enable`, or sets JAX's own options).

Rules (:func:`choose`):
  * ``QCAMO_COMPILE_CACHE=0`` (or ``off``/``false``/``no``) turns it off.
  * JAX's own setting wins: a directory already set (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config.update("jax_compilation_cache_dir", ...)``) is kept, and so is
    ``JAX_ENABLE_COMPILATION_CACHE=false``.
  * otherwise ``QCAMO_COMPILE_CACHE=DIR``, else ``$XDG_CACHE_HOME/qcamo_jax/xla`` (``~/.cache/qcamo_jax/xla``).
  * a directory that cannot be created or written leaves the cache off (compiling works as before).

Only programs that took at least one second to compile are stored (JAX's
``jax_persistent_cache_min_compile_time_secs``); the directory is kept under :data:`MAX_BYTES`, least
recently used entries removed first (JAX's ``jax_compilation_cache_max_size``, which locks the directory
with the ``filelock`` package, so processes sharing it are safe). Removing the directory is always safe.

Data contract: directories are :class:`pathlib.Path`; :func:`counts` returns ``{"hits": int, "misses":
int}``, this process's persistent-cache lookups so far (JAX's ``/jax/compilation_cache/*`` events).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Mapping

from qcamo_jax.xla_flags import switched_off

#: Environment variable: ``0``/``off`` disables the cache, a path chooses its directory.
ENV = "QCAMO_COMPILE_CACHE"

#: Upper bound of the cache directory, bytes. Executables of the default model are 0.2-3 MB each,
#: KonCept512's a few MB: room for hundreds of image sizes.
MAX_BYTES = 2 << 30

_lock = threading.Lock()
_counts = {"requests": 0, "hits": 0}
_listening = False


def default_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/qcamo_jax/xla``, or ``~/.cache/qcamo_jax/xla`` (the XDG base directory rule)."""
    base = environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and os.path.isabs(base) else Path(environ.get("HOME") or Path.home()) / ".cache"
    return root / "qcamo_jax" / "xla"


def choose(environ: Mapping[str, str], jax_dir: str | None, jax_enabled: bool) -> tuple[Path | None, bool]:
    """Where the cache goes, by the rules of the module docstring: ``(directory or None, ours)``.

    ``ours`` is False when JAX's own setting is kept (``jax_dir``; nothing to configure). ``(None, False)``
    means off.
    """
    if switched_off(environ, ENV) or not jax_enabled:
        return None, False
    if jax_dir:
        return Path(jax_dir), False
    given = environ.get(ENV, "").strip()
    return (Path(given).expanduser() if given else default_dir(environ)), True


def _usable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


def enable(environ: Mapping[str, str] | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache for this process; the directory used, or None (off).

    Call it before the first compilation: JAX decides once per process whether it uses the cache. It
    starts no backend. Raises nothing: an unusable directory only leaves the cache off.
    """
    import jax

    environ = os.environ if environ is None else environ
    directory, ours = choose(environ, jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)
    if directory is None:
        return None
    if ours:
        if not _usable(directory):
            return None
        jax.config.update("jax_compilation_cache_dir", str(directory))
        if importlib.util.find_spec("filelock") is not None:  # JAX needs it to bound the directory
            jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    _listen()
    return directory


def _listen() -> None:
    global _listening
    with _lock:
        if _listening:
            return
        _listening = True
    from jax import monitoring

    # JAX records a request for every compilation that looks in the cache and a hit for each one loaded
    # (jax/_src/compiler.py; its "cache_misses" event counts entries *written*, not lookups that failed).
    names = {"/jax/compilation_cache/compile_requests_use_cache": "requests", "/jax/compilation_cache/cache_hits": "hits"}

    def on_event(event: str, **kwargs) -> None:
        key = names.get(event)
        if key is not None:
            with _lock:
                _counts[key] += 1

    monitoring.register_event_listener(on_event)


def active_dir() -> str | None:
    """The folder JAX's persistent cache uses in this process, or None when it is off."""
    import jax

    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir


def counts() -> dict[str, int]:
    """This process's persistent-cache lookups so far: ``{"hits": int, "misses": int}`` (0s when off).

    A miss is a program compiled although the cache was on: not there yet, or one JAX never stores
    (it calls back to the host, or compiled in under a second).
    """
    with _lock:
        return {"hits": _counts["hits"], "misses": _counts["requests"] - _counts["hits"]}
