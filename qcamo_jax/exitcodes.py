"""Exit codes of the ``qcamo`` commands, defined once (``--help`` epilogs and README list them from here).

Data contract: integers a shell script can test. :func:`for_records` derives the code of a finished
``qcamo attack`` run from its records (:mod:`qcamo_jax.record`); whether one image reached the target
is :func:`qcamo_jax.record.reached_target`, the single rule both use.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

#: Every input was processed and every output is below the target T after every re-encoder checked.
OK = 0
#: The run finished, but some inputs were refused or failed (their records carry an ``error``).
INPUT_ERRORS = 1
#: Nothing was run: invalid usage or option value, unusable output folder, or no valid input image
#: (nothing is created then). The code argparse uses for usage errors.
USAGE = 2
#: Every input was processed, but some outputs are not below T (as saved or after a re-encoding).
MISSED_TARGET = 3
#: Interrupted (Ctrl-C): 128 + SIGINT, the shell's convention.
INTERRUPTED = 130

#: (code, meaning) in the order ``--help`` lists them.
MEANINGS = (
    (OK, "every image processed and below T after every re-encoder checked"),
    (INPUT_ERRORS, "some inputs refused or failed (see the report's error column); the rest was done"),
    (USAGE, "nothing run: bad usage or option value, unusable --out, or no valid input (nothing created)"),
    (MISSED_TARGET, "every image processed, but some not below T (listed at the end of the run)"),
    (INTERRUPTED, "interrupted"),
)


def epilog() -> str:
    """The exit-code table for a command's ``--help`` (plain text, under 100 columns)."""
    return "exit codes:\n" + "\n".join(f"  {code:<4d}{meaning}" for code, meaning in MEANINGS)


def for_records(records: Sequence[Mapping[str, Any]]) -> int:
    """The exit code of a finished attack run: :data:`INPUT_ERRORS` beats :data:`MISSED_TARGET` beats :data:`OK`.

    Args:
      records: one record per input (:mod:`qcamo_jax.record`), refused ones included.

    Returns:
      :data:`USAGE` for no records at all, else as the constants above say.
    """
    from qcamo_jax.record import reached_target

    if not records:
        return USAGE
    if any(r.get("error") is not None for r in records):
        return INPUT_ERRORS
    return OK if all(reached_target(r) for r in records) else MISSED_TARGET
