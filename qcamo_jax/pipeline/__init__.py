"""The attack pipeline: input files -> batched attack + quantizer -> adversarial files + reports.

This is everything ``qcamo attack`` does, as an importable library:

1. :func:`discover_inputs` (:mod:`.inputs`) expands files, folders (recursively, image files only:
   :mod:`qcamo_jax.discovery`) and globs into a sorted, de-duplicated list of paths; :func:`output_names` (:mod:`.outputs`)
   gives each a distinct output name.
2. Every input is read once (:func:`.inputs.probe_input`) to learn its shape and content hash; bad
   files become records with a one-line ``error`` and the rest goes on.
3. Images are grouped by shape (each shape compiles once) and cut into batches of a fixed size per
   group (:mod:`.plan`); the batches depend only on the set of inputs, never on what a previous run
   finished, so a resumed run recomputes a batch exactly as an uninterrupted run would.
4. The *engine* (:class:`Engine`; :func:`make_engine` builds the real one from
   :mod:`qcamo_jax.attacks` and :mod:`qcamo_jax.quantize`; :mod:`.engine`) turns
   ``uint8 [B, H, W, 3]`` images and one PRNG key per image into encoded files. The key of an image is
   derived from the SHA-256 of its bytes and ``--seed`` (not from its position), so results do not
   depend on batching or ordering.
5. Outputs are scored as saved and after every member of the re-encoder set (``--survive``), each run
   by its real library (:mod:`.batch`, :mod:`.scoring`), and written atomically; after every
   batch the reports are rewritten atomically, so a run killed at any point leaves complete files
   only, and ``resume=True`` skips images whose output and record match (same input hash, same
   settings, same output hash; :mod:`.resume`).
6. In a multi-host job (one process per host), every process runs :func:`run` (:mod:`.runner`) with
   the same arguments: the processes share the probing of step 2 so they plan the same batches, each
   attacks its part of every batch, and process 0 writes the reports (:mod:`qcamo_jax.multihost`).

The settings of a run live in :mod:`.settings`, the fields of its per-image record in
:mod:`qcamo_jax.record` (shared with :mod:`qcamo_jax.report`). This package re-exports the public
names of its modules, so ``from qcamo_jax.pipeline import run, Settings`` works.

Data contract: images are ``uint8 [H, W, 3]`` RGB pixels; scores are on the model's 0-100 scale.
"""

from qcamo_jax.pipeline.batch import BatchRunner
from qcamo_jax.pipeline.engine import AttackEngine, Encoded, Engine, attack_config, make_engine
from qcamo_jax.pipeline.inputs import discover_inputs, load_input, probe_input
from qcamo_jax.pipeline.outputs import (CRASH_ENV, REPORT_CSV, REPORT_JSON, RESERVED_STEMS, SUMMARY_PNG,
                                        check_existing_files_are_runs, check_inputs_spared, check_output_dir,
                                        decode_output, encode_png, output_names, prepare_output_dir)
from qcamo_jax.pipeline.plan import Item, engine_batch, job_fingerprint, plan_batches
from qcamo_jax.pipeline.progress import Progress, missed_table
from qcamo_jax.pipeline.resume import load_previous_records
from qcamo_jax.pipeline.runner import RunResult, run
from qcamo_jax.pipeline.scoring import Scorer, distortion
from qcamo_jax.pipeline.settings import (DEFAULT_MARGIN, DEFAULT_SURVIVE, METHODS, QUANTIZERS,
                                         Settings, image_seed, model_identity, settings_hash)
from qcamo_jax.record import FIELDS, empty_record

__all__ = [
    "AttackEngine", "BatchRunner", "CRASH_ENV", "DEFAULT_MARGIN", "DEFAULT_SURVIVE", "Encoded", "Engine", "FIELDS",
    "Item", "METHODS", "Progress", "QUANTIZERS", "REPORT_CSV", "REPORT_JSON",
    "RESERVED_STEMS", "RunResult", "SUMMARY_PNG", "Scorer", "Settings", "attack_config",
    "check_existing_files_are_runs", "check_inputs_spared", "check_output_dir", "decode_output",
    "discover_inputs", "distortion", "empty_record", "encode_png", "engine_batch", "image_seed", "job_fingerprint",
    "load_input", "load_previous_records", "make_engine", "missed_table", "model_identity", "output_names", "plan_batches",
    "prepare_output_dir", "probe_input", "run", "settings_hash",
]
