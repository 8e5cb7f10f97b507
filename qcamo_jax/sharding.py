"""Data-parallel execution of per-image batched functions over every device, on JAX's own machinery.

Everything in qcamo_jax that touches a batch (scoring, gradients, attacks, quantizers) is written for
one image and batched with ``vmap``: image ``i`` of the output depends only on image ``i`` of the
inputs (and on replicated values such as model variables). Such a function parallelises by splitting
the batch axis: this module does that with a 1-D :class:`jax.sharding.Mesh` whose one axis,
:data:`AXIS` (``"batch"``), spans the chosen devices, and :func:`jax.shard_map`, so that every device
runs the *same* program on its own slice of the batch, with no communication. Because each device sees
an ordinary (smaller) batch, results per image are those of a single-device run, up to the floating
point effects of a different batch size inside XLA kernels.

Multi-host: call :func:`initialize_distributed` first on every process (it wraps
:func:`jax.distributed.initialize`); the mesh then spans the devices of all processes, each process
passes only *its own* images (:func:`process_slice` says which), and gets back only its own results.
See ``docs/scaling.md`` for a launch recipe.

Data contract: batched arguments carry the batch on axis 0 of every leaf (images ``float32
[B, H, W, 3]`` pixels in [0, 255], targets ``[B]``, per-image PRNG keys ``[B]`` typed keys or
``uint32 [B, 2]``); replicated arguments (model variables, scalars, configs as arrays) have no batch
axis. Every output leaf carries the batch on axis 0.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from qcamo_jax import sharding
  >>> mesh = sharding.make_mesh("all")
  >>> f = lambda w, x: jax.vmap(lambda xi: jnp.sum(w * xi))(x)
  >>> run = sharding.data_parallel(f, mesh, in_axes=(None, 0))
  >>> run(jnp.ones(3), jnp.ones((10, 3))).shape   # 10 is padded to a multiple of the device count
  (10,)
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qcamo_jax.errors import QcamoError

#: Name of the one mesh axis: the batch of images.
AXIS = "batch"

#: Environment variables read by :func:`initialize_distributed` when an argument is not given.
ENV_COORDINATOR = "QCAMO_COORDINATOR"
ENV_NUM_PROCESSES = "QCAMO_NUM_PROCESSES"
ENV_PROCESS_ID = "QCAMO_PROCESS_ID"


# ----------------------------------------------------------------------------------------------
# Multi-host start-up.


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    auto_detect: bool = False,
) -> bool:
    """Join a multi-process JAX job (one process per host) via :func:`jax.distributed.initialize`.

    Must run on every process, before anything else touches a device. Values not given are read from
    the environment (:data:`ENV_COORDINATOR` ``host:port`` of process 0, :data:`ENV_NUM_PROCESSES`,
    :data:`ENV_PROCESS_ID`). When none of the three is set anywhere, nothing happens (a single-process
    run) unless ``auto_detect`` is true, in which case JAX's own cluster detection runs (SLURM,
    Open MPI, Kubernetes, TPU pods: see the JAX multi-process guide).

    Args:
      coordinator_address: ``"host:port"`` reachable from every process; process 0 listens there.
      num_processes: total number of processes (usually hosts).
      process_id: this process's rank in ``[0, num_processes)``.
      local_device_ids: restrict this process to these local devices (e.g. one process per GPU).
      auto_detect: let JAX detect the cluster when no address/count/rank is given.

    Returns:
      True if this call initialised a multi-process runtime, False for a single-process run.

    Raises:
      QcamoError: on an incomplete or inconsistent setting (e.g. rank out of range), or when JAX cannot
        join the job (nothing detected, coordinator unreachable within JAX's start-up timeout).
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = _env_int(ENV_PROCESS_ID)
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if not any(given):
        if not auto_detect:
            return False
        _join(local_device_ids=local_device_ids)
        return True
    if not all(given):
        raise QcamoError(
            "multi-host needs a coordinator address, the number of processes and this process's id "
            f"(set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID} or pass all three)"
        )
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise QcamoError(f"process id {process_id} is not in [0, {num_processes})")
    if num_processes == 1:
        return False
    _join(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )
    return True


def _join(**kwargs) -> None:
    """:func:`jax.distributed.initialize`, its errors as one-line :class:`QcamoError`."""
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as exc:
        raise QcamoError(f"cannot join the multi-host job: {exc}") from None


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise QcamoError(f"{name}={os.environ[name]!r} is not an integer") from None


def process_slice(n: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """The contiguous part of ``n`` inputs (e.g. a sorted file list) that this process handles.

    Processes get ``ceil(n / process_count)`` items each, the last ones fewer (possibly none), so that
    concatenating the slices in process order gives back all ``n`` items.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    per = math.ceil(n / count) if n else 0
    return slice(min(index * per, n), min((index + 1) * per, n))


# ----------------------------------------------------------------------------------------------
# Devices and meshes.


def resolve_devices(spec: str | int | None = "all") -> list[jax.Device]:
    """Map the CLI value of ``--devices`` to the devices to use.

    ``"all"`` (or None): every device of the default backend, across all processes. ``N`` (an int or
    a decimal string): the first ``N`` local devices of *each* process, so a multi-host job with
    ``--devices 2`` on 4 hosts uses 8 devices. ``1`` is a plain single-device run.

    Raises:
      QcamoError: for a malformed value, ``N < 1`` or more devices than a process has.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(jax.devices())
    try:
        n = int(spec)
    except (TypeError, ValueError):
        raise QcamoError(f"--devices must be 'all' or a positive integer, not {spec!r}") from None
    local = jax.local_devices()
    if n < 1:
        raise QcamoError(f"--devices must be at least 1, not {n}")
    if n > len(local):
        raise QcamoError(
            f"--devices {n}: this process has only {len(local)} {local[0].platform} device(s)"
            + (" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)" if local[0].platform == "cpu" else "")
        )
    if jax.process_count() == 1:
        return list(local[:n])
    # Same positions on every process, so that the mesh is rectangular and the processes agree on it.
    return [d for d in jax.devices() if d.id in _local_positions_ids(n)]


def _local_positions_ids(n: int) -> set[int]:
    by_process: dict[int, list[jax.Device]] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    return {d.id for devs in by_process.values() for d in sorted(devs, key=lambda d: d.id)[:n]}


def make_mesh(devices: str | int | Sequence[jax.Device] | None = "all") -> Mesh:
    """A 1-D mesh with axis :data:`AXIS` over ``devices`` (a ``--devices`` value or a device list)."""
    if devices is None or isinstance(devices, (str, int)):
        devices = resolve_devices(devices)
    devices = list(devices)
    if not devices:
        raise ValueError("no devices for the mesh")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh; the other axes whole on every device."""
    return NamedSharding(mesh, P(AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def local_device_count(mesh: Mesh) -> int:
    """Devices of ``mesh`` that belong to this process."""
    return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place ``tree`` (e.g. model variables) on every device of ``mesh`` once, so calls reuse it.

    Every process must pass the same values (they are not checked).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated_sharding(mesh))
    return multihost_utils.host_local_array_to_global_array(tree, mesh, P())


# ----------------------------------------------------------------------------------------------
# Padding.


def pad_batch(tree: Any, multiple: int, size: int | None = None) -> tuple[Any, int]:
    """Pad axis 0 of every leaf to ``size`` (default: the next multiple of ``multiple``).

    Padding repeats the last item rather than inserting zeros, so that the padded rows run the same
    arithmetic as real ones (no zero images whose normalised gradients would be 0/0). Returns the
    padded tree and the original batch size.
    """
    n = batch_size(tree)
    if n == 0:
        raise ValueError("empty batch")
    target = size if size is not None else -(-n // multiple) * multiple
    if target < n or target % multiple:
        raise ValueError(f"cannot pad a batch of {n} to {target} (multiple of {multiple})")
    if target == n:
        return tree, n

    def pad(x):
        tail = jnp.repeat(x[-1:], target - n, axis=0) if isinstance(x, jax.Array) else np.repeat(x[-1:], target - n, axis=0)
        return jnp.concatenate([x, tail]) if isinstance(x, jax.Array) else np.concatenate([x, tail])

    return jax.tree.map(pad, tree), n


def unpad_batch(tree: Any, n: int) -> Any:
    """Drop padded rows: the first ``n`` items of axis 0 of every leaf."""
    return jax.tree.map(lambda x: x[:n], tree)


def batch_size(tree: Any) -> int:
    """The common leading-axis length of every leaf of ``tree``; raises if they differ."""
    sizes = {int(np.shape(x)[0]) for x in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"batched arguments disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


# ----------------------------------------------------------------------------------------------
# The data-parallel wrapper.


def data_parallel(
    fn: Callable[..., Any],
    mesh: Mesh,
    in_axes: Sequence[int | None],
    *,
    donate_batched: bool = False,
) -> Callable[..., Any]:
    """Run a batched per-image function with its batch split over ``mesh``.

    ``fn(*args)`` must treat every image independently (a ``vmap`` of a one-image function): each
    device runs ``fn`` unchanged on its slice of the batch (:func:`jax.shard_map`, no communication).
    The returned callable pads the batch to a multiple of the device count, places the slices, runs
    the one jitted program (compiled once per input shape) and strips the padding.

    Per-image randomness must come in as a batched argument (e.g. ``jax.random.split(key, B)``): a
    single replicated key would give every device the same stream, and its results would depend on the
    device count.

    Multi-host: each process passes its *own* images (see :func:`process_slice`) and gets its own
    results back; processes with fewer images are padded to the largest local batch (one small
    all-gather of the sizes), so every process must call the function the same number of times.

    Args:
      fn: ``fn(*args) -> pytree`` whose every output leaf has the batch on axis 0.
      mesh: a 1-D mesh from :func:`make_mesh`.
      in_axes: one entry per positional argument, like ``vmap``: ``0`` for a batched argument (every
        leaf has the batch on axis 0), ``None`` for a replicated one (model variables, scalars).
      donate_batched: donate the (padded, sharded) batched input buffers to the computation, so
        outputs can reuse their memory; only the copies made here are donated, never the caller's
        arrays.

    Returns:
      ``run(*args) -> outputs`` with the batch size of the inputs; ``run.compile(*args)`` compiles the
      program for those arguments ahead of the first call (multi-host: every process calls it, like
      ``run``); ``run.jitted`` is the underlying jitted function taking padded global arrays.
    """
    in_axes = tuple(in_axes)
    if any(a not in (0, None) for a in in_axes):
        raise ValueError(f"in_axes entries must be 0 or None, got {in_axes}")
    if 0 not in in_axes:
        raise ValueError("at least one argument must be batched (in_axes entry 0)")
    specs = tuple(P(AXIS) if a == 0 else P() for a in in_axes)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(AXIS), check_vma=False)
    donate = tuple(i for i, a in enumerate(in_axes) if a == 0) if donate_batched else ()
    jitted = jax.jit(mapped, donate_argnums=donate)
    n_local_devices = local_device_count(mesh)
    multi = jax.process_count() > 1

    def place(args):
        """``(placed global arguments, the caller's batch size)``."""
        if len(args) != len(in_axes):
            raise TypeError(f"expected {len(in_axes)} arguments (in_axes), got {len(args)}")
        batched = [a for a, ax in zip(args, in_axes) if ax == 0]
        n = batch_size(batched)
        size = -(-n // n_local_devices) * n_local_devices
        if multi:  # every process must feed the same local batch size
            size = int(np.max(multihost_utils.process_allgather(np.asarray(size))))
        placed = []
        for a, ax in zip(args, in_axes):
            if ax == 0:
                a, _ = pad_batch(a, n_local_devices, size)
                if multi:
                    a = multihost_utils.host_local_array_to_global_array(a, mesh, P(AXIS))
                else:
                    a = jax.device_put(a, batch_sharding(mesh), donate=False, may_alias=False)
            else:
                a = replicate(a, mesh) if not _already_placed(a, mesh) else a
            placed.append(a)
        return placed, n

    def run(*args):
        placed, n = place(args)
        with warnings.catch_warnings():
            # Donated copies that no output can reuse are simply freed: not worth a warning.
            warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
            out = jitted(*placed)
        if multi:
            out = multihost_utils.global_array_to_host_local_array(out, mesh, P(AXIS))
        return unpad_batch(out, n)

    def compile(*args):
        """Compile the program for these arguments' shapes ahead of the first call (which reuses it)."""
        return jitted.lower(*place(args)[0]).compile()

    run.jitted = jitted
    run.compile = compile
    run.mesh = mesh
    return run


def _already_placed(tree: Any, mesh: Mesh) -> bool:
    want = replicated_sharding(mesh)
    leaves = jax.tree.leaves(tree)
    return all(isinstance(x, jax.Array) and x.sharding.is_equivalent_to(want, x.ndim) for x in leaves)
