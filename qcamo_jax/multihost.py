"""How the processes of a multi-host run share the work and what they learn (one process per host).

A multi-host ``qcamo attack`` is the same program on every process (started by
:func:`qcamo_jax.sharding.initialize_distributed`). The attack is a *collective* program: a sharded
call waits until every process has made it, with arrays of the same shapes, so every process must
make the same sequence of calls. :class:`ProcessGroup` is the small set of rules that keeps them in
step, and the only place the pipeline learns about processes:

* **the same plan everywhere**: what decides the batches (the sorted input list, each input's shape
  and hash, which inputs are refused, what ``--resume`` reuses) is computed once, split over the
  processes (:meth:`ProcessGroup.part`) and shared with :meth:`ProcessGroup.gather_parts`, so every
  process derives the identical plan from identical data;
* **a part of every batch**: each global batch is cut into one contiguous part per process
  (:meth:`~ProcessGroup.part`, up to :meth:`~ProcessGroup.part_size` items); a process whose part is
  short or empty still makes the call, padded to ``part_size`` (the pipeline's job);
* **results back to everyone**: the per-image records of each batch are gathered on every process,
  so process 0 can write reports describing the whole run and every process returns the same
  exit code.

Objects travel as JSON (UTF-8 bytes in a ``uint8`` array, padded to a power of two so that the
gather compiles for a few shapes only) through
:func:`jax.experimental.multihost_utils.process_allgather`: no file system needs to be shared.
With one process every method is plain Python and touches no device.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple, Sequence, TypeVar

import numpy as np

from qcamo_jax.errors import QcamoError

T = TypeVar("T")

#: Smallest capacity (bytes) of a gathered JSON message; capacities are powers of two from here.
_MIN_CAPACITY = 256


class ProcessGroup(NamedTuple):
    """This process's place in the job: ``index`` in ``[0, count)``; ``ProcessGroup()`` is a single process."""

    index: int = 0
    count: int = 1

    @classmethod
    def current(cls) -> "ProcessGroup":
        """The running job's group (``jax.process_index()``, ``jax.process_count()``)."""
        import jax

        return cls(jax.process_index(), jax.process_count())

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes the run's shared files (reports, summary)."""
        return self.index == 0

    def part(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous part of ``items``; the parts in process order concatenate to ``items``.

        Parts have :meth:`part_size` items, the last ones fewer (possibly none): 5 items on 2
        processes are parts of 3 and 2, one item is parts of 1 and 0.
        """
        from qcamo_jax.sharding import process_slice

        return list(items[process_slice(len(items), self.index, self.count)])

    def part_size(self, n: int) -> int:
        """The largest part of ``n`` items: ``ceil(n / count)``, the same on every process."""
        return math.ceil(n / self.count)

    def allgather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (JSON-serialisable), in process order; a collective call.

        Tuples come back as lists and dict keys as strings (a JSON round trip); floats exactly.
        """
        if self.count == 1:
            return [obj]
        from jax.experimental import multihost_utils

        data = np.frombuffer(json.dumps(obj, sort_keys=True).encode("utf-8"), np.uint8)
        lengths = np.asarray(multihost_utils.process_allgather(np.int32(data.size))).reshape(-1)  # int32 [count]
        capacity = max(_MIN_CAPACITY, 1 << int(np.max(lengths) - 1).bit_length())
        buffer = np.zeros(capacity, np.uint8)
        buffer[: data.size] = data
        every = np.asarray(multihost_utils.process_allgather(buffer))  # uint8 [count, capacity]
        return [json.loads(every[p, : lengths[p]].tobytes().decode("utf-8")) for p in range(self.count)]

    def gather_parts(self, values: Sequence[Any]) -> list[Any]:
        """The concatenation, in process order, of every process's ``values``; a collective call.

        With ``values`` one result per item of ``self.part(items)``, this gives one result per item of
        ``items``, in order, on every process.
        """
        if self.count == 1:
            return list(values)
        return [v for part in self.allgather(list(values)) for v in part]

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj``, on every process (the others' ``obj`` is ignored); a collective call."""
        if self.count == 1:
            return obj
        return self.allgather(obj if self.is_main else None)[0]

    def agree(self, what: str, value: str) -> None:
        """Check that every process has the same ``value`` (e.g. a hash of its input list and settings).

        Raises:
          QcamoError: on every process alike, naming ``what`` and each process's value, when they differ
            (a job whose processes disagree would wait forever in a collective call).
        """
        values = self.allgather(value)
        if len(set(values)) > 1:
            shown = ", ".join(f"process {p}: {v[:12]}" for p, v in enumerate(values))
            raise QcamoError(
                f"the processes of this multi-host job disagree on {what} ({shown}); start every process with "
                "the same command line and the same view of the input files"
            )
